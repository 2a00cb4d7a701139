"""The openai backend against vLLM's real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import genrun
from conftest import read_jsonl, run_cli
from genrun.backend.openai import OpenAIBackend
from genrun.prompts import prompt_messages


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
