"""LLM as judge (the `judge` config group), what the judge is asked and how its reply is read:
the rubric (judge.template) sees `question` (the row's prompt, or its last user turn),
`reference` and `answer`; the verdict is the last label of `labels` the reply names (or its
last number), which becomes the record's `scores.judge`. genrun.engine.judging runs it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping

from genrun.backend.base import Messages
from genrun.errors import UserError
from genrun.prompt.messages import prompt_messages
from genrun.prompt.templates import compile_template
from genrun.settings.schema import JudgeConfig

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def verdict_parser(judge: JudgeConfig) -> Callable[[str], float | None]:
    """text -> the verdict's score, or None when the reply holds none."""
    if judge.verdict == "number":
        def number(text: str) -> float | None:
            found = NUMBER.findall(text)
            return float(found[-1]) if found else None
        return number
    labels = {str(k).lower(): float(v) for k, v in (judge.labels or {}).items()}
    if not labels:
        raise UserError("judge.labels is empty: give the labels the judge answers with and their scores")
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(labels, key=len, reverse=True)) + r")\b",
                         re.IGNORECASE)

    def label(text: str) -> float | None:
        found = pattern.findall(text)
        return labels[found[-1].lower()] if found else None  # the last label: judges conclude last
    return label


def question_of(record: Mapping[str, Any]) -> str:
    if "prompt" in record:
        prompt = record["prompt"]
        return prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)
    turns = [t for t in record.get("messages") or [] if isinstance(t, Mapping) and t.get("role") == "user"]
    return str(turns[-1].get("content")) if turns else ""


def needs_verdict(record: Mapping[str, Any]) -> bool:
    """An answered row with a reference that has no verdict yet."""
    return record.get("answer") is not None and "reference" in record and "judge" not in (record.get("scores") or {})


def rubric(judge: JudgeConfig) -> Callable[[Mapping[str, Any]], Messages]:
    """record -> what the judge is asked about it (a RowError when the template cannot render)."""
    render = compile_template(str(judge.template), "judge.template")

    def ask(record: Mapping[str, Any]) -> Messages:
        reference = record["reference"]
        context = {**record, "question": question_of(record), "answer": record["answer"],
                   "reference": " / ".join(map(str, reference)) if isinstance(reference, list) else reference}
        return prompt_messages(render(context))

    return ask


def reading(said: str | None, error: str | None,
            parse: Callable[[str], float | None]) -> tuple[dict[str, Any], float | None]:
    """The judge's reply as the record keeps it ({text, error}) and its verdict."""
    verdict = parse(said) if said is not None else None
    kept = {"text": said, "error": error}
    if verdict is None and error is None:
        kept["error"] = "no verdict in the judge's reply"
    return kept, verdict
