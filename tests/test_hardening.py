"""Hostile answers, damaged files and interrupted tools, each case as it was seen: no traceback,
no hang, no answered row lost or doubled, metrics.json right. The real CLI and commands run
in subprocesses against the fault server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli, write_jsonl
from genrun.testing.fault_server import FaultServer
from test_reliability import limit_file_size, one_error_line, openai_args, wait_for_records

HOSTILE_ANSWERS = {  # each took from 26 s to minutes to score before
    "answer and 4,000 spaces": "answer" + " " * 4000 + "!",
    "answer and 2.5 KB of newlines": "answer" + "\n" * 2500,
    "40,000 unclosed think tags": "<think>" * 40000,
    "100 KB of letters and spaces": "A " * 50000,
}


@pytest.mark.parametrize("name", list(HOSTILE_ANSWERS))
def test_built_in_extraction_takes_linear_time_on_hostile_answers(name: str) -> None:
    from genrun.scoring import strip_thinking
    from genrun.scoring.extract import EXTRACTORS

    text = HOSTILE_ANSWERS[name] * 3  # a few hundred KB
    started = time.perf_counter()
    strip_thinking(text)
    for extract in EXTRACTORS.values():
        extract(text)
    assert time.perf_counter() - started < 5  # milliseconds in fact; minutes before


def test_a_run_scoring_hostile_answers_ends_in_seconds_with_every_answer(tmp_path: Path) -> None:
    rows = [{"prompt": f"ok {i}", "answer": 1, "options": ["a", "b"]} for i in range(len(HOSTILE_ANSWERS))]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    with FaultServer(work_s=0, reply=list(HOSTILE_ANSWERS.values())) as server:
        started = time.monotonic()
        result = run_cli(*openai_args(server, data, tmp_path / "run", "dataset.fields.reference=answer",
                                      "dataset.fields.choices=options", "scoring.extract=choice",
                                      "scoring.metrics=[accuracy]"), timeout=120)
        took = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert took < 60
    records = read_jsonl(tmp_path / "run" / "answers.jsonl")
    assert len(records) == len(rows) and all(r["answer"] in HOSTILE_ANSWERS.values() for r in records)


def test_a_users_catastrophic_pattern_fails_its_row_and_keeps_the_answer(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 0", "ref": "a"}, {"prompt": "ok 1", "ref": "x"}])
    with FaultServer(work_s=0, reply="a" * 60 + "!") as server:
        result = run_cli(*openai_args(server, data, tmp_path / "run", "dataset.fields.reference=ref",
                                      "scoring.extract=regex", 'scoring.pattern="(a|aa)+$"'), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(tmp_path / "run" / "answers.jsonl")
    assert all(r["answer"] == "a" * 60 + "!" for r in records)  # what was received is written
    assert all("scoring.pattern ran over 1s" in r["scoring_error"] and "scores" not in r for r in records)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["scoring_errors"] == 2


@pytest.mark.parametrize("template, limit", [
    ("{{ 10**(10**8) }}", "a result of over 10,000 digits"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ prompt }}",
     "over 1,000,000 range() items"),
    ('{{ "a" * 10**10 }}', "a repetition of 10,000,000,000 items"),
    ('{{ prompt|center(10**9) }}', "an argument of 1,000,000,000"),
])
def test_a_template_over_a_limit_is_one_line_within_seconds(tmp_path: Path, template: str, limit: str) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 0"}])
    with FaultServer(work_s=0) as server:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "genrun", *openai_args(server, data, tmp_path / "run"),
                                 f"dataset.template='{template}'"], capture_output=True, text=True, timeout=120,
                                preexec_fn=lambda: __import__("resource").setrlimit(
                                    __import__("resource").RLIMIT_AS, (4 << 30, 4 << 30)))
        assert time.monotonic() - started < 60
    assert result.returncode == 2, result.stderr[-2000:]
    assert limit in one_error_line(result)
    assert server.bodies == []


def judged_args(server: FaultServer, judge: FaultServer, data: Path, out: Path, *extra: str) -> list[str]:
    return [*openai_args(server, data, out, "dataset.fields.reference=ref"), "judge=openai",
            f"judge.backend.base_url={judge.url}", "judge.backend.model_name=judge", "judge.backend.concurrency=1",
            "judge.backend.retries=0", *extra]


def test_judge_verdicts_are_kept_as_they_arrive_and_a_resume_asks_only_for_the_rest(tmp_path: Path) -> None:
    from genrun.rundir.verdicts import verdicts_path

    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}", "ref": "x"} for i in range(40)])
    out = tmp_path / "run"
    with FaultServer(work_s=0) as server, FaultServer(work_s=0.1, reply="correct") as judge:
        proc = subprocess.Popen([sys.executable, "-m", "genrun", *judged_args(server, judge, data, out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_records(verdicts_path(out / "answers.jsonl"), 20, proc)
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 143 and "Traceback" not in stderr
        kept = len(read_jsonl(verdicts_path(out / "answers.jsonl")))
        asked = len(judge.bodies)
        assert 20 <= kept <= asked <= kept + 1
        resumed = run_cli(*judged_args(server, judge, data, out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(judge.bodies) - asked == 40 - kept  # only the rows without a verdict were asked again
    records = read_jsonl(out / "answers.jsonl")
    assert sorted(r["index"] for r in records) == list(range(40))
    assert all(r["scores"]["judge"] == 1.0 for r in records) and not verdicts_path(out / "answers.jsonl").exists()
    assert json.loads((out / "metrics.json").read_text())["scores"]["judge"] == 1.0


def test_genrun_score_judging_stopped_by_ctrl_c_is_one_line_and_resumes(tmp_path: Path) -> None:
    from genrun.rundir.verdicts import verdicts_path

    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}", "ref": "x"} for i in range(30)])
    out = tmp_path / "run"
    with FaultServer(work_s=0) as server, FaultServer(work_s=0.1, reply="incorrect") as judge:
        assert run_cli(*openai_args(server, data, out, "dataset.fields.reference=ref")).returncode == 0
        command = [sys.executable, "-m", "genrun.commands.score", str(out), "judge=openai", f"judge.backend.base_url={judge.url}",
                   "judge.backend.model_name=judge", "judge.backend.concurrency=1"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        wait_for_records(verdicts_path(out / "answers.jsonl"), 10, proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "Traceback" not in stderr
        assert stderr.strip().splitlines()[-1].startswith("genrun-score: interrupted")
        asked = len(judge.bodies)
        again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(judge.bodies) - asked <= 30 - 10 + 1
    assert all(r["scores"]["judge"] == 0.0 for r in read_jsonl(out / "answers.jsonl"))
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def cached_args(server: FaultServer, data: Path, out: Path, cache: Path) -> list[str]:
    return openai_args(server, data, out, "cache=on", f"cache.path={cache}")


def read_only(folder: Path, command: list[str]) -> list[str]:
    """The command, run with `folder` read-only: a read-only bind mount in a mount namespace of
    its own (root may write any file it can see), or the folder's permissions for other users."""
    if os.geteuid() != 0:
        for path in (folder, *folder.iterdir()):
            path.chmod(0o555 if path.is_dir() else 0o444)
        return command
    remount = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", remount, str(folder), *command]


