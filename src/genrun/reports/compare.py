"""genrun-compare RUN_A RUN_B [--metric M] [--json]: is run A better than run B, or is the
difference noise? A paired comparison on the rows both runs answered (matched by id): the
difference of mean scores with its 95% CI (paired bootstrap), a p-value (exact McNemar for
0/1 scores, a paired permutation test otherwise), the rows each run won, and the minimum
difference these rows could detect. Over several runs (or a sweep's jobs), each against a
reference, with Holm and Benjamini-Hochberg adjusted p-values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genrun.errors import UserError
from genrun.rundir.journal import read_json_object, read_records
from genrun.scoring.stats import (
    benjamini_hochberg,
    holm,
    mcnemar,
    min_detectable_difference,
    paired_bootstrap,
    permutation,
)

ALPHA = 0.05


def row_scores(run: Path, metric: str) -> dict[Any, float]:
    answers = run / "answers.jsonl" if run.is_dir() else run
    if not answers.is_file():
        raise UserError(f"{run}: no answers.jsonl (give a run directory)")
    scores = {}
    for record in read_records(answers):
        value = (record.get("scores") or {}).get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            scores[json.dumps(record.get("id"))] = float(value)
    return scores


def main_metric(run: Path) -> str:
    run_json = run / "run.json"
    saved = json.loads(run_json.read_text()) if run_json.is_file() else {}
    return ((saved.get("scoring") or {}).get("metrics") or ["accuracy"])[0]


def saved_run(run: Path) -> dict[str, Any]:
    """A run's run.json ({} when it has none, or one that cannot be read)."""
    return read_json_object(run / "run.json" if run.is_dir() else run.parent / "run.json")


def saved_dataset(run: Path) -> dict[str, Any]:
    dataset = saved_run(run).get("dataset")
    return dataset if isinstance(dataset, dict) else {}


def judge_warning(run_a: Path, run_b: Path) -> str | None:
    """When the two runs were judged by different judges (model, rubric, sampling, verdict):
    their judge scores are not the same measurement."""
    a, b = saved_run(run_a).get("judge"), saved_run(run_b).get("judge")
    if not a and not b:
        return None
    if not a or not b:
        return f"only {run_a if a else run_b} was judged (run.json `judge`); the judge scores are not comparable"
    differ = [key for key in ("model", "template_sha256", "sampling", "verdict", "labels") if a.get(key) != b.get(key)]
    if not differ:
        return None
    shown = "; ".join(f"{key} {json.dumps(a.get(key))} vs {json.dumps(b.get(key))}" for key in differ)
    return f"the runs were judged differently ({shown}): a judge score difference may be the judges'"


def check_comparable(run_a: Path, run_b: Path, a_scores: dict[Any, float], b_scores: dict[Any, float]) -> None:
    """Two runs compare row by row only over the same data: refuse other datasets (their ids
    may match by chance) or other rows, naming which (--force compares the shared rows)."""
    a, b = saved_dataset(run_a), saved_dataset(run_b)
    for key in ("fingerprint", "path", "name", "split"):
        if a.get(key) and b.get(key) and a[key] != b[key]:
            raise UserError(f"{run_a} and {run_b} answered different datasets ({key} {a[key]!r} and {b[key]!r}), "
                            "so rows with the same id are not the same question; --force compares them anyway")
    only_a, only_b = set(a_scores) - set(b_scores), set(b_scores) - set(a_scores)
    if only_a or only_b:
        raise UserError(f"the runs scored different rows ({len(only_a)} only in A, {len(only_b)} only in B, "
                        f"{len(set(a_scores) & set(b_scores))} in both); finish them (resume), or --force compares "
                        "the rows in both")


