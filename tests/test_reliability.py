"""Broken inputs and hostile conditions: one clear line (or one row's error record), the right
exit code, nothing answered lost, one writer per run directory.

Most cases run the real CLI against the fault server (no model to load, so each run takes a
second); the engine-specific ones are in test_vllm.py.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from conftest import read_jsonl, run_cli, write_jsonl
from genrun.backend.sampling import check_sampling
from genrun.errors import UserError
from genrun.rundir.journal import read_records
from genrun.testing.fault_server import FaultServer


def openai_args(server: FaultServer, data: Path, out: Path, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake", "backend.concurrency=4",
            "backend.retries=2", "backend.base_delay=0.05", "backend.timeout=5", "dataset=default",
            f"dataset.path={data}", f"hydra.run.dir={out}", *extra]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The run's single `genrun: error:` line; fails on a traceback or on several errors."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("genrun: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def ok_lines(n: int, start: int = 0) -> list[str]:
    return [json.dumps({"prompt": f"ok {i}"}) for i in range(start, start + n)]


def text_file(name: str, text: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_text(text, encoding="utf-8", newline="")
        return folder / name
    return make


def bytes_file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / name
    return make


def big_file(folder: Path) -> Path:
    """400 KB of JSON lines with a bad one at row 150: datasets fails a whole piece of the
    file at once, and the good rows of that piece must still be answered."""
    lines = [json.dumps({"prompt": f"ok {i} " + "x" * 2600}) for i in range(160)]
    lines[150] = "{oops"
    (folder / "big.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "big.jsonl"


BROKEN_FILES = [
    # (case, how to make the file, what the one line says, rows answered before it)
    ("torn last line", text_file("torn.jsonl", "\n".join(ok_lines(10)) + '\n{"prompt": "ok 1'),
     "torn.jsonl line 11: invalid JSON", 10),
    ("invalid JSON mid-file", text_file("mid.jsonl", "\n".join([*ok_lines(5), "{bad json", *ok_lines(5, 5)]) + "\n"),
     "mid.jsonl line 6: invalid JSON", 5),
    ("not UTF-8", bytes_file("latin1.jsonl", ("\n".join(ok_lines(3)) + "\n").encode() + b'{"prompt": "caf\xe9"}\n'),
     "latin1.jsonl line 4: not UTF-8 text (byte 0xe9", 3),
    ("empty file", text_file("empty.jsonl", ""), "has no rows", 0),
    ("lone surrogate escape", text_file("surrogate.jsonl", "\n".join(ok_lines(3)) + '\n{"prompt": "\\ud800"}\n'),
     "surrogate.jsonl line 4: invalid text (a lone surrogate", 3),
    ("a JSON line that is no object", text_file("list.jsonl", "\n".join(ok_lines(2)) + "\n[1, 2]\n"),
     "list.jsonl line 3: a JSON list", 2),
    ("CSV with extra fields", text_file("extra.csv", "prompt\nok 0\nok 1\nok 2,extra\nok 3\n"),
     "extra.csv line 4: 2 fields where the header has 1", 2),
    ("CSV with an unterminated quote", text_file("quote.csv", 'prompt\nok 0\nok 1\n"ok 2\nok 3\n'),
     "quote.csv line 5: unexpected end of data", 2),
    ("JSON array cut short", text_file("array.json", '[{"prompt": "ok 0"},\n {"prompt": "ok 1"'),
     "array.json line 2: invalid JSON", 0),
    ("corrupt parquet", bytes_file("corrupt.parquet", b"PAR1 this is no parquet file"), "corrupt.parquet", 0),
    ("bad line deep in a large file", big_file, "big.jsonl line 151: invalid JSON", 150),
]


@pytest.mark.parametrize("case,make,message,good", BROKEN_FILES, ids=[c[0] for c in BROKEN_FILES])
def test_a_broken_data_file_is_one_line_after_every_good_row_before_it(
        tmp_path: Path, case: str, make: Callable[[Path], Path], message: str, good: int) -> None:
    data = make(tmp_path)
    out = tmp_path / "run"
    with FaultServer(work_s=0) as server:
        result = run_cli(*openai_args(server, data, out))
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in one_error_line(result)
    records = list(read_records(out / "answers.jsonl"))
    assert sorted(r["index"] for r in records) == list(range(good))  # every good row before it, once
    assert all(r["error"] is None for r in records)
    if good:
        metrics = json.loads((out / "metrics.json").read_text())
        assert (metrics["answered"], metrics["status"]) == (good, "error") and message in metrics["error"]


def test_resume_refuses_a_dataset_that_changed_under_the_same_path(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(5)])
    out = tmp_path / "run"
    with FaultServer(work_s=0) as server:
        assert run_cli(*openai_args(server, data, out)).returncode == 0
        write_jsonl(data, [{"prompt": f"ok new {i}"} for i in range(6)])  # other rows, same path
        refused = run_cli(*openai_args(server, data, out))
        assert refused.returncode == 2
        line = one_error_line(refused)
        assert "changed since its answers were made" in line and "resume_allow_changed_dataset=true" in line
        assert len(read_jsonl(out / "answers.jsonl")) == 5  # untouched
        allowed = run_cli(*openai_args(server, data, out, "resume_allow_changed_dataset=true"))
    assert allowed.returncode == 0, allowed.stderr
    assert sorted(r["index"] for r in read_jsonl(out / "answers.jsonl")) == list(range(6))


def test_a_second_process_in_the_same_run_directory_is_refused_and_a_killed_one_leaves_no_lock(
        tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(40)])
    out = tmp_path / "run"
    with FaultServer(work_s=0.2) as server:
        first = subprocess.Popen([sys.executable, "-m", "genrun", *openai_args(server, data, out, "backend.concurrency=1")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_records(out / "answers.jsonl", 2, first)
        second = run_cli(*openai_args(server, data, out))
        assert second.returncode == 2
        assert f"is in use by genrun process {first.pid}" in one_error_line(second)
        assert not (out / "metrics.json").exists()  # the refused process wrote nothing there
        first.kill()  # kill -9: the kernel drops the lock with the process
        first.wait()
        third = run_cli(*openai_args(server, data, out))
    assert third.returncode == 0, third.stderr
    assert sorted(r["index"] for r in read_jsonl(out / "answers.jsonl")) == list(range(40))  # each row once


def wait_for_records(path: Path, count: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} records")


def test_sigterm_ends_the_run_like_ctrl_c_and_resume_finishes_it(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(60)])
    out = tmp_path / "run"
    with FaultServer(work_s=0.1) as server:
        proc = subprocess.Popen([sys.executable, "-m", "genrun", *openai_args(server, data, out, "backend.concurrency=2")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_records(out / "answers.jsonl", 5, proc)
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 143
        assert "genrun: terminated; answers so far are in" in stderr and "Traceback" not in stderr
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["status"] == "interrupted" and 5 <= metrics["rows"] < 60
        assert run_cli(*openai_args(server, data, out)).returncode == 0
    assert sorted(r["index"] for r in read_jsonl(out / "answers.jsonl")) == list(range(60))


def limit_file_size(limit: int) -> Callable[[], None]:
    """A disk that fills: writes past `limit` bytes fail with EFBIG, as ENOSPC would."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_disk_that_fills_mid_run_is_one_line_and_resume_finishes(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(300)])
    out = tmp_path / "run"
    with FaultServer(work_s=0) as server:
        full = subprocess.run([sys.executable, "-m", "genrun", *openai_args(server, data, out)],
                              capture_output=True, text=True, timeout=120, preexec_fn=limit_file_size(20_000))
        assert full.returncode == 2
        line = one_error_line(full)
        assert f"cannot write {out / 'answers.jsonl'}: File too large (errno 27)" in line
        kept = list(read_records(out / "answers.jsonl"))
        assert 0 < len(kept) < 300
        assert json.loads((out / "metrics.json").read_text())["status"] == "error"
        resumed = run_cli(*openai_args(server, data, out))
    assert resumed.returncode == 0, resumed.stderr
    records = read_jsonl(out / "answers.jsonl")
    assert sorted(r["index"] for r in records) == list(range(300))


