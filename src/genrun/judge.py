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
import hashlib
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


def verdicts_path(answers: Path) -> Path:
    """The judge's journal beside answers.jsonl: each verdict, appended and flushed as it arrives."""
    return answers.with_name(f".{answers.name}.judged")


def answer_key(record: Mapping[str, Any]) -> str:
    """A verdict belongs to one answer of one row."""
    digest = hashlib.sha256(str(record.get("answer")).encode()).hexdigest()[:16]
    return f"{record['index']}:{digest}"


def read_verdicts(path: Path) -> dict[str, tuple[dict[str, Any], float | None]]:
    """The verdicts journaled so far (a torn or garbled line is skipped: that row is judged again)."""
    verdicts: dict[str, tuple[dict[str, Any], float | None]] = {}
    if not path.exists():
        return verdicts
    with open(path, "rb") as lines:
        for line in lines:
            try:
                item = json.loads(line)
                key, said, verdict = item["key"], item["judge"], item["verdict"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(key, str) and isinstance(said, dict) and (verdict is None or isinstance(verdict, float)):
                verdicts[key] = (said, verdict)
    return verdicts


def judge_file(answers: Path, judge: Mapping[str, Any]) -> int:
    """Judge the answered, referenced, not yet judged rows of an answers file; rewrites it with
    their verdicts. Returns how many rows were judged now.

    Each verdict is appended to the journal (verdicts_path) as it arrives, so a judging
    stopped at any moment keeps what it was told: judging again sends only the rows without a
    verdict. The answers file is streamed twice (the requests, then the rewrite that merges
    the journal into it, after which the journal goes): memory holds the verdicts, not the
    records."""
    from genrun.run import answer, build_failure

    rubric = compile_template(str(judge["template"]), "judge.template")
    parse = verdict_parser(judge)
    journal_path = verdicts_path(answers)
    verdicts = read_verdicts(journal_path)

    def requests() -> Iterator[Request]:
        for record in read_records(answers):
            if record.get("answer") is None or "reference" not in record or "judge" in (record.get("scores") or {}):
                continue
            key = answer_key(record)
            if key in verdicts and verdicts[key][1] is not None:
                continue  # judged before it was stopped: not asked again
            reference = record["reference"]
            context = {**record, "question": question_of(record), "answer": record["answer"],
                       "reference": " / ".join(map(str, reference)) if isinstance(reference, list) else reference}
            try:
                yield Request(record["index"], prompt_messages(rubric(context)), meta={"key": key})
            except RowError as exc:
                yield Request(record["index"], None, error=str(exc), meta={"key": key})

    pending = requests()
    first = next(pending, None)
    judged_now = 0
    if first is not None:
        from hydra.utils import instantiate

        try:
            backend = instantiate(judge["backend"], sampling=dict(judge.get("sampling") or {}), extra={},
                                  _convert_="all", **credentials.for_component("judge.backend"))
        except Exception as exc:  # noqa: BLE001 - the same reporting as the answering backend
            raise build_failure(exc, "judge.backend") from exc
        try:
            journal = open(journal_path, "ab")
        except OSError as exc:
            backend.close()
            raise cannot_write(journal_path, exc, "free some space, then judge again with genrun-score") from exc

        def on_answer(request: Request, completion: Completion, latency: float | None) -> None:
            nonlocal judged_now
            verdict = parse(completion.answer) if completion.answer is not None else None
            said = {"text": completion.answer, "error": completion.error}
            if verdict is None and completion.error is None:
                said["error"] = "no verdict in the judge's reply"
            key = request.meta["key"]
            verdicts[key] = (said, verdict)
            try:
                journal.write(json.dumps({"key": key, "judge": said, "verdict": verdict}).encode() + b"\n")
                journal.flush()
            except OSError as exc:
                raise cannot_write(journal_path, exc, "free some space, then judge again with genrun-score") from exc
            judged_now += 1

        try:
            asyncio.run(answer(backend, itertools.chain([first], pending), on_answer))
        finally:
            journal.close()
            backend.close()
    if not verdicts:
        return 0
    merge_verdicts(answers, verdicts)
    journal_path.unlink(missing_ok=True)
    return judged_now


def merge_verdicts(answers: Path, verdicts: Mapping[str, tuple[dict[str, Any], float | None]]) -> None:
    """Rewrite the answers file with each row's verdict: its reply in `judge`, its score in scores.judge."""
    def judged() -> Iterator[dict[str, Any]]:
        for record in read_records(answers):
            found = verdicts.get(answer_key(record)) if record.get("answer") is not None else None
            if found is not None:
                said, verdict = found
                record["judge"] = said
                if verdict is not None:
                    record["scores"] = {**(record.get("scores") or {}), "judge": verdict}
            yield record

    try:
        rewrite(answers, judged())
    except OSError as exc:
        raise cannot_write(answers, exc, "free some space, then judge again with genrun-score") from exc
