"""A run's rows as the viewer pages them: where each record of answers.jsonl ends, its row
and whether it is an answer, read from the run's checked index (`.answers.jsonl.idx`) so a
million-row run opens without parsing its journal; records written since (a live run, or
ones a crash left unindexed) are read from the journal's tail on every request.

Filters on what only the records hold (the main score, the finish reason, a cache hit) use
columns built once per run, in the background from the moment the run is opened: one parse
of the journal, 10 bytes a row. Text search reads the journal's bytes, not its records.
Nothing here writes to the run directory.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from genrun.rundir import index as run_index
from genrun.view.workers import BLOCK, build_columns, builder, parse, record_values, search_part

COLUMNS_WAIT_S = 60.0  # how long a filtered page waits for the columns of a huge run
SEARCH_LIMIT = 200  # characters of a search text
SEARCHES_KEPT = 4
PARALLEL_SEARCH_ROWS = 100_000  # from this many records a search runs in the two workers


@dataclasses.dataclass(frozen=True)
class Filter:
    """Which rows a page shows: `show` one of all, failed, wrong, truncated, cached, right; a
    main-score range; text the record must hold (case-insensitive for ASCII letters)."""

    show: str = "all"
    low: float | None = None
    high: float | None = None
    text: str = ""

    SHOWS = ("all", "failed", "wrong", "right", "truncated", "cached")

    def needs_columns(self) -> bool:
        return self.show in ("wrong", "right", "truncated", "cached") or self.low is not None or self.high is not None


class Rows:
    """The rows of one run's answers.jsonl, kept up to date with the file as it grows."""

    def __init__(self, answers: Path, metric: str) -> None:
        self.answers, self.metric = answers, metric
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.ends = np.empty(0, np.int64)  # where each record's line ends, in journal order
        self.rows = np.empty(0, np.int64)  # its row index
        self.ok = np.empty(0, bool)  # an answer, not an error
        self.size = 0  # journal bytes read
        self.identity: tuple[int, int] | None = None
        self.columns: Columns | None = None
        self.searches: dict[tuple[str, int], np.ndarray] = {}

    # -- keeping up with the file --------------------------------------------------------

    def refresh(self) -> None:
        """Read what the journal gained since the last call; start over if it was rewritten."""
        with self.lock:
            try:
                stat = os.stat(self.answers)
            except FileNotFoundError:
                self._reset()
                return
            if self.identity != (stat.st_dev, stat.st_ino) or stat.st_size < self.size or not self._last_line_intact():
                self._reset()
                self.identity = (stat.st_dev, stat.st_ino)
                self._load_index(stat.st_size)
            if stat.st_size > self.size:
                self._read_tail(stat.st_size)

    def _last_line_intact(self) -> bool:
        if not len(self.ends):
            return True
        with open(self.answers, "rb") as journal:
            journal.seek(int(self.ends[-1]) - 1)
            return journal.read(1) == b"\n"

    def _load_index(self, size: int) -> None:
        index = run_index.load(self.answers, size)  # None: missing, or not this journal's
        if index is None or not index.count:
            return
        entries = np.fromfile(run_index.index_path(self.answers), dtype=run_index.ENTRY, count=index.count,
                              offset=len(run_index.HEADER))
        self.ends, self.rows = entries["end"].astype(np.int64), entries["index"].astype(np.int64)
        self.ok = entries["ok"].astype(bool)
        self.size = index.covered

    def _read_tail(self, size: int) -> None:
        ends, rows, ok = [], [], []
        with open(self.answers, "rb") as journal:
            journal.seek(self.size)
            position = self.size
            while position < size:
                block = journal.read(min(BLOCK, size - position))
                last = block.rfind(b"\n")
                if last < 0:
                    break  # a line still being written
                for line in block[: last + 1].splitlines(keepends=True):
                    position += len(line)
                    record = parse(line)
                    if record is not None:
                        ends.append(position)
                        rows.append(record["index"])
                        ok.append(record.get("error") is None)
                journal.seek(position)
        self.size = position
        if ends:
            self.ends = np.concatenate([self.ends, np.asarray(ends, np.int64)])
            self.rows = np.concatenate([self.rows, np.asarray(rows, np.int64)])
            self.ok = np.concatenate([self.ok, np.asarray(ok, bool)])
        self.searches = {}

    # -- reading ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return {"rows": len(self.ends), "failed": int((~self.ok).sum()), "bytes": self.size}

    def record(self, position: int) -> dict[str, Any] | None:
        """The record at a position in journal order."""
        start = int(self.ends[position - 1]) if position else 0
        end = int(self.ends[position])
        with open(self.answers, "rb") as journal:
            journal.seek(start)
            data = journal.read(end - start)
        line = data[data.rfind(b"\n", 0, len(data) - 1) + 1:]  # a garbled line may come before it
        return parse(line)

    def position_of_row(self, row: int) -> int | None:
        found = np.flatnonzero(self.rows == row)
        return int(found[-1]) if len(found) else None

    def start_columns(self) -> Columns:
        """The columns, built in a process of their own (the server's threads keep answering
        while a million records are parsed) if nobody asked before."""
        with self.lock:
            if self.columns is None:
                self.columns = Columns(len(self.ends))
                self.columns.start(self.answers, self.ends.copy(), self.metric)
            return self.columns

    def select(self, chosen: Filter) -> np.ndarray:
        """The positions a filter keeps, in journal order."""
        with self.lock:
            count = len(self.ends)
            keep = np.ones(count, bool)
            if chosen.show == "failed":
                keep &= ~self.ok
        if chosen.needs_columns():
            columns = self.start_columns()
            if not columns.ready.wait(COLUMNS_WAIT_S):
                raise TimeoutError("the filter columns of this run are still being built; try again in a moment")
            if columns.error:
                self.columns = None  # the next page tries again
                raise RuntimeError(columns.error)
            with self.lock:
                if len(columns.score) < count:  # records the journal gained since they were built
                    columns.extend([self.record(p) or {} for p in range(len(columns.score), count)], self.metric)
                keep &= columns.mask(chosen, count)
        if chosen.text:
            keep &= self.search(chosen.text[:SEARCH_LIMIT], count)
        return np.flatnonzero(keep)

    def search(self, text: str, count: int) -> np.ndarray:
        """Which of the first `count` records hold the text (as JSON writes it), case-insensitive
        for ASCII letters: one pass over the journal's bytes (a large journal's two halves in the
        two workers at once), kept for the next page."""
        key = (text.lower(), count)
        if key in self.searches:
            return self.searches[key]
        needle = orjson.dumps(text)[1:-1].lower()
        ends = self.ends[:count]
        if count < PARALLEL_SEARCH_ROWS:
            found = search_part(self.answers, ends, 0, needle)
        else:
            middle = count // 2
            try:
                halves = [builder().submit(search_part, self.answers, ends[:middle], 0, needle),
                          builder().submit(search_part, self.answers, ends[middle:], int(ends[middle - 1]), needle)]
                found = np.concatenate([h.result() for h in halves])
            except BrokenProcessPool:  # a worker was killed: this search in this process
                found = search_part(self.answers, ends, 0, needle)
        if len(self.searches) >= SEARCHES_KEPT:
            self.searches.pop(next(iter(self.searches)))
        self.searches[key] = found
        return found


