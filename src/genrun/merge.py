"""genrun-merge: join the answers of sharded jobs into one file, in the dataset's order,
checking that every row is there exactly once."""

from __future__ import annotations

import argparse
import json
import sys
from array import array
from pathlib import Path

import numpy as np

from genrun import done_index

COPY_CHUNK = 1 << 16


def merge(run_dirs: list[Path], output: Path) -> int:
    """Write every record of run_dirs to output sorted by row index; return the row count.

    Memory holds three numbers a row (its index and where its line lies), never the records:
    the lines are copied from the shards' files in row order, after one pass over each
    that finds where its lines lie."""
    rows, sources, starts, ends = [], [], [], []
    expected = 0
    for number, run_dir in enumerate(run_dirs):
        answers = run_dir / "answers.jsonl"
        if not answers.exists():
            raise SystemExit(f"genrun-merge: error: {answers} does not exist")
        metrics_file = run_dir / "metrics.json"
        if metrics_file.exists():
            expected = max(expected, int(json.loads(metrics_file.read_text()).get("dataset_rows") or 0))
        index, start, end = places(answers)
        unique, count = np.unique(index, return_counts=True)
        if (count > 1).any():
            raise SystemExit(f"genrun-merge: error: row {int(unique[count > 1][0])} is in {answers} twice (a run that "
                             f"crashed); resume it once (genrun ... resume={run_dir}) to keep one record per row")
        rows.append(index)
        sources.append(np.full(len(index), number))
        starts.append(start)
        ends.append(end)
    row = np.concatenate(rows) if rows else np.empty(0, np.int64)
    order = np.argsort(row, kind="stable")
    row, source = row[order], np.concatenate(sources)[order]
    start, end = np.concatenate(starts)[order], np.concatenate(ends)[order]
    twice = np.flatnonzero(np.diff(row) == 0)
    if len(twice):
        at = int(twice[0])
        raise SystemExit(f"genrun-merge: error: row {int(row[at])} is in both {run_dirs[source[at]]} and "
                         f"{run_dirs[source[at + 1]]}: were they shards of one dataset.num_shards setting?")
    total = max(expected, int(row[-1]) + 1 if len(row) else 0)
    if len(row) < total:
        present = np.zeros(total, dtype=bool)
        present[row] = True
        missing = np.flatnonzero(~present)
        raise SystemExit(f"genrun-merge: error: {len(missing)} rows missing ({_few(missing.tolist())}); "
                         "finish those shards (re-run them into the same directories) first")
    files = [open(run_dir / "answers.jsonl", "rb") for run_dir in run_dirs]
    try:
        with open(output, "wb") as out:
            for at in range(0, len(row), COPY_CHUNK):  # Python ints for a chunk of rows at a time
                part = slice(at, at + COPY_CHUNK)
                for number, begin, stop in zip(source[part].tolist(), start[part].tolist(), end[part].tolist()):
                    files[number].seek(begin)
                    out.write(files[number].read(stop - begin))
    finally:
        for handle in files:
            handle.close()
    return len(row)


def places(answers: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each complete record's row index and the byte range of its line, read from the file
    (garbled and torn lines left out)."""
    index, start, end = array("q"), array("q"), array("q")
    last = 0
    for stop, record in done_index.scan(answers):
        if record is not None:
            index.append(record["index"])
            start.append(last)
            end.append(stop)
        last = stop
    return (np.frombuffer(index, dtype=np.int64), np.frombuffer(start, dtype=np.int64),
            np.frombuffer(end, dtype=np.int64))


def _few(indices: list[int]) -> str:
    shown = ", ".join(map(str, sorted(indices)[:10]))
    return shown + (", ..." if len(indices) > 10 else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="genrun-merge", description=__doc__)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="the shards' run directories")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the merged answers file (jsonl)")
    args = parser.parse_args(argv)
    count = merge(args.run_dirs, args.output)
    print(f"genrun-merge: {count} rows from {len(args.run_dirs)} runs -> {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