def compare(run_a: Path, run_b: Path, metric: str | None = None, force: bool = False,
            b_scores: dict[Any, float] | None = None) -> dict[str, Any]:
    """b_scores: run B's row scores on the metric, when the caller read them already."""
    metric = metric or main_metric(run_a)
    a_scores = row_scores(run_a, metric)
    b_scores = row_scores(run_b, metric) if b_scores is None else b_scores
    if not force:
        check_comparable(run_a, run_b, a_scores, b_scores)
    shared = [i for i in a_scores if i in b_scores]
    if not shared:
        raise UserError(f"no row of {run_a} and {run_b} has a {metric!r} score in both "
                        f"({len(a_scores)} and {len(b_scores)} rows have one); choose --metric")
    a, b = [a_scores[i] for i in shared], [b_scores[i] for i in shared]
    differences = [x - y for x, y in zip(a, b)]
    binary = all(v in (0.0, 1.0) for v in a + b)
    p_value = mcnemar(a, b) if binary else permutation(differences)
    diff = sum(differences) / len(differences)
    ci = paired_bootstrap(differences)
    n = len(differences)
    sd = (sum((d - diff) ** 2 for d in differences) / (n - 1)) ** 0.5 if n > 1 else float("nan")
    mdd = min_detectable_difference(sd, n, paired=True)
    result = {"metric": metric, "rows": len(shared), "mean_a": round(sum(a) / len(a), 4),
              "mean_b": round(sum(b) / len(b), 4), "diff": round(diff, 4), "ci95": [round(x, 4) for x in ci],
              "p_value": round(p_value, 6), "test": "mcnemar" if binary else "permutation",
              "a_better": sum(d > 0 for d in differences), "b_better": sum(d < 0 for d in differences),
              "ties": sum(d == 0 for d in differences), "mdd": round(mdd, 4) if mdd == mdd else None}
    warning = judge_warning(run_a, run_b)
    if warning:
        result["warning"] = warning
    if p_value < ALPHA:
        better, worse = ("A", "B") if diff > 0 else ("B", "A")
        result["verdict"] = (f"{better} is better than {worse} on {metric}: {abs(diff):.3f} over {len(shared)} rows "
                             f"(95% CI {ci[0]:+.3f} to {ci[1]:+.3f}, p={p_value:.3g})")
    else:
        result["verdict"] = (f"no significant difference on {metric} over {len(shared)} rows: {diff:+.3f} "
                             f"(95% CI {ci[0]:+.3f} to {ci[1]:+.3f}, p={p_value:.3g})")
    return result


def compare_many(reference: Path, others: list[Path], metric: str | None = None, force: bool = False,
                 labels: list[str] | None = None) -> dict[str, Any]:
    """Each run against the reference, with p-values adjusted for the number of comparisons:
    Holm's (the chance of any false "better" stays under 5%) and Benjamini-Hochberg's (the
    expected share of false ones among those called better stays under 5%)."""
    metric = metric or main_metric(reference)
    reference_scores = row_scores(reference, metric)
    results = [compare(other, reference, metric, force, reference_scores) for other in others]
    p_values = [r["p_value"] for r in results]
    for result, label, by_holm, by_bh in zip(results, labels or [str(o) for o in others], holm(p_values),
                                            benjamini_hochberg(p_values)):
        result.update(run=label, p_holm=round(by_holm, 6), p_bh=round(by_bh, 6),
                      significant_holm=by_holm < ALPHA, significant_bh=by_bh < ALPHA)
    return {"metric": metric, "reference": str(reference), "comparisons": results}


def sweep_jobs(sweep: Path) -> list[Path]:
    """A sweep's job directories, in job order (those with an answers file)."""
    jobs = [p.parent for p in sweep.glob("*/answers.jsonl")]
    return sorted(jobs, key=lambda p: (int(label(p)) if label(p).isdigit() else 1 << 30, p.name))


def label(run: Path) -> str:
    """A run's short name: a sweep job's number (its folder starts with it), else its folder's name."""
    head = run.name.split("_", 1)[0]
    return head if head.isdigit() else run.name
