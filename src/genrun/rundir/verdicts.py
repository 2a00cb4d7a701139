"""The judge's journal beside answers.jsonl (`.answers.jsonl.judged`): each verdict appended and
flushed as it arrives, keyed by row and a digest of its answer, until it is merged into the
records; a judging stopped at any moment keeps what it was told."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from genrun.errors import cannot_write
from genrun.rundir.journal import read_records, rewrite

Verdicts = dict[str, tuple[dict[str, Any], float | None]]  # key -> (the reply as kept, the verdict)


def verdicts_path(answers: Path) -> Path:
    return answers.with_name(f".{answers.name}.judged")


def answer_key(record: Mapping[str, Any]) -> str:
    """A verdict belongs to one answer of one row."""
    digest = hashlib.sha256(str(record.get("answer")).encode()).hexdigest()[:16]
    return f"{record['index']}:{digest}"


def read_verdicts(path: Path) -> Verdicts:
    """The verdicts journaled so far (a torn or garbled line is skipped: that row is judged again)."""
    verdicts: Verdicts = {}
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


class VerdictJournal:
    """Appends verdicts to the journal, each flushed as it comes."""

    FIX = "free some space, then judge again with genrun-score"

    def __init__(self, answers: Path) -> None:
        self.path = verdicts_path(answers)
        try:
            self._file = open(self.path, "ab")
        except OSError as exc:
            raise cannot_write(self.path, exc, self.FIX) from exc

    def add(self, key: str, said: dict[str, Any], verdict: float | None) -> None:
        try:
            self._file.write(json.dumps({"key": key, "judge": said, "verdict": verdict}).encode() + b"\n")
            self._file.flush()
        except OSError as exc:
            raise cannot_write(self.path, exc, self.FIX) from exc

    def close(self) -> None:
        self._file.close()


def merge_verdicts(answers: Path, verdicts: Mapping[str, tuple[dict[str, Any], float | None]]) -> None:
    """Rewrite the answers file with each row's verdict (its reply in `judge`, its score in
    scores.judge), then remove the journal."""
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
        raise cannot_write(answers, exc, VerdictJournal.FIX) from exc
    verdicts_path(answers).unlink(missing_ok=True)
