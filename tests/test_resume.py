"""A run killed with SIGKILL at any point and resumed ends with exactly one record per row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli, write_jsonl

ROWS = 150


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    return write_jsonl(folder / "d.jsonl", [{"prompt": f"Question number {i}?", "answer": str(i)} for i in range(ROWS)])


def args(data: Path, out: Path) -> list[str]:
    # batch_size 1: rows land one by one, so a kill can fall anywhere
    return ["experiment=tiny", "dataset=default", f"dataset.path={data}", "dataset.fields.reference=answer",
            "backend.batch_size=1", "sampling.max_tokens=8", f"hydra.run.dir={out}"]


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.engine
@pytest.mark.parametrize("kill_after", [1, 40, 120])
def test_sigkill_then_resume_gives_one_record_per_row(tmp_path: Path, data: Path, kill_after: int) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "genrun", *args(data, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while count_lines(out / "answers.jsonl") < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["index"]: r["answer"] for r in read_jsonl_tolerant(out / "answers.jsonl")}
    assert kill_after <= len(before) < ROWS, "the kill should land mid-run"

    result = run_cli(*args(data, out)[:-1], f"resume={out}")
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out / "answers.jsonl")
    indices = [r["index"] for r in records]
    assert sorted(indices) == list(range(ROWS))  # none lost, none twice
    after = {r["index"]: r["answer"] for r in records}
    assert all(after[i] == answer for i, answer in before.items())  # earlier work kept, not redone
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == ROWS and metrics["rows_this_run"] == ROWS - len(before)


def read_jsonl_tolerant(path: Path) -> list[dict]:
    from genrun.rundir.journal import read_records

    return list(read_records(path))


@pytest.mark.engine
def test_resume_refuses_a_config_that_changes_answers(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "run"
    assert run_cli(*args(data, out), "dataset.limit=3").returncode == 0
    result = run_cli(*args(data, out), "dataset.limit=3", "sampling.temperature=0.1", "system_prompt=Be brief.")
    assert result.returncode == 2
    assert "cannot resume" in result.stderr and "sampling.temperature: 0.7 then, 0.1 now" in result.stderr
    assert "system_prompt: '' then, 'Be brief.' now" in result.stderr
    # Operational keys may change: a larger limit and batch size just answer the new rows.
    more = run_cli(*args(data, out), "dataset.limit=5", "backend.batch_size=4")
    assert more.returncode == 0, more.stderr
    assert sorted(r["index"] for r in read_jsonl(out / "answers.jsonl")) == [0, 1, 2, 3, 4]


@pytest.mark.engine
def test_resume_alone_reuses_the_runs_own_command_line(tmp_path: Path, data: Path) -> None:
    out = tmp_path / "run"
    assert run_cli(*args(data, out), "dataset.limit=3").returncode == 0
    (out / "answers.jsonl").write_text("".join(line + "\n" for line in (out / "answers.jsonl").read_text().splitlines()[:1]))
    result = run_cli(f"resume={out}")  # no dataset.path, no experiment: the run's own
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(r["index"] for r in read_jsonl(out / "answers.jsonl")) == [0, 1, 2]
    assert json.loads((out / "metrics.json").read_text())["rows_this_run"] == 2
    # with other settings the command line given is the run's, checked as ever
    changed = run_cli(*args(data, out), "dataset.limit=3", "sampling.max_tokens=9")
    assert changed.returncode == 2 and "sampling.max_tokens: 8 then, 9 now" in changed.stderr


@pytest.mark.engine
def test_retry_errors_redoes_only_failed_rows(tmp_path: Path) -> None:
    rows = [{"prompt": "Hello"}, {"prompt": ""}, {"prompt": "Bye"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "run"
    base = ["experiment=tiny", "dataset=default", f"dataset.path={path}", f"hydra.run.dir={out}"]
    assert run_cli(*base).returncode == 1
    first = read_jsonl(out / "answers.jsonl")
    write_jsonl(path, [rows[0], {"prompt": "Now filled in"}, rows[2]])  # the user fixes the data
    refused = run_cli(*base)  # a changed dataset is refused unless the user says it is fine
    assert refused.returncode == 2 and "changed since its answers were made" in refused.stderr
    base.append("resume_allow_changed_dataset=true")
    assert run_cli(*base).returncode == 1  # plain resume: nothing to do, the failure stays
    assert read_jsonl(out / "answers.jsonl") == first
    result = run_cli(*base, "retry_errors=true")
    assert result.returncode == 0, result.stderr
    records = {r["index"]: r for r in read_jsonl(out / "answers.jsonl")}
    assert sorted(records) == [0, 1, 2] and records[1]["error"] is None
    assert records[0]["answer"] == {r["index"]: r for r in first}[0]["answer"]  # kept, not redone
