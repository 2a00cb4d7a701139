"""genrun-score RUN_DIR [scoring.KEY=VALUE ...] [judge=NAME judge.KEY=VALUE ...]: score a
run's answers again, with other extraction or metrics, without calling the model that
answered; with a judge, an LLM judges the rows not judged yet.

RUN_DIR is a run directory, a sweep directory (every job in it, then its summary), or an
answers.jsonl file. The records' `extracted` and `scores`, and metrics.json, are rewritten;
run.json keeps the scoring settings and scores from before under `rescored`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator, cast

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genrun import credentials
from genrun.commands import run_command
from genrun.engine.executing import execute_file
from genrun.engine.judging import judge_file
from genrun.errors import UserError, cannot_write
from genrun.reports.summary import write_summary
from genrun.rundir import provenance
from genrun.rundir.journal import now, read_records, rewrite, write_json
from genrun.rundir.lock import RunLock
from genrun.rundir.status import truncation_warning
from genrun.rundir.tally import Tally
from genrun.scoring.scorer import Scorer, score_record
from genrun.settings import compose, load_judge
from genrun.settings.schema import JudgeConfig, ScoringConfig


def rescore_run(answers: Path, overrides: list[str], judge: JudgeConfig | None = None) -> dict[str, Any]:
    """Rescore one answers file (under its run directory's lock), and judge its rows first
    when a judge is given; returns the new metrics."""
    run_dir = answers.parent
    run_json = run_dir / "run.json"
    record = json.loads(run_json.read_text()) if run_json.exists() else None
    before = (record or {}).get("scoring") or {}
    settings = scoring_settings(before, overrides)
    mode = str(((record or {}).get("config") or {}).get("mode") or "generate")
    scorer = Scorer.of(ScoringConfig(**settings), mode=mode)
    with RunLock(run_dir):
        if judge is not None:
            judge_file(answers, judge)
        execute_file(answers, scorer, ScoringConfig(**settings))  # code_pass: the programs not run yet
        totals = rescored(answers, scorer, settings.get("group_by"), settings.get("cluster_by"))
        metrics_file = run_dir / "metrics.json"
        old = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        metrics = {k: v for k, v in old.items() if k not in SCORE_KEYS and not k.startswith("scores")}
        metrics.update(totals)
        write_json(metrics_file, metrics)
        warning = truncation_warning(metrics, float(settings.get("max_truncated", 0.05)), None)
        if warning:
            print(f"genrun-score: warning: {warning}", file=sys.stderr)
        if record is not None:
            history = [*record.get("rescored", []), {"at": now(), "scoring": before, "scores": old.get("scores")}]
            judged = {"judge": provenance.judge_record(judge)} if judge is not None else {}
            write_json(run_json, {**record, "scoring": settings, "rescored": history, **judged})
    return metrics


def scoring_settings(before: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The run's scoring settings with the overrides applied, checked like the CLI's."""
    wrong = [o for o in overrides if not o.lstrip("+").startswith("scoring.")]
    if wrong:
        raise UserError(f"{wrong[0]}: genrun-score takes scoring.KEY=VALUE and judge overrides only")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ScoringConfig), before,
                                 OmegaConf.from_dotlist([o.lstrip("+")[len("scoring."):] for o in overrides]))
    except OmegaConfBaseException as exc:
        raise UserError(f"{' '.join(overrides)}: {str(exc).splitlines()[0]}") from None
    return cast(dict[str, Any], OmegaConf.to_container(merged))


def judge_settings(overrides: list[str]) -> JudgeConfig:
    """The judge from `judge=NAME judge.KEY=VALUE ...`, composed as the CLI composes it."""
    judge = load_judge(compose(overrides))
    if judge is None:
        raise UserError("judge: choose one, e.g. judge=openai judge.backend.model_name=...")
    return judge


# metrics.json's keys that scoring writes (besides scores_*): a rescore replaces them all
SCORE_KEYS = ("scored_rows", "unclosed_thinking", "ambiguous_rows", "ambiguous_share", "truncated_rows",
              "truncated_share", "group_by", "groups", "cluster_by", "clusters", "ci95_estimator")


def rescored(answers: Path, scorer: Scorer, group_by: str | None = None,
             cluster_by: str | None = None) -> dict[str, Any]:
    """Rewrite the answers file with new scores, streaming; returns its totals (Tally.result)."""
    def records() -> Iterator[dict[str, Any]]:
        for record in read_records(answers):
            score_record(record, scorer)  # a judge's verdict is kept, not redone
            yield record

    tally = Tally(scorer.metrics, group_by, cluster_by)
    try:
        rewrite(answers, records(), tally)
    except OSError as exc:
        raise cannot_write(answers, exc, "free some space and run genrun-score again") from exc
    return tally.result()


def answers_files(target: Path) -> tuple[list[Path], bool]:
    """The answers files to rescore, and whether target is a sweep directory."""
    if target.is_file():
        return [target], False
    if (target / "answers.jsonl").is_file():
        return [target / "answers.jsonl"], False
    jobs = sorted(target.glob("*/answers.jsonl"))
    if not jobs:
        raise UserError(f"{target}: no answers.jsonl there, nor in its job folders (give a run or sweep directory)")
    return jobs, True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="genrun-score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, help="a run directory, a sweep directory or an answers.jsonl")
    parser.add_argument("overrides", nargs="*", help="e.g. scoring.extract=number 'scoring.metrics=[accuracy]'")
    args = parser.parse_args(argv)
    judging = [o for o in args.overrides if o.lstrip("+~").startswith("judge")]
    scoring = [o for o in args.overrides if o not in judging]

    def body() -> None:
        judge = judge_settings(credentials.hide(judging)) if judging else None
        files, sweep = answers_files(args.target)
        for answers in files:
            metrics = rescore_run(answers, scoring, judge)
            print(f"genrun-score: {answers.parent}: {json.dumps(metrics.get('scores', {}))}")
        if sweep:
            write_summary(args.target)
            print(f"genrun-score: summary: {args.target / 'summary.md'}")

    run_command("genrun-score", body)


if __name__ == "__main__":
    main()
