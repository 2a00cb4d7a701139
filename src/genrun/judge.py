"""LLM as judge (the `judge` config group): a second model scores each answered row that has a
reference, through the same backends, scheduler, retries and concurrency as the answers.

The rubric (judge.template) sees `question` (the row's prompt, or its last user turn),
`reference` and `answer`; the judge's reply is kept in the record's `judge` field, apart from
the answer, and its verdict (a label's value, or a number) becomes `scores.judge`. Rows already
judged are skipped, so a judged run can be resumed and a run judged after the fact
(`genrun-score RUN judge=...`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from genrun import credentials
from genrun.backend.base import Completion
from genrun.errors import RowError, UserError, cannot_write
from genrun.prompts import prompt_messages
from genrun.records import read_records, rewrite
from genrun.scheduler import Request
from genrun.templates import compile_template

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def verdict_parser(judge: Mapping[str, Any]) -> Any:
    """text -> the verdict's score, or None when the reply holds none."""
    if judge.get("verdict", "label") == "number":
        def number(text: str) -> float | None:
            found = NUMBER.findall(text)
            return float(found[-1]) if found else None
        return number
    labels = {str(k).lower(): float(v) for k, v in (judge.get("labels") or {}).items()}
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


def judge_file(answers: Path, judge: Mapping[str, Any]) -> int:
    """Judge the answered, referenced, not yet judged rows of an answers file; rewrites it with
    their verdicts. Returns how many rows were judged now. The file is streamed twice (the
    requests, then the rewrite): memory holds the verdicts, not the records."""
    from hydra.utils import instantiate

    from genrun.run import answer, build_failure

    rubric = compile_template(str(judge["template"]), "judge.template")
    parse = verdict_parser(judge)

    def requests() -> Iterator[Request]:
        for position, record in enumerate(read_records(answers)):
            if record.get("answer") is None or "reference" not in record or "judge" in (record.get("scores") or {}):
                continue
            reference = record["reference"]
            context = {**record, "question": question_of(record), "answer": record["answer"],
                       "reference": " / ".join(map(str, reference)) if isinstance(reference, list) else reference}
            try:
                yield Request(position, prompt_messages(rubric(context)))
            except RowError as exc:
                yield Request(position, None, error=str(exc))

    pending = requests()
    first = next(pending, None)
    if first is None:
        return 0
    verdicts: dict[int, tuple[dict[str, Any], float | None]] = {}  # position -> (judge, verdict)

    def on_answer(request: Request, completion: Completion, latency: float | None) -> None:
        verdict = parse(completion.answer) if completion.answer is not None else None
        said = {"text": completion.answer, "error": completion.error}
        if verdict is None and completion.error is None:
            said["error"] = "no verdict in the judge's reply"
        verdicts[request.index] = (said, verdict)

    backend_cfg = judge["backend"]
    try:
        backend = instantiate(backend_cfg, sampling=dict(judge.get("sampling") or {}), extra={}, _convert_="all",
                              **credentials.for_component("judge.backend"))
    except Exception as exc:  # noqa: BLE001 - the same reporting as the answering backend
        raise build_failure(exc, "judge.backend") from exc
    try:
        asyncio.run(answer(backend, itertools.chain([first], pending), on_answer))
    finally:
        backend.close()

    def judged() -> Iterator[dict[str, Any]]:
        for position, record in enumerate(read_records(answers)):
            if position in verdicts:
                said, verdict = verdicts[position]
                record["judge"] = said
                if verdict is not None:
                    record["scores"] = {**(record.get("scores") or {}), "judge": verdict}
            yield record

    try:
        rewrite(answers, judged())
    except OSError as exc:
        raise cannot_write(answers, exc, "free some space, then judge again with genrun-score") from exc
    return len(verdicts)
