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
        run_dirs = []
        for run_dir in args.run_dirs:
            if is_merged(run_dir):  # SWEEP/* names the sweep's own merged run among its shards
                print(f"genrun-merge: skipping {run_dir}: it is the shards merged already, not a shard",
                      file=sys.stderr)
            elif run_dir.is_file():  # SWEEP/* names summary.md and the like too
                print(f"genrun-merge: skipping {run_dir}: a file, not a run directory", file=sys.stderr)
            else:
                run_dirs.append(run_dir)
        count = merge(run_dirs, args.output)
        print(f"genrun-merge: {count} rows from {len(run_dirs)} runs -> {args.output}", file=sys.stderr)

    run_command("genrun-merge", body)


def is_merged(run_dir: Path) -> bool:
    """Whether a run directory is a merge of shards (its run.json names them)."""
    import json

    try:
        run = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(run, dict) and "merged_from" in run


if __name__ == "__main__":
    main()
