"""answers.jsonl's index, `.answers.idx`: for each record, its row index, where its line ends
in answers.jsonl, and whether it is an answer (not an error). 17 bytes a record, appended and
flushed right after the record itself.

A resume reads it instead of parsing every record: a million rows' index is 17 MB, read a
chunk at a time into one flag a row. It is only ever a cache of answers.jsonl, the journal: records a crash left
unindexed are read from the journal's tail, and an index that is missing, torn or out of
step with the journal (spot-checked against it) is rebuilt from the journal. Whatever
rewrites answers.jsonl removes the index (see `forget`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

log = logging.getLogger(__name__)

ENTRY = np.dtype([("index", "<i8"), ("end", "<i8"), ("ok", "u1")])
SPOT_CHECKS = 16  # records compared with the journal before an index is trusted
CHUNK = 1 << 20  # entries read at a time


def index_path(answers: Path) -> Path:
    return answers.with_name(f".{answers.name}.idx")


def forget(answers: Path) -> None:
    """answers.jsonl was rewritten: its index no longer says where records end."""
    index_path(answers).unlink(missing_ok=True)


def entry(index: int, end: int, ok: bool) -> bytes:
    return np.array([(index, end, ok)], dtype=ENTRY).tobytes()


def load(answers: Path, size: int) -> "Index | None":
    """What the index says of the first records of answers.jsonl (size bytes), or None when
    there is no index or it does not match the journal."""
    path = index_path(answers)
    if not path.exists():
        return None
    index = Index(path)
    with open(path, "rb") as handle:
        while True:
            chunk = np.fromfile(handle, dtype=ENTRY, count=CHUNK)  # a torn last entry is not read
            valid = chunk[chunk["end"] <= size]  # records cut off since (a truncated journal) go
            if len(valid) and not (valid["end"][0] > index.covered and np.all(np.diff(valid["end"]) > 0)):
                return None
            index.add(valid["index"], valid["end"], valid["ok"])
            if len(chunk) < CHUNK or len(valid) < len(chunk):
                break
    if not agrees(answers, index):
        log.info("%s does not match %s: rebuilding it", path.name, answers.name)
        return None
    return index


class Index:
    """What an index holds, summed up as it is read: the rows done, how many failed, whether
    a row is there twice, and where the last record ends."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.done = DoneRows()
        self.count = self.failed = self.covered = 0
        self.twice = False

    def add(self, index: np.ndarray, end: np.ndarray, ok: np.ndarray) -> None:
        if not len(index):
            return
        unique = np.unique(index)
        self.twice = self.twice or len(unique) < len(index) or self.done.any_of(unique)
        self.done.mark(unique)
        self.count += len(index)
        self.failed += int((ok == 0).sum())
        self.covered = int(end[-1])

    def entry(self, position: int) -> Any:
        with open(self.path, "rb") as handle:
            handle.seek(position * ENTRY.itemsize)
            return np.frombuffer(handle.read(ENTRY.itemsize), dtype=ENTRY)[0]

    def ends_at(self, offset: int) -> bool:
        """Whether one of its records ends at offset (a binary search in the file)."""
        low, high = 0, self.count
        while low < high:
            middle = (low + high) // 2
            end = int(self.entry(middle)["end"])
            if end == offset:
                return True
            low, high = (middle + 1, high) if end < offset else (low, middle)
        return False


class Writer:
    """Appends entries to an index file, and sums them up in an Index as it goes."""

    def __init__(self, path: Path, index: Index, mode: str = "ab") -> None:
        self.handle = open(path, mode)
        self.index = index
        self.pending: list[tuple[int, int, bool]] = []

    def add(self, row: int, end: int, ok: bool) -> None:
        self.pending.append((row, end, ok))
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            table = np.array(self.pending, dtype=ENTRY)
            self.handle.write(table.tobytes())
            self.index.add(table["index"], table["end"], table["ok"])
            self.pending = []

    def close(self) -> None:
        self.flush()
        self.handle.close()


def agrees(answers: Path, index: Index) -> bool:
    """Spot-check the index against the journal: the last record and evenly spread others
    must be where the index says, with its row index and outcome."""
    if not index.count:
        return True
    picks = sorted({*np.linspace(0, index.count - 1, SPOT_CHECKS).astype(int).tolist(), index.count - 1})
    with open(answers, "rb") as journal:
        for pick in picks:
            start = int(index.entry(pick - 1)["end"]) if pick else 0
            entry = index.entry(pick)
            journal.seek(start)
            record = parse(journal.read(int(entry["end"]) - start))
            if record is None or record["index"] != entry["index"] or ok(record) != bool(entry["ok"]):
                return False
    return True


def parse(line: bytes) -> dict[str, Any] | None:
    """A complete journal line's record, or None for a torn or garbled one."""
    if not line.endswith(b"\n"):
        return None
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        return None
    return record if isinstance(record, dict) and isinstance(record.get("index"), int) else None


def ok(record: dict[str, Any]) -> bool:
    return record.get("error") is None


def scan(answers: Path, start: int = 0) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(end offset, record or None if garbled) for each line of answers.jsonl from byte
    `start`; a torn last line is not yielded."""
    with open(answers, "rb") as journal:
        journal.seek(start)
        position = start
        for line in journal:
            if not line.endswith(b"\n"):
                return
            position += len(line)
            yield position, parse(line)


class DoneRows:
    """The rows answered before this run started, one byte of memory each (a numpy bool
    array indexed by row), so a ten-million-row resume holds 10 MB, not a set of ints."""

    def __init__(self, indices: Iterable[int] = ()) -> None:
        self.flags = np.zeros(0, dtype=bool)
        self.count = 0
        self.mark(np.unique(np.fromiter(indices, dtype=np.int64)))

    def mark(self, unique: np.ndarray) -> None:
        """Mark rows done (unique: their indices, without repeats)."""
        if not len(unique):
            return
        top = int(unique[-1]) + 1
        if top > len(self.flags):
            grown = np.zeros(max(top, 2 * len(self.flags)), dtype=bool)
            grown[: len(self.flags)] = self.flags
            self.flags = grown
        self.count += int((~self.flags[unique]).sum())
        self.flags[unique] = True

    def any_of(self, unique: np.ndarray) -> bool:
        return bool(self.flags[unique[unique < len(self.flags)]].any())

    def __contains__(self, index: int) -> bool:
        return index < len(self.flags) and bool(self.flags[index])

    def __len__(self) -> int:
        return self.count

    def __eq__(self, other: object) -> bool:  # compares with a set of row indices (tests)
        if not isinstance(other, (set, frozenset)):
            return NotImplemented
        return set(np.flatnonzero(self.flags).tolist()) == set(other)

    def first_missing(self, start: int = 0, step: int = 1) -> int:
        """The first row of start, start + step, ... that is not done: where a resume begins."""
        missing = np.flatnonzero(~self.flags[start::step])
        return start + step * (int(missing[0]) if len(missing) else len(range(start, len(self.flags), step)))
