"""The real vLLM engine (the CPU build here) on the tiny model: one engine for the session."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import genrun
import genrun.api
from conftest import (
    VLLM_CPU,
    descendants_named,
    engine_processes,
    read_jsonl,
    run_cli,
    still_running,
    wait_for_lines,
    write_jsonl,
)
from genrun.backend.vllm import VLLMBackend
from genrun.errors import UserError
from genrun.prompt.messages import prompt_messages

pytestmark = pytest.mark.engine  # every test here starts a model engine (see conftest)


@pytest.fixture(scope="module")
def engine(tiny_model: str):
    genrun.generation_init({"vllm": {"model_name_or_path": tiny_model, **VLLM_CPU}},
                           {"temperature": 0, "max_tokens": 12}, {"chat_template_kwargs": {"enable_thinking": False}},
                           backend="vllm")
    yield genrun.api.current().backend
    genrun.vllm_shutdown()


def test_generate_and_multiturn_through_the_api(engine: VLLMBackend) -> None:
    prompts = ["What is the capital of France?", {"role": "user", "content": "Hi"}, {"text": "Why?"}]
    answers = asyncio.run(genrun.generate(prompts, system_prompt="Be brief."))["ans_ls"]
    assert len(answers) == 3 and all(isinstance(a, str) and a for a in answers)
    again = asyncio.run(genrun.generate(prompts, system_prompt="Be brief."))["ans_ls"]
    assert again == answers  # greedy
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "Bye"}]
    assert len(asyncio.run(genrun.multiturn_generate(turns))["ans_ls"]) == 1


def test_records_and_chat_template_kwargs_reach_the_template(engine: VLLMBackend) -> None:
    conversations = [prompt_messages("Hello there")]
    engine.chat_template_kwargs = {"enable_thinking": False}
    off = asyncio.run(engine.generate_batch(conversations))[0]
    engine.chat_template_kwargs = {"enable_thinking": True}
    on = asyncio.run(engine.generate_batch(conversations))[0]
    engine.chat_template_kwargs = {"enable_thinking": False}
    assert off.prompt_tokens > on.prompt_tokens  # the pre-filled empty <think></think> block
    assert off.finish_reason in {"stop", "length"} and 0 < off.completion_tokens <= 12


def test_a_prompt_too_long_fails_alone(engine: VLLMBackend) -> None:
    conversations = [prompt_messages("short"), prompt_messages("word " * 2000), prompt_messages("also short")]
    completions = asyncio.run(engine.generate_batch(conversations))
    assert completions[1].answer is None and completions[1].error
    assert completions[0].answer is not None and completions[2].answer is not None


def test_an_over_long_prompt_among_100_rows_fails_alone_and_the_engine_goes_on(engine: VLLMBackend, tiny_model: str,
                                                                               tmp_path: Path) -> None:
    """Ray Data LLM's failure mode (#59194): one prompt past max_model_len fails its whole
    batch. In genrun it is that row's error, in a full run through the engine."""
    from genrun.engine.job import run
    from genrun.settings import compose, load

    rows = [{"id": f"r{i}", "prompt": "word " * 2000 if i == 37 else f"question {i}"} for i in range(100)]
    settings = load(compose(["backend=vllm", f"backend.model_name_or_path={tiny_model}", "dataset=default",
                             f"dataset.path={write_jsonl(tmp_path / 'd.jsonl', rows)}", "dataset.fields.id=id"]))
    metrics = run(settings, tmp_path / "run", backend=engine)
    assert (metrics["rows"], metrics["answered"], metrics["failed"]) == (100, 99, 1)
    failed = [r for r in read_jsonl(tmp_path / "run" / "answers.jsonl") if r["error"] is not None]
    assert [r["id"] for r in failed] == ["r37"] and "512" in failed[0]["error"]  # the limit is named


def test_many_batches_stream_in_order_and_a_cancelled_batch_leaves_the_engine(engine: VLLMBackend) -> None:
    prompts = [f"Question {i}: say something" for i in range(3 * engine.batch_size + 5)]
    answers = asyncio.run(genrun.generate(prompts))["ans_ls"]
    assert len(answers) == len(prompts) and all(isinstance(a, str) for a in answers)
    assert asyncio.run(genrun.generate(prompts[-3:]))["ans_ls"] == answers[-3:]  # each row keeps its answer

    async def cancel_mid_batch() -> None:
        task = asyncio.create_task(engine.generate_batch([prompt_messages(p) for p in prompts[:8]]))
        await asyncio.sleep(0)  # rows queued, at most one engine step taken: 12 tokens need 12
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()

    asyncio.run(cancel_mid_batch())
    assert not engine.llm.llm_engine.has_unfinished_requests()  # aborted, not left running
    assert asyncio.run(engine.generate_batch([prompt_messages("Hello")]))[0].answer is not None


