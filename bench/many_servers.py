"""Two servers against one: genrun `backend=openai` with `backend.base_url` one URL, then a list
of two, over the same rows, side by side in one run.

The servers are genrun's own fault server on 127.0.0.1 with a fixed capacity (at most
--capacity answers worked on at once, each taking --work-ms; more requests queue), so the
server is the bottleneck, as a GPU server is, whatever genrun's concurrency. Two equal servers
should give about 2x; a server half as fast beside the first, about 1.5x, with the slow one
taking about a third of the rows (each row goes to the server with the fewest in flight).
Real vLLM servers would share this machine's two cores and measure the CPU instead."""

from __future__ import annotations

import argparse
import contextlib

from common import dataset, emit, fmt, genrun_run, paired, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=2)
    parser.add_argument("--work-ms", type=float, default=40.0)
    parser.add_argument("--concurrency", type=int, default=4, help="backend.concurrency (per server)")
    args = parser.parse_args()
    from genrun.testing.fault_server import FaultServer

    work = args.work_ms / 1000
    data = dataset(args.rows)
    results, shares = {}, {}
    with contextlib.ExitStack() as stack:
        fast, twin = (stack.enter_context(FaultServer(work_s=work, capacity=args.capacity)) for _ in range(2))
        slow = stack.enter_context(FaultServer(work_s=2 * work, capacity=args.capacity))

        def run(urls: list[str]) -> tuple[float, dict]:
            base_url = urls[0] if len(urls) == 1 else f"[{','.join(urls)}]"
            seconds, metrics = genrun_run(None, "backend=openai", f"backend.base_url={base_url}",
                                          "backend.model_name=m", f"backend.concurrency={args.concurrency}",
                                          "dataset=default", f"dataset.path={data}")
            assert metrics["rows"] == args.rows and metrics["failed"] == 0, metrics
            return seconds, metrics

        run([fast.url])  # warm-up: the first run in a process pays one-off imports
        for label, urls in (("two equal servers", [fast.url, twin.url]),
                            ("a server and one half as fast", [fast.url, slow.url])):
            taken: list[float] = []

            def both() -> float:
                seconds, metrics = run(urls)
                taken.append(metrics["servers"][urls[1]]["answered"] / args.rows)
                return seconds

            results[label] = paired(args.repeats, args.rows, lambda: run([fast.url])[0], both)
            shares[label] = summary(taken)
    print(f"Two servers vs one: fault servers on 127.0.0.1, capacity {args.capacity} x {args.work_ms:g} ms a row, "
          f"concurrency {args.concurrency} per server, {args.rows} rows")
    for label, r in results.items():
        print(f"  {label}: one {fmt(r['baseline_rows_per_s'], 1)} rows/s | two {fmt(r['genrun_rows_per_s'], 1)} "
              f"rows/s | ratio {fmt(r['ratio'], 2)} | second server's share of rows {fmt(shares[label], 2)}")
    emit("many_servers", {"capacity": args.capacity, "work_ms": args.work_ms, "concurrency": args.concurrency,
                          "by_pair": {label: {**r, "second_share": shares[label]} for label, r in results.items()}})


if __name__ == "__main__":
    main()
