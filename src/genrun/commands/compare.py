"""genrun-compare RUN_A RUN_B [RUN ...] [--metric M] [--json] [--force] [--explain]: is run A
better than run B? With more runs, or a sweep directory, each against a reference with
adjusted p-values (genrun.reports.compare); --explain says why two runs differ
(genrun.reports.explain)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from genrun.commands import run_command
from genrun.errors import UserError
from genrun.reports import compare as report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="genrun-compare", description=report.__doc__)
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                        help="two run directories (A, B); more, each compared with the reference; or a sweep directory")
    parser.add_argument("--metric", help="the score to compare (default: the first run's main metric)")
    parser.add_argument("--reference", help="with several runs or a sweep: the run (or job name) the others are "
                                            "compared with (default: the first)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--force", action="store_true",
                        help="compare the rows both runs scored even when their datasets or row sets differ")
    parser.add_argument("--explain", action="store_true",
                        help="why two runs differ: their settings, their prompts, their greedy answers")
    args = parser.parse_args(argv)

    def body() -> None:
        runs = expand(args.runs)
        if args.explain:
            return explain(runs, args.json)
        if len(runs) == 2 and args.reference is None:
            return print_pair(report.compare(runs[0], runs[1], args.metric, args.force), args.json)
        reference = pick_reference(runs, args.reference)
        others = [r for r in runs if r != reference]
        result = report.compare_many(reference, others, args.metric, args.force, [report.label(r) for r in others])
        print_many(result, reference, args.json)

    run_command("genrun-compare", body)


def expand(runs: list[Path]) -> list[Path]:
    """A sweep directory stands for its jobs."""
    if len(runs) == 1:
        jobs = report.sweep_jobs(runs[0])
        if len(jobs) < 2:
            raise UserError(f"{runs[0]}: give two runs, or a sweep directory with at least two jobs")
        return jobs
    return runs


def pick_reference(runs: list[Path], name: str | None) -> Path:
    if name is None:
        return runs[0]
    for run in runs:
        if name in (str(run), run.name, report.label(run)):
            return run
    raise UserError(f"--reference {name}: not one of the runs ({', '.join(report.label(r) for r in runs)})")


def explain(runs: list[Path], as_json: bool) -> None:
    from genrun.reports.explain import explain as why
    from genrun.reports.explain import report as lines

    if len(runs) != 2:
        raise UserError("--explain takes two runs")
    result = why(*runs)
    print(json.dumps(result) if as_json else "\n".join(lines(result)))


def print_pair(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    if result.get("warning"):
        print(f"genrun-compare: warning: {result['warning']}")
    print(f"{result['metric']}: A {result['mean_a']:.4f}, B {result['mean_b']:.4f} on {result['rows']} shared "
          f"rows; A better on {result['a_better']}, B on {result['b_better']}, {result['ties']} ties "
          f"({result['test']})")
    print(result["verdict"])
    if result.get("mdd") is not None:
        print(f"these {result['rows']} rows detect a true difference of {result['mdd']:.3f} or more 80% of the time "
              "(alpha 0.05); a smaller one can hide in the noise")


def print_many(result: dict[str, Any], reference: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    metric = result["metric"]
    print(f"{metric}: each run against {report.label(reference)} ({len(result['comparisons'])} comparisons; "
          "p adjusted by Holm and by Benjamini-Hochberg)")
    print("| run | mean | reference | diff | 95% CI | p | p Holm | p BH | mdd |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in result["comparisons"]:
        mark = " *" if c["significant_holm"] else (" +" if c["significant_bh"] else "")
        print(f"| {c['run']} | {c['mean_a']:.4f} | {c['mean_b']:.4f} | {c['diff']:+.4f}{mark} | "
              f"{c['ci95'][0]:+.4f} to {c['ci95'][1]:+.4f} | {c['p_value']:.3g} | {c['p_holm']:.3g} | "
              f"{c['p_bh']:.3g} | {c['mdd'] if c['mdd'] is not None else ''} |")
    print("* below 0.05 after Holm's correction; + after Benjamini-Hochberg's only")
    for c in result["comparisons"]:
        if c.get("warning"):
            print(f"genrun-compare: warning: {c['run']}: {c['warning']}")


if __name__ == "__main__":
    main()
