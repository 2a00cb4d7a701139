"""The interface each tracker implements, and what is logged, as plain data: parameters from
the composed config (secrets never), metrics from metrics.json, the rows table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from genrun import credentials
from genrun.settings import dotted

VALUE_LIMIT = 500  # characters of a parameter's value (a template): trackers bound them


class Tracker:
    """One tracker run at a time. start() returns the run's id: the one given (a resume, which
    continues it), or a new one (a child of parent when given)."""

    def start(self, name: str, run_id: str | None, parent_id: str | None, params: dict[str, str],
              kind: str = "job") -> str:
        raise NotImplementedError

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        raise NotImplementedError

    def summarize(self, metrics: dict[str, float]) -> None:
        """The run's final numbers, where the tracker keeps them apart from its history (W&B's summary)."""

    def set_tags(self, tags: dict[str, str]) -> None:
        raise NotImplementedError

    def log_table(self, columns: dict[str, list[Any]], name: str) -> None:
        raise NotImplementedError

    def log_file(self, path: Path) -> None:
        raise NotImplementedError

    def end(self, ok: bool) -> None:
        raise NotImplementedError


def params_of(config: dict[str, Any]) -> dict[str, str]:
    """The composed config (without hydra and the tracker's own settings), flattened; a secret's
    key is left out and credentials in values are masked."""
    params = {}
    for key, value in dotted({k: v for k, v in config.items() if k not in ("hydra", "tracker")}).items():
        if credentials.is_secret_key(key.rsplit(".", 1)[-1]):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        text = credentials.redact(text)
        params[key] = text if len(text) <= VALUE_LIMIT else text[:VALUE_LIMIT - 3] + "..."
    return params


def metrics_of(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json's numbers: counts, tokens, cost, wall, each score with its interval
    (`accuracy`, `accuracy_ci95_low`, `accuracy_ci95_high`), pass@k and the truncated share."""
    out: dict[str, float] = {}
    for key in ("rows", "answered", "failed", "prompt_tokens", "completion_tokens", "cost", "wall_s", "rows_per_s",
                "truncated_rows", "truncated_share", "ambiguous_share", "scoring_errors", "cache_hits"):
        if isinstance(metrics.get(key), (int, float)) and not isinstance(metrics.get(key), bool):
            out[key] = float(metrics[key])
    for name, value in (metrics.get("scores") or {}).items():
        if isinstance(value, (int, float)):
            out[metric_name(name)] = float(value)
            interval = (metrics.get("scores_ci95") or {}).get(name)
            if isinstance(interval, list) and len(interval) == 2 and None not in interval:
                out[f"{metric_name(name)}_ci95_low"], out[f"{metric_name(name)}_ci95_high"] = map(float, interval)
    return {k: v for k, v in out.items() if math.isfinite(v)}


def metric_name(name: str) -> str:
    """pass@1 as MLflow accepts it (letters, digits, _ - . space / only): pass_at_1."""
    return name.replace("@", "_at_")


def rows_table(answers: Path, limit: int) -> dict[str, list[Any]]:
    """The first `limit` records as columns (prompt, answer, reference, extracted, each score,
    finish reason, error); the file is read no further."""
    import itertools

    from genrun.rundir.journal import read_records

    kept = list(itertools.islice(read_records(answers), max(limit, 0)))
    kept.sort(key=lambda r: r.get("index", 0))
    scores = list(dict.fromkeys(k for r in kept for k, v in (r.get("scores") or {}).items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)))
    columns: dict[str, list[Any]] = {key: [] for key in ("id", "index", "prompt", "answer", "reference",
                                                          "extracted", *(f"score.{s}" for s in scores),
                                                          "finish_reason", "error")}
    for record in kept:
        prompt = record.get("prompt", record.get("messages"))
        for key in ("id", "index", "answer", "extracted", "finish_reason", "error"):
            columns[key].append(plain(record.get(key)))
        columns["prompt"].append(plain(prompt))
        columns["reference"].append(plain(record.get("reference")))
        for s in scores:
            value = (record.get("scores") or {}).get(s)
            columns[f"score.{s}"].append(float(value) if isinstance(value, (int, float)) else None)
    return columns


def plain(value: Any) -> Any:
    """A cell: text, a number or nothing (a list or a conversation as JSON)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, ensure_ascii=False)
