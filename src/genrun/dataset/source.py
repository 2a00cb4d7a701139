"""Stream rows from a Hugging Face dataset: a hub id, or a local file or folder.

Rows are read lazily (streaming by default), so memory does not grow with the dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from genrun.errors import UserError, one_line
from genrun.settings.schema import DatasetConfig

log = logging.getLogger(__name__)

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}

# The json builder reads 10 MB of a file at a time and turns it into Python rows at once
# (about 300k short rows, 150 MB): a run's memory would grow with the file up to that. In
# 256 KB pieces it stays flat, at the same speed (measured by bench/memory.py).
JSON_READ = {"chunksize": 256 << 10}

# A resume skips the rows before its first one not done with datasets' skip() when they are
# this many or more: it saves about 18 us a row, and opening the file anew costs about 0.3 s.
SKIP_FROM = 20_000

# Rows converted from Arrow to Python at a time: 64 is as fast as 1000, and holds few decoded images.
READ_BATCH = 64

@dataclass
class Rows:
    """The rows a job answers, as (index in the dataset, row) pairs, and what run.json records."""

    rows: Iterator[tuple[int, dict[str, Any]]]
    total: int | None  # rows this job will see, when known up front
    info: dict[str, Any]
    first: dict[str, Any]  # the dataset's first row: the fields are checked against it before any model loads
    scanned: int = 0  # dataset rows read so far, before sharding: the dataset's size once done
    # A file that turned out broken mid-way: the rows before it were read; the run reports
    # this once they are answered.
    error: UserError | None = None
    rows_from: Any = None  # start -> the rows from that index on, skipping those before (see skip_done)

    def skip_done(self, done: Any) -> None:
        """Resume: start at this job's first row not done (done: rundir.index.DoneRows), so the
        rows before it are skipped by datasets itself, not read and dropped one by one."""
        shards, shard = self.info["num_shards"], self.info["shard_index"]
        start = done.first_missing(shard, shards) if len(done) else 0
        if start >= SKIP_FROM:
            self.rows = self.rows_from(start)
            # rows read: not past the last one done, which the dataset holds (another shard's may follow)
            self.scanned = min(self.scanned, len(done.flags))

    def _count(self, rows: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            for index, row in rows:
                self.scanned = index + 1
                yield index, row
        except BrokenDataset as exc:
            self.error = exc


def check_slice(dataset: DatasetConfig) -> None:
    limit, shards, shard = dataset.limit, dataset.num_shards, dataset.shard_index
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserError(f"dataset.limit={limit!r} must be a positive number of rows (or null for all rows)")
    if shards < 1 or not 0 <= shard < shards:
        raise UserError(f"dataset.shard_index={shard} must be in [0, dataset.num_shards={shards})")


def open_rows(dataset: DatasetConfig) -> Rows:
    """Open the dataset and read its first row (rows.first), streamed from there on."""
    check_slice(dataset)
    path, limit = str(dataset.path), dataset.limit
    files = local_files(path)
    data = _load(path, files, dataset.name, dataset.split, dataset.streaming)
    iterator = read_checked(data, files, path)
    first = next(iterator, None)  # a file broken before its first row raises BrokenDataset here
    if first is None:
        raise UserError(f"dataset.path={path!r} split {dataset.split!r} has no rows")
    info = {"path": path, "name": dataset.name, "split": dataset.split, "fingerprint": fingerprint(path),
            "num_shards": dataset.num_shards, "shard_index": dataset.shard_index, "limit": limit}
    result = Rows(rows=iter(()), total=None, info=info, first=first)

    def rows_from(start: int) -> Iterator[tuple[int, dict[str, Any]]]:
        if limit is not None:
            start = min(start, int(limit))
        if start:  # datasets skips at the Arrow level: no Python row is made for what is skipped
            result.scanned = start
            with torch_unseen():
                skipped = data.skip(start)
            rows = result._count(enumerate(read_checked(skipped, files, path, start), start))
        else:
            rows = result._count(enumerate(itertools.chain([first], iterator)))
        if limit is not None:
            rows = itertools.islice(rows, int(limit) - start)
        # Sharding by row index (not by file) keeps shards disjoint for a single file, and the
        # global index lets genrun-merge restore the dataset's order.
        if dataset.num_shards > 1:
            rows = ((i, row) for i, row in rows if i % dataset.num_shards == dataset.shard_index)
        return rows

    result.rows_from, result.rows = rows_from, rows_from(0)
    result.total = shard_size(_known_size(data, dataset.split), dataset)
    return result


def shard_size(size: int | None, dataset: DatasetConfig) -> int | None:
    """How many rows this job answers, when the dataset's size is known."""
    if dataset.limit is not None:
        size = min(size, int(dataset.limit)) if size is not None else int(dataset.limit)
    if size is not None and dataset.num_shards > 1:
        size = len(range(dataset.shard_index, size, dataset.num_shards))
    return size


def image_base_dir(path: str) -> str | None:
    """Relative image paths in a local dataset resolve against the dataset file's folder."""
    local = Path(path).expanduser()
    if local.is_file():
        return str(local.parent)
    return str(local) if local.is_dir() else None


def local_files(path: str) -> list[Path] | None:
    """The data files behind a local path, or None for a hub id."""
    local = Path(path).expanduser()
    if local.is_dir():
        files = sorted(f for f in local.rglob("*") if f.suffix in BUILDERS and f.is_file())
        if not files:
            raise UserError(f"dataset.path={path!r}: folder has no {'/'.join(BUILDERS)} files")
        kinds = {BUILDERS[f.suffix] for f in files}
        if len(kinds) > 1:
            raise UserError(f"dataset.path={path!r}: folder mixes formats ({', '.join(sorted(kinds))}); keep one")
        return files
    if local.is_file():
        if local.suffix not in BUILDERS:
            raise UserError(f"dataset.path={path!r}: unknown file type (use {', '.join(BUILDERS)})")
        return [local]
    if path.startswith(("/", ".", "~")) or Path(path).suffix in BUILDERS:
        raise UserError(f"dataset.path={path!r}: no such file or folder")
    return None


