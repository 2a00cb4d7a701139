"""Q5: peak RSS of a genrun run streaming 1,000 rows vs 100,000 rows (a generated local dataset,
backend=openai against a local server that answers at once). Target: the larger run's peak
within 10% of the smaller's, i.e. memory does not grow with the dataset."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import WORK, emit

MEASURE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB, the run's peak
"""


def ok_rows(n: int):
    path = WORK / f"ok-{n}.jsonl"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as handle:
            for i in range(n):
                handle.write(json.dumps({"prompt": f"ok {i}", "answer": str(i)}) + "\n")
    return path


def peak_rss_mib(url: str, rows: int) -> float:
    out = WORK / f"memory-run-{rows}"
    argv = [sys.executable, "-m", "genrun", "backend=openai", f"backend.base_url={url}", "backend.model_name=fake",
            "backend.concurrency=64", "dataset=default", f"dataset.path={ok_rows(rows)}",
            "dataset.fields.reference=answer", f"hydra.run.dir={out}"]
    subprocess.run(["rm", "-rf", str(out)], check=True)
    result = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, check=True)
    return int(result.stdout.strip()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()
    from genrun.testing.fault_server import FaultServer

    with FaultServer(work_s=0) as server:
        small = peak_rss_mib(server.url, args.small)
        large = peak_rss_mib(server.url, args.large)
    ratio = large / small
    print("Peak RSS of a backend=openai run (streaming, records flushed as they come)")
    print(f"  {args.small:>7} rows: {small:.1f} MiB")
    print(f"  {args.large:>7} rows: {large:.1f} MiB  ratio {ratio:.3f}  target <= 1.10")
    emit("memory", {"small_rows": args.small, "large_rows": args.large, "small_mib": small, "large_mib": large,
                    "ratio": ratio})


if __name__ == "__main__":
    main()
