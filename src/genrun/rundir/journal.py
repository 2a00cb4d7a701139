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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import orjson

from genrun.errors import cannot_write
from genrun.rundir.tally import Tally, tally_path

# genrun.rundir.index (and so numpy) is imported where it is used: `genrun --cfg job` and the
# other commands that only compose a config stay quick to start.
if TYPE_CHECKING:
    from genrun.rundir import index as done_index

log = logging.getLogger(__name__)


# What orjson writes as Python's json module would: a datetime or dataclass as its str(), as
# json.dumps(..., default=str) does.
_ORJSON_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


def journal_line(record: dict[str, Any]) -> bytes:
    """A record as answers.jsonl holds it: one line of strict JSON, UTF-8 (a number that is
    not finite, NaN or Infinity, is null). orjson writes it in a tenth of json's time; what it
    refuses (keys that are not strings, integers beyond 64 bits, text with a lone surrogate,
    which a server's JSON escapes can carry) json writes, a lone surrogate as its \\u escape."""
    try:
        return orjson.dumps(record, default=str, option=_ORJSON_OPTIONS)
    except TypeError:
        return (_encode(record) + "\n").encode("utf-8", errors="backslashreplace")


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
            if is_record(record):
                yield record


def is_record(value: Any) -> bool:
    """A journal line's JSON is a record: an object with a row index (a whole number, not negative)."""
    if not isinstance(value, dict):
        return False
    index = value.get("index")
    return isinstance(index, int) and not isinstance(index, bool) and index >= 0


class AnswerLog:
    """A run's answers.jsonl, opened for appending, with its index (index.py) and the
    running tally behind metrics.json (tally.py).

    Opening it decides which rows are done from the index, reading only what the index does
    not cover (the records a crash left unindexed); the whole journal is read only when the
    index is missing or out of step. The journal is rewritten only when it holds something
    to drop: a garbled line, a row recorded twice, or (retry_errors) failed rows; a torn
    last line is cut off."""

    SAVE_TALLY_EVERY = 50_000  # records: what a crash costs the next resume to re-tally

    def __init__(self, path: Path, retry_errors: bool = False, metrics: list[str] | None = None,
                 group_by: str | None = None, cluster_by: str | None = None) -> None:
        from genrun.rundir import index as done_index

        self.path = path
        self.metrics = list(metrics or [])
        self.by = {"group_by": group_by, "cluster_by": cluster_by}  # the tally's groups and clusters
        self.done = done_index.DoneRows()  # rows answered before this run started (resume skips them)
        self.failed_before = 0
        self.tally = Tally(self.metrics, **self.by)
        self._checksums = done_index.Checksums()  # carried on from the last entry: each write adds one
        self._entries = 0  # entries in the index
        self._reconcile(retry_errors)
        try:
            self._file = open(path, "ab")
            self._index = open(done_index.index_path(path), "ab")
        except OSError as exc:
            raise cannot_write(path, exc, "choose another run directory") from exc
        self._size = self._file.tell()
        self._unsaved = 0

    def _reconcile(self, retry_errors: bool) -> None:
        from genrun.rundir import index as done_index

        idx = done_index.index_path(self.path)
        if not self.path.exists():
            done_index.forget(self.path)
            tally_path(self.path).unlink(missing_ok=True)
            done_index.Writer(idx, done_index.Index(idx), "wb").close()
            return
        size = self.path.stat().st_size
        index = done_index.load(self.path, size)  # checked against the journal: None if it disagrees
        saved = Tally.load(tally_path(self.path), self.metrics, **self.by) if index is not None else None
        if saved is not None and index is not None and not matches(index, *saved):
            saved = None  # a tally of other records than the index's, or edited: re-tallied from the journal
        if saved is not None:
            self.tally, tally_from, _ = saved
        else:
            tally_from = 0
        if index is None:  # none yet (a run from before the index), or out of step: rebuilt from the journal
            writer = done_index.Writer(idx, done_index.Index(idx), "wb")
        else:  # its entries for records the journal no longer holds (or a torn entry) go; the tail is added
            done_index.truncate(idx, index.count)
            writer = done_index.Writer(idx, index)
        garbled, last_end = False, index.covered if index is not None else 0
        try:
            for end, record, line in done_index.scan(self.path, min(tally_from, last_end)):
                if record is None:
                    garbled = True
                    continue
                if end > tally_from:
                    self.tally.add(record)
                if end > last_end:
                    writer.add(record["index"], end, done_index.ok(record), line)
                    last_end = end
        finally:
            writer.close()
        index = writer.index
        if garbled or index.twice or (retry_errors and index.failed):
            if garbled:
                log.warning("%s: dropping lines that are not records (damage in the file?); their rows are "
                            "answered again", self.path)
            index = self._rewrite(retry_errors)
        elif last_end < size:  # a line torn by a crash mid-write: cut it off
            with open(self.path, "r+b") as journal:
                journal.truncate(last_end)
        self.done = index.done
        self.failed_before = index.failed
        self._checksums, self._entries = index.checksums, index.count
        if index.count:
            log.info("resume: %d rows already done in %s", index.count, self.path)

    def _rewrite(self, retry_errors: bool) -> done_index.Index:
        """Keep one record per row, an answer before an error, and drop failed rows with retry_errors."""
        from genrun.rundir import index as done_index

        best: dict[int, bool] = {}
        for record in read_records(self.path):
            best[record["index"]] = best.get(record["index"], False) or done_index.ok(record)
        seen: set[int] = set()

        def kept() -> Iterator[dict[str, Any]]:
            for record in read_records(self.path):
                i = record["index"]
                if i not in seen and (done_index.ok(record) or not (best[i] or retry_errors)):
                    seen.add(i)
                    yield record

        self.tally = Tally(self.metrics, **self.by)
        return rewrite(self.path, kept(), self.tally)

    def write(self, record: dict[str, Any]) -> None:
        from genrun.rundir import index as done_index

        line = journal_line(record)
        try:
            self._file.write(line)
            self._file.flush()  # a crash loses at most the rows in flight
            self._size += len(line)
            # Not flushed here: the index is a cache of the journal (see index.py)
            self._index.write(self._checksums.entry(record["index"], self._size, done_index.ok(record), line))
        except OSError as exc:  # a full disk, a quota: stop the run; what is written stays
            raise cannot_write(self.path, exc, "free some space, then resume the run") from exc
        self._entries += 1
        self.tally.add(record)
        self._unsaved += 1
        if self._unsaved >= self.SAVE_TALLY_EVERY:
            self._save_tally()

    def _save_tally(self) -> None:
        try:
            if not self._index.closed:
                self._index.flush()  # the entry the tally's stamp names is on disk before it
            self.tally.save(tally_path(self.path), self._size,
                            stamp(self._entries, self._checksums.lines, self._checksums.rows))
            self._unsaved = 0
        except OSError as exc:  # the journal is what counts; the next resume re-tallies it
            log.warning("could not save the tally of %s: %s", self.path, exc)

    def close(self) -> None:
        for handle in (self._file, self._index):
            try:
                handle.close()
            except OSError:  # the write that failed already said why
                pass
        self._save_tally()


