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
    duplicates: list[int] = []
    expected = 0
    for run_dir in run_dirs:
        answers = run_dir / "answers.jsonl"
        if not answers.exists():
            raise SystemExit(f"genrun-merge: error: {answers} does not exist")
        metrics_file = run_dir / "metrics.json"
        if metrics_file.exists():
            expected = max(expected, int(json.loads(metrics_file.read_text()).get("dataset_rows") or 0))
        for record in read_records(answers):
            if record["index"] in records:
                duplicates.append(record["index"])
            records[record["index"]] = record
    if duplicates:
        raise SystemExit(f"genrun-merge: error: rows {_few(duplicates)} appear in more than one shard")
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
