"""genrun's own cost per row, apart from any engine's: a run of --rows rows (200,000 by
default) answered by a backend that answers at once (bench/backends/instant.py), side by side
in one run with the floor, a plain Python loop that reads each row of the same file, builds
the same record and writes and flushes one JSON line.

Measured in every configuration: without and with references (scored: exact match, F1, ...),
sampling.n=1 and n=4 (pass@k, maj@n), cache=off and cache=on (an empty cache, each answer
stored; then a second run answered from it). Each run is a process of its own (its peak RSS
is that process's); the wall time is the run's own (genrun.engine.job.run: the dataset's
opening and streaming, every record written and flushed as it arrives, metrics.json), not
Python's start-up. Target: >= 30,000 rows/s and within 3x the floor in every configuration."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import WORK, emit, summary

HERE = Path(__file__).resolve().parent
# (references, samples, cache): cache "on" is an empty cache filled by the run, "hits" one it fills first
CONFIGS = [(refs, n, cache) for refs in (False, True) for n in (1, 4) for cache in ("off", "on", "hits")]


def name(refs: bool, n: int, cache: str) -> str:
    return f"{'refs' if refs else 'no refs'}, n={n}, cache={cache}"


def dataset(rows: int) -> Path:
    path = WORK / f"ceiling-{rows}.jsonl"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as out:
            for i in range(rows):
                out.write(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: what is {i % 97} plus {i % 89}?",
                                      "ref": f"The answer is {i % 97 + i % 89}"}) + "\n")
    return path


def overrides(data: Path, refs: bool, n: int, cache: str, cache_path: Path) -> list[str]:
    args = ["backend=base_instant", "dataset=default", f"dataset.path={data}", "dataset.fields.id=id"]
    if refs:
        args.append("dataset.fields.reference=ref")
    if n > 1:
        args.append(f"+sampling.n={n}")
    if cache != "off":
        args += ["cache=on", f"cache.path={cache_path}"]
    return args


def child_genrun(argv: list[str]) -> None:
    """One genrun run in this process: prints its wall seconds and peak RSS."""
    import genrun.backend

    genrun.backend.__path__.append(str(HERE / "backends"))  # backend=base_instant
    from genrun.engine.job import run
    from genrun.settings import compose, load, register

    register()
    out = Path(argv[0])
    settings = load(compose(argv[1:]))
    started = time.perf_counter()
    metrics = run(settings, out)
    wall = time.perf_counter() - started
    assert metrics["status"] == "ok" and metrics["answered"] == metrics["rows"], metrics
    print(json.dumps({"wall": wall, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def child_floor(argv: list[str]) -> None:
    """The floor: read each row, build a record of the same fields as genrun's, write and flush it."""
    data, out, refs, n = Path(argv[0]), Path(argv[1]), argv[2] == "1", int(argv[3])
    started = time.perf_counter()
    with open(data, encoding="utf-8") as rows, open(out, "wb") as answers:
        for index, line in enumerate(rows):
            row = json.loads(line)
            prompt = row["prompt"]
            answer = f"The answer is {prompt[-6:]}"
            record = {"id": row["id"], "index": index, "prompt": prompt, "answer": answer, "error": None,
                      "finish_reason": "stop", "prompt_tokens": len(prompt) // 4, "completion_tokens": 6 * n,
                      "latency_s": 0.0}
            if n > 1:
                record["answers"] = [answer + "!" * k for k in range(n)]
                record["finish_reasons"] = ["stop"] * n
            if refs:
                record["reference"] = row["ref"]
                record["scores"] = {"accuracy": 0.0, "exact_match": 0.0, "f1": 0.5}
            answers.write((json.dumps(record, ensure_ascii=False) + "\n").encode())
            answers.flush()
    print(json.dumps({"wall": time.perf_counter() - started,
                      "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(*argv: str) -> dict:
    result = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def one_config(data: Path, rows: int, refs: bool, n: int, cache: str, work: Path) -> tuple[dict, dict]:
    """One repeat of a configuration: (genrun, floor) figures."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cache_path = work / "responses.sqlite"
    args = overrides(data, refs, n, cache, cache_path)
    if cache == "hits":  # filled by a run of its own first
        measure("genrun", str(work / "fill"), *args)
    floor = measure("floor", str(data), str(work / "floor.jsonl"), "1" if refs else "0", str(n))
    mine = measure("genrun", str(work / "run"), *args)
    records = (work / "run" / "answers.jsonl").open().readline()
    floor_record = (work / "floor.jsonl").open().readline()
    assert set(json.loads(records)) >= set(json.loads(floor_record)) - {"latency_s"}, (records, floor_record)
    shutil.rmtree(work, ignore_errors=True)
    return mine, floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="configurations by their names, e.g. 'refs, n=1, cache=off'")
    args = parser.parse_args()
    data = dataset(args.rows)
    work = Path(tempfile.mkdtemp(prefix="ceiling-", dir=WORK))
    configs = [c for c in CONFIGS if not args.only or name(*c) in args.only]
    results = []
    print(f"genrun's own cost, {args.rows} rows, an instant backend, vs a plain loop (the floor)")
    for config in configs:
        rates, floor_rates, ratios, rss = [], [], [], []
        for _ in range(args.repeats):
            mine, floor = one_config(data, args.rows, *config, work / "config")
            rates.append(args.rows / mine["wall"])
            floor_rates.append(args.rows / floor["wall"])
            ratios.append(mine["wall"] / floor["wall"])
            rss.append(mine["rss_mib"])
        row = {"config": name(*config), "genrun_rows_per_s": summary(rates), "floor_rows_per_s": summary(floor_rates),
               "floor_ratio": summary(ratios), "peak_rss_mib": max(rss)}
        results.append(row)
        print(f"  {row['config']:<26} genrun {statistics.median(rates):>8,.0f} rows/s  floor "
              f"{statistics.median(floor_rates):>8,.0f} rows/s  {statistics.median(ratios):.2f}x the floor  "
              f"peak RSS {max(rss):.0f} MiB", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    slowest = min(r["genrun_rows_per_s"]["median"] for r in results)
    widest = max(r["floor_ratio"]["median"] for r in results)
    print(f"slowest {slowest:,.0f} rows/s (target >= 30,000), at most {widest:.2f}x the floor (target <= 3)")
    emit("ceiling", {"rows": args.rows, "configs": results})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("genrun", "floor"):
        (child_genrun if sys.argv[1] == "genrun" else child_floor)(sys.argv[2:])
    else:
        main()
