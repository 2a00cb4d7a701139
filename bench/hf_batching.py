"""Q4: genrun backend=hf at batch sizes 1, 8 and 32 vs a plain per-prompt model.generate loop,
on the same prompts; and whether greedy answers are identical across batch sizes."""

from __future__ import annotations

import time

from common import dataset, emit, fmt, genrun_run, model_for, prompts, summary, workload_args


def main() -> None:
    parser = workload_args(__doc__, rows=256, max_tokens=32, repeats=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()

    import json

    import torch

    from genrun.backend.hf import HFBackend

    model_path = model_for(args)
    sampling = {"temperature": 0.0, "max_tokens": args.max_tokens}
    backend = HFBackend(model_path, sampling=sampling, extra={"chat_template_kwargs": {"enable_thinking": False}})
    tokenizer, model = backend.tokenizer, backend.model
    texts = prompts(args.rows)
    data = dataset(args.rows)

    def plain_loop() -> float:
        """What one writes without genrun: one prompt at a time through model.generate."""
        started = time.perf_counter()
        for text in texts:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                enable_thinking=False, return_tensors="pt", return_dict=True)
            with torch.inference_mode():
                model.generate(**ids, max_new_tokens=args.max_tokens, do_sample=False)
        return time.perf_counter() - started

    answers: dict[int, list[str]] = {}
    loop_rates: list[float] = []
    rates: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    plain_loop()  # warm-up
    for _ in range(args.repeats):
        loop_rates.append(args.rows / plain_loop())
        for batch_size in args.batch_sizes:
            backend.batch_size = batch_size
            wall, metrics = genrun_run(backend, "backend=hf", f"backend.model_name_or_path={model_path}",
                                       "sampling=greedy", f"sampling.max_tokens={args.max_tokens}", "dataset=default",
                                       f"dataset.path={data}")
            rates[batch_size].append(args.rows / wall)
            run_dir = sorted((p for p in data.parent.glob("run-*")), key=lambda p: p.stat().st_mtime)[-1]
            records = sorted((json.loads(ln) for ln in (run_dir / "answers.jsonl").open()), key=lambda r: r["index"])
            answers[batch_size] = [r["answer"] for r in records]
    identical = all(answers[b] == answers[args.batch_sizes[0]] for b in args.batch_sizes)
    backend.close()

    loop = summary(loop_rates)
    print(f"HF transformers, {args.model} model on the CPU, {args.rows} prompts, greedy, max_tokens {args.max_tokens}")
    print(f"  plain per-prompt model.generate loop: {fmt(loop, 1)} rows/s")
    result = {"model": args.model, "rows": args.rows, "plain_loop_rows_per_s": loop, "by_batch_size": {}, "greedy_identical": identical}
    for batch_size, values in rates.items():
        ratios = [r / ln for r, ln in zip(values, loop_rates)]
        result["by_batch_size"][batch_size] = {"rows_per_s": summary(values), "ratio_to_loop": summary(ratios)}
        print(f"  genrun batch_size {batch_size:>2}: {fmt(summary(values), 1)} rows/s, "
              f"x{summary(ratios)['median']:.2f} the plain loop")
    print(f"  greedy answers identical across batch sizes {args.batch_sizes}: {identical}")
    emit("hf_batching", result)


if __name__ == "__main__":
    main()
