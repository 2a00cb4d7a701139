"""The real transformers backend on the tiny model."""

from __future__ import annotations

import asyncio

import pytest

from genrun.backend.hf import HFBackend, generate_kwargs
from genrun.errors import UserError
from genrun.prompt.messages import prompt_messages

pytestmark = pytest.mark.engine  # every test here starts a model engine (see conftest)

PROMPTS = [
    "Hi",
    "What is the capital of France? Please answer in one word, and then explain why.",
    "Why?",
    "The quick brown fox jumps over the lazy dog and then runs away into the forest",
    "x",
    "How many legs does a spider have?",
]


def answers(backend: HFBackend, prompts: list[str]) -> list:
    return asyncio.run(backend.generate_batch([prompt_messages(p) for p in prompts]))


def test_batched_greedy_equals_one_at_a_time(tiny_model: str) -> None:
    backend = HFBackend(tiny_model, sampling={"temperature": 0, "max_tokens": 24}, batch_size=len(PROMPTS))
    batched = answers(backend, PROMPTS)
    single = [answers(backend, [p])[0] for p in PROMPTS]
    assert [c.answer for c in batched] == [c.answer for c in single]
    assert [c.prompt_tokens for c in batched] == [c.prompt_tokens for c in single]
    # prompts of different lengths were padded differently, yet answers did not leak prompt text
    assert len({c.prompt_tokens for c in batched}) > 3
    for c in batched:
        assert c.finish_reason in {"stop", "length"}
        assert 0 < c.completion_tokens <= 24


def test_max_tokens_bounds_the_answer(tiny_model: str) -> None:
    backend = HFBackend(tiny_model, sampling={"temperature": 0, "max_tokens": 5})
    (completion,) = answers(backend, ["Tell me a long story"])
    assert completion.completion_tokens <= 5
    assert completion.finish_reason == "length" or completion.completion_tokens < 5


def test_seeded_sampling_is_reproducible_and_sampling_varies(tiny_model: str) -> None:
    sampling = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 16, "seed": 7}
    first = [c.answer for c in answers(HFBackend(tiny_model, sampling=sampling), PROMPTS)]
    again = [c.answer for c in answers(HFBackend(tiny_model, sampling=sampling), PROMPTS)]
    other = [c.answer for c in answers(HFBackend(tiny_model, sampling={**sampling, "seed": 8}), PROMPTS)]
    assert first == again
    assert first != other


def test_chat_template_kwargs_reach_the_template(tiny_model: str) -> None:
    off = HFBackend(tiny_model, sampling={"temperature": 0, "max_tokens": 2},
                    extra={"chat_template_kwargs": {"enable_thinking": False}})
    on = HFBackend(tiny_model, sampling={"temperature": 0, "max_tokens": 2},
                   extra={"chat_template_kwargs": {"enable_thinking": True}})
    # enable_thinking=false pre-fills an empty <think></think> block: more prompt tokens
    assert answers(off, ["Hi"])[0].prompt_tokens > answers(on, ["Hi"])[0].prompt_tokens


