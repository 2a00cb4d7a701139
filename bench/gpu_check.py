"""The GPU check that bench/gpu_check.sh runs: genrun backend=hf on an NVIDIA GPU, with a
random-weight Llama of a realistic shape (about 1B parameters, bf16) built on the spot (no
download), against a plain per-prompt `model.generate` loop on the same prompts.

It prints one table: rows/s at each batch size and the ratio to the plain loop, whether the
greedy answers are the same at every batch size (rows that match batch 1's), that
backend.gpu_ids is honoured (the run's process sees only that GPU), and peak GPU memory.
Without a GPU it builds a small model of the same kind and runs the same steps on the CPU
as far as they go, then says that the rest needs a GPU."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# About 1B parameters (TinyLlama's shape): 22 layers of 2048, grouped-query attention.
GPU_SHAPE = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
             "num_key_value_heads": 4, "head_dim": 64}
CPU_SHAPE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 64}


def build_model(out: Path, shape: dict, device: str, dtype: str) -> int:
    """A random-weight Llama of this shape with the tiny model's tokenizer and chat template;
    returns its parameter count."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from genrun.assets.tiny_model import build_tiny_model

    build_tiny_model(out)  # the tokenizer and template; its weights are replaced below
    tiny = LlamaConfig.from_pretrained(out)
    config = LlamaConfig(vocab_size=tiny.vocab_size, max_position_embeddings=2048, initializer_range=0.2,
                         tie_word_embeddings=False, bos_token_id=None, eos_token_id=tiny.eos_token_id,
                         pad_token_id=tiny.pad_token_id, **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(eos_token_id=tiny.eos_token_id, pad_token_id=tiny.pad_token_id)
    model.save_pretrained(out)
    count = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return count


def child(argv: list[str]) -> None:
    """One genrun run in a fresh process, torch not yet loaded (so gpu_ids can narrow what it
    sees); prints what it saw and how fast it went."""
    out, overrides = Path(argv[0]), argv[1:]
    from genrun.engine.job import run
    from genrun.settings import compose, load

    metrics = run(load(compose(overrides)), out)
    import torch

    seen = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "status": metrics["status"],
            "wall_s": metrics["wall_s"], "rows": metrics["rows_this_run"], "failed": metrics["failed"]}
    if torch.cuda.is_available():
        seen.update(devices_seen=torch.cuda.device_count(), peak_gpu_mib=torch.cuda.max_memory_allocated() / 2**20)
    print("CHILD " + json.dumps(seen))


def genrun_run(model: Path, data: Path, out: Path, batch_size: int, max_tokens: int, gpu: int | None,
               dtype: str) -> dict:
    overrides = ["backend=hf", f"backend.model_name_or_path={model}", f"backend.batch_size={batch_size}",
                 f"backend.dtype={dtype}", "sampling=greedy", f"sampling.max_tokens={max_tokens}", "dataset=default",
                 f"dataset.path={data}"]
    if gpu is not None:
        overrides.append(f"backend.gpu_ids={gpu}")
    result = subprocess.run([sys.executable, __file__, "--child", str(out), *overrides], capture_output=True,
                            text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""} if gpu is None else None)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("CHILD ")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"genrun at batch {batch_size} failed:\n{result.stderr[-3000:]}")
    seen = json.loads(lines[-1][len("CHILD "):])
    records = sorted((json.loads(ln) for ln in (out / "answers.jsonl").open()), key=lambda r: r["index"])
    seen["answers"] = [r["answer"] for r in records]
    return seen


