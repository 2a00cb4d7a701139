"""answers.jsonl's index, `.answers.jsonl.idx`: for each record, its row index, where its line
ends in answers.jsonl, whether it is an answer (not an error), and two running checksums:
a CRC-32 of the journal's bytes up to that line's end, and one of every entry's row index and
outcome so far. 25 bytes a record after a 16-byte header, appended as each record is
written and flushed when its buffer fills, before the tally is saved, and at the end: a crash
may lose the last few hundred entries, whose records resume then reads from the journal.

A resume reads it instead of parsing every record: a million rows' index is 25 MB, read a
chunk at a time into one flag a row. Before it is trusted, the checksums are computed anew
from the journal and the entries (in large blocks, at the speed of reading the file): damage
anywhere (bytes overwritten in the middle of answers.jsonl, an entry naming another row) makes
the index disagree, and it is rebuilt from the journal, whose damaged lines are then dropped
and their rows answered again. It is only ever a cache of answers.jsonl, the journal:
records a crash left unindexed are read from the journal's tail; whatever rewrites
answers.jsonl removes the index (see `forget`).
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

log = logging.getLogger(__name__)

HEADER = b"genrun-index v2\n"  # an index without it (an older genrun's) is rebuilt from the journal
ENTRY = np.dtype([("index", "<i8"), ("end", "<i8"), ("ok", "u1"), ("lines_crc", "<u4"), ("rows_crc", "<u4")])
ROW = np.dtype([("index", "<i8"), ("ok", "u1")])  # what rows_crc covers of each entry
# The same layouts packed by struct: a record's entry is made in about 1 us, not numpy's 5.
ENTRY_STRUCT, ROW_STRUCT = struct.Struct("<qqBII"), struct.Struct("<qB")
CHUNK = 1 << 20  # entries read at a time
BLOCK = 16 << 20  # journal bytes read at a time when its checksum is computed


def index_path(answers: Path) -> Path:
    return answers.with_name(f".{answers.name}.idx")


def forget(answers: Path) -> None:
    """answers.jsonl was rewritten: its index no longer says where records end."""
    index_path(answers).unlink(missing_ok=True)


def row_bytes(index: int, ok: bool) -> bytes:
    return ROW_STRUCT.pack(index, ok)


class Checksums:
    """The running checksums of a journal and its entries, carried from one entry to the next."""

    def __init__(self, lines: int = 0, rows: int = 0) -> None:
        self.lines, self.rows = lines, rows

    def entry(self, index: int, end: int, ok: bool, line: bytes) -> bytes:
        """The index entry of a record whose journal line is `line`, ending at `end`."""
        self.lines = zlib.crc32(line, self.lines)
        self.rows = zlib.crc32(row_bytes(index, ok), self.rows)
        return ENTRY_STRUCT.pack(index, end, ok, self.lines, self.rows)


def load(answers: Path, size: int) -> Index | None:
    """What the index says of the first records of answers.jsonl (size bytes), checked against
    the journal; None when there is no index or it does not match the journal."""
    path = index_path(answers)
    if not path.exists():
        return None
    index = Index(path)
    rows_crc = 0
    with open(path, "rb") as handle:
        if handle.read(len(HEADER)) != HEADER:
            log.info("%s is from an older genrun or damaged: rebuilding it", path.name)
            return None
        while True:
            chunk = np.fromfile(handle, dtype=ENTRY, count=CHUNK)  # a torn last entry is not read
            valid = chunk[chunk["end"] <= size]  # records cut off since (a truncated journal) go
            if len(valid) and not (valid["end"][0] > index.covered and np.all(np.diff(valid["end"]) > 0)):
                return None
            rows = np.empty(len(valid), dtype=ROW)
            rows["index"], rows["ok"] = valid["index"], valid["ok"]
            rows_crc = zlib.crc32(rows.tobytes(), rows_crc)
            if len(valid) and int(valid["rows_crc"][-1]) != rows_crc:
                damaged(path, "its entries")
                return None
            index.add(valid["index"], valid["end"], valid["ok"])
            if len(valid):
                index.checksums = Checksums(int(valid["lines_crc"][-1]), rows_crc)
            if len(chunk) < CHUNK or len(valid) < len(chunk):
                break
    if index.count and journal_crc(answers, index.covered) != index.checksums.lines:
        damaged(path, answers.name)
        return None
    return index


def damaged(path: Path, what: str) -> None:
    """Say that the index is not used (load then returns None, and the journal rebuilds it)."""
    log.warning("%s does not match %s (damage in the file?): rebuilding it from the journal", path.name, what)


def journal_crc(answers: Path, covered: int) -> int:
    """The CRC-32 of the journal's first `covered` bytes."""
    crc, left = 0, covered
    with open(answers, "rb") as journal:
        while left > 0:
            block = journal.read(min(BLOCK, left))
            if not block:
                break
            crc = zlib.crc32(block, crc)
            left -= len(block)
    return crc


