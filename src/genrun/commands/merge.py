"""genrun-merge RUN_DIR ... -o FILE: join sharded jobs' answers in the dataset's order
(genrun.reports.merge)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genrun.commands import run_command
from genrun.reports.merge import merge


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="genrun-merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="the shards' run directories")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the merged answers file (jsonl)")
    args = parser.parse_args(argv)

    def body() -> None:
        count = merge(args.run_dirs, args.output)
        print(f"genrun-merge: {count} rows from {len(args.run_dirs)} runs -> {args.output}", file=sys.stderr)

    run_command("genrun-merge", body)


if __name__ == "__main__":
    main()
