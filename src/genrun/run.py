"""One genrun job: open the dataset, build the backend, answer every row into the run directory.

The run directory holds answers.jsonl (one record per row, written as each answer
arrives), metrics.json and run.json. Re-running into the same directory resumes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from genrun import provenance, scoring
from genrun.backend.base import Backend, Completion
from genrun.dataset import open_rows
from genrun.engine import Request, answer_all
from genrun.errors import FatalBackendError, RowError, UserError, cannot_write
from genrun.images import describe as describe_image
from genrun.lock import RunDirInUse, RunLock
from genrun.prompts import conversation_messages, multimodal_messages, prompt_messages
from genrun.records import AnswerLog, read_records

log = logging.getLogger(__name__)

EXIT_FAILED_ROWS, EXIT_USER_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


def run_job(cfg: DictConfig) -> int:
    """The CLI's job: run, report a user's mistake as one line, and give the exit code.

    In a multirun the job returns its status instead of exiting, so the other jobs and the
    sweep summary still run.
    """
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        code = run(cfg, out_dir)
    except UserError as exc:
        if full_error():
            raise
        # The directory of another process's run is not ours to mark.
        code = fail(out_dir, str(exc), EXIT_USER_ERROR, mark_run=not isinstance(exc, RunDirInUse))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        print(f"genrun: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}; "
              f"answers so far are in {out_dir} (resume={out_dir} finishes the run)", file=sys.stderr)
        if multirun:
            raise  # stop the whole sweep, not just this job; the CLI gives the exit code
        code = interrupted_code(exc)
    except Exception as exc:
        if not multirun:
            raise  # a bug, not a user's mistake: the traceback is wanted
        # One crashed job must not stop the sweep or its summary (on_multirun_end).
        log.exception("job crashed")
        code = fail(out_dir, f"{type(exc).__name__}: {exc}", EXIT_FAILED_ROWS)
    finally:
        stop_engine_processes()
    if code and not multirun:
        sys.exit(code)
    return code


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's cancel, `kill`): ends the run as Ctrl-C does, with exit code 143."""


def raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def interrupted_code(exc: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def full_error() -> bool:
    """Whether the user asked for tracebacks (HYDRA_FULL_ERROR=1); the CLI keeps their answer
    in GENRUN_FULL_ERROR because it sets HYDRA_FULL_ERROR itself."""
    return os.environ.get("GENRUN_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR")) == "1"


def stop_engine_processes(grace_s: float = 5.0) -> None:
    """No engine process outlives genrun: vLLM leaves EngineCore running when its start-up is
    interrupted. Children started with multiprocessing are ours to end."""
    import multiprocessing

    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(grace_s)
        if child.is_alive():
            child.kill()


def fail(out_dir: Path, message: str, code: int, mark_run: bool = True) -> int:
    """Report a job that could not run: one line on stderr, and its status in metrics.json."""
    print(f"genrun: error: {message}", file=sys.stderr)
    if not mark_run:
        return code
    metrics_file = out_dir / "metrics.json"
    try:
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        write_json(metrics_file, {**metrics, "status": "error", "error": message})
    except (OSError, ValueError) as exc:  # a full or read-only disk: the line above is the report
        log.warning("could not write %s: %s", metrics_file, exc)
    return code


