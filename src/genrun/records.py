"""The run directory's files. answers.jsonl: one JSON record per row, appended and flushed as
each answer arrives; run.json and metrics.json, each written whole.

Reopening a run's file is what makes resume safe: a line torn by a crash is dropped, a row
recorded twice keeps one record, and (with retry_errors) failed rows are removed so they
are answered again. Every row ends with exactly one record.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from genrun.backend.base import Completion
from genrun.errors import cannot_write
from genrun.scheduler import Request
from genrun.scoring import Scorer, score_record

log = logging.getLogger(__name__)


def make_record(request: Request, completion: Completion, latency: float | None, scorer: Scorer) -> dict[str, Any]:
    """A row's record: its id and index, what the row gave (prompt or turns), the answer or
    error with its token counts, and when the row has a reference its scores (and with
    scoring.extract, the extracted answer they were computed on)."""
    meta = dict(request.meta)
    record: dict[str, Any] = {"id": meta.pop("id"), "index": request.index}
    reference = meta.pop("reference", None)
    record.update(meta)
    record.update(
        answer=completion.answer,
        error=completion.error,
        finish_reason=completion.finish_reason,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_s=None if latency is None else round(latency, 4),  # None: read from a Batch file
    )
    if completion.reasoning is not None:
        record["reasoning"] = completion.reasoning
    if completion.cached:
        record["cached"] = True
    if completion.answers is not None:  # sampling.n > 1
        record.update(answers=completion.answers, finish_reasons=completion.finish_reasons)
    if reference is not None:
        record["reference"] = reference
    score_record(record, scorer)
    return record


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The complete records of an answers file; torn or garbled lines are skipped."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # torn by a crash mid-write
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("index"), int):
                yield record


class AnswerLog:
    def __init__(self, path: Path, retry_errors: bool = False) -> None:
        self.path = path
        self.done: set[int] = set()  # rows answered before this run started (resume skips them)
        self.failed_before = 0
        self._reconcile(retry_errors)
        self._file = open(path, "a", encoding="utf-8")

    def _reconcile(self, retry_errors: bool) -> None:
        """Decide which rows are done, and rewrite the file if it holds anything to drop."""
        if not self.path.exists():
            return
        best: dict[int, bool] = {}  # index -> answered; an answer beats an error
        lines = kept = 0
        with open(self.path, encoding="utf-8") as handle:
            lines = sum(1 for _ in handle)
        for record in read_records(self.path):
            kept += 1
            best[record["index"]] = best.get(record["index"], False) or record.get("error") is None
        keep = {i for i, ok in best.items() if ok or not retry_errors}
        self.done = keep
        self.failed_before = sum(1 for i in keep if not best[i])
        if kept == lines == len(best) and len(keep) == len(best):
            return  # nothing torn, duplicated or retried: append as is
        seen: set[int] = set()
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            for record in read_records(self.path):
                i = record["index"]
                answered = record.get("error") is None
                if i in keep and i not in seen and (answered or not best[i]):
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    seen.add(i)
        os.replace(tmp, self.path)
        log.info("resume: %d rows already done in %s", len(keep), self.path)

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            self._file.flush()  # a crash loses at most the rows in flight
        except OSError as exc:  # a full disk, a quota: stop the run; what is written stays
            raise cannot_write(self.path, exc, "free some space, then resume the run") from exc

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:  # the write that failed already said why
            pass


def write_json(path: Path, data: dict[str, Any]) -> None:
    """run.json and metrics.json: written whole, then renamed, so a reader never sees half."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
