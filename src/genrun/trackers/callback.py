"""The Hydra callback behind `tracker=mlflow` and `tracker=wandb`. A job: its tracker run starts
with the composed config as parameters, gets the count of rows answered while it runs, and at
its end run.json's identity as tags, metrics.json's numbers, the rows as a table and the run's
files. A sweep: a parent run first (each job's run is its child), the summary files at the end.

Each run directory keeps its tracker run's id (.tracker.json), so a resumed run goes on in the
same tracker run. A tracker that is missing, down or refusing costs one warning: from then on
nothing more is sent, and the run itself goes on untouched."""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genrun import credentials
from genrun.errors import one_line
from genrun.rundir.journal import read_json_object
from genrun.settings import load_tracker, plain_data, plain_job_config
from genrun.settings.schema import TrackerConfig
from genrun.trackers.base import Tracker, metrics_of, params_of, rows_table

log = logging.getLogger(__name__)
IDS = ".tracker.json"  # in a run or sweep directory: {"mlflow": run id, "wandb": run id, "down": bool}


def read_ids(folder: Path) -> dict[str, Any]:
    try:
        ids = json.loads((folder / IDS).read_text())
    except (OSError, ValueError):
        return {}
    return ids if isinstance(ids, dict) else {}


def write_ids(folder: Path, **values: Any) -> None:
    ids = {**read_ids(folder), **values}
    (folder / IDS).write_text(json.dumps(ids))


def make(settings: TrackerConfig, folder: Path, group: str | None) -> Tracker:
    if settings.kind == "mlflow":
        from genrun.trackers.mlflow import MlflowTracker

        return MlflowTracker(settings.tracking_uri, settings.experiment)
    if settings.kind == "wandb":
        from genrun.trackers.wandb import WandbTracker

        return WandbTracker(settings.experiment, settings.entity, folder, group)
    raise ValueError(f"tracker.kind={settings.kind!r} is not a tracker (mlflow, wandb)")


def say(warning: str) -> None:
    """A job's log reaches the console and genrun.log; around a sweep only Hydra's own is set up."""
    if logging.getLogger().handlers:
        log.warning("%s", warning)
    else:
        print(f"genrun: warning: {warning}", file=sys.stderr)


class TrackerCallback(Callback):
    def __init__(self) -> None:
        self.down = False  # a call failed: nothing more is sent (one warning said so)
        self.lock = threading.Lock()  # the progress thread and the job's own calls: one warning between them
        self.tracker: Tracker | None = None
        self.progress: Progress | None = None

    def guarded(self, what: str, call: Any, settings: TrackerConfig, sweep: Path | None = None) -> Any:
        """Run one tracker call; its failure is the one warning, and the tracker is off after it."""
        if self.down or (sweep is not None and read_ids(sweep).get("down")):
            self.down = True
            return None
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - whatever the tracker raises, the run goes on
            with self.lock:
                if self.down:
                    return None  # the other thread's failure said it already
                self.down = True
            if sweep is not None:
                write_ids(sweep, down=True)  # jobs in other processes stay quiet too
            say(f"tracker={settings.kind} could not {what} ({credentials.redact(one_line(exc, 200))}); the run goes "
                "on without it, its answers are on disk")
            return None

    # -- a sweep: the parent run ------------------------------------------------------------

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        settings, sweep = load_tracker(config), Path(config.hydra.sweep.dir)
        sweep.mkdir(parents=True, exist_ok=True)
        if read_ids(sweep).get(settings.kind):
            return  # the same sweep again (resumed): its parent goes on

        def start() -> None:
            tracker = make(settings, sweep, group=sweep.name)
            params = params_of(plain_data(config, resolve=False, enum_to_str=True))  # as the sweep has them
            write_ids(sweep, **{settings.kind: tracker.start(sweep.name, None, None, params, kind="sweep")})
            if settings.kind == "wandb":  # W&B holds one run at a time: the parent is reopened at the end
                tracker.end(ok=True)

        self.guarded("start the sweep's run", start, settings, sweep)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from genrun.reports.summary import write_summary

        settings, sweep = load_tracker(config), Path(config.hydra.sweep.dir)
        parent = read_ids(sweep).get(settings.kind)
        if not parent:
            return

        def finish() -> None:
            write_summary(sweep, list(config.get("scoring", {}).get("metrics") or []))  # before the CLI's callback
            tracker = make(settings, sweep, group=sweep.name)
            tracker.start(sweep.name, parent, None, {}, kind="sweep")
            for name in ("summary.md", "summary.csv", "summary.png"):
                if (sweep / name).exists():
                    tracker.log_file(sweep / name)
            tracker.end(ok=True)

        self.guarded("log the sweep's summary", finish, settings, sweep)

    # -- a job ------------------------------------------------------------------------------

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        settings, hydra = load_tracker(config), HydraConfig.get()
        out_dir = Path(hydra.runtime.output_dir)
        sweep = Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None
        parent = read_ids(sweep).get(settings.kind) if sweep is not None else None

        def start() -> None:
            self.tracker = make(settings, out_dir, group=sweep.name if sweep else None)
            params = params_of(plain_job_config(config))
            run_id = self.tracker.start(out_dir.name, read_ids(out_dir).get(settings.kind), parent, params)
            write_ids(out_dir, **{settings.kind: run_id})

        self.tracker = None
        self.guarded("start the job's run", start, settings, sweep)
        if self.tracker is not None and settings.progress_s > 0:
            tracker = self.tracker
            self.progress = Progress(out_dir / "answers.jsonl", settings.progress_s,
                                     lambda n: self.guarded("log progress", lambda: tracker.log_metrics(
                                         {"rows_done": float(n)}, step=n), settings, sweep))

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        tracker, self.tracker = self.tracker, None
        if tracker is None:
            return
        settings, hydra = load_tracker(config), HydraConfig.get()
        out_dir = Path(hydra.runtime.output_dir)
        sweep = Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None
        self.guarded("log the job's results", lambda: finish_job(tracker, out_dir, settings), settings, sweep)