def run(cfg: DictConfig, out_dir: Path, backend: Backend | None = None) -> int:
    """Answer every row of cfg.dataset into out_dir; returns the exit code.

    A backend passed in (the benchmarks share one engine between runs) stays open: its caller
    owns it. Otherwise the backend is built from cfg.backend and closed at the end.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " (or choose one: dataset=demo_qa)" if missing[0] == "dataset.path" else ""
        raise UserError(f"{missing[0]} has no value: set it on the command line, e.g. {missing[0]}=...{hint}")
    metrics_wanted = list(cfg.get("metric") or scoring.METRICS)
    unknown = [m for m in metrics_wanted if m not in scoring.METRICS]
    if unknown:
        raise UserError(f"metric={unknown[0]!r} is unknown (choose from {', '.join(scoring.METRICS)})")
    if cfg.get("resume"):
        if Path(cfg.resume).expanduser().resolve() != out_dir.resolve():
            raise UserError(f"resume={cfg.resume} and hydra.run.dir={out_dir} name different directories: "
                            "give only resume=<the run to finish>")
        if not (out_dir / "answers.jsonl").exists():
            raise UserError(f"resume={cfg.resume}: no answers.jsonl there to resume (check the run directory)")
    with RunLock(out_dir):
        return answer_rows(cfg, out_dir, backend, metrics_wanted)


def answer_rows(cfg: DictConfig, out_dir: Path, backend: Backend | None, metrics_wanted: list[str]) -> int:
    """run() under the run directory's lock."""
    mode = cfg.mode.value if hasattr(cfg.mode, "value") else str(cfg.mode)
    saved = saved_run(out_dir)
    check_resumable(cfg, saved, out_dir)
    started_at = now()
    rows = open_rows(OmegaConf.to_container(cfg.dataset, resolve=True), mode)
    check_same_dataset(saved, rows.info, bool(cfg.get("resume_allow_changed_dataset", False)))
    answers = AnswerLog(out_dir / "answers.jsonl", retry_errors=bool(cfg.get("retry_errors", False)))
    owns_backend = backend is None
    todo = (r for r in rows.rows if r[0] not in answers.done)
    build_request = request_builder(cfg, mode)
    requests = (build_request(index, row) for index, row in todo)
    total = None if rows.total is None else max(rows.total - len(answers.done), 0)
    progress: Any = None
    record: dict[str, Any] | None = None
    new_rows = new_tokens = 0

    def on_answer(request: Request, completion: Completion, latency: float) -> None:
        nonlocal new_rows, new_tokens
        answers.write(make_record(request, completion, latency, metrics_wanted))
        new_rows += 1
        new_tokens += completion.completion_tokens or 0
        progress.update(1)

    stopped: BaseException | None = None  # what ended the run early; reported after metrics.json
    wall = 0.0
    try:
        backend = backend or build_backend(cfg)
        record = provenance.run_record(cfg, backend, rows.info, started_at, answer_config(cfg))
        write_json(out_dir / "run.json", record)
        progress = progress_bar(total)
        wall = time.perf_counter()
        try:
            asyncio.run(answer_all(backend, requests, on_answer))
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

    metrics = summarize(out_dir / "answers.jsonl", metrics_wanted)
    metrics.update(
        wall_s=round(wall, 3),
        rows_this_run=new_rows,
        dataset_rows=rows.scanned,
        rows_per_s=round(new_rows / wall, 3) if wall > 0 else None,
    )
    if new_tokens and wall > 0:
        metrics["completion_tokens_per_s"] = round(new_tokens / wall, 1)
    if isinstance(stopped, KeyboardInterrupt):
        metrics["status"] = "interrupted"
    elif stopped is not None:
        metrics.update(status="error", error=str(stopped))
    else:
        metrics["status"] = "ok" if metrics["failed"] == 0 else "failed_rows"
    try:
        write_json(out_dir / "metrics.json", metrics)
        if record is not None:
            record["finished_at"] = now()
            write_json(out_dir / "run.json", record)
    except OSError as exc:
        if stopped is None:
            raise cannot_write(out_dir / "metrics.json", exc, "free some space, then resume the run") from exc
        log.warning("could not write metrics.json: %s", exc)  # the error being raised says more
    if stopped is not None:
        raise stopped
    print(
        f"genrun: {metrics['rows']} rows, {metrics['answered']} answered, {metrics['failed']} failed"
        f" -> {out_dir}"
    )
    return 0 if metrics["failed"] == 0 else EXIT_FAILED_ROWS


def build_backend(cfg: DictConfig) -> Backend:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(
            cfg.backend,
            sampling=OmegaConf.to_container(cfg.sampling, resolve=True),
            extra=OmegaConf.to_container(cfg.extra, resolve=True),
            seed=cfg.seed,
            _convert_="all",
        )
    except InstantiationException as exc:
        # Hydra wraps the backend's own error; a user's mistake is reported as itself.
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, ImportError):
            root = cause
            while root.__cause__ is not None:
                root = root.__cause__
            raise UserError(f"backend {cfg.backend._target_} cannot be loaded: {root}; "
                            "install its extra, e.g. pip install 'genrun[vllm]'") from exc
        if isinstance(cause, TypeError) and "unexpected keyword" in str(cause):
            raise UserError(f"backend: {cause}") from exc
        raise


def request_builder(cfg: DictConfig, mode: str) -> Callable[[int, dict[str, Any]], Request]:
    """Turns a dataset row into a Request. Config values are read once: OmegaConf lookups
    cost microseconds each, which adds up over millions of rows."""
    fields = OmegaConf.to_container(cfg.dataset.fields, resolve=True)
    system_prompt, image_tag = cfg.system_prompt, cfg.image_tag
    base_dir = image_base_dir(str(cfg.dataset.path))

    def build(index: int, row: dict[str, Any]) -> Request:
        meta: dict[str, Any] = {"id": row[fields["id"]] if fields["id"] else index}
        if fields["reference"]:
            meta["reference"] = row[fields["reference"]]
        try:
            if mode == "multiturn":
                meta["messages"] = row[fields["messages"]]
                messages = conversation_messages(row[fields["messages"]], system_prompt)
            elif mode == "multimodal":
                meta["prompt"] = row[fields["prompt"]]
                images = row[fields["images"]]
                listed = images if isinstance(images, (list, tuple)) else [images]
                meta["images"] = [describe_image(i) for i in listed if i is not None]
                messages = multimodal_messages(row[fields["prompt"]], images, system_prompt, image_tag, base_dir)
            else:
                meta["prompt"] = row[fields["prompt"]]
                messages = prompt_messages(row[fields["prompt"]], system_prompt)
        except RowError as exc:
            return Request(index, None, error=f"row {index}: {exc}", meta=meta)
        return Request(index, messages, meta=meta)

    return build


