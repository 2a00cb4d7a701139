"""Q3: the same OpenAI-compatible workload through EleutherAI's lm-evaluation-harness
(`local-chat-completions`) and through genrun, against the same vLLM server on 127.0.0.1:
lm-eval at its default settings (one request at a time) beside genrun at its defaults
(concurrency 8), and both at concurrency 8. genrun should be ahead.

Needs `pip install lm-eval` (the `bench` extra)."""

from __future__ import annotations

import logging
import time

from common import WORK, dataset, emit, fmt, genrun_run, paired, tiny_model, vllm_server, workload_args

TASK = """task: genrun_bench
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: ""
generation_kwargs:
  until: []
  max_gen_toks: {max_tokens}
  temperature: 0.0
  do_sample: false
metric_list:
  - metric: exact_match
"""


def lm_eval_run(url: str, concurrency: int | None, task_dir: str) -> float:
    import lm_eval
    from lm_eval.tasks import TaskManager

    model_args = {"model": "tiny", "base_url": f"{url}/chat/completions", "tokenizer_backend": None,
                  "tokenized_requests": False}
    if concurrency is not None:
        model_args["num_concurrent"] = concurrency
    started = time.perf_counter()
    lm_eval.simple_evaluate(model="local-chat-completions", model_args=model_args, tasks=["genrun_bench"],
                            task_manager=TaskManager(include_path=task_dir), apply_chat_template=True)
    return time.perf_counter() - started


def main() -> None:
    parser = workload_args(__doc__, rows=256, max_tokens=16, repeats=3)
    args = parser.parse_args()
    logging.getLogger("lm_eval").setLevel(logging.WARNING)

    data = dataset(args.rows)
    task_dir = WORK / "lm_eval_task"
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "genrun_bench.yaml").write_text(TASK.format(data=data, max_tokens=args.max_tokens))
    # (label, lm-eval num_concurrent or None for its default, genrun concurrency)
    settings = [("defaults (lm-eval 1, genrun 8)", None, 8), ("both at concurrency 8", 8, 8)]
    results = {}
    with vllm_server(tiny_model()) as url:
        common = ["backend=openai", f"backend.base_url={url}", "backend.model_name=tiny", "sampling=greedy",
                  f"sampling.max_tokens={args.max_tokens}", "dataset=default", f"dataset.path={data}"]
        lm_eval_run(url, 8, str(task_dir))  # warm-up, for both
        genrun_run(None, *common)
        for label, lm_concurrency, genrun_concurrency in settings:
            def genrun_once() -> float:
                seconds, metrics = genrun_run(None, *common, f"backend.concurrency={genrun_concurrency}")
                assert metrics["rows"] == args.rows and metrics["failed"] == 0
                return seconds

            results[label] = {"label": label, **paired(
                args.repeats, args.rows, lambda: lm_eval_run(url, lm_concurrency, str(task_dir)), genrun_once)}
    print(f"genrun vs lm-evaluation-harness local-chat-completions, {args.rows} prompts, vLLM server on 127.0.0.1")
    for label, r in results.items():
        print(f"  {label}: lm-eval {fmt(r['baseline_rows_per_s'], 1)} rows/s | genrun "
              f"{fmt(r['genrun_rows_per_s'], 1)} rows/s | genrun/lm-eval {fmt(r['ratio'], 2)}")
    emit("lm_eval_compare", {"rows": args.rows, "by_concurrency": results})


if __name__ == "__main__":
    main()
