"""The openai backend against a server of the tests' own that fails in chosen ways."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli, write_jsonl
from genrun.backend.sampling import row_seed
from genrun.testing.fault_server import RETRY_AFTER_S, FaultServer

KINDS = ["ok"] * 4 + ["rate", "flaky", "slow", "drop", "broken", "ok"]


def rows(n: int) -> list[dict]:
    prompts = [f"{KINDS[i % len(KINDS)]} {i}" for i in range(n)]
    prompts[17] = "poison 17"
    return [{"prompt": p} for p in prompts]


def openai_args(server: FaultServer, data: Path, out: Path, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake", "backend.concurrency=8",
            "backend.retries=3", "backend.base_delay=0.1", "backend.timeout=0.75", "dataset=default",
            f"dataset.path={data}", f"hydra.run.dir={out}", *extra]


def test_300_rows_with_failures_end_with_one_record_each(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", rows(300))
    out = tmp_path / "run"
    with FaultServer() as server:
        result = run_cli(*openai_args(server, data, out))
    assert result.returncode == 1, result.stderr  # some rows failed for good
    records = {r["index"]: r for r in read_jsonl(out / "answers.jsonl")}
    assert len(read_jsonl(out / "answers.jsonl")) == 300 and sorted(records) == list(range(300))
    for record in records.values():
        prompt = record["prompt"]
        if prompt.startswith(("broken", "poison")):
            assert record["answer"] is None
            assert record["error"].startswith("HTTP 503" if prompt.startswith("broken") else "HTTP 400")
        else:
            assert record["error"] is None and record["answer"] == f"answer to {prompt}", record
            assert record["reasoning"] == "thought about it"  # kept beside the answer, not in it
            assert (record["prompt_tokens"], record["completion_tokens"]) == (7, 3)
    # never more than `concurrency` in flight, and the server was kept busy at that level
    assert server.max_in_flight == 8
    # retries: a 400 is not retried; a 503 is, retries+1 attempts in all
    assert len(server.attempts["poison 17"]) == 1
    assert all(len(server.attempts[p]) == 4 for p in server.attempts if p.startswith("broken"))
    # Retry-After is honoured
    for prompt, times in server.attempts.items():
        if prompt.startswith("rate"):
            assert len(times) == 2 and times[1] - times[0] >= RETRY_AFTER_S * 0.95
    metrics = json.loads((out / "metrics.json").read_text())
    broken = sum(1 for r in rows(300) if r["prompt"].startswith(("broken", "poison")))
    assert (metrics["rows"], metrics["failed"]) == (300, broken)
    assert metrics["completion_tokens"] == 3 * (300 - broken)


def test_retries_zero_means_one_attempt(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "flaky 1"}, {"prompt": "ok 2"}])
    with FaultServer() as server:
        result = run_cli(*openai_args(server, data, tmp_path / "run", "backend.retries=0", "backend.base_delay=30"))
    assert result.returncode == 1
    assert len(server.attempts["flaky 1"]) == 1  # and no 30 s sleep after that last attempt
    record = {r["prompt"]: r for r in read_jsonl(tmp_path / "run" / "answers.jsonl")}["flaky 1"]
    assert record["answer"] is None and record["error"].startswith("HTTP 500")


def test_rejected_key_stops_the_run_with_one_line_and_never_shows_the_key(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(50)])
    out = tmp_path / "run"
    secret = "sk-test-SECRET-4242"
    with FaultServer(status_for_all=401) as server:
        result = run_cli(*openai_args(server, data, out, f"backend.api_key={secret}"))
    assert result.returncode == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("genrun: error:")]
    assert len(errors) == 1 and "rejected the API key" in errors[0] and "HTTP 401" in errors[0]
    assert sum(len(t) for t in server.attempts.values()) <= 8  # stopped, not 50 failures
    assert f"Bearer {secret}" in server.auth_headers  # the key was used...
    assert secret not in result.stdout + result.stderr  # ...and never shown or saved
    assert subprocess.run(["grep", "-r", secret, str(out)], capture_output=True).returncode == 1


@pytest.mark.parametrize("how", ["command_line", "environment"])
def test_api_key_never_reaches_the_run_directory(tmp_path: Path, how: str) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 1"}])
    secret = "sk-test-KEY-77"
    with FaultServer() as server:
        extra = [f"backend.api_key={secret}"] if how == "command_line" else []
        env = {"OPENAI_API_KEY": secret} if how == "environment" else {}
        result = run_cli(*openai_args(server, data, tmp_path / "run", *extra), env=env)
    assert result.returncode == 0, result.stderr
    assert server.auth_headers == {f"Bearer {secret}"}
    assert subprocess.run(["grep", "-r", secret, str(tmp_path / "run")], capture_output=True).returncode == 1


def test_body_keys_chat_template_kwargs_and_opting_out(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 1"}])
    with FaultServer() as server:
        assert run_cli(*openai_args(server, data, tmp_path / "a", "+sampling.top_k=20", "+sampling.seed=3")).returncode == 0
        assert run_cli(*openai_args(server, data, tmp_path / "b", "backend.send_chat_template_kwargs=false",
                                    "+backend.extra_body.priority=1")).returncode == 0
    first, second = server.bodies
    assert first["chat_template_kwargs"] == {"enable_thinking": False}
    assert first["top_k"] == 20 and first["temperature"] == 0.7 and first["max_tokens"] == 2048
    assert first["seed"] == row_seed(3, 0)  # the row's own seed, from sampling.seed and its id
    assert "chat_template_kwargs" not in second and second["priority"] == 1


def test_concurrency_below_one_is_a_config_error(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 1"}])
    with FaultServer() as server:
        result = run_cli(*openai_args(server, data, tmp_path / "run", "backend.concurrency=0"), timeout=60)
    assert result.returncode == 2 and "backend.concurrency must be at least 1" in result.stderr


def test_an_openai_run_imports_no_torch_transformers_or_vllm(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok 1"}])
    with FaultServer() as server:
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "genrun", *openai_args(server, data, tmp_path / "run")],
            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "openai" in imported and not imported & {"torch", "transformers", "vllm"}


def test_a_run_whose_rows_all_fail_says_why_last_and_in_its_log(tmp_path: Path) -> None:
    from conftest import free_port

    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"ok {i}"} for i in range(4)])
    out = tmp_path / "run"
    nobody = f"http://127.0.0.1:{free_port()}/v1"  # no server listens there
    result = run_cli("backend=openai", f"backend.base_url={nobody}", "backend.model_name=fake", "backend.retries=0",
                     "dataset=default", f"dataset.path={data}", f"hydra.run.dir={out}")
    assert result.returncode == 1
    said = result.stdout.strip().splitlines()  # stderr has the progress bar, drawn before
    assert "4 rows, 0 answered, 4 failed" in said[-2] and "4 of the 4 failed rows: connection error" in said[-1]
    assert "4 of the 4 failed rows: connection error" in (out / "genrun.log").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["commonest_error"]["rows"] == 4 and metrics["commonest_error"]["error"].startswith("connection error")
