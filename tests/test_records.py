"""answers.jsonl survives crashes: torn lines, duplicates and retried errors leave one record per row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genrun.rundir.journal import AnswerLog, read_records


def line(index, error=None):
    return json.dumps({"index": index, "answer": None if error else f"a{index}", "error": error}) + "\n"


def test_torn_last_line_is_dropped_and_appending_stays_valid(tmp_path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text(line(0) + line(1) + '{"index": 2, "ans')
    log = AnswerLog(path)
    assert log.done == {0, 1}
    log.write({"index": 2, "answer": "a2", "error": None})
    log.close()
    assert [r["index"] for r in read_records(path)] == [0, 1, 2]
    assert all(json.loads(ln) for ln in path.read_text().splitlines())


def test_duplicates_keep_one_record_preferring_an_answer(tmp_path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text(line(0, error="boom") + line(0) + line(1) + line(1))
    AnswerLog(path).close()
    records = list(read_records(path))
    assert [(r["index"], r["error"]) for r in records] == [(0, None), (1, None)]


def test_retry_errors_removes_failed_rows_so_they_run_again(tmp_path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text(line(0) + line(1, error="500") + line(2))
    kept = AnswerLog(path)
    assert kept.done == {0, 1, 2} and kept.failed_before == 1
    kept.close()
    retried = AnswerLog(path, retry_errors=True)
    assert retried.done == {0, 2}
    retried.close()
    assert [r["index"] for r in read_records(path)] == [0, 2]


# The index (.answers.jsonl.idx) and the saved tally: a resume reads them, not every record,
# and they are only ever caches of the journal.

def scored(index, error=None, score=1.0):
    record = {"index": index, "answer": None if error else f"a{index}", "error": error}
    if not error:
        record["scores"] = {"accuracy": score, "f1": score / 2}
    return record


def written(path, records, metrics=("accuracy", "f1")):
    log = AnswerLog(path, metrics=list(metrics))
    for record in records:
        log.write(record)
    log.close()
    return log


def test_a_resume_reads_the_index_and_the_tally_not_the_records(tmp_path, monkeypatch) -> None:
    from genrun.rundir import index as done_index

    path = tmp_path / "answers.jsonl"
    written(path, [scored(i, error="500" if i == 3 else None, score=float(i % 2)) for i in range(8)])
    index = tmp_path / ".answers.jsonl.idx"
    assert index.stat().st_size == len(done_index.HEADER) + 8 * done_index.ENTRY.itemsize
    # Proof that no record is parsed: parsing one would fail the test.
    monkeypatch.setattr(done_index, "parse", lambda line: pytest.fail("a record was parsed"))
    log = AnswerLog(path, metrics=["accuracy", "f1"])
    assert log.done == set(range(8)) and log.failed_before == 1
    assert log.tally.result()["rows"] == 8 and log.tally.result()["scores"]["accuracy"] == round(3 / 7, 4)
    log.close()


def test_damage_in_the_middle_of_the_journal_or_the_index_is_found_and_its_rows_answered_again(tmp_path) -> None:
    from genrun.rundir import index as done_index
    from genrun.rundir.status import summarize

    path = tmp_path / "answers.jsonl"
    index = tmp_path / ".answers.jsonl.idx"
    records = [scored(i, score=float(i % 2)) for i in range(300)]
    written(path, records)
    journal = bytearray(path.read_bytes())
    middle = len(journal) // 2
    journal[middle:middle + 200] = b"\0" * 200  # overwritten in place: same length, lines merged
    path.write_bytes(bytes(journal))
    log = AnswerLog(path, metrics=["accuracy", "f1"])
    lost = set(range(300)) - set(np.flatnonzero(log.done.flags).tolist())
    assert 1 <= len(lost) <= 3  # the damaged rows are not done: they are answered again
    assert log.tally.result() == summarize(path, ["accuracy", "f1"]) and log.tally.result()["rows"] == 300 - len(lost)
    log.close()

    written(path, records)  # an index entry naming another row (entry 5 says row 299)
    entries = bytearray(index.read_bytes())
    at = len(done_index.HEADER) + 5 * done_index.ENTRY.itemsize
    entries[at:at + 8] = (299).to_bytes(8, "little")
    index.write_bytes(bytes(entries))
    log = AnswerLog(path, metrics=["accuracy", "f1"])
    assert log.done == set(range(300)) and log.tally.result()["rows"] == 300
    log.close()

    written(path, records)  # a tally edited by hand: other counts and sums, the same `covers`
    tally_file = tmp_path / ".answers.jsonl.tally"
    saved = json.loads(tally_file.read_text())
    saved["state"]["counts"]["rows"] = 1300
    saved["state"]["scores"]["accuracy"]["total"] = 75.0
    tally_file.write_text(json.dumps(saved))
    again = AnswerLog(path, metrics=["accuracy", "f1"])
    assert again.tally.result() == summarize(path, ["accuracy", "f1"])
    assert again.tally.result()["rows"] == 300 and again.tally.result()["scores"]["accuracy"] == 0.5
    again.close()


def test_records_a_crash_left_unindexed_are_read_from_the_tail_and_a_torn_line_cut(tmp_path) -> None:
    from genrun.rundir.status import summarize

    path = tmp_path / "answers.jsonl"
    written(path, [scored(i) for i in range(5)])
    with open(path, "a") as journal:  # written, then the process died before indexing them
        journal.write(json.dumps(scored(5, score=0.0)) + "\n" + '{"index": 6, "answ')
    log = AnswerLog(path, metrics=["accuracy", "f1"])
    assert log.done == set(range(6))
    assert log.tally.result() == summarize(path, ["accuracy", "f1"])  # the torn line is gone from both
    log.write(scored(6))
    log.close()
    assert [r["index"] for r in read_records(path)] == list(range(7))
    again = AnswerLog(path, metrics=["accuracy", "f1"])
    assert again.done == set(range(7)) and again.tally.result() == summarize(path, ["accuracy", "f1"])
    again.close()


def test_a_missing_or_out_of_step_index_is_rebuilt_from_the_journal(tmp_path) -> None:
    from genrun.rundir import index as done_index
    from genrun.rundir.status import summarize

    path = tmp_path / "answers.jsonl"
    written(path, [scored(i, score=float(i % 3 == 0)) for i in range(40)])
    index = tmp_path / ".answers.jsonl.idx"
    for damage in ("missing", "torn entry", "journal rewritten by hand", "stale tally"):
        if damage == "missing":
            index.unlink()
        elif damage == "torn entry":
            index.write_bytes(index.read_bytes()[:-5])  # the last row's entry cut: read from the tail
        elif damage == "journal rewritten by hand":  # same records, another order: every offset moves
            lines = path.read_text().splitlines(keepends=True)
            path.write_text("".join(reversed(lines)))
        else:
            (tmp_path / ".answers.jsonl.tally").write_text('{"covers": 7, "metrics": ["accuracy", "f1"]}')
        log = AnswerLog(path, metrics=["accuracy", "f1"])
        assert log.done == set(range(40)), damage
        assert log.tally.result() == summarize(path, ["accuracy", "f1"]), damage
        log.close()
        loaded = done_index.load(path, path.stat().st_size)
        assert loaded is not None and loaded.count == 40 and loaded.done == set(range(40)), damage


def test_the_tally_beyond_the_bootstrap_rows_matches_the_textbook_intervals() -> None:
    import random

    from genrun.rundir.tally import Tally
    from genrun.scoring.stats import BOOTSTRAP_ROWS, normal, wilson

    rng = random.Random(0)
    n = BOOTSTRAP_ROWS + 2_000
    f1 = [rng.random() for _ in range(n)]
    right = [float(rng.random() < 0.3) for _ in range(n)]
    tally = Tally(["accuracy", "f1"])
    for i in range(n):
        tally.add({"index": i, "error": None, "scores": {"accuracy": right[i], "f1": f1[i]}})
    result = tally.result()
    assert tally.scores["f1"].values is None  # flat memory: the values are not kept
    assert result["scores_ci95"]["f1"] == [round(x, 4) for x in normal(f1)]
    assert result["scores_ci95"]["accuracy"] == [round(x, 4) for x in wilson(sum(right), n)]
    assert result["scores"]["f1"] == round(sum(f1) / n, 4) and result["scores_rows"]["f1"] == n


def test_a_resume_skips_the_done_prefix_in_the_dataset_itself(tmp_path, monkeypatch) -> None:
    from conftest import open_dataset as open_rows
    from genrun.dataset import source as dataset
    from genrun.rundir.index import DoneRows

    monkeypatch.setattr(dataset, "SKIP_FROM", 1)  # skip() even for a few rows

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(30)))
    for shards, shard, limit in ((1, 0, None), (3, 1, None), (1, 0, 25), (3, 2, 20)):
        cfg = {"path": str(data), "num_shards": shards, "shard_index": shard, "limit": limit,
               "fields": {"prompt": "prompt"}}
        mine = [i for i in range(30 if limit is None else limit) if i % shards == shard]
        done = DoneRows([i for i in mine if i < 15 or i == 20])
        rows = open_rows(cfg, "generate")
        rows.skip_done(done)
        left = [(i, row["prompt"]) for i, row in rows.rows if i not in done]
        assert left == [(i, f"p{i}") for i in mine if i not in done], (shards, shard, limit)
        everything_done = open_rows(cfg, "generate")
        everything_done.skip_done(DoneRows(mine))
        assert list(everything_done.rows) == []
        assert everything_done.scanned == mine[-1] + 1  # metrics' dataset_rows: never past the data


def test_a_journal_line_is_json_of_the_record_whatever_it_holds() -> None:
    """orjson writes the common records; what it refuses (keys that are not strings, integers
    beyond 64 bits) is written by json, and a datetime is its str() as before."""
    import datetime
    import json
    import math

    from genrun.rundir.journal import journal_line

    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    plain = {"id": "q1", "index": 3, "answer": "é \u2028 ok", "scores": {"f1": 0.5}, "error": None}
    assert json.loads(journal_line(plain)) == plain and journal_line(plain).endswith(b"\n")
    assert json.loads(journal_line({"index": 1, "when": when}))["when"] == str(when)
    assert json.loads(journal_line({"index": 1, "meta": {1: "x"}})) == {"index": 1, "meta": {"1": "x"}}
    assert json.loads(journal_line({"index": 1, "big": 2**70})) == {"index": 1, "big": 2**70}
    assert json.loads(journal_line({"index": 1, "score": math.nan})) == {"index": 1, "score": None}  # strict JSON
    # a server's "\ud800" escape: before, the UTF-8 encoding raised and the run died with a traceback
    assert json.loads(journal_line({"index": 1, "answer": "a\ud800b"})) == {"index": 1, "answer": "a\ud800b"}
