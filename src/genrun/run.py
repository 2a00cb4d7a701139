"""One genrun job: open the dataset, build the backend, answer every row into the run directory.

The run directory holds answers.jsonl (one record per row, written as each answer
arrives), metrics.json and run.json. Re-running into the same directory resumes. What a
job's outcome means for the process (its exit code) is the CLI's business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from omegaconf import DictConfig, OmegaConf

from genrun import batch, credentials, fewshot, provenance, resume, structured
from genrun import metrics as run_metrics
from genrun.backend.base import Backend, Completion
from genrun.cache import CachedBackend, ResponseCache
from genrun.dataset import image_base_dir, local_files, open_rows
from genrun.errors import FatalBackendError, UserError, cannot_write
from genrun.judge import judge_file
from genrun.lock import RunLock
from genrun.modes import PromptSettings, request_builder, row_prompt, row_reference
from genrun.records import AnswerLog, make_record, now, write_json
from genrun.scheduler import OnAnswer, Request, Scheduler
from genrun.sampling import row_seed
from genrun.scoring import Scorer
from genrun.templates import compile_template

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: Path, backend: Backend | None = None) -> dict[str, Any]:
    """Answer every row of cfg.dataset into out_dir; returns metrics.json's content. A user's
    mistake, a backend that cannot answer, or Ctrl-C is raised once metrics.json says so.

    A backend passed in (the benchmarks share one engine between runs) stays open: its caller
    owns it. Otherwise the backend is built from cfg.backend and closed at the end.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " (or choose one: dataset=demo_qa)" if missing[0] == "dataset.path" else ""
        raise UserError(f"{missing[0]} has no value: set it on the command line, e.g. {missing[0]}=...{hint}")
    constraint = OmegaConf.to_container(cfg.sampling, resolve=True).get("structured_outputs")
    json_schema = structured.json_schema(structured.check(constraint) if constraint else None)
    scorer = Scorer(**scoring_settings(cfg), json_valid=json_schema is not None)
    if cfg.batch.export and cfg.batch.results:
        raise UserError("batch.export writes the requests and batch.results reads the answers: give one of them")
    resume.check_resume_dir(cfg.get("resume"), out_dir)
    with RunLock(out_dir):
        return answer_rows(cfg, out_dir, backend, scorer)


def scoring_settings(cfg: DictConfig) -> dict[str, Any]:
    settings = OmegaConf.to_container(cfg.scoring, resolve=True) if "scoring" in cfg else {}
    if cfg.get("metric") is not None:  # the key before the scoring group
        print(f"genrun: warning: metric= is deprecated: use scoring.metrics={list(cfg.metric)}", file=sys.stderr)
        settings["metrics"] = list(cfg.metric)
    return settings


def prompt_settings(cfg: DictConfig) -> PromptSettings:
    """The row-shaping settings, templates compiled once, few-shot examples drawn once."""
    data = cfg.dataset
    template = compile_template(data.template, "dataset.template") if data.get("template") else None
    reference = (compile_template(data.reference_template, "dataset.reference_template")
                 if data.get("reference_template") else None)
    return PromptSettings(cfg.system_prompt, cfg.image_tag, image_base_dir(str(data.path)), template, reference,
                          record_messages=bool(cfg.get("record_messages", False)))


def request_maker(cfg: DictConfig, mode: str) -> tuple[Callable[[int, Any], Request], dict[str, Any] | None]:
    """Row -> Request as a run builds them (templates compiled, few-shot examples drawn, each
    row's own seed when sampling.seed is set), and what run.json records of the examples.
    genrun-cache explain rebuilds a row with it too."""
    fields = OmegaConf.to_container(cfg.dataset.fields, resolve=True)
    settings = prompt_settings(cfg)
    examples, shots = fewshot.draw(
        OmegaConf.to_container(cfg.dataset, resolve=True),
        lambda row: row_prompt(row, fields, settings), lambda row: row_reference(row, fields, settings))
    if examples and mode == "multiturn":
        raise UserError("dataset.fewshot.k applies to mode=generate and multimodal; a conversation brings its own turns")
    build = request_builder(mode, fields, dataclasses.replace(settings, fewshot=examples))
    seed = cfg.sampling.get("seed")
    if seed is None:
        return build, shots

    def seeded(index: int, row: Any) -> Request:
        request = build(index, row)
        request.seed = row_seed(int(seed), request.meta["id"])  # the same whatever batch or order
        return request

    return seeded, shots