def test_structured_choice_holds_on_a_random_weight_model(engine: VLLMBackend) -> None:
    from genrun.backend.vllm import import_vllm, sampling_params

    greedy = engine.sampling_params
    engine.sampling_params = sampling_params(import_vllm(), {"temperature": 1.0, "max_tokens": 8, "seed": 3,
                                                             "structured_outputs": {"choice": ["yes", "no"]}})
    try:
        answers = [c.answer for c in asyncio.run(engine.generate_batch(
            [prompt_messages(f"Question {i}: is it so?") for i in range(16)]))]
    finally:
        engine.sampling_params = greedy
    assert set(answers) <= {"yes", "no"} and len(answers) == 16, answers


def test_n_samples_per_row_through_sampling_params(engine: VLLMBackend) -> None:
    from genrun.backend.vllm import import_vllm, sampling_params

    greedy = engine.sampling_params
    engine.sampling_params = sampling_params(import_vllm(), {"temperature": 1.0, "max_tokens": 8, "seed": 5, "n": 3})
    try:
        completions = asyncio.run(engine.generate_batch([prompt_messages(f"Question {i}") for i in range(4)]))
    finally:
        engine.sampling_params = greedy
    assert all(len(c.answers) == 3 and c.answer == c.answers[0] for c in completions)
    assert all(3 <= c.completion_tokens <= 3 * 8 for c in completions)  # the samples' tokens, summed


def test_log_likelihoods_of_choices_and_whole_texts_match_transformers(engine: VLLMBackend, tiny_model: str) -> None:
    # mode=choice and mode=perplexity on vllm: prompt_logprobs over token ids, the split and
    # the rolling windows as hf makes them (tests/test_base_models.py checks hf itself)
    import transformers

    from test_base_models import ARC_ROWS, direct_loglikelihood, direct_rolling_loglikelihood

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model, dtype="float32").eval()
    rows = [(f"Question: {r['question']}\nAnswer:", [" " + c for c in r["choices"]["text"]]) for r in ARC_ROWS]
    for (context, continuations), completion in zip(rows, asyncio.run(engine.loglikelihood_batch(rows))):
        expected = [direct_loglikelihood(model, tokenizer, context, c) for c in continuations]
        assert [s.tokens for s in completion.loglikelihoods] == [e[1] for e in expected]
        assert max(abs(s.logprob - e[0]) for s, e in zip(completion.loglikelihoods, expected)) < 1e-3
    texts = ["Hello", " ".join(f"word{i} and more, said the river to the sea." for i in range(60))]
    window = engine._window()
    assert len(tokenizer.encode(texts[1])) > 2 * window  # several windows
    for text, completion in zip(texts, asyncio.run(engine.loglikelihood_rolling_batch(texts))):
        (scored,) = completion.loglikelihoods
        assert scored.tokens == len(tokenizer.encode(text))
        assert scored.logprob == pytest.approx(direct_rolling_loglikelihood(model, tokenizer, text, window), abs=5e-3)


def test_unknown_keys_are_named_before_the_engine_starts(tiny_model: str) -> None:
    with pytest.raises(UserError, match="backend.max_model_length is not a vLLM engine argument"):
        VLLMBackend(tiny_model, sampling={}, max_model_length=512)
    with pytest.raises(UserError, match="sampling.top_kk is not supported by backend=vllm"):
        VLLMBackend(tiny_model, sampling={"top_kk": 3})
    with pytest.raises(UserError, match=r"sampling.top_p=7.0 is out of range"):
        VLLMBackend(tiny_model, sampling={"top_p": 7.0})


def test_shutdown_frees_the_engine_and_another_model_starts(engine: VLLMBackend, tmp_path: Path) -> None:
    from genrun.assets.tiny_model import build_tiny_model

    first = engine_processes()
    assert first, "the engine runs in its own process"
    genrun.vllm_shutdown()
    assert genrun.api.current().backend is None and not (engine_processes() & first)
    second = str(build_tiny_model(tmp_path / "second", seed=1))
    genrun.generation_init({"vllm": {"model_name_or_path": second, **VLLM_CPU}},
                           {"temperature": 0, "max_tokens": 4}, backend="vllm")
    assert asyncio.run(genrun.generate(["Hello"]))["ans_ls"][0]
    genrun.vllm_shutdown()
    assert not engine_processes()


def vllm_cli_args(model: str) -> list[str]:
    """`genrun backend=vllm` on the CPU with the tiny model."""
    extra = [f"+backend.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in VLLM_CPU.items()
             if k not in ("gpu_memory_utilization", "dtype")]
    return ["backend=vllm", f"backend.model_name_or_path={model}", "backend.gpu_memory_utilization=0.2",
            "backend.dtype=float32", *extra]


