"""Judging a run's answers: each answered, referenced row not judged yet is sent to the judge's
backend (built by the one factory) through the same scheduler, retries and concurrency as
the answers; verdicts are journaled as they arrive (rundir.verdicts) and merged into the
records at the end. Rows with a verdict are never asked again, so a judging stopped at any
moment resumes where it stopped, in a run or in genrun-score."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Iterator

from genrun.backend.base import Completion
from genrun.backend.build import build
from genrun.engine.scheduler import answer
from genrun.errors import RowError
from genrun.prompt.request import Request
from genrun.rundir.journal import read_records
from genrun.rundir.verdicts import VerdictJournal, answer_key, merge_verdicts, read_verdicts, verdicts_path
from genrun.scoring.judge import needs_verdict, reading, rubric, verdict_parser
from genrun.settings.schema import JudgeConfig


def judge_file(answers: Path, judge: JudgeConfig) -> int:
    """Judge an answers file's rows that need a verdict; returns how many were judged now. The
    file is streamed twice (the requests, then the rewrite): memory holds the verdicts."""
    ask, parse = rubric(judge), verdict_parser(judge)
    verdicts = read_verdicts(verdicts_path(answers))

    def requests() -> Iterator[Request]:
        for record in read_records(answers):
            key = answer_key(record)
            if not needs_verdict(record) or (key in verdicts and verdicts[key][1] is not None):
                continue  # no verdict wanted, or judged before it was stopped
            try:
                yield Request(record["index"], ask(record), meta={"key": key})
            except RowError as exc:
                yield Request(record["index"], None, error=str(exc), meta={"key": key})

    pending = requests()
    first = next(pending, None)
    judged_now = 0
    if first is not None:
        backend = build(judge.backend, judge.sampling, {}, secrets_of="judge.backend")
        journal = None
        try:
            journal = VerdictJournal(answers)

            def on_answer(request: Request, completion: Completion, latency: float | None) -> None:
                nonlocal judged_now
                said, verdict = reading(completion.answer, completion.error, parse)
                verdicts[request.meta["key"]] = (said, verdict)
                journal.add(request.meta["key"], said, verdict)
                judged_now += 1

            asyncio.run(answer(backend, itertools.chain([first], pending), on_answer))
        finally:
            if journal is not None:
                journal.close()
            backend.close()
    if verdicts:
        merge_verdicts(answers, verdicts)
    return judged_now
