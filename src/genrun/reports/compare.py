"""genrun-compare RUN_A RUN_B [--metric M] [--json]: is run A better than run B, or is the
difference noise? A paired comparison on the rows both runs answered (matched by id): the
difference of mean scores with its 95% CI (paired bootstrap), a p-value (exact McNemar for
0/1 scores, a paired permutation test otherwise), and the rows each run won."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genrun.errors import UserError
from genrun.rundir.journal import read_records
from genrun.scoring.stats import mcnemar, paired_bootstrap, permutation

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


def saved_dataset(run: Path) -> dict[str, Any]:
    run_json = run / "run.json" if run.is_dir() else run.parent / "run.json"
    try:
        return json.loads(run_json.read_text()).get("dataset") or {}
    except (OSError, ValueError, AttributeError):
        return {}


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


def compare(run_a: Path, run_b: Path, metric: str | None = None, force: bool = False) -> dict[str, Any]:
    metric = metric or main_metric(run_a)
    a_scores, b_scores = row_scores(run_a, metric), row_scores(run_b, metric)
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
    result = {"metric": metric, "rows": len(shared), "mean_a": round(sum(a) / len(a), 4),
              "mean_b": round(sum(b) / len(b), 4), "diff": round(diff, 4), "ci95": [round(x, 4) for x in ci],
              "p_value": round(p_value, 6), "test": "mcnemar" if binary else "permutation",
              "a_better": sum(d > 0 for d in differences), "b_better": sum(d < 0 for d in differences),
              "ties": sum(d == 0 for d in differences)}
    if p_value < ALPHA:
        better, worse = ("A", "B") if diff > 0 else ("B", "A")
        result["verdict"] = (f"{better} is better than {worse} on {metric}: {abs(diff):.3f} over {len(shared)} rows "
                             f"(95% CI {ci[0]:+.3f} to {ci[1]:+.3f}, p={p_value:.3g})")
    else:
        result["verdict"] = (f"no significant difference on {metric} over {len(shared)} rows: {diff:+.3f} "
                             f"(95% CI {ci[0]:+.3f} to {ci[1]:+.3f}, p={p_value:.3g})")
    return result