def test_cli_run_with_backend_vllm(tmp_path: Path, tiny_model: str) -> None:
    out = tmp_path / "run"
    result = run_cli(*vllm_cli_args(tiny_model), "dataset=demo_qa", "dataset.limit=10", "sampling.max_tokens=8",
                     f"hydra.run.dir={out}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(out / "answers.jsonl")
    assert sorted(r["index"] for r in records) == list(range(10))
    assert all(r["answer"] is not None and r["finish_reason"] and r["completion_tokens"] for r in records)
    assert json.loads((out / "run.json").read_text())["model"]["chat_template_sha256"]


def test_missing_vllm_is_one_clear_line(tmp_path: Path, tiny_model: str) -> None:
    # A folder that shadows vllm with a module that fails to import, as a missing install does.
    (tmp_path / "vllm.py").write_text("raise ImportError('No module named vllm')\n")
    result = run_cli("backend=vllm", f"backend.model_name_or_path={tiny_model}", "dataset=demo_qa",
                     f"hydra.run.dir={tmp_path / 'run'}", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "backend=vllm needs vLLM" in result.stderr and "pip install" in result.stderr


def engine_cores_of(pid: int) -> list:
    return descendants_named(pid, "EngineCore")


def default_sigint() -> None:
    # A shell's background job (CI's, for one) starts with SIGINT ignored: give it back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_killed_engine_stops_the_run_within_seconds_and_resume_finishes_it(tmp_path: Path, tiny_model: str) -> None:
    rows = 600  # enough that the kill, after 64 answers, comes mid-run; the resume answers the rest
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"Question {i}: say something"} for i in range(rows)])
    out = tmp_path / "run"
    args = [*vllm_cli_args(tiny_model), "dataset=default", f"dataset.path={data}", "sampling.max_tokens=16",
            f"hydra.run.dir={out}"]
    proc = subprocess.Popen([sys.executable, "-m", "genrun", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "answers.jsonl").exists() and (out / "answers.jsonl").read_bytes().count(b"\n") >= 64:
            break
        time.sleep(0.02)
    cores = engine_cores_of(proc.pid)
    assert cores, "the engine runs in its own process"
    for core in cores:
        core.kill()  # as the OOM killer would
    killed_at = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - killed_at < 30  # not one failed batch after another, and no hang
    assert proc.returncode == 2 and "Traceback" not in stderr and "never retrieved" not in stderr
    logged = (out / "genrun.log").read_text()
    assert "Traceback" not in logged and "never retrieved" not in logged
    errors = [line for line in stderr.splitlines() if line.startswith("genrun: error:")]
    assert len(errors) == 1 and "the vLLM engine process died" in errors[0] and f"resume={out}" in errors[0]
    before = read_jsonl(out / "answers.jsonl")
    assert 64 <= len(before) < rows
    assert [r["error"] for r in before if r["error"] is not None] == []  # no error rows for the dead engine
    assert json.loads((out / "metrics.json").read_text())["status"] == "error"

    resumed = run_cli(*args, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(r["index"] for r in read_jsonl(out / "answers.jsonl")) == list(range(rows))  # each row once


@pytest.mark.parametrize("signum,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_during_engine_start_ends_genrun_and_its_engine(
        tmp_path: Path, tiny_model: str, signum: int, code: int, word: str) -> None:

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "genrun", *vllm_cli_args(tiny_model), "dataset=demo_qa",
                             f"hydra.run.dir={out}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 120
    cores: list = []
    while not cores and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        cores = engine_cores_of(proc.pid)
    assert cores, "the engine process should be starting"
    time.sleep(2)  # inside vLLM's wait for EngineCore, where vLLM alone ignores both signals
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code and f"genrun: {word}; answers so far are in {out}" in stderr
    assert "Traceback" not in stderr
    time.sleep(1)
    assert not [c for c in cores if still_running(c)]  # no orphaned engine
    assert json.loads((out / "metrics.json").read_text())["status"] == "interrupted"




def test_two_engines_share_a_run_and_one_killed_loses_no_row(tmp_path: Path, tiny_model: str) -> None:
    """backend.data_parallel_size=2: two engines, each in its own process, fed from one queue.
    One EngineCore is killed mid-run: its rows go to the other, and every row is written once."""
    import collections

    rows = 600
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"Question {i}: say something"} for i in range(rows)])
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "genrun", *vllm_cli_args(tiny_model), "+backend.data_parallel_size=2",
                             "dataset=default", f"dataset.path={data}", "sampling.max_tokens=16", f"hydra.run.dir={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lines(out / "answers.jsonl", 64, proc, timeout=400)
        cores = engine_cores_of(proc.pid)
        assert len(cores) == 2, cores  # one engine core per engine process
        cores[0].kill()
        _, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    records = read_jsonl(out / "answers.jsonl")
    assert collections.Counter(r["index"] for r in records) == collections.Counter(range(rows))
    assert all(r["error"] is None and r["answer"] is not None for r in records)
    log = (out / "genrun.log").read_text()
    assert "died" in log and "its rows go to the other engines" in log and "starting it again" in log
    assert json.loads((out / "run.json").read_text())["model"]["engines"] == 2
    engines = json.loads((out / "metrics.json").read_text())["engines"]
    assert sum(e["rows"] for e in engines.values()) == rows and sum(e["lost"] for e in engines.values()) == 1
