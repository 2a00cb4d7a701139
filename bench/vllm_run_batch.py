"""Q7: the comparison a user makes first: `genrun backend=vllm` against vLLM's own batch runner
(`python -m vllm.entrypoints.openai.run_batch`) on the same requests, whole process, start-up included. Target: genrun's
wall time <= 1.0x run_batch's.

Both get the same engine settings (dtype, context length, eager mode, the KV-cache space of
VLLM_CPU_KVCACHE_SPACE) and the same greedy requests; runs alternate so drift hits both.
Memory is the peak of each process tree's summed RSS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from common import VLLM_CPU, WORK, dataset, emit, fmt, model_for, prompts, summary, workload_args


def run_batch_input(model: str, rows: int, max_tokens: int) -> Path:
    """The requests genrun sends, as a Batch input file (custom_id = genrun's row id)."""
    path = WORK / f"run-batch-{rows}-{max_tokens}.jsonl"
    body = {"model": model, "temperature": 0.0, "top_p": 1.0, "max_tokens": max_tokens,
            "chat_template_kwargs": {"enable_thinking": False}}
    path.write_text("".join(json.dumps({"custom_id": str(i), "method": "POST", "url": "/v1/chat/completions",
                                        "body": {**body, "messages": [{"role": "user", "content": p}]}}) + "\n"
                            for i, p in enumerate(prompts(rows))))
    return path


def timed(command: list[str], log: Path) -> tuple[float, float]:
    """Wall seconds of one whole process, and the peak of its process tree's summed RSS (MiB,
    sampled every 0.2 s: vLLM's EngineCore and worker are processes of their own)."""
    import psutil

    started = time.perf_counter()
    peak = 0
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=WORK)
        tree = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                peak = max(peak, sum(p.memory_info().rss for p in [tree, *tree.children(recursive=True)]))
            except psutil.Error:  # a process ended while being read
                pass
            time.sleep(0.2)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed; see {log}")
    return wall, peak / 2**20


def main() -> None:
    parser = workload_args(__doc__, rows=2000, max_tokens=32, repeats=3)
    args = parser.parse_args()
    model = model_for(args)
    data, requests = dataset(args.rows), run_batch_input(model, args.rows, args.max_tokens)
    # `vllm run_batch` needs the "vllm" distribution's metadata, which vllm-cpu lacks
    run_batch = [sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(requests), "-o", str(WORK / "run-batch-out.jsonl"),
                 "--model", model, "--dtype", VLLM_CPU["dtype"], "--max-model-len", str(VLLM_CPU["max_model_len"]),
                 "--gpu-memory-utilization", str(VLLM_CPU["gpu_memory_utilization"]), "--enforce-eager"]
    genrun = [sys.executable, "-m", "genrun", "backend=vllm", f"backend.model_name_or_path={model}",
              *(f"+backend.{k}={v}" if k in ("max_model_len", "enforce_eager") else f"backend.{k}={v}"
                for k, v in VLLM_CPU.items()),
              "sampling=greedy", f"sampling.max_tokens={args.max_tokens}", "dataset=default",
              f"dataset.path={data}", f"hydra.run.dir={WORK}/run-batch-genrun"]
    walls: dict[str, list[float]] = {"run_batch": [], "genrun": []}
    rss: dict[str, list[float]] = {"run_batch": [], "genrun": []}
    ratios = []
    for repeat in range(args.repeats):
        for name, command in (("run_batch", run_batch), ("genrun", genrun)):
            subprocess.run(["rm", "-rf", f"{WORK}/run-batch-genrun"], check=True)
            wall, peak = timed(command, WORK / f"{name}.log")
            walls[name].append(wall)
            rss[name].append(peak)
            print(f"  repeat {repeat + 1} {name:9}: {wall:.1f} s, peak RSS {peak:.0f} MiB", flush=True)
        ratios.append(walls["genrun"][-1] / walls["run_batch"][-1])
    answered = sum(1 for _ in (WORK / "run-batch-genrun" / "answers.jsonl").open())
    batch_out = [json.loads(ln) for ln in (WORK / "run-batch-out.jsonl").open()]
    assert answered == args.rows and len(batch_out) == args.rows and not any(r.get("error") for r in batch_out)
    result = {"model": args.model, "rows": args.rows, "max_tokens": args.max_tokens,
              "run_batch_s": summary(walls["run_batch"]), "genrun_s": summary(walls["genrun"]),
              "ratio": summary(ratios), "run_batch_mib": summary(rss["run_batch"]), "genrun_mib": summary(rss["genrun"])}
    print(f"Whole process, {args.rows} prompts x {args.max_tokens} tokens, {args.model} model")
    print(f"  vllm run_batch wall s : {fmt(result['run_batch_s'], 1)}")
    print(f"  genrun wall s         : {fmt(result['genrun_s'], 1)}")
    print(f"  ratio genrun / run_batch : {fmt(result['ratio'], 3)}  target <= 1.0")
    emit("vllm_run_batch", result)


if __name__ == "__main__":
    main()
