"""Q9: do genrun's log-likelihoods agree with lm-evaluation-harness?

--part choice: the same ARC-shaped items (written here) go through lm-eval's own `hf` model
on a task with lm-eval's arc_easy prompt, choices and metrics, and through `genrun
task=arc_easy` on backend=hf, backend=vllm and backend=openai (vLLM's own server, started
here; its start is not in the timing), each a whole process, fp32. Reported: the
largest per-choice log-probability difference, the items whose chosen index differs (acc and
acc_norm), the aggregate scores, and the wall time of each whole process side by side.

--part perplexity: texts (written here, longer than --max-length tokens, so they are scored
in several rolling windows) through lm-eval's loglikelihood_rolling (word_perplexity,
byte_perplexity, bits_per_byte) and `genrun mode=perplexity` on hf and vllm: each text's
log-likelihood difference and each metric's relative difference.

lm-eval is in the `bench` extra (pip install -e '.[bench]'); --lm-eval-python names another
interpreter that has it (a venv with --system-site-packages).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from common import VLLM_CPU, WORK, emit, model_for

LM_EVAL_TASK = """task: arc_easy_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""

LM_EVAL_PERPLEXITY_TASK = """task: perplexity_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""
PERPLEXITY_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")

THINGS = {
    "planet": ["Mars", "Venus", "Jupiter", "Saturn"], "metal": ["iron", "copper", "gold", "silver"],
    "gas": ["oxygen", "helium", "nitrogen", "carbon dioxide"], "mammal": ["a whale", "a dog", "a bat", "a horse"],
    "bird": ["an eagle", "a sparrow", "a penguin", "an owl"], "fruit": ["an apple", "a banana", "a mango", "a pear"],
    "tool": ["a hammer", "a saw", "a wrench", "a drill"], "organ": ["the heart", "a lung", "the liver", "a kidney"],
}


def items(n: int) -> list[dict]:
    """n ARC-shaped rows: one right choice among 3-5, labels letters or digits as on the hub."""
    rng = random.Random(0)
    kinds = sorted(THINGS)
    rows = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        right = rng.choice(THINGS[kind])
        wrong = rng.sample([t for k in kinds if k != kind for t in THINGS[k]], rng.randint(2, 4))
        choices = [right, *wrong]
        rng.shuffle(choices)
        labels = [chr(65 + j) for j in range(len(choices))] if i % 3 else [str(j + 1) for j in range(len(choices))]
        question = rng.choice(["Which of these is {a} {k}?", "Which one is {a} {k}?", "Name {a} {k}."])
        rows.append({"id": f"item-{i}", "question": question.format(a="an" if kind[0] in "aeiou" else "a", k=kind),
                     "choices": {"text": choices, "label": labels}, "answerKey": labels[choices.index(right)]})
    return rows


def texts(n: int) -> list[dict]:
    """n English-like texts of 60-400 words (so most need several windows), and their ids."""
    rng = random.Random(1)
    words = [w for group in THINGS.values() for t in group for w in t.split()] + [
        "the", "of", "and", "is", "in", "was", "it", "river", "city", "people", "year", "small", "water", "light",
        "north", "old", "built", "found", "called", "many", "after", "during", "which", "known", "near"]
    rows = []
    for i in range(n):
        sentences = []
        for _ in range(rng.randint(6, 40)):
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(5, 14)))
            sentences.append(sentence[0].upper() + sentence[1:] + rng.choice([".", ".", ",", ";", "!"]))
        rows.append({"id": f"text-{i}", "text": " ".join(sentences)})
    return rows


def run(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ...: {result.stderr[-3000:]}")
    return wall


def lm_eval_run(python: str, model: str, data: Path, out: Path, batch_size: int,
                engine: str = "hf") -> tuple[float, dict[str, list]]:
    """lm-eval's whole process (its hf or vllm model); each item's per-choice log-likelihoods
    from its samples file."""
    tasks = out / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / "arc_easy_local.yaml").write_text(LM_EVAL_TASK.format(data=data))
    model_args = f"pretrained={model},dtype=float32"
    if engine == "vllm":  # the same engine settings genrun's vllm run gets
        model_args += (f",gpu_memory_utilization={VLLM_CPU['gpu_memory_utilization']},"
                       f"max_model_len={VLLM_CPU['max_model_len']},enforce_eager=True")
    wall = run([python, "-m", "lm_eval", "--model", engine, "--model_args", model_args,
                "--tasks", "arc_easy_local", "--include_path", str(tasks), "--batch_size", str(batch_size),
                "--device", "cpu", "--log_samples", "--output_path", str(out / "results")])
    samples = next((out / "results").rglob("samples_arc_easy_local_*.jsonl"))
    scores = {}
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        scores[sample["doc"]["id"]] = [float(r[0][0]) for r in sample["resps"]]
    return wall, scores


def lm_eval_perplexity(python: str, model: str, data: Path, out: Path, batch_size: int,
                       max_length: int) -> tuple[float, dict[str, float], dict[str, float]]:
    """lm-eval's whole process: each text's log-likelihood, and the corpus metrics."""
    tasks = out / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / "perplexity_local.yaml").write_text(LM_EVAL_PERPLEXITY_TASK.format(data=data))
    wall = run([python, "-m", "lm_eval", "--model", "hf", "--model_args",
                f"pretrained={model},dtype=float32,max_length={max_length}", "--tasks", "perplexity_local",
                "--include_path", str(tasks), "--batch_size", str(batch_size), "--device", "cpu", "--log_samples",
                "--output_path", str(out / "results")])
    samples = next((out / "results").rglob("samples_perplexity_local_*.jsonl"))
    loglikelihoods = {}
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        loglikelihoods[sample["doc"]["id"]] = float(sample["resps"][0][0])
    results = json.loads(next(p for p in (out / "results").rglob("results_*.json")).read_text())
    metrics = {m: float(results["results"]["perplexity_local"][f"{m},none"]) for m in PERPLEXITY_METRICS}
    return wall, loglikelihoods, metrics


def genrun_perplexity(backend: str, model: str, data: Path, out: Path, batch_size: int,
                      max_length: int) -> tuple[float, dict[str, float], dict[str, float]]:
    extra = ([f"backend.batch_size={batch_size}", f"+backend.max_length={max_length}"] if backend == "hf"
             else [f"backend.{k}={v}" for k, v in VLLM_CPU.items() if k in ("gpu_memory_utilization", "dtype")]
             + ["+backend.enforce_eager=true", f"+backend.max_model_len={max_length + 2}"])
    wall = run([sys.executable, "-m", "genrun", "mode=perplexity", "dataset=default", f"dataset.path={data}",
                "dataset.fields.prompt=text", "dataset.fields.id=id", f"backend={backend}",
                f"backend.model_name_or_path={model}", "backend.dtype=float32", *extra, f"hydra.run.dir={out}"])
    records = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())["scores"]
    return wall, {r["id"]: r["loglikelihoods"][0]["logprob"] for r in records}, metrics


def perplexity_main(args: argparse.Namespace, model: str, out: Path) -> None:
    rows = texts(args.items)
    data = out / "texts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {"lm-eval hf": lm_eval_perplexity(args.lm_eval_python, model, data, out / "lm-eval", args.batch_size,
                                                args.max_length),
               "genrun hf": genrun_perplexity("hf", model, data, out / "genrun-hf", args.batch_size, args.max_length)}
    if not args.no_vllm:
        results["genrun vllm"] = genrun_perplexity("vllm", model, data, out / "genrun-vllm", args.batch_size,
                                                   args.max_length)
    print(f"Perplexity (rolling windows of {args.max_length} tokens), {len(rows)} texts, {args.model} model, fp32")
    for name, (wall, _, metrics) in results.items():
        print(f"  {name:<12}: " + ", ".join(f"{m} {metrics[m]:.4f}" for m in PERPLEXITY_METRICS)
              + f", whole process {wall:.1f} s")
    result: dict = {"model": args.model, "texts": len(rows), "max_length": args.max_length,
                    "metrics": {name: r[2] for name, r in results.items()},
                    "wall_s": {name: r[0] for name, r in results.items()}}
    for name, against in (("genrun hf", "lm-eval hf"), ("genrun vllm", "genrun hf")):
        if name not in results:
            continue
        mine, theirs = results[name], results[against]
        diff = max(abs(mine[1][i] - theirs[1][i]) for i in theirs[1])
        relative = {m: abs(mine[2][m] - theirs[2][m]) / theirs[2][m] for m in PERPLEXITY_METRICS}
        result[f"{name} vs {against}"] = {"max_abs_text_logprob_diff": diff, "relative_metric_diff": relative}
        print(f"  {name} vs {against}: max |Δ text logprob| {diff:.2e}, relative difference "
              + ", ".join(f"{m} {v:.2e}" for m, v in relative.items()))
    print(f"  wall ratio genrun hf / lm-eval hf: {results['genrun hf'][0] / results['lm-eval hf'][0]:.3f}")
    emit("agreement-perplexity", result)


def genrun_run(backend: str, model: str, data: Path, out: Path, batch_size: int) -> tuple[float, dict[str, list]]:
    """backend hf or vllm: `model` is the model's folder; openai: the server's base URL."""
    if backend == "openai":
        extra = [f"backend.base_url={model}", "backend.model_name=model"]
    elif backend == "hf":
        extra = [f"backend.model_name_or_path={model}", "backend.dtype=float32", f"backend.batch_size={batch_size}"]
    else:
        extra = [f"backend.model_name_or_path={model}", *(
            f"+backend.{k}={v}" if k in ("max_model_len", "enforce_eager") else f"backend.{k}={v}"
            for k, v in VLLM_CPU.items())]
    wall = run([sys.executable, "-m", "genrun", "task=arc_easy", f"dataset.path={data}", "dataset.name=null",
                "dataset.split=train", f"backend={backend}", *extra, f"hydra.run.dir={out}"])
    records = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    return wall, {r["id"]: [s["logprob"] for s in r["loglikelihoods"]] for r in records}


def picks(logprobs: list[float], choices: list[str]) -> tuple[int, int]:
    """lm-eval's acc and acc_norm picks (numpy argmax: the first on a tie)."""
    import numpy as np

    values = np.array(logprobs)
    return int(np.argmax(values)), int(np.argmax(values / np.array([float(len(c)) for c in choices])))


