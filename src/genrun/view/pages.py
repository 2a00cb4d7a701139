"""What the pages show, made from records and run files: a row as a conversation with its
scores, a row's line in the table, a run's settings beside another's, and the rows two runs
scored differently. Every value a model or a data file wrote stays text: the templates
escape it, nothing here marks anything safe."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from genrun.view.rows import Rows

SNIPPET = 240  # characters of a prompt or answer in the rows table
SHOWN_KEYS = {"id", "index", "prompt", "messages", "messages_sent", "answer", "answers", "reasoning", "extracted",
              "reference", "scores", "judge", "error", "finish_reason", "finish_reasons", "prompt_tokens",
              "completion_tokens", "latency_s", "cached", "scoring_error"}


def as_text(value: Any) -> str:
    """A field as text: strings as they are, a message's content parts as their text (an image
    as [image]), anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and "type" in p for p in value):
        return "".join(str(p.get("text", "")) if p.get("type") == "text" else f"[{p.get('type')}]" for p in value)
    return json.dumps(value, ensure_ascii=False, default=str)


def snippet(value: Any) -> str:
    text = as_text(value)
    return text if len(text) <= SNIPPET else text[:SNIPPET] + "…"


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def conversation(record: dict[str, Any]) -> list[dict[str, str]]:
    """The messages the model saw, then its answer: messages_sent (record_messages=true), else
    the row's messages (multiturn), else its prompt as the user's turn."""
    turns = record.get("messages_sent") or record.get("messages")
    if not isinstance(turns, list):
        prompt = record.get("prompt")
        turns = [{"role": "user", "content": prompt}] if prompt is not None else []
    said = [{"role": str(t.get("role", "?")), "text": as_text(t.get("content"))} if isinstance(t, dict)
            else {"role": "?", "text": as_text(t)} for t in turns]
    return said


def row_line(position: int, record: dict[str, Any] | None, metric: str) -> dict[str, Any]:
    """A row's line in the rows table."""
    if record is None:
        return {"position": position, "garbled": True}
    scores: dict[str, Any] = record["scores"] if isinstance(record.get("scores"), dict) else {}
    turns = conversation(record)
    return {"position": position, "index": record.get("index"), "id": as_text(record.get("id")),
            "prompt": snippet(turns[-1]["text"] if turns else ""), "answer": snippet(record.get("answer")),
            "error": snippet(record.get("error")), "score": number(scores.get(metric)),
            "finish_reason": as_text(record.get("finish_reason")), "cached": record.get("cached") is True}


def row_detail(record: dict[str, Any], metric: str) -> dict[str, Any]:
    """Everything a row's page shows."""
    scores: dict[str, Any] = record["scores"] if isinstance(record.get("scores"), dict) else {}
    answers: list[Any] = record["answers"] if isinstance(record.get("answers"), list) else []
    reasons: list[Any] = record["finish_reasons"] if isinstance(record.get("finish_reasons"), list) else []
    return {
        "index": record.get("index"), "id": as_text(record.get("id")), "conversation": conversation(record),
        "answer": as_text(record.get("answer")), "has_answer": record.get("answer") is not None,
        "reasoning": as_text(record.get("reasoning")), "extracted": as_text(record.get("extracted")),
        "has_extracted": "extracted" in record, "reference": as_text(record.get("reference")),
        "has_reference": "reference" in record, "metric": metric,
        "scores": [(str(k), as_text(v)) for k, v in scores.items()],
        "judge": as_text(record.get("judge")), "error": as_text(record.get("error")),
        "scoring_error": as_text(record.get("scoring_error")),
        "samples": [(as_text(a), as_text(reasons[i]) if i < len(reasons) else "") for i, a in enumerate(answers)],
        "facts": [(k, as_text(record.get(k))) for k in ("finish_reason", "prompt_tokens", "completion_tokens",
                                                          "latency_s", "cached") if k in record],
        "other": [(str(k), as_text(v)) for k, v in record.items() if k not in SHOWN_KEYS],
    }


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(value, ensure_ascii=False, default=str)} if prefix else {}


def settings(run: dict[str, Any], other: dict[str, Any] | None) -> list[dict[str, Any]]:
    """run.json's settings (config, model, dataset, versions) as dotted keys; beside another
    run's, each marked when the two differ."""
    def keys(saved: dict[str, Any]) -> dict[str, str]:
        kept = {k: saved.get(k) for k in ("config", "model", "dataset", "packages", "genrun_version", "git_commit",
                                          "seed", "chat_template") if k in saved}
        return flatten(kept)

    mine = keys(run)
    theirs = keys(other) if other is not None else {}
    names = list(dict.fromkeys([*mine, *theirs]))
    return [{"key": k, "value": mine.get(k, ""), "other": theirs.get(k, "") if other is not None else None,
             "differs": other is not None and mine.get(k) != theirs.get(k)} for k in names]


def by_row(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """The main score and the journal position of each row index (NaN and -1 where none)."""
    columns = rows.start_columns()
    columns.ready.wait()
    with rows.lock:
        count = min(len(columns.score), len(rows.rows))
        top = int(rows.rows[:count].max()) + 1 if count else 0
        score, position = np.full(top, np.nan), np.full(top, -1, np.int64)
        score[rows.rows[:count]] = columns.score[:count]
        position[rows.rows[:count]] = np.arange(count)
    return score, position


def differing(a: Rows, b: Rows, which: str) -> list[tuple[int, int, int]]:
    """(row, position in A, position in B) of the rows both runs scored and scored differently;
    `which`: all, won (A higher) or lost (A lower)."""
    score_a, at_a = by_row(a)
    score_b, at_b = by_row(b)
    top = min(len(score_a), len(score_b))
    sa, sb = score_a[:top], score_b[:top]
    with np.errstate(invalid="ignore"):
        keep = ~np.isnan(sa) & ~np.isnan(sb) & (sa != sb)
        if which == "won":
            keep &= sa > sb
        elif which == "lost":
            keep &= sa < sb
    rows = np.flatnonzero(keep)
    return [(int(r), int(at_a[r]), int(at_b[r])) for r in rows]