def test_a_cache_that_cannot_be_written_loses_no_answer(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(20)])
    cache = tmp_path / "cache" / "responses.sqlite"
    with FaultServer(work_s=0) as server:
        assert run_cli(*cached_args(server, data, tmp_path / "first", cache)).returncode == 0
        mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": f"ok {i}" if i % 2 else f"ok new {i}"}
                                                        for i in range(20)])
        out = tmp_path / "readonly"
        command = read_only(cache.parent, [sys.executable, "-m", "genrun", *cached_args(server, mixed, out, cache)])
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        said = result.stdout + result.stderr  # the warning is a log line: on the console, and in genrun.log
        assert said.count("cannot store answers") == 1
        records = read_jsonl(out / "answers.jsonl")
        assert sorted(r["index"] for r in records) == list(range(20)) and all(r["answer"] for r in records)
        assert {r["index"] for r in records if r.get("cached")} == set(range(1, 20, 2))  # still read from it
        # a full disk under the cache: its writes fail, the answers do not
        full_cache = tmp_path / "full" / "responses.sqlite"
        result = subprocess.run([sys.executable, "-m", "genrun", *cached_args(server, data, tmp_path / "full-run",
                                                                            full_cache)],
                                capture_output=True, text=True, timeout=120, preexec_fn=limit_file_size(40_000))
    assert result.returncode == 0, result.stderr[-2000:]
    said = result.stdout + result.stderr  # EFBIG reads as "disk I/O error", ENOSPC as "database or disk is full"
    assert said.count("cannot store answers") == 1
    records = read_jsonl(tmp_path / "full-run" / "answers.jsonl")
    assert sorted(r["index"] for r in records) == list(range(20)) and all(r["answer"] for r in records)


