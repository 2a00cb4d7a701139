"""Running code_pass's programs after the answers: each answered, referenced sample whose
program has not run yet is run in the sandbox (scoring.sandbox), several at once in threads
that each wait on their own process (the event loop is not involved), its outcome journaled
as it ends and merged into the records at the end. Programs that ran are never run again,
so a run or a genrun-score stopped at any moment resumes where it stopped."""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from genrun.rundir.executions import (
    ExecutionJournal,
    executions_path,
    key,
    merge_executions,
    read_executions,
    samples,
)
from genrun.rundir.journal import read_records
from genrun.scoring.code import program
from genrun.scoring.sandbox import Limits, isolation_of, run
from genrun.scoring.scorer import Scorer
from genrun.settings.schema import ScoringConfig


def execute_file(answers: Path, scorer: Scorer, scoring: ScoringConfig) -> int:
    """Run the programs of an answers file not run yet, then merge; returns how many ran now."""
    if "code_pass" not in scorer.metrics:
        return 0
    isolation = isolation_of(scoring.sandbox)
    limits = Limits(wall_s=scoring.code_timeout_s, cpu_s=max(1, int(scoring.code_timeout_s)),
                    memory_mb=scoring.code_memory_mb)
    outcomes = read_executions(executions_path(answers))
    workers = scoring.code_workers or os.cpu_count() or 1
    ran = 0
    journal = ExecutionJournal(answers)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="genrun-code") as pool:
            running: dict[Future, str] = {}
            for record in read_records(answers):
                if record.get("reference") is None:
                    continue
                for sample, answer in enumerate(samples(record)):
                    item = key(record, sample, answer)
                    if item in outcomes:
                        continue
                    code = program(answer, str(record["reference"]), scoring.code_from)
                    running[pool.submit(run, code, limits, isolation)] = item
                    if len(running) >= 2 * workers:  # the file is streamed: only these wait in memory
                        ran += collect(running, outcomes, journal, FIRST_COMPLETED)
            ran += collect(running, outcomes, journal, None)
    finally:
        journal.close()
    merge_executions(answers, outcomes, scorer)
    return ran


def collect(running: dict[Future, str], outcomes: dict, journal: ExecutionJournal, when: str | None) -> int:
    done, _ = wait(list(running), return_when=when or "ALL_COMPLETED")
    for future in done:
        item = running.pop(future)
        outcomes[item] = future.result()
        journal.add(item, outcomes[item])
    return len(done)
