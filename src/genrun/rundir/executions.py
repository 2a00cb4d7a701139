"""The journal of code_pass's programs beside answers.jsonl (`.answers.jsonl.executed`): each
program's outcome appended and flushed as it ends, keyed by row, sample and a digest of the
answer, until they are merged into the records (`executions`, one per sample); a run stopped
at any moment keeps what ran, and runs only the rest when resumed or rescored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from genrun.errors import cannot_write
from genrun.rundir.journal import read_records, rewrite
from genrun.scoring.scorer import Scorer, answer_digest, score_record

FIX = "free some space, then run the programs again with genrun-score"


def executions_path(answers: Path) -> Path:
    return answers.with_name(f".{answers.name}.executed")


def samples(record: Mapping[str, Any]) -> list[str]:
    answers = record.get("answers") or ([record["answer"]] if record.get("answer") is not None else [])
    return [str(a) for a in answers]


def key(record: Mapping[str, Any], sample: int, answer: str) -> str:
    return f"{record['index']}:{sample}:{answer_digest(answer)}"


def read_executions(path: Path) -> dict[str, dict[str, Any]]:
    """Outcomes journaled so far (a torn or garbled line is skipped: that program runs again)."""
    found: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return found
    with open(path, "rb") as lines:
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("outcome"), dict):
                found[item["key"]] = item["outcome"]
    return found


class ExecutionJournal:
    def __init__(self, answers: Path) -> None:
        self.path = executions_path(answers)
        try:
            self._file = open(self.path, "ab")
        except OSError as exc:
            raise cannot_write(self.path, exc, FIX) from exc

    def add(self, item_key: str, outcome: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps({"key": item_key, "outcome": outcome}).encode() + b"\n")
            self._file.flush()
        except OSError as exc:
            raise cannot_write(self.path, exc, FIX) from exc

    def close(self) -> None:
        self._file.close()


def merge_executions(answers: Path, outcomes: Mapping[str, dict[str, Any]], scorer: Scorer) -> None:
    """Rewrite the answers file with each row's executions and its scores anew (code_pass,
    pass@k), then remove the journal."""
    def executed() -> Iterator[dict[str, Any]]:
        for record in read_records(answers):
            said = samples(record)
            found = [outcomes.get(key(record, i, a)) for i, a in enumerate(said)]
            if said and all(f is not None for f in found):
                record["executions"] = [{**(f or {}), "answer": answer_digest(a)} for f, a in zip(found, said)]
                score_record(record, scorer)
            yield record

    try:
        rewrite(answers, executed())
    except OSError as exc:
        raise cannot_write(answers, exc, FIX) from exc
    executions_path(answers).unlink(missing_ok=True)