def test_a_locked_cache_waits_briefly_then_the_run_goes_on(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(20)])
    cache = tmp_path / "responses.sqlite"
    with FaultServer(work_s=0) as server:
        assert run_cli(*cached_args(server, data, tmp_path / "first", cache)).returncode == 0
        holder = sqlite3.connect(cache, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write transaction, held throughout
        more = write_jsonl(tmp_path / "more.jsonl", [{"prompt": f"ok new {i}"} for i in range(20)])
        started = time.monotonic()
        result = run_cli(*cached_args(server, more, tmp_path / "second", cache))
        took = time.monotonic() - started
        holder.rollback()
    assert result.returncode == 0, result.stderr[-2000:]
    assert took < 30 and "database is locked" in result.stdout + result.stderr
    assert all(r["answer"] for r in read_jsonl(tmp_path / "second" / "answers.jsonl"))


def test_a_damaged_cache_is_one_line_at_start_before_any_request(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}" + " words" * 200} for i in range(60)])
    cache = tmp_path / "responses.sqlite"
    with FaultServer(work_s=0) as server:
        assert run_cli(*cached_args(server, data, tmp_path / "first", cache)).returncode == 0
        holder = sqlite3.connect(cache)
        holder.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        holder.close()
        damaged = bytearray(cache.read_bytes())
        damaged[4096:4096 + 16] = b"\xff" * 16  # the header of the second page: a malformed page
        cache.write_bytes(bytes(damaged))
        sent = len(server.bodies)
        result = run_cli(*cached_args(server, data, tmp_path / "second", cache))
        assert result.returncode == 2
        line = one_error_line(result)
        assert "is damaged" in line and f"genrun-cache clear --path {cache}" in line
        assert len(server.bodies) == sent  # nothing was sent
        cleared = subprocess.run([sys.executable, "-m", "genrun.commands.cache", "--path", str(cache), "clear"],
                                 capture_output=True, text=True, timeout=60)
        assert cleared.returncode == 0 and "was damaged: removed it" in cleared.stdout
        assert run_cli(*cached_args(server, data, tmp_path / "third", cache)).returncode == 0


def test_the_timeout_bounds_a_server_that_trickles_bytes(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "trickle 0"}, {"prompt": "ok 1"}])
    with FaultServer(work_s=0) as server:
        started = time.monotonic()
        result = run_cli(*openai_args(server, data, tmp_path / "run", "backend.timeout=2", "backend.retries=1"),
                         timeout=120)
        took = time.monotonic() - started
    assert result.returncode == 1 and took < 30
    records = {r["index"]: r for r in read_jsonl(tmp_path / "run" / "answers.jsonl")}
    assert records[0]["answer"] is None and records[0]["error"] == "timeout: no answer within 2s"
    assert records[1]["answer"] == "answer to ok 1"


