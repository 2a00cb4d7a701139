"""Sweep summaries: summary.csv, summary.md and summary.png in a multirun's directory.

Built from each job's files on disk (never from callback memory: the CLI's sweep callback
calls write_summary), so it works with every launcher and can be rebuilt later with
`genrun-summary SWEEP_DIR`.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from genrun.errors import one_line
from genrun.reports.shards import SHARD_KEY
from genrun.scoring.stats import mean_ci95

NOT_DETECTABLE = "not detectable at this size"  # an mdd past the score's scale

log = logging.getLogger(__name__)

def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for overrides_file in sorted(sweep_dir.rglob(".hydra/overrides.yaml"), key=_job_number):
        job = overrides_file.parent.parent
        try:
            overrides = yaml.safe_load(overrides_file.read_text()) or []
        except (OSError, yaml.YAMLError):
            overrides = []
        if not isinstance(overrides, list):
            overrides = []
        params = dict(str(o).split("=", 1) for o in overrides if "=" in str(o))
        metrics = read_metrics(job / "metrics.json")
        rows.append({
            "job": job.name,
            "params": {k.lstrip("+~"): v for k, v in params.items()},
            "status": metrics.get("status", "unfinished"),
            "rows": metrics.get("rows"),
            "failed": metrics.get("failed"),
            "scores": metrics.get("scores") or {},
            "ci95": metrics.get("scores_ci95") or {},
            "rows_per_s": metrics.get("rows_per_s"),
            "cost": metrics.get("cost"),
            "truncated": metrics.get("truncated_share"),
            "mdd": metrics.get("scores_mdd") if isinstance(metrics.get("scores_mdd"), dict) else {},
            "range": metrics.get("scores_range") if isinstance(metrics.get("scores_range"), dict) else {},
            "groups": metrics.get("groups") if isinstance(metrics.get("groups"), dict) else {},
            "error": metrics.get("error") or failed_rows_note(metrics),
        })
    return rows


def read_metrics(path: Path) -> dict[str, Any]:
    """A job's metrics.json; one that cannot be read makes the job's row say so."""
    if not path.exists():
        return {}
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"status": "unreadable", "error": f"metrics.json cannot be read ({one_line(exc, 120)}); "
                                                 "resume the job to write it again"}
    if not isinstance(metrics, dict):
        return {"status": "unreadable", "error": "metrics.json is not an object; resume the job to write it again"}
    for key in ("scores", "scores_ci95"):
        if not isinstance(metrics.get(key) or {}, dict):
            metrics[key] = {}
    return metrics


def failed_rows_note(metrics: dict[str, Any]) -> str | None:
    if not metrics.get("failed"):
        return None
    return f"{metrics['failed']} rows failed, first {metrics.get('first_error') or 'see answers.jsonl'}"


def write_summary(sweep_dir: Path, metric_order: list[str] | None = None) -> list[dict[str, Any]]:
    rows = job_rows(sweep_dir)
    swept = [k for k in dict.fromkeys(k for r in rows for k in r["params"])
             if len({r["params"].get(k) for r in rows}) > 1]
    score_names = list(dict.fromkeys([*(metric_order or []), *(s for r in rows for s in r["scores"])]))
    score_names = [s for s in score_names if any(s in r["scores"] for r in rows)]
    ci_columns = [f"{s}_ci95_{end}" for s in score_names for end in ("low", "high")]
    cost = ["cost"] if any(r["cost"] is not None for r in rows) else []  # with backend.prices
    main = score_names[0] if score_names else "rows_per_s"
    mdd = [f"mdd_{main}"] if main != "rows_per_s" else []  # the minimum detectable difference at the job's rows
    header = ["job", *swept, "status", "rows", "failed", *score_names, *ci_columns, *mdd, "truncated", "rows_per_s",
              *cost, "error"]
    table = [
        [r["job"], *(r["params"].get(k, "") for k in swept), r["status"], r["rows"], r["failed"],
         *(r["scores"].get(s, "") for s in score_names),
         *((r["ci95"].get(s) or ["", ""])[end] for s in score_names for end in (0, 1)),
         *(mdd_cell(r, main) for _ in mdd), _blank(r["truncated"]), r["rows_per_s"],
         *(r[c] for c in cost), r["error"] or ""]
        for r in rows
    ]
    with open(sweep_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(table)
    # summary.md: each score with its 95% interval in one cell
    md_header = ["job", *swept, "status", "rows", "failed", *score_names, *mdd, "truncated", "rows_per_s", *cost,
                 "error"]
    md_rows = [[r["job"], *(r["params"].get(k, "") for k in swept), r["status"], r["rows"], r["failed"],
                *(with_ci(r, s) for s in score_names), *(mdd_cell(r, main) for _ in mdd),
                _share(r["truncated"]), r["rows_per_s"], *(r[c] for c in cost), r["error"] or ""]
               for r in rows]
    lines = [*markdown_table(md_header, md_rows)]
    if mdd:
        lines += ["", f"mdd_{main}: the smallest true difference in {main} between two runs of a job's rows that a "
                      "two-sided test at alpha 0.05 detects with 80% power; a smaller one cannot be told from noise."]
    lines += group_table(rows, main)
    cells, axes = fold_seeds(rows, swept, main)
    if cells is not rows:  # a seeds axis: each cell's mean over its seeds, with a t interval
        lines += ["", f"Over seeds ({main}, mean and 95% t interval over the seeds):", "",
                  "| " + " | ".join([*axes, "seeds", main]) + " |", "|" + "---|" * (len(axes) + 2)]
        lines += ["| " + " | ".join([*(str(c["params"].get(k, "")) for k in axes), str(c["rows"]),
                                     with_ci(c, main)]) + " |" for c in cells]
    if main != "rows_per_s" and swept != [SHARD_KEY]:  # shards are parts of one run, not rivals
        lines += ["", best_cell(cells, main)]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    plot(cells, axes, main, sweep_dir / "summary.png")
    log.info("sweep summary: %s", sweep_dir / "summary.md")
    return rows


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join("" if v is None else str(v).replace("|", "\\|") for v in row) + " |"
                    for row in rows]


def group_table(rows: list[dict[str, Any]], main: str) -> list[str]:
    """With scoring.group_by: the main score of each group (a row) in each job (a column)."""
    names = sorted({g for r in rows for g in r["groups"]})
    if not names:
        return []
    jobs = [r for r in rows if r["groups"]]
    table = [[name, *(_cell(r["groups"].get(name), main) for r in jobs)] for name in names]
    return ["", f"By group ({main}, 95% interval):", "", *markdown_table(["group", *(r["job"] for r in jobs)], table)]


def _cell(group: Any, main: str) -> str:
    if not isinstance(group, dict) or not isinstance(group.get("scores"), dict) or main not in group["scores"]:
        return ""
    return with_ci({"scores": group["scores"], "ci95": group.get("scores_ci95") or {}}, main)


def _share(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else ""


def _blank(value: Any) -> Any:
    return "" if value is None else value


SEED_KEYS = ("seed", "sampling.seed")


def fold_seeds(rows: list[dict[str, Any]], swept: list[str], main: str) -> tuple[list[dict[str, Any]], list[str]]:
    """With a seeds axis in the sweep, one cell per value of the other swept parameters: the
    main score's mean over seeds and its t interval (the seeds are the repeats). Otherwise the
    jobs themselves."""
    seeds = [k for k in swept if k in SEED_KEYS]
    if not seeds or main == "rows_per_s":
        return rows, swept
    axes = [k for k in swept if k not in seeds]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r["scores"].get(main) is not None and r["status"] in ("ok", "failed_rows"):
            groups.setdefault(tuple(r["params"].get(k) for k in axes), []).append(r)
    cells = []
    for key, members in groups.items():
        values = [m["scores"][main] for m in members]
        cells.append({"job": ", ".join(f"{k}={v}" for k, v in zip(axes, key)) or "all", "status": "ok",
                      "params": dict(zip(axes, key)), "rows": len(members), "rows_per_s": None,
                      "scores": {main: round(sum(values) / len(values), 4)},
                      "ci95": {main: [round(x, 4) for x in within(mean_ci95(values), members, main)]}})
    return cells, axes


def within(interval: list[float], members: list[dict[str, Any]], main: str) -> list[float]:
    """An interval kept inside the score's range where every job says the score has one
    (accuracy in [0, 1]): a t interval over a few seeds can reach past it."""
    ranges = [m["range"].get(main) for m in members]
    if not ranges or any(not isinstance(r, list) or len(r) != 2 for r in ranges):
        return interval
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    return [min(max(interval[0], low), high), max(min(interval[1], high), low)]


def mdd_cell(row: dict[str, Any], main: str) -> Any:
    """The minimum detectable difference; null in metrics.json where it is past the score's scale."""
    if main in row["mdd"] and row["mdd"][main] is None:
        return NOT_DETECTABLE
    return row["mdd"].get(main, "")


