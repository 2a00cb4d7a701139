"""One run over several OpenAI-compatible servers (backend.base_url as a list): real servers
on 127.0.0.1 that are killed and brought back mid-run."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import read_jsonl, run_cli, wait_for_lines, write_jsonl
from genrun.testing.fault_server import FaultServer


def questions(tmp_path: Path, n: int) -> Path:
    return write_jsonl(tmp_path / "q.jsonl", [{"id": f"q{i}", "q": f"question {i}"} for i in range(n)])


def args(urls: list[str], data: Path, out: Path, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url=[{','.join(urls)}]", "backend.model_name=m", f"dataset.path={data}",
            "dataset.fields.prompt=q", "dataset.fields.id=id", f"hydra.run.dir={out}", *extra]


def test_rows_are_spread_over_servers_and_counted_per_server(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with FaultServer(work_s=0.02) as a, FaultServer(work_s=0.02) as b:
        result = run_cli(*args([a.url, b.url], questions(tmp_path, 80), out, "backend.concurrency=2"))
        assert result.returncode == 0, result.stderr[-3000:]
        # each server has its own window of 2, and the fewest in flight gets the next row
        assert a.max_in_flight <= 2 and b.max_in_flight <= 2
        assert len(a.attempts) >= 20 and len(b.attempts) >= 20, (len(a.attempts), len(b.attempts))
    records = read_jsonl(out / "answers.jsonl")
    assert sorted(r["index"] for r in records) == list(range(80)) and all(r["error"] is None for r in records)
    servers = json.loads((out / "metrics.json").read_text())["servers"]
    assert servers == {a.url: {"answered": len(a.attempts), "failed": 0, "set_aside": 0},
                       b.url: {"answered": len(b.attempts), "failed": 0, "set_aside": 0}}
    assert json.loads((out / "run.json").read_text())["model"]["base_url"] == [a.url, b.url]
    assert f"127.0.0.1:{a.port}=" in result.stderr  # the progress line counts each server's answers


def test_a_server_killed_mid_run_is_set_aside_and_taken_back(tmp_path: Path) -> None:
    """B is killed, then brought back, then A is killed: the run can only finish if B was
    tried again. Every row is answered, and written, once."""
    out, rows = tmp_path / "run", 240
    journal = out / "answers.jsonl"
    a, b = FaultServer(work_s=0.05).__enter__(), FaultServer(work_s=0.05).__enter__()
    b_again = None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "genrun", *args(
            [a.url, b.url], questions(tmp_path, rows), out, "backend.concurrency=2", "backend.set_aside_s=0.2",
            "backend.retries=10", "backend.base_delay=0.2")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_lines(journal, 40, proc)
        assert a.attempts and b.attempts  # both in use while both are up
        b.kill()
        wait_for_lines(journal, 100, proc)
        before = len(b.attempts)
        b_again = FaultServer(work_s=0.05, port=b.port).__enter__()
        wait_for_lines(journal, 130, proc)
        a.kill()
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-3000:]
    finally:
        for server in (a, b, b_again):
            if server is not None and not server.killed:
                server.kill()
    records = read_jsonl(journal)
    assert collections.Counter(r["index"] for r in records) == collections.Counter(range(rows))  # each row once
    assert all(r["error"] is None and r["answer"] == f"answer to {r['prompt']}" for r in records)
    assert len(b_again.attempts) > 0 and before > 0
    servers = json.loads((out / "metrics.json").read_text())["servers"]
    assert servers[b.url]["set_aside"] >= 1 and servers[a.url]["set_aside"] >= 1
    assert sum(s["answered"] for s in servers.values()) == rows
    log = (out / "genrun.log").read_text()
    # A request in flight when b dies sees the connection lost, a new one sees it refused: which
    # comes first is the machine's timing, and both name a dead server.
    assert re.search(re.escape(b.url) + r" set aside \(connection (refused|lost)\)", log), log[-3000:]
    assert f"{b.url} answers again" in log


def test_server_lists_that_cannot_work_are_one_line(tmp_path: Path) -> None:
    data = questions(tmp_path, 2)
    twice = run_cli(*args(["http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1/"], data, tmp_path / "r1"))
    batch = run_cli(*args(["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"], data, tmp_path / "r2",
                          "backend.batch=true"))
    for result, says in ((twice, "lists the same server twice"), (batch, "backend.batch=true sends the run as one")):
        errors = [line for line in result.stderr.splitlines() if line.startswith("genrun: error:")]
        assert result.returncode == 2 and len(errors) == 1 and says in errors[0], result.stderr[-2000:]
        assert "Traceback" not in result.stderr