def plain_loop(model_dir: Path, texts: list[str], max_tokens: int, device: str, dtype: str) -> tuple[float, list]:
    """What one writes without genrun: one prompt at a time through model.generate."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()
    answers = []

    def once(prompts: list[str]) -> None:
        for text in prompts:
            # enable_thinking=False: genrun's default extra.chat_template_kwargs
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                enable_thinking=False, return_tensors="pt",
                                                return_dict=True).to(device)
            with torch.inference_mode():
                output = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
            answers.append(tokenizer.decode(output[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))

    once(texts[:2])  # warm-up
    answers.clear()
    started = time.perf_counter()
    once(texts)
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    return wall, answers  # the model is freed with this frame, before genrun's runs load theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--out", type=Path, default=None, help="also write the table and figures here")
    args = parser.parse_args()

    import torch

    from common import prompts

    gpu = torch.cuda.is_available()
    device, dtype = ("cuda", "bfloat16") if gpu else ("cpu", "float32")
    if not gpu:
        print("gpu_check: no CUDA GPU is visible here: running the same steps on the CPU with a small model; "
              "the figures that matter (1B parameters, bf16, gpu_ids, GPU memory) need a GPU")
        args.rows, args.batch_sizes = min(args.rows, 8), [b for b in args.batch_sizes if b <= 8]
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    texts = prompts(args.rows)
    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    started = time.perf_counter()
    parameters = build_model(work / "model", GPU_SHAPE if gpu else CPU_SHAPE, device, dtype)
    size = f"{parameters / 1e9:.2f}B" if parameters >= 1e8 else f"{parameters / 1e6:.1f}M"
    print(f"model: random-weight Llama, {size} parameters, {dtype}, built in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    target = torch.cuda.device_count() - 1 if gpu else None  # the last GPU: gpu_ids must move the run there
    loop_wall, loop_answers = plain_loop(work / "model", texts, args.max_tokens, device, dtype)
    loop_rate = args.rows / loop_wall
    print(f"plain model.generate loop: {loop_rate:.2f} rows/s", flush=True)
    runs = {}
    for batch_size in args.batch_sizes:
        runs[batch_size] = genrun_run(work / "model", data, work / f"run-{batch_size}", batch_size, args.max_tokens,
                                      target, dtype)
        print(f"genrun batch {batch_size}: {args.rows / runs[batch_size]['wall_s']:.2f} rows/s", flush=True)

    first = runs[args.batch_sizes[0]]["answers"]
    lines = [f"GPU check: genrun backend=hf, {size}-parameter random Llama, {dtype}, "
             f"{args.rows} prompts x {args.max_tokens} tokens, greedy; "
             f"{torch.cuda.get_device_name(0) if gpu else 'CPU (no GPU here)'}; torch {torch.__version__}",
             "", "| run | rows/s | vs plain loop | same answers as batch "
             f"{args.batch_sizes[0]} | same as plain loop | devices the run saw | peak GPU MiB |",
             "|---|---|---|---|---|---|---|",
             f"| plain `model.generate` loop | {loop_rate:.2f} | 1.00 | | | | |"]
    for batch_size, seen in runs.items():
        rate = args.rows / seen["wall_s"]
        same = sum(a == b for a, b in zip(seen["answers"], first))
        plain = sum(a == b for a, b in zip(seen["answers"], loop_answers))
        devices = (f"{seen.get('devices_seen')} (CUDA_VISIBLE_DEVICES={seen['cuda_visible_devices']})" if gpu
                   else "CPU")
        memory = f"{seen['peak_gpu_mib']:.0f}" if gpu else "needs a GPU"
        lines.append(f"| genrun batch {batch_size} | {rate:.2f} | {rate / loop_rate:.2f} | {same}/{args.rows} | "
                     f"{plain}/{args.rows} | {devices} | {memory} |")
    if gpu:
        honoured = all(s.get("devices_seen") == 1 and s["cuda_visible_devices"] == str(target) for s in runs.values())
        lines.append(f"\nbackend.gpu_ids={target} honoured (each run saw one GPU, that one): {honoured}")
    else:
        lines.append("\nneeds a GPU for the rest: a 1B bf16 model, gpu_ids and peak GPU memory "
                     "(run bench/gpu_check.sh on a machine with an NVIDIA GPU)")
    table = "\n".join(lines)
    print("\n" + table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.md").write_text(table + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