def with_ci(row: dict[str, Any], score: str) -> str:
    value, ci = row["scores"].get(score), row["ci95"].get(score)
    if value is None:
        return ""
    return f"{value:.4f} ({ci[0]:.4f}–{ci[1]:.4f})" if ci else f"{value:.4f}"


def best_cell(rows: list[dict[str, Any]], main: str) -> str:
    """The best job on the main score, and whether it is separable from the runner-up: their
    95% intervals do not overlap (a conservative check; genrun-compare tests the pair)."""
    ranked = sorted((r for r in rows if r["scores"].get(main) is not None), key=lambda r: -r["scores"][main])
    if not ranked:
        return f"No job has a {main} score."
    best = ranked[0]
    line = f"Best on {main}: {best['job']} ({best['scores'][main]:.4f})"
    if len(ranked) == 1:
        return line + "."
    second = ranked[1]
    separable = bool(best["ci95"].get(main) and second["ci95"].get(main)
                     and best["ci95"][main][0] > second["ci95"][main][1])
    return (line + f"; runner-up {second['job']} ({second['scores'][main]:.4f}): "
            + ("separable (the 95% intervals do not overlap)." if separable else
               "not separable (the 95% intervals overlap; genrun-compare the two runs for a paired test)."))


def plot(rows: list[dict[str, Any]], swept: list[str], main: str, path: Path) -> None:
    """The main score against the first swept parameter, one line per value of the second,
    with the 95% interval of each mean as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def value(r: dict[str, Any]) -> float | None:
        v = r["scores"].get(main) if main != "rows_per_s" else r["rows_per_s"]
        return float(v) if v is not None and r["status"] in ("ok", "failed_rows") else None

    x_key = swept[0] if swept else "job"
    group_key = swept[1] if len(swept) > 1 else None
    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[str, list[tuple[Any, float, list[float]]]] = {}
    for r in rows:
        y = value(r)
        if y is None:
            continue
        x = r["params"].get(x_key, r["job"])
        ci = r["ci95"].get(main) or [y, y]  # error bars: the 95% interval of the mean
        groups.setdefault(r["params"].get(group_key, "") if group_key else "", []).append((_number(x), y, ci))
    for name, points in sorted(groups.items()):
        points.sort(key=lambda p: (isinstance(p[0], str), p[0]))
        ax.errorbar([p[0] for p in points], [p[1] for p in points], marker="o", capsize=3,
                    yerr=[[p[1] - p[2][0] for p in points], [p[2][1] - p[1] for p in points]],
                    label=f"{group_key}={name}" if group_key else None)
    ax.set_xlabel(x_key)
    ax.set_ylabel(main)
    ax.set_title(f"{main} by {x_key}" + (f" and {group_key}" if group_key else ""))
    if group_key:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _number(text: Any) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return str(text)


def _job_number(path: Path) -> tuple[int, str]:
    name = path.parent.parent.name
    head = name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, name)
