"""Base models: prompts as text (chat_template=false), log-likelihood multiple choice
(mode=choice) and perplexity, on the real tiny model through transformers and vLLM's own
server, each checked against a forward pass computed here with transformers alone (the vllm
backend's log-likelihoods: tests/test_vllm.py, on its shared engine)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli, write_jsonl

pytestmark = pytest.mark.engine  # every test here starts a model engine (see conftest)

# ARC-shaped rows, as the hub's allenai/ai2_arc holds them (labels letters or digits).
ARC_ROWS = [
    {"id": "q1", "question": "Which is a planet?",
     "choices": {"text": ["Mars", "Moon", "Sun", "Comet"], "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
    {"id": "q2", "question": "What do plants need to make food?  ",
     "choices": {"text": ["darkness", "sunlight", "sand"], "label": ["A", "B", "C"]}, "answerKey": "B"},
    {"id": "q3", "question": "Water freezes at what temperature in Celsius?",
     "choices": {"text": ["0 degrees", "100 degrees", "50 degrees", "10 degrees"], "label": ["1", "2", "3", "4"]},
     "answerKey": "1"},
    {"id": "q4", "question": "Which gas do animals breathe out?",
     "choices": {"text": ["carbon dioxide", "gold", "helium"], "label": ["A", "B", "C"]}, "answerKey": "A"},
    {"id": "q5", "question": "What is ice?",
     "choices": {"text": ["frozen water", "hot air", "dry sand", "ügly ßtone"], "label": ["A", "B", "C", "D"]},
     "answerKey": "A"},
]


def arc_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "arc.jsonl", ARC_ROWS)


def arc_args(data: Path, model: str | None, out: Path, *more: str) -> list[str]:
    return ["task=arc_easy", f"dataset.path={data}", "dataset.name=null", "dataset.split=train",
            *([f"backend.model_name_or_path={model}"] if model else []), f"hydra.run.dir={out}", *more]


def direct_loglikelihood(model, tokenizer, context: str, continuation: str) -> tuple[float, int]:
    """The continuation's summed log-probability from one unbatched forward pass over the whole
    text, split as lm-evaluation-harness splits it (trailing spaces move to the continuation)."""
    import torch

    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    start = len(tokenizer.encode(context))
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return sum(float(logprobs[p - 1, whole[p]]) for p in range(start, len(whole))), len(whole) - start


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> Path:
    tmp = tmp_path_factory.mktemp("choice-hf")
    out = tmp / "run"
    result = run_cli(*arc_args(arc_file(tmp), tiny_model, out, "backend=hf", "backend.batch_size=3",
                               "backend.dtype=float32"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_choice_log_likelihoods_on_hf_match_a_direct_forward_pass(hf_run: Path, tiny_model: str) -> None:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model, dtype="float32").eval()
    records = read_jsonl(hf_run / "answers.jsonl")
    assert [r["id"] for r in records] == ["q1", "q2", "q3", "q4", "q5"]
    right = {"acc": 0, "acc_norm": 0}
    for row, record in zip(ARC_ROWS, records):
        context = f"Question: {row['question']}\nAnswer:"
        assert record["prompt"] == context and record["choices"] == row["choices"]["text"]
        assert record["reference"] == row["choices"]["label"].index(row["answerKey"])
        expected = [direct_loglikelihood(model, tokenizer, context, " " + c) for c in record["choices"]]
        got = record["loglikelihoods"]
        assert max(abs(g["logprob"] - e[0]) for g, e in zip(got, expected)) < 1e-4
        assert [g["tokens"] for g in got] == [e[1] for e in expected]
        # lm-eval's definitions: argmax of the sum, and of the sum per character of the choice
        logprobs = [e[0] for e in expected]
        pick = max(range(len(logprobs)), key=lambda i: logprobs[i])
        pick_norm = max(range(len(logprobs)), key=lambda i: logprobs[i] / len(record["choices"][i]))
        assert record["answer"] == record["choices"][pick]
        assert record["scores"] == {"acc": float(pick == record["reference"]),
                                    "acc_norm": float(pick_norm == record["reference"])}
        right["acc"] += pick == record["reference"]
        right["acc_norm"] += pick_norm == record["reference"]
    metrics = json.loads((hf_run / "metrics.json").read_text())
    assert metrics["answered"] == 5 and metrics["failed"] == 0
    assert metrics["scores"] == {"acc": round(right["acc"] / 5, 4), "acc_norm": round(right["acc_norm"] / 5, 4)}
    low, high = metrics["scores_ci95"]["acc"]
    assert low <= right["acc"] / 5 <= high and 0 <= low < high <= 1


def test_choice_resumes_exactly_once_and_the_cache_answers_it_again(tmp_path: Path, hf_run: Path,
                                                                     tiny_model: str) -> None:
    data, out = arc_file(tmp_path), tmp_path / "run"
    common = ["backend=hf", "backend.dtype=float32", "cache=on", f"cache.path={tmp_path / 'cache.sqlite'}"]
    first = run_cli(*arc_args(data, tiny_model, out, *common, "dataset.limit=2"))
    assert first.returncode == 0, first.stderr[-3000:]
    rest = run_cli(*arc_args(data, tiny_model, out, *common, f"resume={out}"))
    assert rest.returncode == 0, rest.stderr[-3000:]
    records = read_jsonl(out / "answers.jsonl")
    assert sorted(r["id"] for r in records) == ["q1", "q2", "q3", "q4", "q5"]  # each row once
    before = {r["id"]: r["loglikelihoods"] for r in read_jsonl(hf_run / "answers.jsonl")}
    again = run_cli(*arc_args(data, tiny_model, tmp_path / "again", *common))
    assert again.returncode == 0, again.stderr[-3000:]
    cached = read_jsonl(tmp_path / "again" / "answers.jsonl")
    assert all(r.get("cached") for r in cached)
    for r in cached:
        assert [s["logprob"] for s in r["loglikelihoods"]] == pytest.approx(
            [s["logprob"] for s in before[r["id"]]], abs=1e-4)


def test_text_prompts_join_few_shot_examples_as_lm_eval_does(tmp_path: Path, tiny_model: str) -> None:
    import torch
    import transformers

    rows = [{"q": "2+2=", "a": "4"}, {"q": "3+3=", "a": "6"}, {"q": "Capital of France?", "a": "Paris"}]
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    shots = write_jsonl(tmp_path / "shots.jsonl", [{"q": "1+1=", "a": "2"}])
    out = tmp_path / "run"
    result = run_cli("backend=hf", f"backend.model_name_or_path={tiny_model}", "backend.dtype=float32",
                     "chat_template=false", "system_prompt=Answer briefly.", "sampling=greedy",
                     "sampling.max_tokens=5", f"dataset.path={data}", "dataset.fields.prompt=q",
                     "dataset.fields.reference=a", "dataset.fewshot.k=1", f"dataset.fewshot.path={shots}",
                     "record_messages=true", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model, dtype="float32").eval()
    # the journal is in the order answers arrived, not the rows' order
    for row, record in zip(rows, sorted(read_jsonl(out / "answers.jsonl"), key=lambda r: r["index"])):
        text = f"Answer briefly.\n\n1+1= 2\n\n{row['q']}"
        assert record["messages_sent"] == text
        ids = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**ids, max_new_tokens=5, do_sample=False)
        expected = tokenizer.decode(output[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        assert record["answer"] == expected and record["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("more, message", [
    (["backend=hf", "batch.export=/tmp/never.jsonl"], "the Batch API does not return"),
    (["backend=hf", "scoring.extract=choice"], "remove scoring.extract"),
    (["backend=hf", "dataset.fields.choices=choices.nothing"], "has no key 'nothing'"),
])
def test_choice_mistakes_are_one_line(tmp_path: Path, tiny_model: str, more: list[str], message: str) -> None:
    out = tmp_path / "run"
    result = run_cli(*arc_args(arc_file(tmp_path), tiny_model, out, *more))
    if "has no key" in message:  # a row's own problem: that row's error, the others answered
        assert result.returncode == 1, result.stderr[-2000:]
        assert all(message in r["error"] for r in read_jsonl(out / "answers.jsonl"))
        return
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not Path("/tmp/never.jsonl").exists()


def test_genrun_score_rescores_a_choice_run_from_its_log_likelihoods(tmp_path: Path, hf_run: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(hf_run, run)
    result = subprocess.run([sys.executable, "-m", "genrun.commands.score", str(run), "scoring.metrics=[acc_bytes]"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    for record in read_jsonl(run / "answers.jsonl"):  # per UTF-8 byte of each choice, as lm-eval's acc_bytes
        logprobs = [s["logprob"] for s in record["loglikelihoods"]]
        pick = max(range(len(logprobs)), key=lambda i: logprobs[i] / len(record["choices"][i].encode()))
        assert record["scores"] == {"acc_bytes": float(pick == record["reference"])}
    assert set(json.loads((run / "metrics.json").read_text())["scores"]) == {"acc_bytes"}


# Texts from one token to several windows of PERPLEXITY_WINDOW tokens, so rolling windows are exercised.
TEXTS = [{"id": "t0", "text": "Hello"},
         {"id": "t1", "text": "The sea is wide and the sky is blue."},
         {"id": "t2", "text": " ".join(f"word{i} and more, said the river to the sea." for i in range(9))},
         {"id": "t3", "text": "Ünïcode bytes ß and ça va: they count as UTF-8 bytes. " * 3}]
PERPLEXITY_WINDOW = 16


def perplexity_args(data: Path, model: str | None, out: Path, *more: str) -> list[str]:
    local = [f"backend.model_name_or_path={model}", "backend.dtype=float32"] if model else []
    return ["mode=perplexity", "dataset=default", f"dataset.path={data}", "dataset.fields.prompt=text",
            "dataset.fields.id=id", *local, f"hydra.run.dir={out}", *more]


def direct_rolling_loglikelihood(model, tokenizer, text: str, window: int) -> float:
    """A text's log-likelihood with no batching: its tokens predicted in chunks of `window`,
    each chunk conditioned on the `window` tokens before its last one (the first chunk on the
    BOS or EOS token and what precedes it), as lm-eval's loglikelihood_rolling defines it."""
    import torch

    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    sequence = [prefix, *tokenizer.encode(text)]  # token j of the text is sequence[j + 1]
    total, end = 0.0, 0
    while end < len(sequence) - 1:
        size = min(window, len(sequence) - 1 - end)
        end += size
        inputs = sequence[max(0, end - window):end]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([inputs])).logits[0].float(), dim=-1)
        for k in range(size):  # the chunk's tokens sequence[end - size + 1 .. end], predicted by the last inputs
            total += float(logprobs[len(inputs) - size + k, sequence[end - size + 1 + k]])
    return total


