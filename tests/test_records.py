"""answers.jsonl survives crashes: torn lines, duplicates and retried errors leave one record per row."""

from __future__ import annotations

import json

from genrun.records import AnswerLog, read_records


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
    assert all(json.loads(l) for l in path.read_text().splitlines())


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
