"""Q6: start-up of the OpenAI-only path: wall time of `genrun backend=openai ... --cfg job` and of
a 1-row backend=openai run, and whether torch, transformers or vllm get imported on it."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from common import ROOT, dataset, emit, fmt, summary

HEAVY = ("torch", "transformers", "vllm")


def timed(args: list[str]) -> tuple[float, set[str]]:
    """Wall time of `python -X importtime -m genrun ARGS`, and which heavy modules it imported."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "genrun", *args], capture_output=True,
                            text=True, env=os.environ.copy(), cwd=ROOT)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    return wall, {m for m in HEAVY if m in imported}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from genrun.testing.fault_server import FaultServer  # a real local OpenAI-compatible server that answers at once

    data = dataset(1)
    with FaultServer() as server:
        common_args = ["backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake",
                       "dataset=default", f"dataset.path={data}"]
        runs = {"--cfg job": [*common_args, "--cfg", "job"],
                "1-row run": [*common_args, f"hydra.run.dir={dataset(1).parent / 'startup-run'}"]}
        result = {}
        for name, argv in runs.items():
            timed(argv)  # warm the file cache
            walls, heavy = [], set()
            for _ in range(args.repeats):
                wall, imported = timed(argv)
                walls.append(wall)
                heavy |= imported
            result[name] = {"wall_s": summary(walls), "heavy_imports": sorted(heavy)}
    print("Start-up of the OpenAI-only path (python -m genrun, wall seconds)")
    for name, r in result.items():
        print(f"  {name:<10}: {fmt(r['wall_s'], 2)} s; torch/transformers/vllm imported: {r['heavy_imports'] or 'none'}")
    emit("startup", result)


if __name__ == "__main__":
    main()
