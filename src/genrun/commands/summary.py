"""genrun-summary SWEEP_DIR: rebuild a sweep's summary.csv, summary.md and summary.png
(genrun.reports.summary), and for a sweep over dataset.shard_index, its merged run
(genrun.reports.shards)."""

from __future__ import annotations

import argparse
from pathlib import Path

from genrun.commands import run_command
from genrun.errors import UserError
from genrun.reports.shards import merge_shards
from genrun.reports.summary import write_summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="genrun-summary", description="Rebuild a sweep's summary.csv/md/png.")
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)

    def body() -> None:
        if not args.sweep_dir.is_dir():
            raise UserError(f"{args.sweep_dir}: no such folder")
        rows = write_summary(args.sweep_dir)
        if not rows:
            raise UserError(f"{args.sweep_dir}: no job directories (with .hydra/overrides.yaml) found")
        # the scores in the jobs' order (metrics.json keeps the configured metrics first)
        merge_shards(args.sweep_dir, rows, list(next((r["scores"] for r in rows if r["scores"]), {})))
        print((args.sweep_dir / "summary.md").read_text(), end="")

    run_command("genrun-summary", body)


if __name__ == "__main__":
    main()
