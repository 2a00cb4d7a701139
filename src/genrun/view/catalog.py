"""The runs and sweeps under the folders genrun-view was given, found by their files (a run:
answers.jsonl or run.json; a sweep: multirun.yaml or summary.csv), each under a key made of
its path below the folder given, and the line the runs page shows for each."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from genrun.reports.summary import read_metrics
from genrun.rundir.journal import read_json_object as read_json

RUN_FILES = ("answers.jsonl", "run.json")
SWEEP_FILES = ("multirun.yaml", "summary.csv")
RESCAN_S = 2.0  # a folder is walked again at most this often (new runs appear on the next page load)


@dataclasses.dataclass
class Found:
    key: str
    path: Path
    kind: str  # run | sweep


class Catalog:
    def __init__(self, roots: list[Path]) -> None:
        self.roots = [r.resolve() for r in roots]
        self.found: dict[str, Found] = {}
        self.scanned = 0.0

    def scan(self, force: bool = False) -> dict[str, Found]:
        if not force and time.monotonic() - self.scanned < RESCAN_S:
            return self.found
        found: dict[str, Found] = {}
        for number, root in enumerate(self.roots):
            prefix = f"{number}:" if len(self.roots) > 1 else ""
            for folder, names in walk(root):
                relative = folder.relative_to(root).as_posix()
                key = prefix + ("" if relative == "." else relative)
                if any(n in names for n in SWEEP_FILES):
                    found[key or "."] = Found(key or ".", folder, "sweep")
                elif any(n in names for n in RUN_FILES):
                    found[key or "."] = Found(key or ".", folder, "run")
        self.found, self.scanned = found, time.monotonic()
        return found

    def get(self, key: str, kind: str) -> Found | None:
        """A run or sweep by its key; only what a scan found (no path a client makes up)."""
        item = self.scan().get(key)
        if item is None:
            item = self.scan(force=True).get(key)
        return item if item is not None and item.kind == kind else None

    def key_of(self, path: Path) -> str | None:
        resolved = path.resolve()
        return next((k for k, f in self.scan().items() if f.path == resolved), None)


def walk(root: Path) -> list[tuple[Path, set[str]]]:
    """Every folder below root with its file names; hidden folders (.hydra) are not entered."""
    if root.is_file():
        root = root.parent
    out = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.append((Path(folder), set(files)))
    return out


def main_metric(run: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The run's main metric: the first of scoring.metrics in run.json, else the first score."""
    configured = ((run.get("config") or {}).get("scoring") or {}).get("metrics")
    if isinstance(configured, list) and configured:
        return str(configured[0])
    scores = metrics.get("scores") or {}
    return next(iter(scores), "accuracy")


def backend_name(run: dict[str, Any]) -> str:
    target = str(((run.get("config") or {}).get("backend") or {}).get("_target_", ""))
    return target.rsplit(".", 1)[-1].removesuffix("Backend").lower() if target else ""


def model_name(run: dict[str, Any]) -> str:
    model = run.get("model") or {}
    if isinstance(model, dict):
        return str(model.get("model") or model.get("model_name_or_path") or model.get("model_name") or "")
    return str(model)


def task_name(run: dict[str, Any]) -> str:
    config = run.get("config") or {}
    task = config.get("task")
    if isinstance(task, dict) and task.get("name"):
        return str(task["name"])
    dataset = run.get("dataset") or {}
    name = Path(str(dataset.get("path") or "")).name
    return name + (f" ({dataset['name']})" if dataset.get("name") else "")


def run_line(found: Found, locked: set[tuple[int, int]]) -> dict[str, Any]:
    """What the runs page shows of a run: its metrics.json and run.json, or, while it runs or
    after a crash, what its journal's index says so far."""
    run = read_json(found.path / "run.json")
    metrics = read_metrics(found.path / "metrics.json")
    metric = main_metric(run, metrics)
    scores, intervals = metrics.get("scores") or {}, metrics.get("scores_ci95") or {}
    status = metrics.get("status") or "unfinished"
    if is_running(found.path, locked):
        status = "running"
    rows = metrics.get("rows")
    if rows is None or status == "running":
        rows = indexed_rows(found.path)
    when = run.get("started_at") or time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(found.path.stat().st_mtime))
    return {"key": found.key, "label": label(found), "when": str(when)[:19].replace("T", " "),
            "backend": backend_name(run), "model": model_name(run),
            "task": task_name(run), "rows": rows, "answered": metrics.get("answered"), "failed": metrics.get("failed"),
            "metric": metric, "score": scores.get(metric), "ci95": intervals.get(metric), "status": status,
            "wall_s": metrics.get("wall_s"), "cost": metrics.get("cost"),
            "error": str(metrics["error"]) if status == "error" and metrics.get("error") else None}


def label(found: Found) -> str:
    """A run's name on the runs page: a sweep's job as SWEEP/job N (its folder's name repeats
    every override), any other run as its key."""
    if any((found.path.parent / n).exists() for n in SWEEP_FILES) and "/" in found.key:
        return f"{found.key.rsplit('/', 1)[0]}/job {found.path.name.split('_', 1)[0]}"
    return found.key


def indexed_rows(run: Path) -> int | None:
    """Records in the journal so far, from its index's size (entries are of fixed size)."""
    from genrun.rundir import index as run_index

    try:
        size = (run / f".{RUN_FILES[0]}.idx").stat().st_size
    except OSError:
        return None
    return max(size - len(run_index.HEADER), 0) // run_index.ENTRY.itemsize


def held_locks() -> set[tuple[int, int]]:
    """The (device, inode) of every file some process holds a flock on (Linux's /proc/locks):
    how a viewer tells a running run without touching its lock."""
    held: set[tuple[int, int]] = set()
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return held
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK":
            try:
                major, minor, inode = parts[5].split(":")
                held.add((os.makedev(int(major, 16), int(minor, 16)), int(inode)))
            except ValueError:
                continue
    return held


def is_running(run: Path, locked: set[tuple[int, int]]) -> bool:
    try:
        stat = (run / ".genrun.lock").stat()
    except OSError:
        return False
    return (stat.st_dev, stat.st_ino) in locked