def test_sampling_maps_to_transformers_arguments() -> None:
    greedy = generate_kwargs({"temperature": 0, "top_p": 0.8, "max_tokens": 10})
    assert greedy["do_sample"] is False and greedy["max_new_tokens"] == 10
    sampled = generate_kwargs({"temperature": 0.7, "top_p": 0.8, "max_tokens": 10, "top_k": 20,
                               "stop": "END", "repetition_penalty": 1.1, "min_tokens": 2})
    assert sampled == {"max_new_tokens": 10, "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                       "stop_strings": ["END"], "repetition_penalty": 1.1, "min_new_tokens": 2}
    assert "max_tokens" not in sampled


@pytest.mark.parametrize("sampling,extra,key", [
    ({"presence_penalty": 0.5}, {}, "sampling.presence_penalty"),
    ({}, {"chat_template_kwarg": {}}, "extra.chat_template_kwarg"),
])
def test_unknown_keys_are_named_before_the_model_loads(sampling, extra, key) -> None:
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        HFBackend("/nonexistent/model", sampling=sampling, extra=extra)


def test_missing_model_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        HFBackend(str(tmp_path / "nope"), sampling={})


def test_structured_outputs_hold_through_xgrammar(tiny_model: str) -> None:
    prompts = [prompt_messages(f"Question {i}: is it so?") for i in range(8)]
    backend = HFBackend(tiny_model, sampling={"temperature": 1.0, "max_tokens": 8, "seed": 1,
                                              "structured_outputs": {"choice": ["yes", "no"]}}, batch_size=4)
    answers = [c.answer for c in asyncio.run(backend.generate_batch(prompts))]
    assert set(answers) <= {"yes", "no"} and len(answers) == 8, answers
    backend = HFBackend(tiny_model, sampling={"temperature": 1.0, "max_tokens": 8, "seed": 1,
                                              "structured_outputs": {"regex": "[0-9]{3}"}}, batch_size=4)
    assert all(len(c.answer) == 3 and c.answer.isdigit() for c in asyncio.run(backend.generate_batch(prompts)))
    with pytest.raises(UserError, match="must name one of json, regex, choice, grammar"):
        HFBackend(tiny_model, sampling={"structured_outputs": {"choices": ["a"]}})


def test_n_samples_per_row_with_the_batch_held_to_batch_size_sequences(tiny_model: str) -> None:
    prompts = [prompt_messages(f"Question {i}: say something") for i in range(3)]
    backend = HFBackend(tiny_model, sampling={"temperature": 1.0, "max_tokens": 8, "seed": 1, "n": 3}, batch_size=6)
    assert backend.batch_size == 2  # 2 prompts x 3 samples: 6 sequences a generate() call
    completions = asyncio.run(backend.generate_batch(prompts))
    assert all(len(c.answers) == 3 and c.answer == c.answers[0] and len(c.finish_reasons) == 3 for c in completions)
    assert any(len(set(c.answers)) > 1 for c in completions)  # sampled, not copied
    greedy = HFBackend(tiny_model, sampling={"temperature": 0, "max_tokens": 8, "n": 2}, batch_size=4)
    assert all(len(set(c.answers)) == 1 for c in asyncio.run(greedy.generate_batch(prompts)))


def test_two_hf_engines_answer_as_one(tmp_path, tiny_model: str) -> None:
    """backend.data_parallel_size=2: two processes each with the model; greedy answers are the
    ones a single engine gives, row by row, and both engines took rows."""
    import json

    from conftest import read_jsonl, run_cli, write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"Question {i}: say something"} for i in range(48)])
    common = ["backend=hf", f"backend.model_name_or_path={tiny_model}", "backend.dtype=float32", "backend.batch_size=4",
              "sampling=greedy", "sampling.max_tokens=6", "dataset=default", f"dataset.path={data}"]
    one = run_cli(*common, f"hydra.run.dir={tmp_path / 'one'}")
    two = run_cli(*common, "+backend.data_parallel_size=2", f"hydra.run.dir={tmp_path / 'two'}")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]

    def answers(run: str) -> dict:
        return {r["index"]: r["answer"] for r in read_jsonl(tmp_path / run / "answers.jsonl")}

    assert answers("two") == answers("one") and len(answers("two")) == 48
    assert json.loads((tmp_path / "two" / "run.json").read_text())["model"]["engines"] == 2
    engines = json.loads((tmp_path / "two" / "metrics.json").read_text())["engines"]
    assert sorted(engines) == ["engine0", "engine1"] and sum(e["rows"] for e in engines.values()) == 48
    assert min(e["rows"] for e in engines.values()) > 0 and all(e["lost"] == 0 for e in engines.values())
    assert "engine0=" in two.stderr  # the progress line counts each engine's rows