class Columns:
    """What the filters read of every record: the main score (NaN: none), whether the answer hit
    the token cap (finish_reason length), whether it came from the response cache."""

    def __init__(self, count: int) -> None:
        self.score = np.full(count, np.nan)
        self.truncated = np.zeros(count, bool)
        self.cached = np.zeros(count, bool)
        self.ready = threading.Event()
        self.error: str | None = None

    def start(self, answers: Path, ends: np.ndarray, metric: str) -> None:
        def done(halves: list[Any]) -> None:
            try:
                parts = [h.result() for h in halves]
                self.score, self.truncated, self.cached = (np.concatenate([p[i] for p in parts]) for i in range(3))
            except Exception as exc:  # noqa: BLE001 - the worker's failure is this run's filters' error
                self.error = f"cannot read {answers.name}: {exc}"
            self.ready.set()

        if not len(ends):
            self.ready.set()
            return
        # two halves at a record's end, one a worker: both cores parse
        middle = len(ends) // 2
        split = int(ends[middle - 1]) if middle else 0
        halves = [builder().submit(build_columns, answers, ends[:middle], metric, 0),
                  builder().submit(build_columns, answers, ends[middle:], metric, split)]

        def joined(_: Any) -> None:
            if all(h.done() for h in halves) and not self.ready.is_set():
                done(halves)

        for half in halves:
            half.add_done_callback(joined)

    def extend(self, records: list[dict[str, Any]], metric: str) -> None:
        table = np.asarray([record_values(r, metric) for r in records], dtype=float).reshape(-1, 3)
        self.score = np.concatenate([self.score, table[:, 0]])
        self.truncated = np.concatenate([self.truncated, table[:, 1] > 0])
        self.cached = np.concatenate([self.cached, table[:, 2] > 0])

    def mask(self, chosen: Filter, count: int) -> np.ndarray:
        score = self.score[:count]
        keep = np.ones(count, bool)
        if chosen.show == "wrong":
            keep &= score == 0
        elif chosen.show == "right":
            keep &= score > 0
        elif chosen.show == "truncated":
            keep &= self.truncated[:count]
        elif chosen.show == "cached":
            keep &= self.cached[:count]
        with np.errstate(invalid="ignore"):
            if chosen.low is not None:
                keep &= score >= chosen.low
            if chosen.high is not None:
                keep &= score <= chosen.high
        return keep
