"""Q1: genrun backend=vllm vs a bare LLM.chat over the same prompts and sampling settings.

One engine serves both (start-up excluded from both); repeats alternate bare and genrun.
Target: genrun >= 0.95 of the bare rows/s.
"""

from __future__ import annotations

from common import VLLM_CPU, dataset, emit, fmt, genrun_run, model_for, paired, prompts, workload_args


def main() -> None:
    parser = workload_args(__doc__, rows=2000, max_tokens=32, repeats=7)
    args = parser.parse_args()

    import time

    from genrun.backend.vllm import VLLMBackend
    from genrun.prompt.messages import prompt_messages

    model = model_for(args)
    sampling = {"temperature": 0.0, "top_p": 1.0, "max_tokens": args.max_tokens}
    extra = {"chat_template_kwargs": {"enable_thinking": False}}
    backend = VLLMBackend(model, sampling=sampling, extra=extra, **VLLM_CPU)
    conversations = [prompt_messages(p) for p in prompts(args.rows)]
    data = dataset(args.rows)
    overrides = ["backend=vllm", f"backend.model_name_or_path={model}", "sampling=greedy",
                 f"sampling.max_tokens={args.max_tokens}", "dataset=default", f"dataset.path={data}"]

    def bare() -> tuple[float, int]:
        started = time.perf_counter()
        outputs = backend.llm.chat(conversations, backend.sampling_params, use_tqdm=False,
                                   chat_template_kwargs=extra["chat_template_kwargs"])
        return time.perf_counter() - started, sum(len(o.outputs[0].token_ids) for o in outputs)

    # warm-up, for both: the first run in a process pays one-off imports
    _, bare_tokens = bare()
    genrun_run(backend, *overrides[:-1], f"dataset.path={dataset(64)}")

    def timed_genrun() -> float:
        seconds, metrics = genrun_run(backend, *overrides)
        assert metrics["rows"] == args.rows and metrics["completion_tokens"] == bare_tokens, "same work"
        return seconds

    try:
        result = paired(args.repeats, args.rows, lambda: bare()[0], timed_genrun)
    finally:
        backend.close()
    print(f"vLLM offline, {args.rows} prompts, greedy, max_tokens {args.max_tokens}, {args.model} model on this machine")
    print(f"  bare LLM.chat rows/s : {fmt(result['baseline_rows_per_s'], 1)}")
    print(f"  genrun rows/s        : {fmt(result['genrun_rows_per_s'], 1)}  (whole run: dataset, records, scores, metrics)")
    print(f"  ratio genrun / bare  : {fmt(result['ratio'], 3)}  target >= 0.95")
    emit("vllm_offline", {"model": args.model, **result})


if __name__ == "__main__":
    main()
