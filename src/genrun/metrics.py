"""metrics.json: counts, tokens and mean scores of a run, from its answers file alone, so a
resumed run counts every row once."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from genrun.records import read_records, write_json

log = logging.getLogger(__name__)

# Scores some rows carry beside scoring.metrics: json_valid (structured outputs), judge (an LLM judge).
EXTRA_SCORES = ["json_valid", "judge"]


def collect(path: Path, metrics: list[str], wall: float, new_rows: int, new_tokens: int, dataset_rows: int,
            stopped: BaseException | None) -> dict[str, Any]:
    """metrics.json at the end of a run: the answers file's totals, this run's speed, its status."""
    result = summarize(path, metrics)
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


def summarize(path: Path, metrics: list[str]) -> dict[str, Any]:
    """Rows, answers, failures, tokens and mean scores of an answers file."""
    rows = answered = unclosed = 0
    first_error = None
    prompt_tokens = completion_tokens = 0
    have_tokens = False
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}  # a metric's mean is over the rows that have it
    scored = 0
    for record in read_records(path):
        rows += 1
        if record.get("error") is not None:
            first_error = first_error or f"row {record['index']}: {record['error']}"
            continue
        answered += 1
        if record.get("completion_tokens") is not None:
            have_tokens = True
            prompt_tokens += record.get("prompt_tokens") or 0
            completion_tokens += record["completion_tokens"]
        scores = record.get("scores")
        if scores:
            scored += 1
            unclosed += bool(scores.get("unclosed_thinking"))
            for name in metrics:
                if scores.get(name) is not None:
                    sums[name] = sums.get(name, 0.0) + float(scores[name])
                    counts[name] = counts.get(name, 0) + 1
    result: dict[str, Any] = {"rows": rows, "answered": answered, "failed": rows - answered}
    if first_error:
        result["first_error"] = first_error  # what a sweep summary shows for a job with failed rows
    if have_tokens:
        result.update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    if scored:
        result["scores"] = {name: round(sums[name] / counts[name], 4) for name in metrics if counts.get(name)}
        result["scored_rows"] = scored
        result["unclosed_thinking"] = unclosed
    return result
