"""Q2: genrun backend=openai vs a bare AsyncOpenAI loop against the same vLLM server on
127.0.0.1, at concurrency 1, 8 and 64, over the same prompts. Target: genrun >= 0.95."""

from __future__ import annotations

import argparse
import asyncio
import time

from common import dataset, emit, fmt, genrun_run, prompts, summary, tiny_model, vllm_server


async def bare_loop(url: str, texts: list[str], concurrency: int, max_tokens: int) -> tuple[float, int]:
    """The plainest correct client: one task per prompt under a semaphore."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0)
    limit = asyncio.Semaphore(concurrency)

    async def one(text: str) -> int:
        async with limit:
            response = await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": text}], temperature=0.0, top_p=1.0,
                max_tokens=max_tokens, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
            return response.usage.completion_tokens

    started = time.perf_counter()
    tokens = await asyncio.gather(*(one(t) for t in texts))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed, sum(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()

    texts = prompts(args.rows)
    data = dataset(args.rows)
    results = {}
    with vllm_server(tiny_model()) as url:
        # warm-up, for both: the first run in a process pays one-off imports
        asyncio.run(bare_loop(url, texts[:32], 8, args.max_tokens))
        genrun_run(None, "backend=openai", f"backend.base_url={url}", "backend.model_name=tiny",
                   "dataset=default", f"dataset.path={dataset(32)}", "sampling.max_tokens=4")
        for concurrency in args.concurrency:
            overrides = ["backend=openai", f"backend.base_url={url}", "backend.model_name=tiny",
                         f"backend.concurrency={concurrency}", "sampling=greedy",
                         f"sampling.max_tokens={args.max_tokens}", "dataset=default", f"dataset.path={data}"]
            bare_rates, genrun_rates, ratios = [], [], []
            for _ in range(args.repeats):
                bare_s, _tokens = asyncio.run(bare_loop(url, texts, concurrency, args.max_tokens))
                genrun_s, metrics = genrun_run(None, *overrides)
                assert metrics["rows"] == args.rows and metrics["failed"] == 0
                bare_rates.append(args.rows / bare_s)
                genrun_rates.append(args.rows / genrun_s)
                ratios.append(genrun_rates[-1] / bare_rates[-1])
            results[concurrency] = {"bare_rows_per_s": summary(bare_rates), "genrun_rows_per_s": summary(genrun_rates),
                                    "ratio": summary(ratios)}
    print(f"OpenAI-compatible, vLLM server on 127.0.0.1, {args.rows} prompts, max_tokens {args.max_tokens}")
    for concurrency, r in results.items():
        print(f"  concurrency {concurrency:>3}: bare {fmt(r['bare_rows_per_s'], 1)} rows/s | "
              f"genrun {fmt(r['genrun_rows_per_s'], 1)} rows/s | ratio {fmt(r['ratio'], 3)}")
    emit("openai_server", {"rows": args.rows, "by_concurrency": results})


if __name__ == "__main__":
    main()