def image_base_dir(path: str) -> str | None:
    """Relative image paths in a local dataset resolve against the dataset file's folder."""
    local = Path(path).expanduser()
    if local.is_file():
        return str(local.parent)
    return str(local) if local.is_dir() else None


def make_record(request: Request, completion: Completion, latency: float, metrics: list[str]) -> dict[str, Any]:
    meta = dict(request.meta)
    record: dict[str, Any] = {"id": meta.pop("id"), "index": request.index}
    reference = meta.pop("reference", None)
    record.update(meta)  # the prompt or the messages, as the dataset gave them
    record.update(
        answer=completion.answer,
        error=completion.error,
        finish_reason=completion.finish_reason,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_s=round(latency, 4),
    )
    if completion.reasoning is not None:
        record["reasoning"] = completion.reasoning
    if reference is not None:
        record["reference"] = reference
        if completion.answer is not None:
            record["scores"] = scoring.score(completion.answer, reference, metrics)
    return record


def summarize(path: Path, metrics: list[str]) -> dict[str, Any]:
    """metrics.json from the answers file alone, so a resumed run counts every row once."""
    rows = answered = unclosed = 0
    first_error = None
    prompt_tokens = completion_tokens = 0
    have_tokens = False
    sums: dict[str, float] = {}
    scored = 0
    for record in read_records(path):
        rows += 1
        if record.get("error") is not None:
            first_error = first_error or f"row {record['index']}: {record['error']}"
            continue
        answered += 1
        if record.get("completion_tokens") is not None:
            have_tokens = True
            prompt_tokens += record.get("prompt_tokens") or 0
            completion_tokens += record["completion_tokens"]
        scores = record.get("scores")
        if scores:
            scored += 1
            unclosed += bool(scores.get("unclosed_thinking"))
            for name in metrics:
                sums[name] = sums.get(name, 0.0) + float(scores.get(name, 0.0))
    result: dict[str, Any] = {"rows": rows, "answered": answered, "failed": rows - answered}
    if first_error:
        result["first_error"] = first_error  # what a sweep summary shows for a job with failed rows
    if have_tokens:
        result.update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    if scored:
        result["scores"] = {name: round(sums[name] / scored, 4) for name in metrics}
        result["scored_rows"] = scored
        result["unclosed_thinking"] = unclosed
    return result


# Keys that change how fast answers come, not what they are: they may differ on resume.
OPERATIONAL_KEYS = {
    "backend": {"api_key", "concurrency", "retries", "base_delay", "timeout", "batch_size", "gpu_ids",
                "gpu_memory_utilization", "base_url"},
    "dataset": {"limit", "streaming"},
}
ANSWER_KEYS = ("backend", "sampling", "extra", "dataset", "mode", "system_prompt", "image_tag", "seed")


def answer_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of the config that changes answers; resume refuses if it differs."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    subset = {}
    for key in ANSWER_KEYS:
        value = resolved.get(key)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in OPERATIONAL_KEYS.get(key, ())}
        subset[key] = value
    return subset


def saved_run(out_dir: Path) -> dict[str, Any] | None:
    """The run.json of the answers already in out_dir (None when there are none to resume)."""
    saved_path = out_dir / "run.json"
    if not (out_dir / "answers.jsonl").exists() or not saved_path.exists():
        return None
    return json.loads(saved_path.read_text())


def check_resumable(cfg: DictConfig, saved: dict[str, Any] | None, out_dir: Path) -> None:
    if saved is None:
        return
    changed = diff_keys(saved.get("config", {}), answer_config(cfg))
    if changed:
        raise UserError(
            f"cannot resume {out_dir}: its answers were made with different {', '.join(changed)}; "
            "use a new run directory, or set those keys back"
        )


def check_same_dataset(saved: dict[str, Any] | None, dataset: dict[str, Any], allowed: bool) -> None:
    """The same path may hold other data by now: resuming would then mix rows of both."""
    if saved is None:
        return
    before, now_ = (saved.get("dataset") or {}).get("fingerprint"), dataset.get("fingerprint")
    if before and now_ and before != now_ and not allowed:
        raise UserError(
            f"cannot resume: dataset.path={dataset['path']!r} changed since its answers were made "
            f"(fingerprint {before} then, {now_} now); use a new run directory, or set "
            "resume_allow_changed_dataset=true if the rows already answered are unchanged"
        )


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in diff_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if old != new else []


def progress_bar(total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="row", desc="genrun", dynamic_ncols=True, mininterval=0.5)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
