"""`genrun-view RUN --export report.html`: one run as a single HTML file that needs nothing
else to open: its style inline, its plot (each metric's mean with its 95% interval) as an
embedded PNG, its metrics, settings and first rows, and a Content-Security-Policy that lets
it fetch nothing and run no script."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from genrun.errors import UserError, cannot_write
from genrun.view import pages
from genrun.view.app import templates
from genrun.view.catalog import main_metric, read_json
from genrun.view.rows import Filter, Rows
from genrun.view.server import STATIC


def plot_png(scores: dict[str, float], intervals: dict[str, list[float]]) -> str | None:
    """Each metric's mean with its interval, as a data: URL (None without scores)."""
    names = [m for m, v in scores.items() if isinstance(v, (int, float))]
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [float(scores[m]) for m in names]
    low = [v - intervals[m][0] if isinstance(intervals.get(m), list) else 0.0 for m, v in zip(names, values)]
    high = [intervals[m][1] - v if isinstance(intervals.get(m), list) else 0.0 for m, v in zip(names, values)]
    figure, axes = plt.subplots(figsize=(1.2 + 1.1 * len(names), 3.2))
    axes.bar(names, values, yerr=[low, high], capsize=4, color="#4c72b0")
    axes.set_ylabel("mean (95% CI)")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def export(run_dir: Path, target: Path, limit: int, show: str) -> int:
    """Write the report; returns how many rows it holds."""
    answers = run_dir / "answers.jsonl"
    if not answers.is_file():
        raise UserError(f"{run_dir}: no answers.jsonl; --export takes one run directory")
    if show not in Filter.SHOWS:
        raise UserError(f"--export-show {show}: choose one of {', '.join(Filter.SHOWS)}")
    if limit < 0:
        raise UserError(f"--export-rows {limit}: give 0 or more")
    run, metrics = read_json(run_dir / "run.json"), read_json(run_dir / "metrics.json")
    rows = Rows(answers, main_metric(run, metrics))
    rows.refresh()
    positions = rows.select(Filter(show=show))
    lines = [pages.row_line(int(p), rows.record(int(p)), rows.metric) for p in positions[:limit]]
    details = [{**pages.row_detail(r, rows.metric), "position": int(p)} for p in positions[:limit]
               if (r := rows.record(int(p))) is not None]
    scores, intervals = metrics.get("scores") or {}, metrics.get("scores_ci95") or {}
    html = templates().get_template("export.html").render(
        name=run_dir.resolve().name, style=(STATIC / "view.css").read_text(), metric=rows.metric, metrics=metrics,
        scores=[(m, v, intervals.get(m)) for m, v in scores.items()], plot=plot_png(scores, intervals),
        settings=pages.settings(run, None), lines=lines, details=details, shown=len(lines), matching=len(positions),
        total=len(rows.ends), show=show, limit=limit)
    try:
        target.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise cannot_write(target, exc, "choose another file") from exc
    return len(lines)