def _load(path: str, files: list[Path] | None, name: str | None, split: str, streaming: bool) -> Any:
    import datasets

    datasets.disable_progress_bars()
    # datasets logs a parse error before raising it; genrun reports it once, in one line.
    datasets.logging.set_verbosity(logging.CRITICAL)
    try:
        with torch_unseen():
            return _load_dataset(datasets, path, files, name, split, streaming)
    except StopIteration as exc:  # datasets' json builder on a file without a row
        raise UserError(f"dataset.path={path!r} has no rows (is the file empty?)") from exc
    except Exception as exc:  # noqa: BLE001 - pyarrow, pandas, json, network: the user's data or path
        if files is None and not isinstance(exc, (FileNotFoundError, ConnectionError, ValueError, OSError)):
            raise
        reason = one_line(exc, 300) or type(exc).__name__
        raise UserError(f"dataset.path={path!r} could not be opened: {reason}") from exc


@contextlib.contextmanager
def torch_unseen() -> Iterator[None]:
    """datasets imports torch (1-2 s, 100 MB) in every new IterableDataset when torch is
    installed, only to share the epoch with DataLoader workers. genrun has none: an
    OpenAI-only run stays torch-free."""
    import datasets

    restore = datasets.config.TORCH_AVAILABLE
    if "torch" not in sys.modules:
        datasets.config.TORCH_AVAILABLE = False
    try:
        yield
    finally:
        datasets.config.TORCH_AVAILABLE = restore


def _load_dataset(datasets: Any, path: str, files: list[Path] | None, name: str | None, split: str,
                  streaming: bool) -> Any:
    if files is not None:
        builder = BUILDERS[files[0].suffix]
        return datasets.load_dataset(builder, data_files={split: [str(f) for f in files]}, split=split,
                                     streaming=streaming, **JSON_READ if builder == "json" else {})
    return datasets.load_dataset(path, name, split=split, streaming=streaming)


class BrokenDataset(UserError):
    """A data file that cannot be read past some row: its message names the file and the line."""


def load_checked(path: str, name: str | None, split: str) -> Iterator[dict[str, Any]]:
    """The rows of another split or file (few-shot examples), streamed and checked."""
    files = local_files(path)
    return read_checked(_load(path, files, name, split, streaming=True), files, path)


def read_checked(data: Any, files: list[Path] | None, path: str, skipped: int = 0) -> Iterator[dict[str, Any]]:
    """The dataset's rows; a parse or decode error, whenever datasets raises it, becomes
    BrokenDataset naming the file and line, after every good row before that line.

    datasets parses a file in pieces and fails a whole piece at once, so the rows between the
    last one it gave and the bad line are read again here (local JSON lines and CSV files),
    which also finds the line to name. skipped: rows data was told to skip first."""
    given = skipped
    try:
        for row in unbatched(data):
            yield row
            given += 1
    except Exception as exc:  # noqa: BLE001 - pyarrow, pandas, UnicodeDecodeError, ...
        reason = one_line(exc, 300) or type(exc).__name__
        if files is None:
            raise BrokenDataset(f"dataset.path={path!r}: reading row {given} failed: {reason}") from exc
        yield from salvage(files, given)
        # Every line read plainly: datasets failed on something else (e.g. a column whose
        # type changes between rows). The rows were answered, so say so and go on.
        log.warning("dataset.path=%r: datasets stopped at row %d (%s); read the rest line by line", path, given, reason)


def unbatched(data: Any) -> Iterator[dict[str, Any]]:
    """A dataset's rows, converted from Arrow READ_BATCH at a time: datasets' own row iterator
    costs about 25 us a row, five times this (measured by bench/ceiling.py)."""
    if not hasattr(data, "iter"):
        yield from data
        return
    for batch in data.iter(batch_size=READ_BATCH):
        columns = list(batch)
        for values in zip(*batch.values()):
            yield dict(zip(columns, values))


def salvage(files: list[Path], skip: int) -> Iterator[dict[str, Any]]:
    """Rows after the first `skip`, read plainly until the first bad line, which is raised as
    BrokenDataset naming the file and the line."""
    from genrun.dataset import salvage as readers

    count = 0
    for file in files:
        read = readers.READERS.get(file.suffix)
        if read is None:
            if count >= skip:  # nothing to re-read by line in this format (parquet)
                raise BrokenDataset(f"{file}: cannot be read: the file is damaged or not {file.suffix[1:]}")
            continue
        try:
            for row in read(file):
                if count >= skip:
                    yield row
                count += 1
        except readers.BadLine as exc:
            raise BrokenDataset(f"{file} {exc}") from None
        except OSError as exc:
            raise BrokenDataset(f"{file}: cannot be read: {exc}") from None


def _known_size(data: Any, split: str) -> int | None:
    try:
        return int(data.info.splits[split].num_examples)
    except (AttributeError, KeyError, TypeError):
        try:
            return len(data)
        except TypeError:
            return None


def fingerprint(path: str) -> str | None:
    """sha256 over local data files (names, sizes, contents): equal fingerprints, equal data."""
    try:
        files = local_files(path)
    except UserError:
        return None
    if files is None:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{f.stat().st_size}".encode())
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
