"""The reference's Python API, fed the seed page's parameter.yaml shape."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

import genrun
import genrun.api
from genrun.errors import UserError

pytestmark = pytest.mark.engine  # every test here starts a model engine (see conftest)

PARAMETER_YAML = """
backend: hf
backend_configs:
  vllm:
    model_name_or_path: openbmb/MiniCPM4-8B
    gpu_ids: "2,3"
    gpu_memory_utilization: 0.9
    dtype: auto
    trust_remote_code: true
  openai:
    model_name: MiniCPM4-8B
    base_url: http://localhost:8000/v1
    api_key: "abc"
    concurrency: 8
    retries: 3
    base_delay: 1.0
  hf:
    model_name_or_path: TINY
    gpu_ids: '2,3'
    trust_remote_code: true
    batch_size: 8
sampling_params:
  temperature: 0.7
  top_p: 0.8
  max_tokens: 2048
extra_params:
  chat_template_kwargs:
    enable_thinking: false
system_prompt: ""
image_tag: null
"""


@pytest.fixture
def page(tiny_model: str) -> dict:
    import yaml

    params = yaml.safe_load(PARAMETER_YAML.replace("TINY", tiny_model))
    params["sampling_params"]["max_tokens"] = 8  # noise from a random model; keep it short
    return params


def test_page_parameters_verbatim_and_all_prompt_shapes(page: dict) -> None:
    genrun.generation_init(page["backend_configs"], page["sampling_params"], page["extra_params"], backend=page["backend"])
    prompts = [
        "What is the capital of France?",
        {"role": "user", "content": "How many legs does a spider have?"},
        {"content": {"text": "Why is the sky blue?"}},
        {"text": "Name a prime number."},
    ]
    result = asyncio.run(genrun.generate(prompts, system_prompt=page["system_prompt"]))
    assert list(result) == ["ans_ls", "errors"] and result["errors"] == [None] * 4
    assert len(result["ans_ls"]) == 4 and all(isinstance(a, str) for a in result["ans_ls"])

    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "How are you?"}]
    one = asyncio.run(genrun.multiturn_generate(turns, system_prompt="Be brief."))
    assert list(one) == ["ans_ls", "errors"] and len(one["ans_ls"]) == 1 and isinstance(one["ans_ls"][0], str)
    genrun.vllm_shutdown()  # harmless on another backend


def test_answers_keep_input_order_and_empty_prompts_fail_alone(page: dict) -> None:
    page["sampling_params"] = {"temperature": 0, "max_tokens": 8}
    genrun.generation_init(page["backend_configs"], page["sampling_params"], backend="hf")
    prompts = ["first question", "second one, which is rather longer than the first", "third"]
    together = asyncio.run(genrun.generate(prompts))["ans_ls"]
    alone = [asyncio.run(genrun.generate([p]))["ans_ls"][0] for p in prompts]
    assert together == alone
    with_empty = asyncio.run(genrun.generate(["first question", "   ", "third"]))
    # the reference's "<error>", so a pipeline's next step still gets strings; the reason beside it
    assert with_empty["ans_ls"][1] == "<error>" and with_empty["errors"] == [None, "prompt 1: empty prompt", None]
    assert with_empty["ans_ls"][0] == together[0] and with_empty["ans_ls"][2] == together[2]


def test_init_again_frees_the_previous_backend(page: dict) -> None:
    genrun.generation_init(page["backend_configs"], page["sampling_params"], backend="hf")
    first = weakref.ref(genrun.api.current().backend.model)
    genrun.generation_init(page["backend_configs"], page["sampling_params"], backend="hf")
    gc.collect()
    assert first() is None


def test_bad_calls_name_the_problem(page: dict) -> None:
    with pytest.raises(UserError, match="backend='tgi' is unknown"):
        genrun.generation_init(page["backend_configs"], {}, backend="tgi")
    bad = {"hf": {**page["backend_configs"]["hf"], "batchsize": 4}}
    with pytest.raises(UserError, match="backend_configs.hf.batchsize"):
        genrun.generation_init(bad, {}, backend="hf")
    with pytest.raises(UserError, match="sampling.frequency_penalty"):
        genrun.generation_init(page["backend_configs"], {"frequency_penalty": 1.0}, backend="hf")
