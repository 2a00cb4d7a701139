"""genrun-merge: join the answers of sharded jobs into one file, in the dataset's order,
checking that every row is there exactly once.

It refuses what would lose or mix answers: an output that is one of its inputs, shards of
different datasets, a shard still being written. The merged file is written under a
temporary name beside it and renamed at the end, so an interrupted merge leaves nothing
under the final name."""

from __future__ import annotations

import json
import os
from array import array
from pathlib import Path

import numpy as np

from genrun.errors import UserError, cannot_write
from genrun.rundir import index as done_index
from genrun.rundir.lock import LOCK_NAME

COPY_CHUNK = 1 << 16


def merge(run_dirs: list[Path], output: Path) -> int:
    """Write every record of run_dirs to output sorted by row index; return the row count.

    Memory holds three numbers a row (its index and where its line lies), never the records:
    the lines are copied from the shards' files in row order, after one pass over each
    that finds where its lines lie."""
    check_shards(run_dirs, output)
    rows, sources, starts, ends = [], [], [], []
    expected = 0
    for number, run_dir in enumerate(run_dirs):
        answers = run_dir / "answers.jsonl"
        metrics_file = run_dir / "metrics.json"
        if metrics_file.exists():
            try:
                expected = max(expected, int(json.loads(metrics_file.read_text()).get("dataset_rows") or 0))
            except (ValueError, TypeError, AttributeError):
                raise UserError(f"{metrics_file} is not readable JSON; resume that shard to rewrite it") from None
        index, start, end = places(answers)
        unique, count = np.unique(index, return_counts=True)
        if (count > 1).any():
            raise UserError(f"row {int(unique[count > 1][0])} is in {answers} twice (a run that "
                            f"crashed); resume it once (genrun ... resume={run_dir}) to keep one record per row")
        rows.append(index)
        sources.append(np.full(len(index), number))
        starts.append(start)
        ends.append(end)
    row = np.concatenate(rows) if rows else np.empty(0, np.int64)
    order = np.argsort(row, kind="stable")
    row, source = row[order], np.concatenate(sources)[order]
    start, end = np.concatenate(starts)[order], np.concatenate(ends)[order]
    twice = np.flatnonzero(np.diff(row) == 0)
    if len(twice):
        at = int(twice[0])
        raise UserError(f"row {int(row[at])} is in both {run_dirs[source[at]]} and "
                        f"{run_dirs[source[at + 1]]}: were they shards of one dataset.num_shards setting?")
    total = max(expected, int(row[-1]) + 1 if len(row) else 0)
    if len(row) < total:
        present = np.zeros(total, dtype=bool)
        present[row] = True
        missing = np.flatnonzero(~present)
        raise UserError(f"{len(missing)} rows missing ({_few(missing.tolist())}); "
                        "finish those shards (re-run them into the same directories) first")
    files = [open(run_dir / "answers.jsonl", "rb") for run_dir in run_dirs]
    partial = output.with_name(f".{output.name}.partial")
    try:
        with open(partial, "wb") as out:
            for at in range(0, len(row), COPY_CHUNK):  # Python ints for a chunk of rows at a time
                part = slice(at, at + COPY_CHUNK)
                for number, begin, stop in zip(source[part].tolist(), start[part].tolist(), end[part].tolist()):
                    files[number].seek(begin)
                    out.write(files[number].read(stop - begin))
        os.replace(partial, output)
    except OSError as exc:
        raise cannot_write(output, exc, "free some space or choose another -o") from exc
    finally:
        partial.unlink(missing_ok=True)
        for handle in files:
            handle.close()
    return len(row)


def check_shards(run_dirs: list[Path], output: Path) -> None:
    """Refuse a merge that would destroy or mix answers (before anything is read or written)."""
    target = output.expanduser().resolve()
    datasets: dict[str, Path] = {}
    for run_dir in run_dirs:
        answers = run_dir / "answers.jsonl"
        if not answers.exists():
            raise UserError(f"{answers} does not exist")
        if answers.resolve() == target:
            raise UserError(f"-o {output} is one of the inputs ({answers}); write the merged file elsewhere")
        holder = lock_holder(run_dir)
        if holder is not None:
            raise UserError(f"{run_dir} is still being written by {holder}; wait for it to finish")
        dataset = saved_dataset(run_dir)
        if dataset is not None:
            datasets.setdefault(dataset, run_dir)
    if len(datasets) > 1:
        (one, first), (other, second) = list(datasets.items())[:2]
        raise UserError(f"{first} and {second} answered different datasets ({one} and {other}); "
                        "merge only the shards of one run")


def saved_dataset(run_dir: Path) -> str | None:
    """Which data a run answered, from its run.json: the dataset's fingerprint, or its path,
    name and split when it has no fingerprint (a hub dataset)."""
    try:
        dataset = json.loads((run_dir / "run.json").read_text()).get("dataset") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if dataset.get("fingerprint"):
        return f"fingerprint {dataset['fingerprint']}"
    return f"{dataset.get('path')} {dataset.get('name') or ''} {dataset.get('split') or ''}".strip() or None


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run directory's lock now (a run still writing it), or None."""
    from genrun.rundir.lock import RunDirInUse, RunLock

    if not (run_dir / LOCK_NAME).exists():
        return None
    try:
        with RunLock(run_dir, quiet=True):
            return None
    except RunDirInUse as exc:
        return exc.holder


def places(answers: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each complete record's row index and the byte range of its line, read from the file
    (garbled and torn lines left out)."""
    index, start, end = array("q"), array("q"), array("q")
    last = 0
    for stop, record, _ in done_index.scan(answers):
        if record is not None:
            index.append(record["index"])
            start.append(last)
            end.append(stop)
        last = stop
    return (np.frombuffer(index, dtype=np.int64), np.frombuffer(start, dtype=np.int64),
            np.frombuffer(end, dtype=np.int64))


def _few(indices: list[int]) -> str:
    shown = ", ".join(map(str, sorted(indices)[:10]))
    return shown + (", ..." if len(indices) > 10 else "")