def answer_rows(cfg: DictConfig, out_dir: Path, backend: Backend | None, scorer: Scorer) -> dict[str, Any]:
    """run() under the run directory's lock."""
    mode = cfg.mode.value if hasattr(cfg.mode, "value") else str(cfg.mode)
    saved = resume.saved_run(out_dir)
    resume.check_resumable(cfg, saved, out_dir)
    started_at = now()
    rows = open_rows(OmegaConf.to_container(cfg.dataset, resolve=True), mode)
    resume.check_same_dataset(saved, rows.info, bool(cfg.get("resume_allow_changed_dataset", False)))
    answers = AnswerLog(out_dir / "answers.jsonl", retry_errors=bool(cfg.get("retry_errors", False)),
                        metrics=scorer.metrics)
    rows.skip_done(answers.done)
    build_request, rows.info["fewshot"] = request_maker(cfg, mode)
    requests = (build_request(index, row) for index, row in rows.rows if index not in answers.done)
    total = None if rows.total is None else max(rows.total - len(answers.done), 0)
    progress: Any = None
    record: dict[str, Any] | None = None
    new_rows = new_tokens = 0

    live = {"failed": 0, "retrying": 0, "cached": 0}  # the progress line, beside rows/s and the ETA

    def show(refresh: bool = False) -> None:
        progress.set_postfix(tokens_per_s=round(new_tokens / max(progress.format_dict["elapsed"], 1e-3)),
                             **{k: v for k, v in live.items() if v}, refresh=refresh)

    def on_answer(request: Request, completion: Completion, latency: float | None) -> None:
        nonlocal new_rows, new_tokens
        answers.write(make_record(request, completion, latency, scorer))
        new_rows += 1
        new_tokens += completion.completion_tokens or 0
        live["failed"] += completion.error is not None
        live["cached"] += completion.cached
        show()
        progress.update(1)

    def on_retrying(count: int) -> None:
        live["retrying"] = count
        show(refresh=True)

    if cfg.batch.export:
        try:
            return export_requests(cfg, out_dir, requests, rows.info, started_at)
        finally:
            answers.close()
    stopped: BaseException | None = None  # what ended the run early; raised after metrics.json
    owns_backend = backend is None
    wall = 0.0
    try:
        backend = backend or (batch_file_backend(cfg) if cfg.batch.results else build_backend(cfg))
        online = not cfg.batch.results and not getattr(backend, "batch", False)
        if cfg.cache.enabled and online:
            backend = with_cache(backend, cfg)
        record = provenance.run_record(cfg, backend, rows.info, started_at, resume.answer_config(cfg))
        if isinstance(backend, CachedBackend):
            record["cache"] = {"path": str(backend.cache.path), "parts": backend.run_parts}  # for genrun-cache explain
        record["scoring"] = scoring_settings(cfg)  # what genrun-score starts from
        write_json(out_dir / "run.json", record)
        progress = progress_bar(total)
        wall = time.perf_counter()
        try:
            deliver(cfg, backend, requests, on_answer, on_retrying, out_dir, progress)
        finally:
            wall = time.perf_counter() - wall
    except FatalBackendError as exc:  # a rejected key, a dead engine: the rows left can be resumed
        stopped = FatalBackendError(f"{exc} (answers so far are in {out_dir}; resume={out_dir} finishes the run)")
    except (UserError, KeyboardInterrupt) as exc:  # a full disk, Ctrl-C or SIGTERM (engine start included)
        stopped = exc
    finally:
        if progress is not None:
            progress.close()
        answers.close()
        if owns_backend and backend is not None:
            backend.close()
    stopped = stopped or rows.error  # a data file broken after its good rows were answered
    prices = OmegaConf.to_container(cfg.backend, resolve=True).get("prices")
    totals = answers.tally.result(prices)  # kept as records were written: the file is not reread
    if cfg.get("judge") is not None and stopped is None:  # the answering engine is closed: its memory is free
        try:
            if judge_file(out_dir / "answers.jsonl", OmegaConf.to_container(cfg.judge, resolve=True)):
                totals = run_metrics.summarize(out_dir / "answers.jsonl", scorer.metrics, prices)
        except (UserError, FatalBackendError, KeyboardInterrupt) as exc:
            stopped = exc
    metrics = run_metrics.collect(totals, wall=wall, new_rows=new_rows, new_tokens=new_tokens,
                                  dataset_rows=rows.scanned, stopped=stopped)
    try:
        write_json(out_dir / "metrics.json", metrics)
        if record is not None:
            write_json(out_dir / "run.json", {**record, "finished_at": now()})
    except OSError as exc:
        if stopped is None:
            raise cannot_write(out_dir / "metrics.json", exc, "free some space, then resume the run") from exc
        log.warning("could not write metrics.json: %s", exc)  # the error being raised says more
    if stopped is not None:
        raise stopped
    print(f"genrun: {metrics['rows']} rows, {metrics['answered']} answered, {metrics['failed']} failed -> {out_dir}")
    return metrics


