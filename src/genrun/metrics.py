"""metrics.json: counts, tokens and mean scores of a run, from its answers file alone, so a
resumed run counts every row once."""

from __future__ import annotations

import json
import logging
from array import array
from pathlib import Path
from typing import Any

from genrun.records import read_records, write_json
from genrun.stats import ci95

log = logging.getLogger(__name__)



def collect(path: Path, metrics: list[str], wall: float, new_rows: int, new_tokens: int, dataset_rows: int,
            stopped: BaseException | None, prices: dict[str, float] | None = None) -> dict[str, Any]:
    """metrics.json at the end of a run: the answers file's totals, this run's speed, its status,
    and with backend.prices what the answers cost."""
    result = summarize(path, metrics, prices)
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


def mark_error(out_dir: Path, message: str) -> None:
    """Record in metrics.json that a job stopped on an error (the CLI's one line says it too)."""
    path = out_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text()) if path.exists() else {}
        write_json(path, {**metrics, "status": "error", "error": message})
    except (OSError, ValueError) as exc:  # a full or read-only disk: the CLI's line is the report
        log.warning("could not write %s: %s", path, exc)


def summarize(path: Path, metrics: list[str], prices: dict[str, float] | None = None) -> dict[str, Any]:
    """Rows, answers, failures, tokens, and every score's mean over the rows that have it with
    its 95% confidence interval (scores_ci95, see stats.py) and row count (scores_rows).
    The metrics come first in that order; then the others rows carry (pass@k, maj@n, judge)."""
    rows = answered = unclosed = scored = cache_hits = 0
    paid_prompt = paid_completion = 0  # the tokens of rows not answered from the cache
    first_error = None
    prompt_tokens = completion_tokens = 0
    have_tokens = False
    values: dict[str, array] = {name: array("d") for name in metrics}  # compact: a row's 8 bytes a score
    for record in read_records(path):
        rows += 1
        if record.get("error") is not None:
            first_error = first_error or f"row {record['index']}: {record['error']}"
            continue
        answered += 1
        cache_hits += bool(record.get("cached"))
        if record.get("completion_tokens") is not None:
            have_tokens = True
            prompt_tokens += record.get("prompt_tokens") or 0
            completion_tokens += record["completion_tokens"]
            if not record.get("cached"):
                paid_prompt += record.get("prompt_tokens") or 0
                paid_completion += record["completion_tokens"]
        scores = record.get("scores")
        if scores:
            scored += 1
            unclosed += bool(scores.get("unclosed_thinking"))
            for name, value in scores.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    values.setdefault(name, array("d")).append(float(value))
    result: dict[str, Any] = {"rows": rows, "answered": answered, "failed": rows - answered}
    if first_error:
        result["first_error"] = first_error  # what a sweep summary shows for a job with failed rows
    if have_tokens:
        result.update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    if cache_hits:
        result["cache_hits"] = cache_hits
    if prices:
        result["cost"] = round((paid_prompt * float(prices.get("input_per_1m", 0))
                                + paid_completion * float(prices.get("output_per_1m", 0))) / 1e6, 6)
    values = {name: v for name, v in values.items() if v}
    if values:
        result["scores"] = {name: round(sum(v) / len(v), 4) for name, v in values.items()}
        result["scores_ci95"] = {name: [round(x, 4) for x in ci95(v)] for name, v in values.items()}
        result["scores_rows"] = {name: len(v) for name, v in values.items()}
        result["scored_rows"] = scored
        result["unclosed_thinking"] = unclosed
    return result