def compare(rows: list[dict], a: dict[str, list], b: dict[str, list]) -> dict:
    diffs, acc_diff, norm_diff = [], 0, 0
    for row in rows:
        x, y = a[row["id"]], b[row["id"]]
        diffs += [abs(p - q) for p, q in zip(x, y)]
        px, py = picks(x, row["choices"]["text"]), picks(y, row["choices"]["text"])
        acc_diff += px[0] != py[0]
        norm_diff += px[1] != py[1]
    return {"max_abs_logprob_diff": max(diffs), "items": len(rows), "acc_pick_differs": acc_diff,
            "acc_norm_pick_differs": norm_diff}


def accuracy(rows: list[dict], scores: dict[str, list]) -> tuple[float, float]:
    right = [row["choices"]["label"].index(row["answerKey"]) for row in rows]
    chosen = [picks(scores[row["id"]], row["choices"]["text"]) for row in rows]
    return (sum(c[0] == r for c, r in zip(chosen, right)) / len(rows),
            sum(c[1] == r for c, r in zip(chosen, right)) / len(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["tiny", "demo"], default="demo")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lm-eval-python", default=sys.executable)
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--lm-eval-vllm", action="store_true", help="also lm-eval's own vllm model")
    parser.add_argument("--part", choices=["choice", "perplexity"], default="choice")
    parser.add_argument("--max-length", type=int, default=128, help="perplexity: the window, in tokens")
    args = parser.parse_args()

    model = model_for(args)
    out = WORK / f"agreement-{args.part}-{args.model}-{time.time_ns()}"
    out.mkdir(parents=True)
    if args.part == "perplexity":
        return perplexity_main(args, model, out)
    rows = items(args.items)
    data = out / "arc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    walls, scores = {}, {}
    walls["lm-eval hf"], scores["lm-eval hf"] = lm_eval_run(args.lm_eval_python, model, data, out / "lm-eval",
                                                           args.batch_size)
    walls["genrun hf"], scores["genrun hf"] = genrun_run("hf", model, data, out / "genrun-hf", args.batch_size)
    if not args.no_vllm:
        if args.lm_eval_vllm:
            walls["lm-eval vllm"], scores["lm-eval vllm"] = lm_eval_run(args.lm_eval_python, model, data,
                                                                        out / "lm-eval-vllm", args.batch_size, "vllm")
        walls["genrun vllm"], scores["genrun vllm"] = genrun_run("vllm", model, data, out / "genrun-vllm",
                                                                 args.batch_size)
        from genrun.testing.vllm_server import vllm_server

        with vllm_server(model, out / "vllm-server.log", name="model") as url:
            walls["genrun openai"], scores["genrun openai"] = genrun_run("openai", url, data, out / "genrun-openai",
                                                                         args.batch_size)
    result = {"model": args.model, "items": len(rows), "wall_s": walls,
              "accuracy": {name: accuracy(rows, s) for name, s in scores.items()},
              "genrun hf vs lm-eval hf": compare(rows, scores["genrun hf"], scores["lm-eval hf"])}
    if "genrun vllm" in scores:
        result["genrun vllm vs genrun hf"] = compare(rows, scores["genrun vllm"], scores["genrun hf"])
        result["genrun openai vs genrun hf"] = compare(rows, scores["genrun openai"], scores["genrun hf"])
    print(f"Log-likelihood multiple choice, {len(rows)} ARC-shaped items, {args.model} model, fp32")
    for name, (acc, norm) in result["accuracy"].items():
        print(f"  {name:<12}: acc {acc:.4f}, acc_norm {norm:.4f}, whole process {walls[name]:.1f} s")
    for name in ("genrun hf vs lm-eval hf", "genrun vllm vs genrun hf", "genrun openai vs genrun hf"):
        if name in result:
            c = result[name]
            print(f"  {name}: max |Δ logprob| {c['max_abs_logprob_diff']:.2e}, chosen index differs on "
                  f"{c['acc_pick_differs']}/{c['items']} (acc), {c['acc_norm_pick_differs']}/{c['items']} (acc_norm)")
    print(f"  wall ratio genrun hf / lm-eval hf: {walls['genrun hf'] / walls['lm-eval hf']:.3f}")
    if "lm-eval vllm" in walls:
        result["genrun vllm vs lm-eval vllm"] = compare(rows, scores["genrun vllm"], scores["lm-eval vllm"])
        print(f"  wall ratio genrun vllm / lm-eval vllm: {walls['genrun vllm'] / walls['lm-eval vllm']:.3f}")
    emit("agreement", result)


if __name__ == "__main__":
    main()