@pytest.fixture(scope="module")
def perplexity_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> Path:
    tmp = tmp_path_factory.mktemp("perplexity-hf")
    out = tmp / "run"
    result = run_cli(*perplexity_args(write_jsonl(tmp / "texts.jsonl", TEXTS), tiny_model, out, "backend=hf",
                                      "backend.batch_size=2", f"+backend.max_length={PERPLEXITY_WINDOW}"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_perplexity_on_hf_matches_unbatched_rolling_windows_and_aggregates_over_the_corpus(
        perplexity_run: Path, tiny_model: str) -> None:
    import math

    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model, dtype="float32").eval()
    records = read_jsonl(perplexity_run / "answers.jsonl")
    assert [r["id"] for r in records] == [t["id"] for t in TEXTS]
    assert len(tokenizer.encode(TEXTS[2]["text"])) > 3 * PERPLEXITY_WINDOW  # several windows
    for row, record in zip(TEXTS, records):
        (scored,) = record["loglikelihoods"]
        assert scored["tokens"] == len(tokenizer.encode(row["text"]))
        assert scored["logprob"] == pytest.approx(
            direct_rolling_loglikelihood(model, tokenizer, row["text"], PERPLEXITY_WINDOW), abs=1e-3)
        # lm-eval's count_words: the pieces between runs of whitespace (a trailing space adds one)
        assert record["perplexity"] == {"logprob": scored["logprob"], "words": len(re.split(r"\s+", row["text"])),
                                        "bytes": len(row["text"].encode())}
    metrics = json.loads((perplexity_run / "metrics.json").read_text())
    total = sum(r["perplexity"]["logprob"] for r in records)
    words, size = sum(r["perplexity"]["words"] for r in records), sum(r["perplexity"]["bytes"] for r in records)
    expected = {"word_perplexity": math.exp(-total / words), "byte_perplexity": math.exp(-total / size),
                "bits_per_byte": -total / size / math.log(2)}  # weighted over the corpus, as lm-eval
    for name, value in expected.items():
        assert metrics["scores"][name] == pytest.approx(value, rel=1e-4)
        low, high = metrics["scores_ci95"][name]
        assert low < value < high
    assert metrics["failed"] == 0 and metrics["status"] == "ok"


def test_perplexity_resumes_exactly_once_and_the_cache_answers_it_again(tmp_path: Path, perplexity_run: Path,
                                                                         tiny_model: str) -> None:
    data, out = write_jsonl(tmp_path / "texts.jsonl", TEXTS), tmp_path / "run"
    common = ["backend=hf", f"+backend.max_length={PERPLEXITY_WINDOW}", "cache=on",
              f"cache.path={tmp_path / 'cache.sqlite'}"]
    first = run_cli(*perplexity_args(data, tiny_model, out, *common, "dataset.limit=2"))
    assert first.returncode == 0, first.stderr[-3000:]
    rest = run_cli(*perplexity_args(data, tiny_model, out, *common, f"resume={out}"))
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert sorted(r["id"] for r in read_jsonl(out / "answers.jsonl")) == ["t0", "t1", "t2", "t3"]
    assert (json.loads((out / "metrics.json").read_text())["scores"]
            == pytest.approx(json.loads((perplexity_run / "metrics.json").read_text())["scores"], rel=1e-4))
    again = run_cli(*perplexity_args(data, tiny_model, tmp_path / "again", *common))
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(r.get("cached") for r in read_jsonl(tmp_path / "again" / "answers.jsonl"))
    check = subprocess.run([sys.executable, "-m", "genrun.commands.check", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("more, message", [
    (["backend=hf", "system_prompt=Be brief."], "remove dataset.fewshot.k and system_prompt"),
    (["backend=openai", "backend.base_url=http://127.0.0.1:9/v1", "backend.model_name=m"],
     "backend=openai cannot (use backend=hf or backend=vllm)"),
    (["backend=hf", "scoring.metrics=[acc]"], "score mode=choice runs"),
    (["backend=hf", "batch.export=/tmp/never.jsonl"], "the Batch API does not return"),
])
def test_perplexity_mistakes_are_one_line(tmp_path: Path, tiny_model: str, more: list[str], message: str) -> None:
    model = None if "backend=openai" in more else tiny_model
    result = run_cli(*perplexity_args(write_jsonl(tmp_path / "t.jsonl", TEXTS), model, tmp_path / "run", *more))
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr


def test_choice_on_vllms_server_agrees_with_hf(tmp_path: Path, hf_run: Path, vllm_server: str) -> None:
    # backend=openai: /v1/completions with the context and each context + choice, echoed with logprobs
    out = tmp_path / "openai"
    result = run_cli(*arc_args(arc_file(tmp_path), None, out, "backend=openai", f"backend.base_url={vllm_server}",
                               "backend.model_name=tiny"))
    assert result.returncode == 0, result.stderr[-3000:]
    hf = {r["id"]: r for r in read_jsonl(hf_run / "answers.jsonl")}
    for record in read_jsonl(out / "answers.jsonl"):
        mine = hf[record["id"]]
        assert [s["tokens"] for s in record["loglikelihoods"]] == [s["tokens"] for s in mine["loglikelihoods"]]
        assert record["prompt_tokens"] == mine["prompt_tokens"]
        assert max(abs(x["logprob"] - y["logprob"])
                   for x, y in zip(record["loglikelihoods"], mine["loglikelihoods"])) < 1e-3
        assert record["scores"] == mine["scores"]


def test_text_prompts_on_vllms_server_go_to_the_completions_endpoint(tmp_path: Path, tiny_model: str,
                                                                     vllm_server: str) -> None:
    import transformers

    rows = [{"q": "2+2="}, {"q": "The capital of France is"}]
    out = tmp_path / "run"
    result = run_cli("backend=openai", f"backend.base_url={vllm_server}", "backend.model_name=tiny",
                     "chat_template=false", "sampling=greedy", "sampling.max_tokens=4",
                     f"dataset.path={write_jsonl(tmp_path / 'q.jsonl', rows)}", "dataset.fields.prompt=q",
                     f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    # the journal is in the order answers arrived, not the rows' order
    for row, record in zip(rows, sorted(read_jsonl(out / "answers.jsonl"), key=lambda r: r["index"])):
        # the text as it is: no chat template around it (a template would add its own tokens)
        assert record["prompt_tokens"] == len(tokenizer.encode(row["q"]))
        # greedy, but vLLM's CPU batching can tip a near-tie to the end token before the 4th
        assert isinstance(record["answer"], str) and 1 <= record["completion_tokens"] <= 4
        assert record["finish_reason"] == ("length" if record["completion_tokens"] == 4 else "stop")


def test_a_server_without_prompt_log_probabilities_is_one_line(tmp_path: Path) -> None:
    from genrun.testing.fault_server import FaultServer

    with FaultServer() as server:
        result = run_cli(*arc_args(arc_file(tmp_path), None, tmp_path / "run", "backend=openai",
                                   f"backend.base_url={server.url}", "backend.model_name=m", "backend.concurrency=1"))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("genrun: error:")]
    assert len(errors) == 1 and "did not return the prompt's log-probabilities" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(server.bodies) == 1 and server.bodies[0]["echo"] is True  # one request, not one per row


def mmlu_rows(subjects: dict[str, int], prefix: str) -> list[dict]:
    """cais/mmlu-shaped rows: question, subject, choices (4), answer (an index)."""
    return [{"question": f" {prefix} {subject} question {i}? ", "subject": subject,
             "choices": [f"{subject} {i} one", f"two {i}", f"three {i}", f"four {i}"], "answer": i % 4}
            for subject, count in subjects.items() for i in range(count)]


def lm_eval_mmlu_text(row: dict) -> str:
    """lm-eval's mmlu doc_to_text, written out."""
    letters = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(row["choices"]))
    return f"{row['question'].strip()}\n{letters}\nAnswer:"


def test_mmlu_is_lm_evals_prompt_with_each_subjects_first_dev_examples(tmp_path: Path, tiny_model: str) -> None:
    import transformers

    test = mmlu_rows({"college_physics": 2, "world_religions": 2}, "Test")
    dev = mmlu_rows({"world_religions": 3, "college_physics": 3}, "Dev")
    test.append(dict(dev[4]))  # a test row that is also a dev example: it must not be shown itself
    out = tmp_path / "run"
    result = run_cli("task=mmlu", f"dataset.path={write_jsonl(tmp_path / 'test.jsonl', test)}", "dataset.name=null",
                     "dataset.split=train", f"dataset.fewshot.path={write_jsonl(tmp_path / 'dev.jsonl', dev)}",
                     "dataset.fewshot.k=2", "record_messages=true", "backend=hf",
                     f"backend.model_name_or_path={tiny_model}", "backend.dtype=float32", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model, dtype="float32").eval()
    records = sorted(read_jsonl(out / "answers.jsonl"), key=lambda r: r["index"])
    for row, record in zip(test, records):
        shown = [d for d in dev if d["subject"] == row["subject"] and d["question"] != row["question"]][:2]
        subject = row["subject"].replace("_", " ")
        # lm-eval: description + examples (text, " ", the right letter) + the row's text, joined by "\n\n"
        expected = "\n\n".join([f"The following are multiple choice questions (with answers) about {subject}.",
                                *(f"{lm_eval_mmlu_text(d)} {'ABCD'[d['answer']]}" for d in shown),
                                lm_eval_mmlu_text(row)])
        assert record["messages_sent"] == expected
        assert record["fewshot_ids"] == [dev.index(d) for d in shown]  # per subject: each record says which
        assert record["choices"] == ["A", "B", "C", "D"] and record["reference"] == row["answer"]
        direct = [direct_loglikelihood(model, tokenizer, expected, " " + c)[0] for c in "ABCD"]
        assert max(abs(s["logprob"] - d) for s, d in zip(record["loglikelihoods"], direct)) < 1e-4
    assert set(json.loads((out / "metrics.json").read_text())["scores"]) == {"acc"}
    shots = json.loads((out / "run.json").read_text())["dataset"]["fewshot"]
    assert shots["sampler"] == "first_n" and shots["ids"] == {"world_religions": [0, 1], "college_physics": [3, 4]}


def test_random_few_shot_draws_per_row_by_its_id_whatever_the_batch(tmp_path: Path, tiny_model: str) -> None:
    rows = [{"id": f"q{i}", "question": f"Question {i}?", "choices": {"text": ["yes", "no"], "label": ["A", "B"]},
             "answerKey": "AB"[i % 2]} for i in range(6)]
    train = [{**r, "id": f"t{i}", "question": f"Train {i}?"} for i, r in enumerate(rows * 2)]
    data, shots = write_jsonl(tmp_path / "arc.jsonl", rows), write_jsonl(tmp_path / "train.jsonl", train)
    seen = []
    for name, batch in (("a", 1), ("b", 4)):
        result = run_cli(*arc_args(data, tiny_model, tmp_path / name, "backend=hf", f"backend.batch_size={batch}",
                                   "dataset.fewshot.k=3", f"dataset.fewshot.path={shots}", "record_messages=true"))
        assert result.returncode == 0, result.stderr[-3000:]
        seen.append({r["id"]: r for r in read_jsonl(tmp_path / name / "answers.jsonl")})
    first, second = seen
    assert {i: r["fewshot_ids"] for i, r in first.items()} == {i: r["fewshot_ids"] for i, r in second.items()}
    assert len({tuple(r["fewshot_ids"]) for r in first.values()}) > 1  # drawn per row, not once
    record = first["q0"]
    picked = [next(t for t in train if t["id"] == i) for i in record["fewshot_ids"]]
    # an arc example's answer is the text of its right choice, as lm-eval shows it
    assert record["messages_sent"].startswith(
        f"Question: {picked[0]['question']}\nAnswer: {'yes' if picked[0]['answerKey'] == 'A' else 'no'}\n\n")


def test_lambada_scores_the_last_word_greedy_acc_and_perplexity_as_lm_eval(tmp_path: Path, tiny_model: str) -> None:
    import math

    import torch
    import transformers

    rows = [{"text": "the cat sat on the mat"}, {"text": "one two three four"}, {"text": "a a a a a a a a"}]
    out = tmp_path / "run"
    result = run_cli("task=lambada_openai", f"dataset.path={write_jsonl(tmp_path / 'l.jsonl', rows)}",
                     "dataset.name=null", "dataset.split=train", "backend=hf",
                     f"backend.model_name_or_path={tiny_model}", "backend.dtype=float32", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model, dtype="float32").eval()
    records = sorted(read_jsonl(out / "answers.jsonl"), key=lambda r: r["index"])
    loglikelihoods, greedy = [], []
    for row, record in zip(rows, records):
        context, word = row["text"].rsplit(" ", 1)
        assert record["prompt"] == context and record["choices"] == [word]  # lm-eval: (context, " " + word)
        expected, _ = direct_loglikelihood(model, tokenizer, context, " " + word)
        assert record["loglikelihoods"][0]["logprob"] == pytest.approx(expected, abs=1e-4)
        whole, start = tokenizer.encode(row["text"]), len(tokenizer.encode(context))
        with torch.no_grad():
            best = model(torch.tensor([whole])).logits[0].argmax(dim=-1)
        greedy.append(float(all(int(best[p - 1]) == whole[p] for p in range(start, len(whole)))))
        loglikelihoods.append(expected)
        assert record["scores"] == {"acc": greedy[-1]}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scores"]["acc"] == pytest.approx(sum(greedy) / 3, abs=1e-4)
    assert metrics["scores"]["perplexity"] == pytest.approx(math.exp(-sum(loglikelihoods) / 3), rel=1e-4)


def lm_eval_hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag utils.preprocess, written out."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def test_hellaswag_preprocesses_context_and_endings_as_lm_eval(tmp_path: Path, tiny_model: str) -> None:
    rows = [{"ind": 4, "activity_label": "Home and Garden [title]", "ctx_a": "How to clean [header] a sink",
             "ctx_b": "THE sink is dirty.", "endings": ["[step] Use soap.", " Pour  water [title] then", "Sleep.",
                                                   "Run [substeps] away."], "label": "1"},
             {"ind": 5, "activity_label": "Sports", "ctx_a": "A man runs.", "ctx_b": "he jumps",
              "endings": ["high.", "low.", "away.", "home."], "label": "3"}]
    out = tmp_path / "run"
    result = run_cli("task=hellaswag", f"dataset.path={write_jsonl(tmp_path / 'h.jsonl', rows)}", "dataset.name=null",
                     "dataset.split=train", "backend=hf", f"backend.model_name_or_path={tiny_model}",
                     "backend.dtype=float32", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    records = sorted(read_jsonl(out / "answers.jsonl"), key=lambda r: r["index"])
    for row, record in zip(rows, records):
        context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        assert record["prompt"] == lm_eval_hellaswag_preprocess(row["activity_label"] + ": " + context)
        assert record["choices"] == [lm_eval_hellaswag_preprocess(e) for e in row["endings"]]
        assert record["reference"] == int(row["label"]) and set(record["scores"]) == {"acc", "acc_norm"}


def lm_eval_wikitext_detokenizer(string: str) -> str:
    """lm-eval's wikitext_detokenizer (preprocess_wikitext.py), written out."""
    for old, new in [("s '", "s'")]:
        string = string.replace(old, new)
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    for old, new in [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "), (" . ", ". "),
                     (" ! ", "! "), (" ? ", "? "), (" , ", ", ")]:
        string = string.replace(old, new)
    for pattern, replacement in [(r"\(\s*([^\)]*?)\s*\)", r"(\1)"), (r"\[\s*([^\]]*?)\s*\]", r"[\1]"),
                                 (r"{\s*([^}]*?)\s*}", r"{\1}"), (r"\"\s*([^\"]*?)\s*\"", r'"\1"'),
                                 (r"'\s*([^']*?)\s*'", r"'\1'")]:
        string = re.sub(pattern, replacement, string)
    for old, new in [("= = = =", "===="), ("= = =", "==="), ("= =", "=="), (" ° ", "°"), (" \n", "\n"),
                     ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s")]:
        string = string.replace(old, new)
    return string


def test_wikitext_detokenizes_as_lm_eval_and_counts_words_before_it(tmp_path: Path, tiny_model: str) -> None:
    import math

    pages = [{"page": " = Valkyria Chronicles III = \n Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : "
                      "戦場のヴァルキュリア3 , lit . Valkyria of the Battlefield 3 ) , is a role @-@ playing video game "
                      "developed by Sega . It was 1 @,@ 000 @.@ 5 times the players ' hit , 30 ° north . \n"},
             {"page": " = = Gameplay = = \n The game 's \" first \" [ part ] { x } ' quoted ' N times . \n"}]
    out = tmp_path / "run"
    result = run_cli("task=wikitext", f"dataset.path={write_jsonl(tmp_path / 'w.jsonl', pages)}", "dataset.name=null",
                     "dataset.split=train", "backend=hf", f"backend.model_name_or_path={tiny_model}",
                     "backend.dtype=float32", "+backend.max_length=32", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    records = sorted(read_jsonl(out / "answers.jsonl"), key=lambda r: r["index"])
    for page, record in zip(pages, records):
        assert record["prompt"] == lm_eval_wikitext_detokenizer(page["page"])
        # the words and bytes of the page before detokenizing, as lm-eval's wikitext counts them
        assert record["perplexity"]["words"] == len(re.split(r"\s+", page["page"]))
        assert record["perplexity"]["bytes"] == len(page["page"].encode())
    total = sum(r["perplexity"]["logprob"] for r in records)
    words = sum(r["perplexity"]["words"] for r in records)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scores"]["word_perplexity"] == pytest.approx(math.exp(-total / words), rel=1e-4)


def test_winogrande_scores_the_rest_of_the_sentence_after_each_options_context(tmp_path: Path,
                                                                                 tiny_model: str) -> None:
    import transformers

    rows = [{"sentence": "The trophy does not fit in the suitcase because _ is too big.", "option1": "the trophy",
             "option2": "the suitcase", "answer": "1"},
            {"sentence": "Sam gave Bob a gift because _ was kind.", "option1": "Sam", "option2": "Bob", "answer": "2"}]
    out = tmp_path / "run"
    result = run_cli("task=winogrande", f"dataset.path={write_jsonl(tmp_path / 'w.jsonl', rows)}", "dataset.name=null",
                     "dataset.split=train", "backend=hf", f"backend.model_name_or_path={tiny_model}",
                     "backend.dtype=float32", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model, dtype="float32").eval()
    for row, record in zip(rows, sorted(read_jsonl(out / "answers.jsonl"), key=lambda r: r["index"])):
        blank = row["sentence"].index("_")
        # lm-eval: the contexts are the sentence to the blank with each option, the target the rest
        contexts = [row["sentence"][:blank] + row[o] for o in ("option1", "option2")]
        target = " " + row["sentence"][blank + 1:].strip()
        assert record["contexts"] == contexts and record["choices"] == [row["option1"], row["option2"]]
        expected = [direct_loglikelihood(model, tokenizer, c, target)[0] for c in contexts]
        assert [s["logprob"] for s in record["loglikelihoods"]] == pytest.approx(expected, abs=1e-4)
        best = max(range(2), key=lambda i: expected[i])
        assert record["reference"] == int(row["answer"]) - 1
        assert record["scores"] == {"acc": float(best == record["reference"])}


def test_choice_runs_sweep_in_shards_merge_and_compare_with_mcnemar(tmp_path: Path, hf_run: Path,
                                                                    tiny_model: str) -> None:
    from genrun.reports.merge import merge

    sweep = tmp_path / "sweep"
    result = run_cli(*arc_args(arc_file(tmp_path), tiny_model, tmp_path / "unused", "backend=hf",
                               "backend.dtype=float32"), "-m", "dataset.num_shards=2", "dataset.shard_index=0,1",
                     f"hydra.sweep.dir={sweep}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    shards = sorted(p.parent.parent for p in sweep.glob("*/.hydra/config.yaml"))
    assert len(shards) == 2 and (sweep / "summary.csv").exists()
    merged = tmp_path / "merged.jsonl"
    assert merge(shards, merged) == len(ARC_ROWS)
    assert read_jsonl(sweep / "merged" / "answers.jsonl") == read_jsonl(merged)  # the sweep merged itself
    single = {r["id"]: r for r in read_jsonl(hf_run / "answers.jsonl")}
    for record in read_jsonl(merged):  # the same rows and scores as the unsharded run
        assert record["scores"] == single[record["id"]]["scores"]
        assert [s["logprob"] for s in record["loglikelihoods"]] == pytest.approx(
            [s["logprob"] for s in single[record["id"]]["loglikelihoods"]], abs=1e-4)
    compared = subprocess.run([sys.executable, "-m", "genrun.commands.compare", str(hf_run), str(hf_run), "--json"],
                              capture_output=True, text=True, timeout=120)
    assert compared.returncode == 0, compared.stderr
    same = json.loads(compared.stdout)
    assert (same["diff"], same["p_value"], same["rows"]) == (0.0, 1.0, len(ARC_ROWS))  # McNemar on acc