def deliver(cfg: DictConfig, backend: Backend, requests: Iterable[Request], on_answer: OnAnswer,
            on_retrying: Callable[[int], None], out_dir: Path, progress: Any) -> None:
    """Answer the requests: from a Batch output file (batch.results), as one Batch API job
    (backend.batch=true), or online through the scheduler."""
    if cfg.batch.results:
        path = Path(cfg.batch.results)
        batch.import_results(batch.read_output(path, backend.completion_of), requests, on_answer, path)
    elif getattr(backend, "batch", False):
        asyncio.run(collect_batch(backend, requests, out_dir, on_answer, progress))
    else:
        asyncio.run(answer(backend, requests, on_answer, on_retrying))


async def collect_batch(backend: Any, requests: Iterable[Request], out_dir: Path, on_answer: OnAnswer,
                        progress: Any) -> None:
    async with backend:
        await batch.submit_and_collect(backend, requests, out_dir, on_answer, progress.set_postfix_str)


def export_requests(cfg: DictConfig, out_dir: Path, requests: Iterable[Request], dataset: dict[str, Any],
                    started_at: str) -> dict[str, Any]:
    """batch.export: the rows left, as a Batch input file; nothing is sent. The run directory
    keeps run.json, so batch.results=OUTPUT resume=<it> reads the answers back into it."""
    backend = batch_file_backend(cfg)
    path = Path(cfg.batch.export).expanduser()
    batch.check_export(path, local_files(str(cfg.dataset.path)), bool(cfg.batch.get("overwrite", False)))
    count = batch.export(path, requests, lambda r: backend.request_body(r.messages, r.seed))
    record = provenance.run_record(cfg, backend, dataset, started_at, resume.answer_config(cfg))
    write_json(out_dir / "run.json", {**record, "batch_export": {"file": str(path), "requests": count}})
    print(f"genrun: wrote {count} requests to {path}; once the batch has run, read its output back with "
          f"batch.results=OUTPUT resume={out_dir}")
    return {"exported": count, "file": str(path), "failed": 0}


def batch_file_backend(cfg: DictConfig) -> Any:
    """The requests a Batch file holds are the openai backend's: as configured with
    backend=openai; for a local engine (vllm, hf), the same requests to its model path, as
    vLLM's run_batch serves it. No engine starts."""
    from hydra.utils import get_class

    from genrun.backend.openai import OpenAIBackend

    if get_class(cfg.backend._target_) is OpenAIBackend:
        return build_backend(cfg)
    return OpenAIBackend(model_name=str(cfg.backend.model_name_or_path),
                         sampling=OmegaConf.to_container(cfg.sampling, resolve=True),
                         extra=OmegaConf.to_container(cfg.extra, resolve=True), seed=cfg.seed)


def with_cache(backend: Backend, cfg: DictConfig) -> CachedBackend:
    """The backend behind the response cache, keyed by what decides its answers."""
    identity = {k: v for k, v in backend.describe().items() if k not in type(backend).operational}
    run_parts = {"backend": type(backend).__name__, "model": identity,
                 "sampling": OmegaConf.to_container(cfg.sampling, resolve=True),
                 "extra": OmegaConf.to_container(cfg.extra, resolve=True)}
    return CachedBackend(backend, ResponseCache(cfg.cache.path), run_parts)


async def answer(backend: Backend, requests: Iterable[Request], on_answer: OnAnswer,
                 on_retrying: Callable[[int], None] | None = None) -> None:
    async with backend:  # the backend's event-loop resources live as long as this loop
        await Scheduler(backend, on_answer, on_retrying).run(requests)


def build_backend(cfg: DictConfig) -> Backend:
    from hydra.utils import instantiate

    try:
        return instantiate(
            cfg.backend,
            sampling=OmegaConf.to_container(cfg.sampling, resolve=True),
            extra=OmegaConf.to_container(cfg.extra, resolve=True),
            seed=cfg.seed,
            _convert_="all",
            **credentials.for_component("backend"),  # a key given on the command line (genrun.credentials)
        )
    except Exception as exc:
        failure = build_failure(exc, "backend")
        if failure is exc:
            raise
        raise failure from exc


def build_failure(exc: Exception, where: str) -> Exception:
    """What to report when Hydra could not build a backend: Hydra wraps the backend's own
    error, and a user's mistake is reported as itself, in one line."""
    from hydra.errors import InstantiationException

    if not isinstance(exc, InstantiationException):
        return exc
    cause = exc.__cause__
    if isinstance(cause, UserError):
        return cause
    if isinstance(cause, ImportError):
        root = cause
        while root.__cause__ is not None:
            root = root.__cause__
        return UserError(f"{where} cannot be loaded: {root}; install its extra, e.g. pip install 'genrun[vllm]'")
    if isinstance(cause, TypeError) and "unexpected keyword" in str(cause):
        return UserError(f"{where}: {cause}")
    return exc


def progress_bar(total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="row", desc="genrun", dynamic_ncols=True, mininterval=0.5)
