"""One genrun job, as a short sequence of named steps: check the run directory, open the
dataset and the journal, build the requests, deliver them (online, as a Batch job, from a
Batch file, or exported), judge, and finish (metrics.json, run.json).

The run directory holds answers.jsonl (one record per row, written as each answer arrives),
metrics.json and run.json; re-running into it resumes. What a job's outcome means for the
process (its exit code) is the CLI's business.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Any, Iterator

from genrun.backend.base import Backend, Completion
from genrun.backend.cached import CachedBackend
from genrun.dataset import local_files, open_rows
from genrun.engine import batch_files
from genrun.engine.delivery import Delivery, choose, json_constraint
from genrun.engine.executing import execute_file
from genrun.engine.judging import judge_file
from genrun.engine.progress import Progress
from genrun.errors import FatalBackendError, UserError, cannot_write
from genrun.prompt.builder import request_maker
from genrun.prompt.modes import check_fields
from genrun.prompt.request import Request
from genrun.rundir import provenance, resume, status
from genrun.rundir.journal import AnswerLog, now, write_json
from genrun.rundir.lock import RunLock
from genrun.rundir.record import make_record
from genrun.scoring.code import code_of
from genrun.scoring.sandbox import isolation_of
from genrun.scoring.scorer import Scorer
from genrun.settings import Settings

log = logging.getLogger(__name__)


def run(settings: Settings, out_dir: Path, backend: Backend | None = None) -> dict[str, Any]:
    """Answer every row of the dataset into out_dir; returns metrics.json's content. A user's
    mistake, a backend that cannot answer, or Ctrl-C is raised once metrics.json says so.

    A backend passed in (the benchmarks share one engine between runs) stays open: its caller
    owns it. Otherwise the delivery builds one, and it is closed at the end."""
    scorer = Scorer.of(settings.scoring, json_valid=json_constraint(settings.sampling), mode=settings.prompt.mode)
    if "code_pass" in scorer.metrics:  # no sandbox, a bad code_from: said now, not after every answer is paid for
        isolation_of(settings.scoring.sandbox)
        code_of("", settings.scoring.code_from)
    delivery = choose(settings, out_dir)
    resume.check_resume_dir(settings.resume.dir, out_dir)
    with RunLock(out_dir):
        return Job(settings, out_dir, delivery, scorer).run(backend)


def kept_columns(scoring: Any) -> tuple[str, ...]:
    """The columns a record keeps for scoring's groups and clusters."""
    return tuple(dict.fromkeys(c for c in (scoring.group_by, scoring.cluster_by) if c))