@pytest.mark.parametrize("kind, message", [
    ("intcontent", "the server's answer has content of type int, not text"),
    ("html", "the server's 200 answer is not a chat completion"),
    ("nochoicemessage", "its choices hold no messages"),
])
@pytest.mark.parametrize("reference", [True, False])
def test_a_200_of_the_wrong_shape_fails_its_row_and_nothing_else(tmp_path: Path, kind: str, message: str,
                                                                 reference: bool) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"{kind} 0", "ref": "x"}, {"prompt": "ok 1", "ref": "x"}])
    extra = ["dataset.fields.reference=ref"] if reference else []
    with FaultServer(work_s=0) as server:
        result = run_cli(*openai_args(server, data, tmp_path / "run", *extra))
        attempts = len(server.attempts[f"{kind} 0"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = {r["index"]: r for r in read_jsonl(tmp_path / "run" / "answers.jsonl")}
    assert records[0]["answer"] is None and message in records[0]["error"] and attempts == 3  # retried
    assert records[1]["answer"] == "answer to ok 1"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["answered"], metrics["failed"], metrics["status"]) == (1, 1, "failed_rows")


def test_resume_finds_damage_in_the_journal_index_and_tally_and_answers_each_row_once(tmp_path: Path) -> None:
    from genrun.rundir import index as done_index

    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}", "ref": f"answer to ok {i}"}
                                              for i in range(300)])
    out = tmp_path / "run"
    answers, index = out / "answers.jsonl", out / ".answers.jsonl.idx"

    def args(*extra: str) -> list[str]:
        return openai_args(server, data, out, "dataset.fields.reference=ref", *extra)

    with FaultServer(work_s=0) as server:
        assert run_cli(*args()).returncode == 0
        journal = bytearray(answers.read_bytes())
        journal[len(journal) // 2:len(journal) // 2 + 200] = b"\0" * 200  # 200 NUL bytes in the middle
        answers.write_bytes(bytes(journal))
        checked = subprocess.run([sys.executable, "-m", "genrun.commands.check", str(out)], capture_output=True, text=True)
        assert checked.returncode == 1 and "lines are not records" in checked.stdout
        sent = len(server.bodies)
        assert run_cli(*args()).returncode == 0
        assert 1 <= len(server.bodies) - sent <= 3  # the damaged rows, answered again

        entries = bytearray(index.read_bytes())  # entry 5 names row 299
        at = len(done_index.HEADER) + 5 * done_index.ENTRY.itemsize
        entries[at:at + 8] = (299).to_bytes(8, "little")
        index.write_bytes(bytes(entries))
        sent = len(server.bodies)
        assert run_cli(*args()).returncode == 0
        assert len(server.bodies) == sent  # nothing lost: nothing to answer again

        tally = out / ".answers.jsonl.tally"  # a tally edited by hand
        saved = json.loads(tally.read_text())
        saved["state"]["counts"]["rows"] = 1300
        saved["state"]["scores"]["accuracy"]["total"] = 75.0
        tally.write_text(json.dumps(saved))
        assert run_cli(*args()).returncode == 0
    records = read_jsonl(answers)
    assert sorted(r["index"] for r in records) == list(range(300))  # each row exactly once
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == metrics["answered"] == 300 and metrics["scores"]["accuracy"] == 1.0
    checked = subprocess.run([sys.executable, "-m", "genrun.commands.check", str(out)], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.strip().endswith(": ok"), checked.stdout


def sharded(tmp_path: Path, server: FaultServer, data: Path, name: str, shards: int = 2) -> list[Path]:
    dirs = []
    for shard in range(shards):
        out = tmp_path / f"{name}-{shard}"
        result = run_cli(*openai_args(server, data, out, f"dataset.num_shards={shards}",
                                      f"dataset.shard_index={shard}"))
        assert result.returncode == 0, result.stderr[-2000:]
        dirs.append(out)
    return dirs


def merge_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genrun.commands.merge", *args], capture_output=True, text=True, timeout=120)


def test_merge_refuses_what_would_destroy_or_mix_answers(tmp_path: Path) -> None:
    from genrun.rundir.lock import RunLock

    one = write_jsonl(tmp_path / "one.jsonl", [{"prompt": f"ok {i}"} for i in range(10)])
    other = write_jsonl(tmp_path / "other.jsonl", [{"prompt": f"ok other {i}"} for i in range(10)])
    with FaultServer(work_s=0) as server:
        a0, a1 = sharded(tmp_path, server, one, "one")
        b0, b1 = sharded(tmp_path, server, other, "other")
    before = (a0 / "answers.jsonl").read_bytes()
    result = merge_cli(str(a0), str(a1), "-o", str(a0 / "answers.jsonl"))
    assert result.returncode == 2 and "is one of the inputs" in result.stderr and "Traceback" not in result.stderr
    assert (a0 / "answers.jsonl").read_bytes() == before  # the input is untouched
    result = merge_cli(str(a0), str(b1), "-o", str(tmp_path / "mixed.jsonl"))
    assert result.returncode == 2 and "answered different datasets" in result.stderr
    assert not (tmp_path / "mixed.jsonl").exists()
    with RunLock(a1):  # a shard still being written
        result = merge_cli(str(a0), str(a1), "-o", str(tmp_path / "early.jsonl"))
    assert result.returncode == 2 and "is still being written by genrun process" in result.stderr
    result = merge_cli(str(a0), str(a1), "-o", str(tmp_path / "merged.jsonl"))
    assert result.returncode == 0 and [r["index"] for r in read_jsonl(tmp_path / "merged.jsonl")] == list(range(10))


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_merge_leaves_no_file_under_the_final_name(tmp_path: Path, signum: int, code: int) -> None:
    rows = 600_000
    for shard in range(2):  # two large shards, written directly (a run of them would take minutes)
        out = tmp_path / f"s{shard}"
        out.mkdir()
        with open(out / "answers.jsonl", "w") as journal:
            for i in range(shard, rows, 2):
                journal.write(json.dumps({"id": i, "index": i, "answer": "x" * 40, "error": None}) + "\n")
    target = tmp_path / "merged.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "genrun.commands.merge", str(tmp_path / "s0"), str(tmp_path / "s1"),
                             "-o", str(target)], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = tmp_path / ".merged.jsonl.partial"
    deadline = time.monotonic() + 120
    while not partial.exists():  # interrupted while it copies
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.002)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code and "Traceback" not in stderr
    assert not target.exists() and not partial.exists()