def stamp(entries: int, lines_crc: int, rows_crc: int) -> dict[str, int]:
    """What ties a saved tally to the index entry it was made at."""
    return {"entries": entries, "lines_crc": lines_crc, "rows_crc": rows_crc}


def matches(index: done_index.Index, tally: Tally, covers: int, saved_stamp: dict[str, Any]) -> bool:
    """Whether a saved tally counts exactly the index's first records: an entry ends where the
    tally says it covers, it is the tally's last, and the checksums there are the tally's."""
    if not covers:
        return not tally.counts["rows"]
    position = index.find(covers)
    if position is None:
        return False
    entry = index.entry(position)
    return (saved_stamp == stamp(position + 1, int(entry["lines_crc"]), int(entry["rows_crc"]))
            and tally.counts["rows"] == position + 1)


def rewrite(path: Path, records: Iterable[dict[str, Any]], tally: Tally | None = None) -> done_index.Index:
    """Write records as answers.jsonl anew, replacing it whole, with a fresh index (returned,
    summed up); with a tally, count them into it and save it, else the saved tally is removed.
    Streams: memory does not grow with the file."""
    from genrun.rundir import index as done_index

    tmp = path.with_name(path.name + ".tmp")
    index_tmp = path.with_name(path.name + ".idx.tmp")
    writer = done_index.Writer(index_tmp, done_index.Index(done_index.index_path(path)), "wb")
    end = 0
    try:
        with open(tmp, "wb") as out:
            for record in records:
                line = journal_line(record)
                out.write(line)
                end += len(line)
                writer.add(record["index"], end, done_index.ok(record), line)
                if tally is not None:
                    tally.add(record)
        writer.close()
        done_index.forget(path)  # out of step from the moment the journal changes
        tally_path(path).unlink(missing_ok=True)
        os.replace(tmp, path)
        os.replace(index_tmp, done_index.index_path(path))
    finally:
        writer.handle.close()
        tmp.unlink(missing_ok=True)
        index_tmp.unlink(missing_ok=True)
    if tally is not None:
        sums = writer.index.checksums
        tally.save(tally_path(path), end, stamp(writer.index.count, sums.lines, sums.rows))
    return writer.index


def write_json(path: Path, data: dict[str, Any]) -> None:
    """run.json and metrics.json: written whole, then renamed, so a reader never sees half."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json_object(path: Path) -> dict[str, Any]:
    """run.json or metrics.json as an object; {} when it is missing, not JSON or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
