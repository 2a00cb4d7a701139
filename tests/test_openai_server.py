"""The openai backend against vLLM's real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import genrun
from conftest import read_jsonl, run_cli, write_jsonl
from genrun.backend.openai import OpenAIBackend
from genrun.prompt.messages import prompt_messages

pytestmark = pytest.mark.engine  # every test here starts a model engine (see conftest)


def test_cli_run_against_a_vllm_server(tmp_path: Path, vllm_server: str) -> None:
    out = tmp_path / "run"
    result = run_cli("backend=openai", f"backend.base_url={vllm_server}", "backend.model_name=tiny",
                     "dataset=demo_qa", "dataset.limit=12", "sampling.max_tokens=8", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Event loop is closed" not in result.stderr and "Traceback" not in result.stderr
    records = read_jsonl(out / "answers.jsonl")
    assert sorted(r["index"] for r in records) == list(range(12))
    for record in records:
        assert isinstance(record["answer"], str) and record["error"] is None
        assert record["prompt_tokens"] > 0 and 0 < record["completion_tokens"] <= 8
        assert record["finish_reason"] in {"stop", "length"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completion_tokens"] == sum(r["completion_tokens"] for r in records)


def test_chat_template_kwargs_reach_the_servers_template(vllm_server: str) -> None:
    def prompt_tokens(extra: dict, **settings) -> int:
        backend = OpenAIBackend("tiny", sampling={"temperature": 0, "max_tokens": 2}, extra=extra,
                                base_url=vllm_server, **settings)

        async def ask():
            try:
                return await backend.generate_batch([prompt_messages("Hello there")])
            finally:
                await backend.aclose()

        return asyncio.run(ask())[0].prompt_tokens

    off = prompt_tokens({"chat_template_kwargs": {"enable_thinking": False}})
    on = prompt_tokens({"chat_template_kwargs": {"enable_thinking": True}})
    assert off > on  # enable_thinking=false pre-fills an empty think block
    # not sent at all: the template's own default (thinking on) applies
    assert prompt_tokens({"chat_template_kwargs": {"enable_thinking": False}}, send_chat_template_kwargs=False) == on


def test_api_generate_on_the_openai_backend(vllm_server: str) -> None:
    genrun.generation_init({"openai": {"model_name": "tiny", "base_url": vllm_server, "api_key": "abc",
                                       "concurrency": 8, "retries": 3, "base_delay": 1.0}},
                           {"temperature": 0, "max_tokens": 6}, {"chat_template_kwargs": {"enable_thinking": False}},
                           backend="openai")
    first = asyncio.run(genrun.generate(["Hello", {"role": "user", "content": "Why?"}], system_prompt="Be brief."))
    second = asyncio.run(genrun.generate(["Hello", {"role": "user", "content": "Why?"}], system_prompt="Be brief."))
    assert first == second and len(first["ans_ls"]) == 2 and all(isinstance(a, str) for a in first["ans_ls"])
    one = asyncio.run(genrun.multiturn_generate([{"role": "user", "content": "Hi"}]))
    assert len(one["ans_ls"]) == 1


def test_structured_outputs_reach_vllms_server(tmp_path: Path, vllm_server: str) -> None:
    """choice goes in the body as vLLM's `structured_outputs`; a JSON schema as the standard
    response_format, and answers are scored json_valid."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i}: say something"}) + "\n" for i in range(8)))
    common = ("backend=openai", f"backend.base_url={vllm_server}", "backend.model_name=tiny", "dataset=default",
              f"dataset.path={data}", "sampling.temperature=1.0", "sampling.max_tokens=24")
    result = run_cli(*common, "+sampling.structured_outputs={choice: [yes, no]}", f"hydra.run.dir={tmp_path / 'c'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {r["answer"] for r in read_jsonl(tmp_path / "c" / "answers.jsonl")} <= {"yes", "no"}
    schema = "{json: {type: object, properties: {n: {type: integer}}, required: [n]}}"
    result = run_cli(*common, f"+sampling.structured_outputs={schema}", "sampling.max_tokens=48",
                     f"hydra.run.dir={tmp_path / 'j'}")
    assert result.returncode == 0, result.stderr[-3000:]
    for record in read_jsonl(tmp_path / "j" / "answers.jsonl"):
        if record["finish_reason"] == "stop":  # a cut answer cannot be whole JSON
            assert isinstance(json.loads(record["answer"])["n"], int) and record["scores"]["json_valid"] == 1.0
    assert "json_valid" in json.loads((tmp_path / "j" / "metrics.json").read_text())["scores"]


def test_a_prompt_the_server_rejects_fails_alone_among_100_rows(tmp_path: Path, vllm_server: str) -> None:
    rows = [{"id": f"r{i}", "prompt": "word " * 2000 if i == 61 else f"question {i}"} for i in range(100)]
    out = tmp_path / "run"
    result = run_cli("backend=openai", f"backend.base_url={vllm_server}", "backend.model_name=tiny",
                     "sampling.max_tokens=2", "dataset=default", f"dataset.path={write_jsonl(tmp_path / 'd.jsonl', rows)}",
                     "dataset.fields.id=id", f"hydra.run.dir={out}")
    assert result.returncode == 1, result.stderr[-3000:]  # some rows failed: the run still finished
    records = read_jsonl(out / "answers.jsonl")
    assert len(records) == 100 and [r["id"] for r in records if r["error"] is not None] == ["r61"]
    assert "HTTP 400" in next(r["error"] for r in records if r["id"] == "r61")