def test_a_disk_that_fills_in_a_sweep_still_gives_every_job_its_row(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(300)])
    with FaultServer(work_s=0) as server:
        args = openai_args(server, data, tmp_path)[:-1]
        result = subprocess.run([sys.executable, "-m", "genrun", "-m", *args, "backend.concurrency=2,4",
                                 f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                                capture_output=True, text=True, timeout=120, preexec_fn=limit_file_size(20_000))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    summary = (tmp_path / "sweep" / "summary.csv").read_text()
    assert summary.count("File too large") == 2


@pytest.mark.parametrize("target", ["a file in the way", "/proc"])
def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path: Path, target: str) -> None:
    (tmp_path / "file").write_text("")
    run_dir = tmp_path / "file" / "run" if target == "a file in the way" else Path("/proc/genrun-test-run")
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 1"}])
    with FaultServer(work_s=0) as server:
        result = run_cli(*openai_args(server, data, run_dir))
    assert result.returncode == 2
    assert f"cannot write {run_dir}" in one_error_line(result)


def test_content_null_error_bodies_and_malformed_json_in_a_200(tmp_path: Path) -> None:
    rows = [{"prompt": "nullcontent 0"}, {"prompt": "errorbody 1"}, {"prompt": "badjson 2"}, {"prompt": "ok 3"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "run"
    with FaultServer(work_s=0) as server:
        result = run_cli(*openai_args(server, data, out))
    assert result.returncode == 1
    records = {r["prompt"]: r for r in read_jsonl(out / "answers.jsonl")}
    null = records["nullcontent 0"]
    assert null["answer"] is None and null["error"].startswith("the server's answer has no content")
    assert "finish_reason=length; raise sampling.max_tokens" in null["error"]
    assert null["reasoning"] == "thought about it"  # kept, though there is no answer
    # a 200 with an error in it, and one with a body cut short, are retried like a 5xx
    for prompt in ("errorbody 1", "badjson 2"):
        assert records[prompt]["answer"] == f"answer to {prompt}" and len(server.attempts[prompt]) == 2


def test_a_404_for_a_wrong_model_name_stops_the_run(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(50)])
    with FaultServer(status_for_all=404) as server:
        result = run_cli(*openai_args(server, data, tmp_path / "run"))
    assert result.returncode == 2
    line = one_error_line(result)
    assert "HTTP 404" in line and "check backend.model_name='fake'" in line
    assert sum(len(t) for t in server.attempts.values()) <= 4  # stopped: not 50 failures


@pytest.mark.parametrize("override,message", [
    ("sampling.top_p=2", "sampling.top_p=2.0 is out of range: it must be a number in (0, 1]"),
    ("sampling.temperature=-1", "sampling.temperature=-1.0 is out of range"),
    ("sampling.max_tokens=0", "sampling.max_tokens=0 is out of range: it must be an integer >= 1"),
    ("+sampling.top_k=abc", "sampling.top_k='abc' is out of range"),
])
@pytest.mark.parametrize("backend", ["openai", "hf"])
def test_sampling_values_are_checked_alike_before_anything_starts(
        tmp_path: Path, tiny_model: str, backend: str, override: str, message: str) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 1"}])
    with FaultServer(work_s=0) as server:
        args = openai_args(server, data, tmp_path / "run")
        if backend == "hf":
            args = ["backend=hf", f"backend.model_name_or_path={tiny_model}", *args[7:]]
        result = run_cli(*args, override)
    assert result.returncode == 2
    assert message in one_error_line(result)
    assert not server.attempts  # nothing was sent


def test_the_sampling_rules() -> None:
    assert check_sampling({"temperature": 0, "top_p": 1, "top_k": -1, "max_tokens": 5, "seed": None}) == {
        "temperature": 0, "top_p": 1, "top_k": -1, "max_tokens": 5}
    for bad in ({"top_p": 0}, {"min_p": 1.5}, {"top_k": 2.5}, {"n": 0}, {"stop": 3}, {"repetition_penalty": 0},
                {"presence_penalty": 3}, {"temperature": True}, {"min_tokens": 9, "max_tokens": 4}):
        with pytest.raises(UserError, match="sampling"):
            check_sampling(bad)


@pytest.mark.parametrize("args,message", [
    (["dataset.limit=-1"], "dataset.limit=-1 must be a positive number of rows"),
    (["resume={elsewhere}"], "name different directories"),
])
def test_more_mistakes_give_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 1"}])
    (tmp_path / "elsewhere").mkdir()
    with FaultServer(work_s=0) as server:
        result = run_cli(*openai_args(server, data, tmp_path / "run"),
                         *(a.format(elsewhere=tmp_path / "elsewhere") for a in args))
    assert result.returncode == 2
    assert message in one_error_line(result)


def test_cfg_job_resolve_never_prints_the_api_key(tmp_path: Path) -> None:
    secret = "sk-test-PRINTED-99"
    result = run_cli("backend=openai", "dataset=demo_qa", "--cfg", "job", "--resolve", env={"OPENAI_API_KEY": secret})
    assert result.returncode == 0 and "model_name" in result.stdout
    assert secret not in result.stdout + result.stderr


def test_a_sweep_summary_names_the_error_of_a_job_with_failed_rows(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 0"}, {"prompt": "poison 1"}])
    with FaultServer(work_s=0) as server:
        args = openai_args(server, data, tmp_path)[:-1]
        result = run_cli("-m", *args, "backend.concurrency=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 1
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert summary.count("1 rows failed, first row 1: HTTP 400: prompt rejected") == 2


def test_merge_names_a_row_recorded_twice_in_one_run(tmp_path: Path) -> None:
    from genrun.reports.merge import merge

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_jsonl(run_dir / "answers.jsonl", [{"index": 0, "answer": "a"}, {"index": 0, "answer": "a"}])
    with pytest.raises(UserError, match=r"row 0 is in .*answers.jsonl twice .*resume="):
        merge([run_dir], tmp_path / "merged.jsonl")


def test_kill_minus_nine_is_not_needed_to_free_the_lock_after_a_normal_exit(tmp_path: Path) -> None:
    from genrun.rundir.lock import RunLock

    with RunLock(tmp_path):
        with pytest.raises(UserError, match=f"is in use by genrun process {os.getpid()}"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released on exit
        pass


def test_sigterm_stops_a_whole_sweep(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(40)])
    with FaultServer(work_s=0.1) as server:
        args = openai_args(server, data, tmp_path)[:-1]
        proc = subprocess.Popen([sys.executable, "-m", "genrun", "-m", *args, "backend.concurrency=1,2,3",
                                 f"hydra.sweep.dir={tmp_path / 'sweep'}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not list((tmp_path / "sweep").glob("0_*/answers.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "genrun: terminated" in stderr and "Traceback" not in stderr
    assert not list((tmp_path / "sweep").glob("1_*/answers.jsonl"))  # the next jobs never started
