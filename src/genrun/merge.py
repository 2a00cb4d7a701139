"""genrun-merge: join the answers of sharded jobs into one file, in the dataset's order,
checking that every row is there exactly once."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genrun.records import read_records


def merge(run_dirs: list[Path], output: Path) -> int:
    """Write every record of run_dirs to output sorted by row index; return the row count."""
    records: dict[int, dict] = {}
    source: dict[int, Path] = {}  # row index -> the run directory its record came from
    expected = 0
    for run_dir in run_dirs:
        answers = run_dir / "answers.jsonl"
        if not answers.exists():
            raise SystemExit(f"genrun-merge: error: {answers} does not exist")
        metrics_file = run_dir / "metrics.json"
        if metrics_file.exists():
            expected = max(expected, int(json.loads(metrics_file.read_text()).get("dataset_rows") or 0))
        for record in read_records(answers):
            index = record["index"]
            if index in records:
                where = source[index]
                if where == run_dir:
                    raise SystemExit(f"genrun-merge: error: row {index} is in {answers} twice (a run that "
                                     f"crashed); resume it once (genrun ... resume={run_dir}) to keep one record per row")
                raise SystemExit(f"genrun-merge: error: row {index} is in both {where} and {run_dir}: "
                                 "were they shards of one dataset.num_shards setting?")
            records[index], source[index] = record, run_dir
    total = max(expected, max(records, default=-1) + 1)
    missing = [i for i in range(total) if i not in records]
    if missing:
        raise SystemExit(f"genrun-merge: error: {len(missing)} rows missing ({_few(missing)}); "
                         "finish those shards (re-run them into the same directories) first")
    with open(output, "w", encoding="utf-8") as out:
        for index in sorted(records):
            out.write(json.dumps(records[index], ensure_ascii=False) + "\n")
    return len(records)


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