def test_compare_refuses_runs_over_different_datasets_that_share_ids(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"ok {i}", "ref": f"answer to ok {i}"} for i in range(40)])
    second = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"ok {i}", "ref": "no"} for i in range(40)])
    with FaultServer(work_s=0) as server:
        for data, name in ((first, "A"), (second, "B")):
            assert run_cli(*openai_args(server, data, tmp_path / name, "dataset.fields.reference=ref")).returncode == 0
    command = [sys.executable, "-m", "genrun.commands.compare", str(tmp_path / "A"), str(tmp_path / "B")]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "answered different datasets" in refused.stderr and "--force" in refused.stderr
    forced = subprocess.run([*command, "--force"], capture_output=True, text=True, timeout=60)
    assert forced.returncode == 0 and "A is better than B" in forced.stdout


def test_batch_results_with_a_duplicate_id_or_a_malformed_line(tmp_path: Path) -> None:
    from genrun.testing.fault_server import completion

    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(3)])
    line = {"custom_id": "0", "response": {"status_code": 200, "body": completion({"model": "m"}, "zero")}}
    twice = write_jsonl(tmp_path / "twice.jsonl", [line, {**line, "response": {"status_code": 200, "body": completion(
        {"model": "m"}, "other")}}])
    result = run_cli("backend=openai", "backend.model_name=m", "dataset=default", f"dataset.path={data}",
                     f"batch.results={twice}", f"hydra.run.dir={tmp_path / 'a'}")
    assert result.returncode == 2 and "custom_id '0' is on line 1 too" in one_error_line(result)
    odd = write_jsonl(tmp_path / "odd.jsonl", [line, {"custom_id": "1", "response": "oops"}])
    result = run_cli("backend=openai", "backend.model_name=m", "dataset=default", f"dataset.path={data}",
                     f"batch.results={odd}", f"hydra.run.dir={tmp_path / 'b'}")
    assert "Traceback" not in result.stderr
    records = {r["index"]: r for r in read_jsonl(tmp_path / "b" / "answers.jsonl")}
    assert records[0]["answer"] == "zero" and "`response` is a str" in records[1]["error"]
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["rows"] == 2


