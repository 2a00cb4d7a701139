"""genrun-check RUN_DIR [...]: verify run directories end to end (genrun.rundir.check)."""

from __future__ import annotations

import argparse
from pathlib import Path

from genrun.commands import run_command
from genrun.errors import UserError
from genrun.rundir import check


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="genrun-check", description=check.__doc__.split("\n\n")[0],
                                     epilog=check.__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories")
    args = parser.parse_args(argv)

    def body() -> int:
        bad = 0
        for run_dir in args.run_dirs:
            if not run_dir.is_dir():
                raise UserError(f"{run_dir}: no such folder")
            found = list(check.problems(run_dir))
            if found:
                bad += 1
                for line in found:
                    print(f"genrun-check: {run_dir}: {line}")
            else:
                print(f"genrun-check: {run_dir}: ok")
        return 1 if bad else 0

    run_command("genrun-check", body)


if __name__ == "__main__":
    main()