class Job:
    def __init__(self, settings: Settings, out_dir: Path, delivery: Delivery, scorer: Scorer) -> None:
        self.settings, self.out_dir, self.delivery, self.scorer = settings, out_dir, delivery, scorer
        self.started_at = now()
        self.new_rows = self.new_tokens = 0
        self.wall = 0.0
        self.record: dict[str, Any] | None = None  # run.json, once written
        self.parts: dict[str, Any] | None = None  # metrics.json's servers or engines, with several

    def run(self, backend: Backend | None) -> dict[str, Any]:
        saved = self.check_resumable()
        self.open_dataset(saved)
        self.open_journal()
        requests = self.requests()
        try:
            if not self.delivery.writes_records:
                return self.export(requests)
            stopped = self.answer(requests, backend)
        finally:
            self.answers.close()
        return self.finish(self.execute(self.judge(stopped or self.rows.error)))

    def check_resumable(self) -> dict[str, Any] | None:
        """The run.json of answers already here, if their config is this one's."""
        saved = resume.saved_run(self.out_dir)
        resume.check_resumable(self.settings.identity, saved, self.out_dir)
        return saved

    def open_dataset(self, saved: dict[str, Any] | None) -> None:
        """Open the dataset and check its first row before any model loads."""
        dataset = self.settings.dataset
        self.rows = open_rows(dataset)
        check_fields(dataset.fields, self.settings.prompt.mode, self.rows.first, str(dataset.path), dataset.template)
        resume.check_same_dataset(saved, self.rows.info, self.settings.resume.allow_changed_dataset)
        for key in ("group_by", "cluster_by"):
            column = getattr(self.settings.scoring, key)
            if column and column not in self.rows.first:
                raise UserError(f"scoring.{key}={column!r} is not a column of {dataset.path} (columns: "
                                f"{', '.join(self.rows.first)}); set scoring.{key}=<column>")

    def open_journal(self) -> None:
        """answers.jsonl, with the rows already done (resume skips them, datasets itself those
        before the first one not done)."""
        scoring = self.settings.scoring
        self.answers = AnswerLog(self.out_dir / "answers.jsonl", retry_errors=self.settings.resume.retry_errors,
                                 metrics=self.scorer.metrics, group_by=scoring.group_by, cluster_by=scoring.cluster_by)
        self.rows.skip_done(self.answers.done)

    def requests(self) -> Iterator[Request]:
        s = self.settings
        build, self.rows.info["fewshot"] = request_maker(s.dataset, s.prompt, s.sampling.get("seed"),
                                                         kept_columns(s.scoring))
        done = self.answers.done
        return (build(index, row) for index, row in self.rows.rows if index not in done)

    def run_record(self, backend: Backend) -> dict[str, Any]:
        record = provenance.run_record(self.settings.seed, backend, self.rows.info, self.started_at,
                                       self.settings.identity)
        if isinstance(backend, CachedBackend):  # for genrun-cache explain
            record["cache"] = {"path": str(backend.cache.path), "parts": backend.run_parts}
        scoring = self.settings.scoring
        record["scoring"] = {"metrics": self.scorer.metrics, "extract": self.scorer.extract,  # genrun-score starts here
                             "pattern": self.scorer.pattern, "choice_policy": self.scorer.choice_policy,
                             "group_by": scoring.group_by, "cluster_by": scoring.cluster_by}
        return record

    def export(self, requests: Iterator[Request]) -> dict[str, Any]:
        """batch.export: the rows left, as a Batch input file; nothing is sent. The run directory
        keeps run.json, so batch.results=OUTPUT resume=<it> reads the answers back into it."""
        backend = self.delivery.backend()
        path = Path(str(self.settings.batch.export)).expanduser()
        batch_files.check_export(path, local_files(str(self.settings.dataset.path)), self.settings.batch.overwrite)
        body = backend.request_body  # type: ignore[attr-defined]  # for_batch_file's backends have it
        count = batch_files.export(path, requests, lambda r: body(r.messages, r.seed))
        write_json(self.out_dir / "run.json", {**self.run_record(backend),
                                               "batch_export": {"file": str(path), "requests": count}})
        print(f"genrun: wrote {count} requests to {path}; once the batch has run, read its output back with "
              f"batch.results=OUTPUT resume={self.out_dir}")
        return {"exported": count, "file": str(path), "failed": 0}

    def answer(self, requests: Iterator[Request], backend: Backend | None) -> BaseException | None:
        """Deliver the requests, writing each record as it comes; what stopped the run early (a
        rejected key, a dead engine, a full disk, Ctrl-C) is returned, to be raised at the end."""
        owns = backend is None
        progress: Progress | None = None
        try:
            first = next(requests, None)
            if first is None and self.answers.done:  # a finished run resumed (a sweep's finished shard): no engine
                log.info("every row of %s is answered already", self.out_dir)
                return None
            requests = itertools.chain([] if first is None else [first], requests)
            backend = backend or self.delivery.backend()
            self.record = self.run_record(backend)
            write_json(self.out_dir / "run.json", self.record)
            total = None if self.rows.total is None else max(self.rows.total - len(self.answers.done), 0)
            progress = Progress(total, backend.live_counts)
            started = time.perf_counter()
            try:
                self.delivery.deliver(backend, requests, self.on_answer(progress), progress.retrying, progress.say)
            finally:
                self.wall = time.perf_counter() - started
                self.parts = backend.by_part()
        except FatalBackendError as exc:  # the rows left can be resumed
            return FatalBackendError(f"{exc} (answers so far are in {self.out_dir}; resume={self.out_dir} finishes "
                                     "the run)")
        except (UserError, KeyboardInterrupt) as exc:  # a full disk, Ctrl-C or SIGTERM (engine start included)
            return exc
        finally:
            if progress is not None:
                progress.close()
            if owns and backend is not None:
                backend.close()
        return None

    def on_answer(self, progress: Progress) -> Any:
        answers, scorer = self.answers, self.scorer

        def record(request: Request, completion: Completion, latency: float | None) -> None:
            answers.write(make_record(request, completion, latency, scorer))
            self.new_rows += 1
            self.new_tokens += completion.completion_tokens or 0
            progress.answered(completion)

        return record

    def judge(self, stopped: BaseException | None) -> BaseException | None:
        """With a judge, after the answering engine is closed (its memory is free)."""
        if self.settings.judge is None or stopped is not None:
            return stopped
        try:
            judge_file(self.out_dir / "answers.jsonl", self.settings.judge)
        except (UserError, FatalBackendError, KeyboardInterrupt) as exc:
            return exc
        if self.record is not None:
            self.record["judge"] = provenance.judge_record(self.settings.judge)
        return None

    def execute(self, stopped: BaseException | None) -> BaseException | None:
        """With code_pass, the programs run once the answers are in (and the engine is closed)."""
        if "code_pass" not in self.scorer.metrics or stopped is not None:
            return stopped
        try:
            execute_file(self.out_dir / "answers.jsonl", self.scorer, self.settings.scoring)
        except (UserError, KeyboardInterrupt) as exc:
            return exc
        return None

    def finish(self, stopped: BaseException | None) -> dict[str, Any]:
        """metrics.json and run.json's finish time; then what stopped the run is raised."""
        prices = self.settings.backend.get("prices")
        if self.settings.judge is not None or "code_pass" in self.scorer.metrics:  # rewritten: its totals anew
            totals = status.summarize(self.out_dir / "answers.jsonl", self.scorer.metrics, prices,
                                      self.settings.scoring.group_by, self.settings.scoring.cluster_by)
        else:
            totals = self.answers.tally.result(prices)  # kept as records were written: the file is not reread
        metrics = status.collect(totals, wall=self.wall, new_rows=self.new_rows,
                                 new_tokens=self.new_tokens, dataset_rows=self.rows.scanned,
                                 stopped=stopped)
        if self.parts:  # this session's, server by server or engine by engine
            metrics.update(self.parts)
        scoring = self.settings.scoring
        warning = status.truncation_warning(metrics, scoring.max_truncated, self.settings.sampling.get("max_tokens"))
        if warning:
            log.warning("%s", warning)
            if scoring.strict and metrics["status"] == "ok":  # the CLI exits 1, a sweep counts the job as not ok
                metrics.update(status="truncated", error=f"{warning} (scoring.strict=true)")
        try:
            write_json(self.out_dir / "metrics.json", metrics)
            if self.record is not None:
                write_json(self.out_dir / "run.json", {**self.record, "finished_at": now()})
        except OSError as exc:
            if stopped is None:
                raise cannot_write(self.out_dir / "metrics.json", exc, "free some space, then resume the run") from exc
            log.warning("could not write metrics.json: %s", exc)  # the error being raised says more
        if stopped is not None:
            raise stopped
        print(f"genrun: {metrics['rows']} rows, {metrics['answered']} answered, {metrics['failed']} failed "
              f"-> {self.out_dir}", flush=True)
        commonest = metrics.get("commonest_error")
        if metrics["failed"] and commonest:  # the last line says why, and so does genrun.log
            log.warning("%d of the %d failed rows: %s (each row's reason is in answers.jsonl)", commonest["rows"],
                        metrics["failed"], commonest["error"])
        return metrics
