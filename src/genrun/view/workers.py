"""What genrun-view's two worker processes do for a large run, and the pool they run in:
build the filter columns from one parse of the journal, and search its bytes, each over a
range of records, so the server's own threads keep answering meanwhile."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from genrun.rundir.breakdown import is_truncated

BLOCK = 16 << 20  # journal bytes read at a time


def parse(line: bytes) -> dict[str, Any] | None:
    """A journal line's record, or None for a garbled one (as the run's own reader decides)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    index = record.get("index")
    return record if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else None


def record_values(record: dict[str, Any], metric: str) -> tuple[float, bool, bool]:
    """(main score or NaN, hit the token cap, from the cache): what the filters read of a record."""
    scores = record.get("scores")
    value = scores.get(metric) if type(scores) is dict else None
    number = float(value) if type(value) in (float, int) else np.nan  # type: ignore[arg-type]  # bool is no score
    return number, is_truncated(record), record.get("cached") is True


_builder: Any = None


def builder() -> Any:
    """The two worker processes that build columns and search large journals, started on
    first use."""
    global _builder
    if _builder is None or getattr(_builder, "_broken", False):  # a worker was killed (OOM): a new pool
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _builder = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=leave_with_parent, initargs=(os.getpid(),))
    return _builder


def leave_with_parent(parent: int) -> None:
    """A worker ends when the server does, however it ends (uvicorn re-raises SIGTERM, so the
    pool's own shutdown at exit never runs): it watches for being handed to another parent."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="genrun-view-parent").start()


def build_columns(answers: Path, ends: np.ndarray, metric: str,
                  start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The columns of the records ending at `ends`, from one pass over the journal's bytes from
    `start` (a record's end) to the last of them; a line that is no record (garbled) is matched
    to no position."""
    score, truncated, cached = np.full(len(ends), np.nan), np.zeros(len(ends), bool), np.zeros(len(ends), bool)
    limit = int(ends[-1]) if len(ends) else 0
    with open(answers, "rb") as journal:
        base = start
        journal.seek(base)
        while base < limit:
            block = journal.read(min(BLOCK, limit - base))
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                break
            line_ends, values = [], []
            position = base
            for line in block[:cut].splitlines(keepends=True):
                position += len(line)
                record = parse(line)
                if record is not None:
                    line_ends.append(position)
                    values.append(record_values(record, metric))
            if line_ends:
                at = np.searchsorted(ends, np.asarray(line_ends, np.int64))
                keep = (at < len(ends)) & (ends[np.minimum(at, len(ends) - 1)] == line_ends)
                table = np.asarray(values, dtype=float).reshape(-1, 3)
                score[at[keep]] = table[keep, 0]
                truncated[at[keep]] = table[keep, 1] > 0
                cached[at[keep]] = table[keep, 2] > 0
            base += cut
            journal.seek(base)
    return score, truncated, cached


def search_part(answers: Path, ends: np.ndarray, start: int, needle: bytes) -> np.ndarray:
    """Which records, of those ending at `ends` (the first starting at byte `start`), hold the
    lowercased needle. The journal is mapped, not read: a window is copied once, lowercased."""
    import mmap

    found = np.zeros(len(ends), bool)
    limit = int(ends[-1]) if len(ends) else 0
    if limit <= start:
        return found
    letters = needle != needle.upper()  # without ASCII letters no window need be lowercased
    with open(answers, "rb") as journal, mmap.mmap(journal.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        base = start
        while base < limit:
            stop = min(base + BLOCK, limit)
            if stop < limit:
                stop = mapped.rfind(b"\n", base, stop) + 1 or stop  # whole lines in each window
            window = mapped[base:stop].lower() if letters else mapped[base:stop]
            hits, at = [], window.find(needle)
            while at >= 0:
                hits.append(base + at)
                line_end = window.find(b"\n", at)
                at = window.find(needle, line_end + 1) if line_end >= 0 else -1
            if hits:
                positions = np.searchsorted(ends, np.asarray(hits, np.int64), side="right")
                found[positions[positions < len(ends)]] = True
            base = stop
    return found


def warm() -> None:
    """Start both workers now, so the first run opened does not wait for them."""
    for _ in range(2):
        builder().submit(int)