class Index:
    """What an index holds, summed up as it is read: the rows done, how many failed, whether
    a row is there twice, where the last record ends, and the checksums carried on from it."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.done = DoneRows()
        self.count = self.failed = self.covered = 0
        self.twice = False
        self.checksums = Checksums()

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
        assert self.path is not None, "an index read from a file"
        with open(self.path, "rb") as handle:
            handle.seek(len(HEADER) + position * ENTRY.itemsize)
            return np.frombuffer(handle.read(ENTRY.itemsize), dtype=ENTRY)[0]

    def find(self, offset: int) -> int | None:
        """The position of the entry whose record ends at offset (a binary search in the file)."""
        low, high = 0, self.count
        while low < high:
            middle = (low + high) // 2
            end = int(self.entry(middle)["end"])
            if end == offset:
                return middle
            low, high = (middle + 1, high) if end < offset else (low, middle)
        return None


def truncate(path: Path, entries: int) -> None:
    """Keep the header and the first `entries` entries (an index whose tail is out of step)."""
    import os

    os.truncate(path, len(HEADER) + entries * ENTRY.itemsize)


class Writer:
    """Appends entries to an index file (a new one gets the header), and sums them up in an
    Index as it goes."""

    def __init__(self, path: Path, index: Index, mode: str = "ab") -> None:
        self.handle = open(path, mode)
        if mode == "wb":
            self.handle.write(HEADER)
        self.index = index
        self.checksums = index.checksums
        self.pending: list[bytes] = []

    def add(self, row: int, end: int, ok: bool, line: bytes) -> None:
        self.pending.append(self.checksums.entry(row, end, ok, line))
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.handle.write(data)
            table = np.frombuffer(data, dtype=ENTRY)
            self.index.add(table["index"], table["end"], table["ok"])
            self.index.checksums = self.checksums
            self.pending = []

    def close(self) -> None:
        self.flush()
        self.handle.close()


def parse(line: bytes) -> dict[str, Any] | None:
    """A complete journal line's record, or None for a torn or garbled one."""
    if not line.endswith(b"\n"):
        return None
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        return None
    index = record.get("index") if isinstance(record, dict) else None
    good = isinstance(index, int) and not isinstance(index, bool) and index >= 0
    return record if good else None


def ok(record: dict[str, Any]) -> bool:
    return record.get("error") is None


def scan(answers: Path, start: int = 0) -> Iterator[tuple[int, dict[str, Any] | None, bytes]]:
    """(end offset, record or None if garbled, the line) for each line of answers.jsonl from
    byte `start`; a torn last line is not yielded."""
    with open(answers, "rb") as journal:
        journal.seek(start)
        position = start
        for line in journal:
            if not line.endswith(b"\n"):
                return
            position += len(line)
            yield position, parse(line), line


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
        return 0 <= index < len(self.flags) and bool(self.flags[index])

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