def finish_job(tracker: Tracker, out_dir: Path, settings: TrackerConfig) -> None:
    metrics = read_json_object(out_dir / "metrics.json")
    run = read_json_object(out_dir / "run.json")
    tracker.set_tags(identity_tags(run))
    numbers = metrics_of(metrics)
    if "rows" in numbers:
        numbers["rows_done"] = numbers["rows"]
    answers = out_dir / "answers.jsonl"
    if answers.exists():
        tracker.log_table(rows_table(answers, settings.max_rows), "rows")
        tracker.log_file(answers)
    tracker.log_metrics(numbers, step=int(numbers.get("rows_done", 0)))
    tracker.summarize(numbers)
    for name in ("metrics.json", "run.json"):
        if (out_dir / name).exists():
            tracker.log_file(out_dir / name)
    tracker.end(ok=metrics.get("status") == "ok")


def identity_tags(run: dict[str, Any]) -> dict[str, str]:
    """run.json's identity: the model (and its chat template's hash), the data, genrun itself."""
    model: dict[str, Any] = run["model"] if isinstance(run.get("model"), dict) else {}
    dataset: dict[str, Any] = run["dataset"] if isinstance(run.get("dataset"), dict) else {}
    tags = {f"model.{k}": v for k, v in model.items()}
    tags.update({f"dataset.{k}": dataset.get(k) for k in ("path", "name", "split", "fingerprint")},
                genrun_version=run.get("genrun_version"), git_commit=run.get("git_commit"))
    return {k: credentials.redact(str(v)) for k, v in tags.items() if v is not None}


class Progress:
    """Every `seconds`, the rows the journal holds (its lines), handed to `report` when it grew."""

    def __init__(self, answers: Path, seconds: float, report: Any) -> None:
        self.answers, self.seconds, self.report = answers, seconds, report
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="genrun-tracker-progress", daemon=True)
        self.thread.start()

    def watch(self) -> None:
        read, lines, said = 0, 0, -1
        while not self.stopped.wait(self.seconds):
            try:
                with open(self.answers, "rb") as journal:
                    journal.seek(read)
                    chunk = journal.read()
            except OSError:
                continue
            read += len(chunk)
            lines += chunk.count(b"\n")
            if lines != said:
                self.report(lines)
                said = lines

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)
