"""Q8: bookkeeping that stays fast and flat as a run grows. A synthetic run of --rows rows
(1,000,000 by default; 10,000,000 as an option), every row already answered, is resumed:
genrun must find that nothing is left. Reported side by side in one run, as ratios to one
plain parse (json.loads of every line) of the run's dataset and answers files:

- resume: the whole `genrun ... resume=DIR` process, start-up included, nothing left to do;
- resume + 1 row: the same run with one more dataset row, answered by a local server, so the
  end-of-run bookkeeping (metrics.json over every row) is in it;
- peak RSS of each (the process's, sampled every 0.1 s).

Targets: resume at most 1.0x the plain parse; peak RSS at 10M rows within 1.5x of 1M."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import WORK, emit


def build(rows: int) -> tuple[Path, Path]:
    """The dataset (rows + 1 lines, so a run of `rows` leaves one) and a run directory whose
    answers.jsonl holds rows records, as genrun writes them; built once, then reused."""
    data = WORK / f"big-{rows}.jsonl"
    run = WORK / f"big-run-{rows}"
    if (run / "complete").exists():
        return data, run
    WORK.mkdir(parents=True, exist_ok=True)
    with open(data, "w") as out:
        for i in range(rows + 1):
            out.write(json.dumps({"id": f"r{i}", "prompt": f"Question {i}: what is {i % 97} + {i % 89}?",
                                  "ref": str(i % 97 + i % 89)}) + "\n")
    subprocess.run(["rm", "-rf", str(run)], check=True)
    from genrun.testing.fault_server import FaultServer

    with FaultServer(work_s=0) as server:  # a real run of one row writes run.json as genrun does
        first = genrun(server.url, data, run, "dataset.limit=1")
        assert first.returncode == 0, first.stderr
    template = json.loads((run / "answers.jsonl").read_text().splitlines()[0])
    with open(run / "answers.jsonl", "w") as out:
        for i in range(rows):
            prompt = f"Question {i}: what is {i % 97} + {i % 89}?"
            right = i % 3 != 0
            out.write(json.dumps({**template, "id": f"r{i}", "index": i, "prompt": prompt,
                                  "answer": f"answer to {prompt}", "latency_s": 0.01,
                                  "reference": str(i % 97 + i % 89),
                                  "scores": {"accuracy": float(right), "exact_match": float(right),
                                             "f1": 1.0 if right else 0.25}}) + "\n")
    (run / "complete").touch()
    return data, run


def genrun(url: str, data: Path, run: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genrun", "backend=openai", f"backend.base_url={url}",
                           "backend.model_name=fake", "dataset=default", f"dataset.path={data}",
                           "dataset.fields.id=id", "dataset.fields.reference=ref", f"hydra.run.dir={run}", *extra],
                          capture_output=True, text=True)


def plain_parse(*paths: Path) -> float:
    started = time.perf_counter()
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                json.loads(line)
    return time.perf_counter() - started


def timed_resume(url: str, data: Path, run: Path, *extra: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one resume process."""
    import psutil

    command = [sys.executable, "-m", "genrun", "backend=openai", f"backend.base_url={url}", "backend.model_name=fake",
               "dataset=default", f"dataset.path={data}", "dataset.fields.id=id", "dataset.fields.reference=ref",
               f"resume={run}", *extra]
    started = time.perf_counter()
    peak = 0
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - started
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"resume failed: {err[-2000:]}")
    return wall, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from genrun.testing.fault_server import FaultServer

    result: dict = {"sizes": {}}
    for rows in args.rows:
        data, run = build(rows)
        parse, resume, plus_one, rss, rss_plus = [], [], [], [], []
        with FaultServer(work_s=0) as server:
            # A run written before the index existed: its first resume reads the whole journal once.
            (run / ".answers.jsonl.idx").unlink(missing_ok=True)
            (run / ".answers.jsonl.tally").unlink(missing_ok=True)
            first, _ = timed_resume(server.url, data, run, f"dataset.limit={rows}")
            print(f"  {rows} rows: first resume, building the index: {first:.1f} s", flush=True)
            for repeat in range(args.repeats):
                parse.append(plain_parse(data, run / "answers.jsonl"))
                wall, peak = timed_resume(server.url, data, run, f"dataset.limit={rows}")
                resume.append(wall)
                rss.append(peak)
                # one row more, in a copy of the run: answered, then metrics.json over every row
                copy = WORK / f"big-run-{rows}-plus-one"
                subprocess.run(["rm", "-rf", str(copy)], check=True)
                subprocess.run(["cp", "-r", str(run), str(copy)], check=True)
                wall, peak = timed_resume(server.url, data, copy)
                plus_one.append(wall)
                rss_plus.append(peak)
                subprocess.run(["rm", "-rf", str(copy)], check=True)
                print(f"  {rows} rows, repeat {repeat + 1}: plain parse {parse[-1]:.1f} s, resume {resume[-1]:.1f} s "
                      f"({rss[-1]:.0f} MiB), resume + 1 row {plus_one[-1]:.1f} s ({rss_plus[-1]:.0f} MiB)", flush=True)
        summary = {
            "plain_parse_s": statistics.median(parse), "resume_s": statistics.median(resume),
            "resume_plus_one_s": statistics.median(plus_one), "first_resume_s": first,
            "resume_ratio": statistics.median(r / p for r, p in zip(resume, parse)),
            "resume_plus_one_ratio": statistics.median(r / p for r, p in zip(plus_one, parse)),
            "peak_rss_mib": max(rss), "peak_rss_plus_one_mib": max(rss_plus),
        }
        result["sizes"][str(rows)] = summary
        print(f"{rows} rows: resume {summary['resume_ratio']:.2f}x a plain parse, with one row to answer "
              f"{summary['resume_plus_one_ratio']:.2f}x; peak RSS {summary['peak_rss_mib']:.0f} / "
              f"{summary['peak_rss_plus_one_mib']:.0f} MiB")
    sizes = sorted(result["sizes"], key=int)
    if len(sizes) > 1:
        result["rss_ratio_largest_to_smallest"] = (result["sizes"][sizes[-1]]["peak_rss_plus_one_mib"]
                                                   / result["sizes"][sizes[0]]["peak_rss_plus_one_mib"])
        print(f"peak RSS {sizes[-1]} / {sizes[0]} rows: {result['rss_ratio_largest_to_smallest']:.2f}x")
    emit("big_run", result)


if __name__ == "__main__":
    main()
