"""metrics.json: counts, tokens and mean scores of a run, from its answers file alone, so a
resumed run counts every row once."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from genrun.rundir.journal import read_records, write_json
from genrun.rundir.tally import Tally

log = logging.getLogger(__name__)


def collect(totals: dict[str, Any], wall: float, new_rows: int, new_tokens: int, dataset_rows: int,
            stopped: BaseException | None) -> dict[str, Any]:
    """metrics.json at the end of a run: the answers file's totals (Tally.result), this run's
    speed, and its status."""
    result = dict(totals)
    result.update(wall_s=round(wall, 3), rows_this_run=new_rows, dataset_rows=dataset_rows,
                  rows_per_s=round(new_rows / wall, 3) if wall > 0 else None)
    if new_tokens and wall > 0:
        result["completion_tokens_per_s"] = round(new_tokens / wall, 1)
    if isinstance(stopped, KeyboardInterrupt):
        result["status"] = "interrupted"
    elif stopped is not None:
        result.update(status="error", error=str(stopped))
    else:
        result["status"] = "ok" if result["failed"] == 0 else "failed_rows"
    return result


def truncation_warning(metrics: dict[str, Any], max_truncated: float, max_tokens: Any) -> str | None:
    """One line when more answers than max_truncated (a share) stopped at the token cap: their
    scores are not the model's finished answers."""
    share, rows = metrics.get("truncated_share") or 0.0, metrics.get("truncated_rows") or 0
    if share <= max_truncated:
        return None
    scores = ""
    finished, truncated = metrics.get("scores_finished") or {}, metrics.get("scores_truncated") or {}
    main = next(iter(metrics.get("scores") or {}), None)
    if main is not None:
        scores = (f"; {main} {finished[main]:.3f} on finished answers, {truncated[main]:.3f} on truncated ones"
                  if main in finished and main in truncated else "")
    cap = f"sampling.max_tokens={max_tokens}" if max_tokens is not None else "sampling.max_tokens"
    return (f"{share:.0%} of the answers ({rows} of {metrics.get('answered')}) hit the token cap "
            f"({cap}){scores}: raise sampling.max_tokens (this warning: above scoring.max_truncated={max_truncated})")


def mark_error(out_dir: Path, message: str) -> None:
    """Record in metrics.json that a job stopped on an error (the CLI's one line says it too)."""
    path = out_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text()) if path.exists() else {}
        write_json(path, {**metrics, "status": "error", "error": message})
    except (OSError, ValueError) as exc:  # a full or read-only disk: the CLI's line is the report
        log.warning("could not write %s: %s", path, exc)


def summarize(path: Path, metrics: list[str], prices: dict[str, float] | None = None, group_by: str | None = None,
              cluster_by: str | None = None) -> dict[str, Any]:
    """metrics.json's totals from an answers file, read once in bounded memory (see tally.py).
    The metrics come first in that order; then the others rows carry (pass@k, maj@n, judge)."""
    tally = Tally(metrics, group_by, cluster_by)
    for record in read_records(path):
        tally.add(record)
    return tally.result(prices)
