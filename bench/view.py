"""Q10: genrun-view on a finished run of --rows rows (1,000,000 by default), every request
timed from outside, over HTTP, as a browser makes it; the server restarted for each repeat.

- open: the run's page, the first request of a fresh server (the index checked against the
  journal, the first page of rows read, the page rendered);
- a page of rows, unfiltered, at 20 random pages;
- the first filtered page asked at once after opening: it waits for the filter columns,
  which the opening starts building in two worker processes;
- filtered pages after that (failed, wrong, truncated, a score range), 20 random pages each;
- a text search: its first page (one pass over the journal's bytes) and its next pages;
- peak RSS of the server and its workers, and that less the journal's mapped pages.

Side by side: one plain parse (json.loads of every line) of the same answers file.
Targets: open under 2 s; every page of rows under 300 ms."""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from common import WORK, emit, summary


def build(rows: int) -> Path:
    """A finished run written by genrun's own journal writer (answers.jsonl, its index and
    tally) and metrics.json, built once, then reused."""
    run = WORK / f"view-run-{rows}"
    if (run / "metrics.json").exists():
        return run
    from genrun.rundir.journal import AnswerLog, write_json

    run.mkdir(parents=True, exist_ok=True)
    log = AnswerLog(run / "answers.jsonl", metrics=["accuracy"])
    for i in range(rows):
        ok = i % 50 != 7
        record = {"id": f"r{i}", "index": i,
                  "prompt": f"Question {i}: what is {i % 97} + {i % 89}? Think step by step, then give the number.",
                  "answer": (f"First {i % 97}, then {i % 89} more, so the answer is {i % 97 + i % 89 + (i % 3 == 0)}."
                             if ok else None),
                  "error": None if ok else "server error 500 (after 3 retries)",
                  "finish_reason": "length" if i % 10 == 3 else "stop", "prompt_tokens": 28, "completion_tokens": 22,
                  "latency_s": 0.0123, "reference": str(i % 97 + i % 89)}
        if ok:
            record["extracted"] = str(i % 97 + i % 89 + (i % 3 == 0))
            record["scores"] = {"accuracy": float(i % 3 != 0)}
        log.write(record)
    log.close()
    write_json(run / "metrics.json", {**log.tally.result(None), "status": "ok"})
    return run


def plain_parse(answers: Path) -> float:
    started = time.perf_counter()
    with open(answers) as handle:
        for line in handle:
            json.loads(line)
    return time.perf_counter() - started


def get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as reply:
        reply.read()
        assert reply.status == 200
    return time.perf_counter() - started


def rss_sampler(pid: int, stop: threading.Event, peak: list[float]) -> None:
    """Peak RSS of the server and its workers, and of their own memory alone: RSS less its
    file-backed pages (the mapped journal, which belong to the page cache)."""
    import psutil

    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            infos = [p.memory_info() for p in (process, *process.children(recursive=True))]
            peak[0] = max(peak[0], sum(i.rss for i in infos) / 2**20)
            peak[1] = max(peak[1], sum(i.rss - i.shared for i in infos) / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.05)


def one_repeat(run: Path, rows: int, seed: int) -> dict[str, float | list[float]]:
    server = subprocess.Popen([sys.executable, "-m", "genrun.view", str(run), "--port", "0"], text=True,
                              stderr=subprocess.PIPE)
    address = re.search(r"(http://\S+)/", server.stderr.readline()).group(1)
    stop, peak = threading.Event(), [0.0, 0.0]
    sampler = threading.Thread(target=rss_sampler, args=(server.pid, stop, peak), daemon=True)
    sampler.start()
    pick = random.Random(seed)
    pages = rows // 50
    try:
        base = f"{address}/run?key=."
        opened = get(base)
        first_filtered = get(base + "&show=wrong&page=2")
        plain = [get(base + f"&page={pick.randrange(1, pages)}") for _ in range(20)]
        filtered = [get(base + f"&{f}&page={pick.randrange(1, 2000)}") for f in
                    ("show=failed", "show=wrong", "show=truncated", "low=0.5&high=1") for _ in range(5)]
        search_first = get(base + "&q=so%20the%20answer%20is%2017.&page=1")
        search_next = [get(base + f"&q=so%20the%20answer%20is%2017.&page={p}") for p in range(2, 12)]
        row = [get(f"{address}/row?key=.&pos={pick.randrange(rows)}") for _ in range(10)]
    finally:
        stop.set()
        server.terminate()
        server.wait(30)
    return {"open_s": opened, "first_filtered_s": first_filtered, "page_ms": [t * 1000 for t in plain],
            "filtered_ms": [t * 1000 for t in filtered], "search_first_ms": search_first * 1000,
            "search_next_ms": [t * 1000 for t in search_next], "row_ms": [t * 1000 for t in row],
            "peak_rss_mib": peak[0], "peak_own_mib": peak[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run = build(args.rows)
    answers = run / "answers.jsonl"
    size_mb = answers.stat().st_size / 1e6
    parse = [plain_parse(answers) for _ in range(2)]
    repeats = [one_repeat(run, args.rows, seed) for seed in range(args.repeats)]

    def across(key: str, worst: bool = False) -> dict[str, float]:
        values = [max(r[key]) if worst else statistics.median(r[key]) if isinstance(r[key], list) else r[key]
                  for r in repeats]
        return summary(values)

    result = {"rows": args.rows, "answers_mb": round(size_mb), "plain_parse_s": summary(parse),
              "open_s": across("open_s"), "first_filtered_s": across("first_filtered_s"),
              "page_ms": across("page_ms"), "page_ms_worst": across("page_ms", worst=True),
              "filtered_ms": across("filtered_ms"), "filtered_ms_worst": across("filtered_ms", worst=True),
              "search_first_ms": across("search_first_ms"), "search_next_ms": across("search_next_ms"),
              "row_ms": across("row_ms"), "peak_rss_mib": across("peak_rss_mib"),
              "peak_own_mib": across("peak_own_mib")}
    result["open_vs_parse"] = result["open_s"]["median"] / result["plain_parse_s"]["median"]
    print(f"{args.rows} rows, answers.jsonl {size_mb:.0f} MB; a plain parse {result['plain_parse_s']['median']:.2f} s")
    for key in ("open_s", "first_filtered_s", "page_ms", "page_ms_worst", "filtered_ms", "filtered_ms_worst",
                "search_first_ms", "search_next_ms", "row_ms", "peak_rss_mib", "peak_own_mib"):
        x = result[key]
        print(f"  {key:18} {x['median']:9.3f} (min {x['min']:.3f}, max {x['max']:.3f})")
    emit("view", result)


if __name__ == "__main__":
    main()
