"""Q2: genrun backend=openai vs a bare AsyncOpenAI loop against the same vLLM server on
127.0.0.1, at concurrency 1, 8 and 64, over the same prompts. Target: genrun >= 0.95.

Each run has at least 32 rows per request slot (2,048 at concurrency 64), so it lasts seconds
and the one-off costs both sides pay (the client's creation, ~40 ms; genrun's dataset and
run.json) weigh as little as in a real evaluation."""

from __future__ import annotations

import asyncio
import time

from common import dataset, emit, fmt, genrun_run, model_for, paired, prompts, vllm_server, workload_args


async def bare_loop(url: str, texts: list[str], concurrency: int, max_tokens: int) -> tuple[float, int]:
    """The plainest correct client: one task per prompt under a semaphore. Timed from the
    client's creation to its close, as genrun's run is."""
    from openai import AsyncOpenAI

    started = time.perf_counter()
    client = AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0)
    limit = asyncio.Semaphore(concurrency)

    async def one(text: str) -> int:
        async with limit:
            response = await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": text}], temperature=0.0, top_p=1.0,
                max_tokens=max_tokens, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
            return response.usage.completion_tokens

    tokens = await asyncio.gather(*(one(t) for t in texts))
    await client.close()
    return time.perf_counter() - started, sum(tokens)


def main() -> None:
    parser = workload_args(__doc__, rows=256, max_tokens=16, repeats=7)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()

    results = {}
    with vllm_server(model_for(args)) as url:
        # warm-up, for both: the first run in a process pays one-off imports
        asyncio.run(bare_loop(url, prompts(32), 8, args.max_tokens))
        genrun_run(None, "backend=openai", f"backend.base_url={url}", "backend.model_name=tiny",
                   "dataset=default", f"dataset.path={dataset(32)}", "sampling.max_tokens=4")
        for concurrency in args.concurrency:
            rows = max(args.rows, 32 * concurrency)
            texts = prompts(rows)
            overrides = ["backend=openai", f"backend.base_url={url}", "backend.model_name=tiny",
                         f"backend.concurrency={concurrency}", "sampling=greedy",
                         f"sampling.max_tokens={args.max_tokens}", "dataset=default", f"dataset.path={dataset(rows)}"]

            def genrun_once() -> float:
                seconds, metrics = genrun_run(None, *overrides)
                assert metrics["rows"] == rows and metrics["failed"] == 0
                return seconds

            results[concurrency] = paired(
                args.repeats, rows, lambda: asyncio.run(bare_loop(url, texts, concurrency, args.max_tokens))[0],
                genrun_once)
    print(f"OpenAI-compatible, vLLM server on 127.0.0.1, {args.model} model, max_tokens {args.max_tokens}")
    for concurrency, r in results.items():
        print(f"  concurrency {concurrency:>3}, {r['rows']} prompts: bare {fmt(r['baseline_rows_per_s'], 1)} rows/s | "
              f"genrun {fmt(r['genrun_rows_per_s'], 1)} rows/s | ratio {fmt(r['ratio'], 3)}")
    emit("openai_server", {"model": args.model, "by_concurrency": results})


if __name__ == "__main__":
    main()