def test_batch_export_never_overwrites_the_dataset_or_a_file_unasked(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(3)])
    kept = data.read_bytes()
    base = ["backend=openai", "backend.model_name=m", "dataset=default", f"dataset.path={data}"]
    result = run_cli(*base, f"batch.export={data}", f"hydra.run.dir={tmp_path / 'a'}")
    assert result.returncode == 2 and "is the dataset's own file" in one_error_line(result)
    assert data.read_bytes() == kept
    existing = tmp_path / "requests.jsonl"
    existing.write_text("mine\n")
    result = run_cli(*base, f"batch.export={existing}", f"hydra.run.dir={tmp_path / 'b'}")
    assert result.returncode == 2 and "batch.overwrite=true" in one_error_line(result)
    assert existing.read_text() == "mine\n"
    result = run_cli(*base, f"batch.export={existing}", "batch.overwrite=true", f"hydra.run.dir={tmp_path / 'c'}")
    assert result.returncode == 0 and len(read_jsonl(existing)) == 3


def test_summary_of_a_sweep_with_a_garbled_metrics_file(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 0"}])
    with FaultServer(work_s=0) as server:
        args = openai_args(server, data, tmp_path)[:-1]
        assert run_cli("-m", *args, "backend.concurrency=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}").returncode == 0
    (next((tmp_path / "sweep").glob("0_*")) / "metrics.json").write_text('{"rows": 1, "sco')
    result = subprocess.run([sys.executable, "-m", "genrun.commands.summary", str(tmp_path / "sweep")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "unreadable" in result.stdout and "metrics.json cannot be read" in result.stdout


def test_genrun_score_stopped_by_sigterm_leaves_no_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with open(out / "answers.jsonl", "w") as journal:
        for i in range(300_000):
            journal.write(json.dumps({"id": i, "index": i, "answer": f"answer {i} " * 8, "error": None,
                                      "reference": f"answer {i}"}) + "\n")
    before = (out / "answers.jsonl").read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "genrun.commands.score", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "answers.jsonl.tmp").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.002)
    proc.terminate()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in stderr and "genrun-score: terminated" in stderr
    assert not (out / "answers.jsonl.tmp").exists() and (out / "answers.jsonl").read_bytes() == before


def test_settings_stay_visible_and_the_http_client_is_quiet(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(3)])
    with FaultServer(work_s=0) as server:
        assert run_cli(*openai_args(server, data, tmp_path / "quiet", "sampling.max_tokens=32")).returncode == 0
        loud = run_cli(*openai_args(server, data, tmp_path / "loud", "hydra.verbose=httpx"))
    run_json = json.loads((tmp_path / "quiet" / "run.json").read_text())
    assert "sampling.max_tokens=32" in run_json["command"]
    assert "HTTP Request" not in (tmp_path / "quiet" / "genrun.log").read_text()
    assert loud.returncode == 0 and "HTTP Request: POST" in (tmp_path / "loud" / "genrun.log").read_text()


def test_presets_use_the_id_column_and_records_can_keep_the_whole_conversation(tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "question": f"ok {i}", "choices": ["a", "b", "c", "d"], "answer": i % 4}
            for i in range(4)]
    test = write_jsonl(tmp_path / "test.jsonl", rows)
    dev = write_jsonl(tmp_path / "dev.jsonl", [{**r, "id": f"dev{i}"} for i, r in enumerate(rows)])
    with FaultServer(work_s=0) as server:
        result = run_cli("task=mmlu_generative", f"dataset.path={test}", "dataset.name=null", "dataset.split=train",
                         f"dataset.fewshot.path={dev}", "dataset.fewshot.k=2", "record_messages=true",
                         *openai_args(server, test, tmp_path / "run")[:-2], f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(tmp_path / "run" / "answers.jsonl")
    assert sorted(r["id"] for r in records) == ["q0", "q1", "q2", "q3"]
    sent = records[0]["messages_sent"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"]
    assert sent == server.bodies[0]["messages"] or sent in [b["messages"] for b in server.bodies]
