"""The `genrun` command: compose the config with Hydra, read it into settings once, run the
job, and decide the exit code; and the sweep callback that writes a multirun's summary.

Exit codes: 0 every row answered; 1 some rows failed (or a sweep's job did); 2 a mistake in
the config, the data or the environment (one line says which); 130 Ctrl-C; 143 SIGTERM.
"""

import logging
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from genrun import credentials, settings
from genrun.errors import Terminated, UserError, cannot_write, interrupted_code, one_line, raise_terminated

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED_ROWS, EXIT_USER_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


@hydra.main(version_base="1.3", config_path=settings.conf_dir(), config_name="config")
def run_job(cfg: DictConfig) -> int:
    """One job: run it, report a user's mistake as one line, and give its exit code. In a sweep
    the job returns it instead of exiting, so the other jobs and the sweep summary still run."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    credentials.guard_logs()  # on Hydra's handlers, set up by now: no secret reaches genrun.log
    quiet_http_client(HydraConfig.get().verbose)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    from genrun.engine.job import run  # here, not at the top: `genrun --cfg job` needs none of it
    from genrun.rundir.lock import RunDirInUse
    from genrun.rundir.status import mark_error

    try:
        metrics = run(settings.load(cfg), out_dir)
        code = EXIT_OK if metrics["failed"] == 0 and metrics.get("status", "ok") == "ok" else EXIT_FAILED_ROWS
    except UserError as exc:
        if full_error():
            raise
        print(f"genrun: error: {exc}", file=sys.stderr)
        if not isinstance(exc, RunDirInUse):  # the directory of another process's run is not ours to mark
            mark_error(out_dir, str(exc))
        code = EXIT_USER_ERROR
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        print(f"genrun: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}; "
              f"answers so far are in {out_dir} (resume={out_dir} finishes the run)", file=sys.stderr)
        if multirun:
            raise  # stop the whole sweep, not just this job
        code = interrupted_code(exc)
    except Exception as exc:
        if not multirun:
            raise  # a bug, not a user's mistake: the traceback is wanted
        # One crashed job must not stop the sweep or its summary (on_multirun_end).
        log.exception("job crashed")
        print(f"genrun: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        mark_error(out_dir, f"{type(exc).__name__}: {exc}")
        code = EXIT_FAILED_ROWS
    finally:
        stop_engine_processes()
    if code and not multirun:
        sys.exit(code)
    return code


class SweepFailed(BaseException):
    """A sweep ran to its end, but some job did not finish cleanly (per its metrics.json).

    A BaseException, like SystemExit, because it is the process's outcome, not an error:
    Hydra turns a callback's Exception into a warning, and this must reach the CLI."""


class SweepSummary(Callback):
    """Hydra's multirun callback: the sweep's summary, from each job's files on disk, and for a
    sweep over the shards of a dataset, the shards merged as one run."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from genrun.reports.shards import merge_shards
        from genrun.reports.summary import write_summary

        order = config.get("metric") or config.get("scoring", {}).get("metrics") or []
        rows = write_summary(Path(config.hydra.sweep.dir), list(order))
        merge_shards(Path(config.hydra.sweep.dir), rows, list(order))  # a sweep over dataset.shard_index alone
        unfinished = [r["job"] for r in rows if r["status"] != "ok"]
        if unfinished:  # the CLI makes this its exit code (Hydra passes it on: HYDRA_FULL_ERROR)
            raise SweepFailed(f"jobs not ok: {', '.join(unfinished)}")


def quiet_http_client(verbose: object) -> None:
    """The HTTP client logs every request at INFO (a line a row, in the console and genrun.log);
    they show only when asked for: hydra.verbose=httpx (or hydra.verbose=true)."""
    names = [verbose] if isinstance(verbose, (str, bool)) or verbose is None else list(verbose)  # type: ignore[call-overload]  # a ListConfig
    if not (True in names or "httpx" in names):
        for name in ("httpx", "httpx2"):  # the OpenAI SDK's client, under either name
            logging.getLogger(name).setLevel(logging.WARNING)


def full_error() -> bool:
    """Whether the user asked for tracebacks (HYDRA_FULL_ERROR=1); main() keeps their answer
    in GENRUN_FULL_ERROR because it sets HYDRA_FULL_ERROR itself."""
    return os.environ.get("GENRUN_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR")) == "1"


def stop_engine_processes() -> None:
    """No engine process outlives genrun: vLLM leaves EngineCore running when its start-up is
    interrupted. Children started with multiprocessing are ours to end."""
    if not multiprocessing.active_children():
        return
    from genrun.backend.vllm_internals import end_child_processes

    end_child_processes()


def main() -> None:
    try:  # a key on the command line goes into the environment before Hydra can save it
        args = credentials.hide(sys.argv[1:])
    except UserError as exc:
        print(f"genrun: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    # Hydra's parser takes -m/--multirun only before the overrides; users write it anywhere.
    flags = [a for a in args if a in ("-m", "--multirun")]
    if not flags:
        from genrun.rundir.resume import with_saved_overrides

        args = with_saved_overrides(args)  # `genrun resume=DIR` alone: the run's own command line
    sys.argv = [sys.argv[0], *flags, *(a for a in args if a not in flags)]
    signal.signal(signal.SIGTERM, raise_terminated)  # a scheduler's cancel ends a run like Ctrl-C
    # Hydra prints its own errors over several lines; with HYDRA_FULL_ERROR set it raises them
    # instead, and genrun reports them in one. The user's own choice is kept for genrun.
    os.environ.setdefault("GENRUN_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", "0"))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run_job()
    except KeyboardInterrupt as exc:  # a sweep stopped by Ctrl-C or SIGTERM: its job said where
        sys.exit(interrupted_code(exc))
    except SweepFailed:  # the sweep ran to its end, but a job did not finish cleanly: summary.md says which
        sys.exit(EXIT_FAILED_ROWS)
    except (HydraException, OmegaConfBaseException, OSError) as exc:
        if full_error():
            raise
        print(f"genrun: error: {config_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def config_error(exc: BaseException) -> str:
    """One line for an error Hydra raised before any job ran (a bad override, an unknown option,
    a run directory that cannot be made)."""
    if isinstance(exc, OSError) and not isinstance(exc, HydraException):  # MissingConfigException is both
        return str(cannot_write(exc.filename or "the run directory", exc,
                                "choose another hydra.run.dir (or hydra.sweep.dir)"))
    parts = [str(exc)]
    if exc.__cause__ is not None and str(exc.__cause__) not in parts[0]:
        parts.append(str(exc.__cause__))
    text = ": ".join(one_line(p.split("\n")[0]) for p in parts if p.strip())
    # MissingConfigException: the group's options (base_* are the schemas, not choices)
    options = [o for o in getattr(exc, "options", None) or [] if not o.startswith("base_")]
    if options:
        return f"{text} (options: {', '.join(options)})"
    return text + " (genrun --help lists the options; --cfg job shows the config)"
