"""Helpers shared by the benchmark scripts: data, the tiny model, a vLLM server, genrun runs, stats.

Benchmarks print figures; they are not tests. Every comparison is measured side by side in
one process run and reported as a ratio, because absolute times drift on shared machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("GENRUN_BENCH_DIR") or Path(tempfile.gettempdir()) / "genrun-bench")
os.environ.setdefault("GENRUN_CACHE", str(WORK / "cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

VLLM_CPU = {"gpu_memory_utilization": 0.2, "dtype": "float32", "max_model_len": 512, "enforce_eager": True}
TOPICS = ["the sea", "a spider", "Paris", "boiling water", "the sun", "a fox", "Hydra configs", "language models"]


def tiny_model() -> str:
    from genrun.assets.tiny_model import cached_tiny_model

    return cached_tiny_model("chat")


def model_for(args: argparse.Namespace) -> str:
    """--model tiny: the random-weight model, where genrun's share of the time is largest;
    --model demo: the real SmolLM2-135M-Instruct, where the engine's share is a real one."""
    if args.model == "demo":
        from genrun.assets.demo_model import demo_model

        return demo_model()
    return tiny_model()


def prompts(n: int) -> list[str]:
    """n different prompts of varied length (so padding and scheduling are exercised)."""
    return [f"Question {i}: tell me " + "something about " * (1 + i % 5) + TOPICS[i % len(TOPICS)] + "?"
            for i in range(n)]


def dataset(n: int) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"prompts-{n}.jsonl"
    if not path.exists():
        path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts(n)))
    return path


def workload_args(doc: str | None, rows: int, max_tokens: int, repeats: int) -> argparse.ArgumentParser:
    """The options every throughput benchmark takes; a script adds its own before parse_args()."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--max-tokens", type=int, default=max_tokens)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--model", choices=["tiny", "demo"], default="tiny",
                        help="tiny: random weights (genrun's share largest); demo: SmolLM2-135M-Instruct")
    return parser


def compose(*overrides: str) -> Any:
    """genrun's config, composed exactly as the CLI composes it."""
    from genrun.settings import compose as settings_compose

    return settings_compose(list(overrides))


def genrun_run(backend: Any, *overrides: str) -> tuple[float, dict[str, Any]]:
    """One genrun run (genrun.engine.job.run: dataset streaming, records, scoring, metrics) on an
    already started backend; returns its wall time and metrics.json."""
    from genrun.engine.job import run
    from genrun.settings import load

    cfg = load(compose(*overrides))
    out = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    started = time.perf_counter()
    metrics = run(cfg, out, backend=backend)
    wall = time.perf_counter() - started
    if metrics["status"] != "ok":
        raise RuntimeError(f"genrun run ended {metrics['status']}; see {out}")
    return wall, metrics


def vllm_server(model: str) -> Any:
    """vLLM's OpenAI-compatible server with the tiny model (the tests' launcher)."""
    from genrun.testing.vllm_server import vllm_server as start

    WORK.mkdir(parents=True, exist_ok=True)
    return start(model, WORK / "vllm-server.log")


def paired(repeats: int, rows: int, baseline: Callable[[], float], genrun: Callable[[], float]) -> dict[str, Any]:
    """Run baseline() then genrun() (each returns its wall seconds for `rows` rows) `repeats`
    times, alternating so drift hits both; rows/s of each and the per-repeat ratio."""
    baseline_rates, genrun_rates, ratios = [], [], []
    for _ in range(repeats):
        baseline_rates.append(rows / baseline())
        genrun_rates.append(rows / genrun())
        ratios.append(genrun_rates[-1] / baseline_rates[-1])
    return {"rows": rows, "baseline_rows_per_s": summary(baseline_rates), "genrun_rows_per_s": summary(genrun_rates),
            "ratio": summary(ratios)}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(stats: dict[str, float], digits: int = 2) -> str:
    return f"{stats['median']:.{digits}f} (min {stats['min']:.{digits}f}, max {stats['max']:.{digits}f}, n={stats['n']})"


def emit(name: str, result: dict[str, Any]) -> None:
    """Print a benchmark's result as one JSON line (run_all collects them) after its table."""
    print("RESULT " + json.dumps({"bench": name, **result}))
