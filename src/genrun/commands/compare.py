"""genrun-compare RUN_A RUN_B [--metric M] [--json] [--force]: is run A better than run B?
(genrun.reports.compare)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genrun.commands import run_command
from genrun.reports import compare as report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="genrun-compare", description=report.__doc__)
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--metric", help="the score to compare (default: run A's main metric)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--force", action="store_true",
                        help="compare the rows both runs scored even when their datasets or row sets differ")
    args = parser.parse_args(argv)

    def body() -> None:
        result = report.compare(args.run_a, args.run_b, args.metric, args.force)
        if args.json:
            print(json.dumps(result))
            return
        print(f"{result['metric']}: A {result['mean_a']:.4f}, B {result['mean_b']:.4f} on {result['rows']} shared "
              f"rows; A better on {result['a_better']}, B on {result['b_better']}, {result['ties']} ties "
              f"({result['test']})")
        print(result["verdict"])

    run_command("genrun-compare", body)


if __name__ == "__main__":
    main()
