"""The real `genrun` command in a subprocess: runs, sweeps, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli, write_jsonl

DEMO_ROWS = sum(1 for _ in (Path(__file__).parents[1] / "src/genrun/data/demo_qa.jsonl").open())


@pytest.mark.engine
def test_demo_run_writes_one_record_per_row(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("experiment=tiny", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out / "answers.jsonl")
    assert sorted(r["index"] for r in records) == list(range(DEMO_ROWS))
    first = records[0]
    assert {"id", "index", "prompt", "answer", "error", "reference", "finish_reason",
            "prompt_tokens", "completion_tokens", "latency_s", "scores"} <= set(first)
    assert first["id"].startswith("qa-") and isinstance(first["answer"], str) and first["error"] is None
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["rows"], metrics["answered"], metrics["failed"]) == (DEMO_ROWS, DEMO_ROWS, 0)
    assert metrics["rows_per_s"] > 0 and metrics["completion_tokens"] > 0
    assert set(metrics["scores"]) == {"exact_match", "f1", "accuracy"}
    run = json.loads((out / "run.json").read_text())
    assert run["packages"]["transformers"] and run["model"]["chat_template_sha256"]
    assert run["dataset"]["fingerprint"] and run["finished_at"]
    assert (out / ".hydra" / "config.yaml").exists() and (out / "genrun.log").exists()
    assert str(out) in result.stdout
    assert "row/s" in result.stderr  # the progress bar


@pytest.mark.engine
def test_multirun_writes_one_job_directory_per_value(tmp_path: Path) -> None:
    result = run_cli("experiment=tiny", "-m", "sampling.temperature=0.2,0.9", "dataset.limit=4",
                     f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    jobs = sorted(p.parent for p in tmp_path.glob("*/answers.jsonl"))
    assert [j.name for j in jobs] == ["0_dataset.limit=4,experiment=tiny,sampling.temperature=0.2",
                                      "1_dataset.limit=4,experiment=tiny,sampling.temperature=0.9"]
    for job in jobs:
        assert len(read_jsonl(job / "answers.jsonl")) == 4


@pytest.mark.engine
def test_empty_prompt_fails_that_row_only(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Hello"}, {"prompt": "  "}, {"prompt": "Bye"}])
    out = tmp_path / "run"
    result = run_cli("experiment=tiny", "dataset=default", f"dataset.path={data}", f"hydra.run.dir={out}")
    assert result.returncode == 1
    records = {r["index"]: r for r in read_jsonl(out / "answers.jsonl")}
    assert records[1]["answer"] is None and "empty prompt" in records[1]["error"]
    assert records[0]["error"] is None and records[2]["error"] is None
    assert json.loads((out / "metrics.json").read_text())["failed"] == 1


@pytest.mark.parametrize("args,message", [
    (["dataset.path=/no/such/data.jsonl"], "dataset.path='/no/such/data.jsonl': no such file or folder"),
    (["dataset.fields.prompt=query"], "dataset.fields.prompt='query' is not a column"),
    (["backend.model_name_or_path=/no/such/model"], "backend.model_name_or_path='/no/such/model': no such folder"),
    (["dataset=default"], "dataset.path has no value"),
    (["mode=multiturn"], "dataset.fields.messages is not set"),
])
def test_user_mistakes_give_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("experiment=tiny", *args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [ln for ln in result.stderr.splitlines() if ln.startswith("genrun: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr


def test_hydra_full_error_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("experiment=tiny", "dataset.path=/no/such/data.jsonl", f"hydra.run.dir={tmp_path}",
                     env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["backend=tgi"], "Could not find 'backend/tgi' (options: hf, openai, vllm)"),
    (["sampling.temperature=hot"], "sampling.temperature=hot: Value 'hot' of type 'str' could not be converted"),
    (["mode=bogus"], "expected one of [generate, multimodal, multiturn, choice, perplexity]"),
    (["dataset.limit=abc"], "dataset.limit=abc"),
])
def test_hydra_errors_before_the_job_are_one_line_too(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("experiment=tiny", *args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith("genrun: error:") and message in result.stderr, result.stderr


@pytest.mark.engine
def test_multiturn_demo_and_malformed_turns(tmp_path: Path) -> None:
    out = tmp_path / "chat"
    result = run_cli("experiment=tiny", "mode=multiturn", "dataset=demo_chat", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out / "answers.jsonl")
    assert len(records) == 8 and all(isinstance(r["answer"], str) and r["messages"] for r in records)

    rows = [
        {"turns": [{"role": "user", "content": "Hi"}]},
        {"turns": [{"role": "wizard", "content": "Hi"}]},
        {"turns": [{"role": "user"}]},
        {"turns": "just a string"},
        {"turns": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"},
                   {"role": "user", "content": "Bye"}]},
    ]
    data = write_jsonl(tmp_path / "chats.jsonl", rows)
    out = tmp_path / "bad"
    result = run_cli("experiment=tiny", "mode=multiturn", "dataset=default", f"dataset.path={data}",
                     "dataset.fields.messages=turns", f"hydra.run.dir={out}")
    assert result.returncode == 1
    errors = {r["index"]: r["error"] for r in read_jsonl(out / "answers.jsonl")}
    assert errors[0] is None and errors[4] is None
    assert "unknown role 'wizard'" in errors[1] and "has no content" in errors[2] and "must be a list" in errors[3]
