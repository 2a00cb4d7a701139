"""The `genrun` command: compose the config with Hydra, then run one job."""

import os
import re
import signal
import sys

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from genrun import summary
from genrun.config import conf_dir
from genrun.errors import cannot_write
from genrun.run import EXIT_USER_ERROR, full_error, interrupted_code, raise_terminated, run_job


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def hydra_main(cfg: DictConfig) -> int:
    return run_job(cfg)


API_KEY_OVERRIDE = re.compile(r"^\+*backend\.api_key=(.*)$")


def secrets_to_environment(args: list[str]) -> list[str]:
    """Move an API key given on the command line into OPENAI_API_KEY, where the openai config
    reads it, so Hydra never saves it (.hydra/overrides.yaml, config.yaml, multirun.yaml)."""
    kept = []
    for arg in args:
        match = API_KEY_OVERRIDE.match(arg)
        if match:
            os.environ["OPENAI_API_KEY"] = match.group(1).strip("'\"")
        else:
            kept.append(arg)
    return kept


def main() -> None:
    args = secrets_to_environment(sys.argv[1:])
    # Hydra's parser takes -m/--multirun only before the overrides; users write it anywhere.
    flags = [a for a in args if a in ("-m", "--multirun")]
    sys.argv = [sys.argv[0], *flags, *(a for a in args if a not in flags)]
    signal.signal(signal.SIGTERM, raise_terminated)  # a scheduler's cancel ends a run like Ctrl-C
    # Hydra prints its own errors over several lines; with HYDRA_FULL_ERROR set it raises them
    # instead, and genrun reports them in one. The user's own choice is kept for genrun.
    os.environ.setdefault("GENRUN_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", "0"))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except KeyboardInterrupt as exc:  # a sweep stopped by Ctrl-C or SIGTERM: its job said where
        sys.exit(interrupted_code(exc))
    except (HydraException, OmegaConfBaseException, OSError) as exc:
        if full_error():
            raise
        print(f"genrun: error: {config_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    if summary.sweep_failed:
        sys.exit(1)  # the sweep ran to its end, but some job failed: summary.md says which


def config_error(exc: BaseException) -> str:
    """One line for an error Hydra raised before any job ran (a bad override, an unknown option,
    a run directory that cannot be made)."""
    if isinstance(exc, OSError) and not isinstance(exc, HydraException):  # MissingConfigException is both
        return str(cannot_write(exc.filename or "the run directory", exc,
                                "choose another hydra.run.dir (or hydra.sweep.dir)"))
    parts = [str(exc)]
    if exc.__cause__ is not None and str(exc.__cause__) not in parts[0]:
        parts.append(str(exc.__cause__))
    text = ": ".join(" ".join(p.split("\n")[0].split()) for p in parts if p.strip())
    # MissingConfigException: the group's options (base_* are the schemas, not choices)
    options = [o for o in getattr(exc, "options", None) or [] if not o.startswith("base_")]
    if options:
        return f"{text} (options: {', '.join(options)})"
    return text + " (genrun --help lists the options; --cfg job shows the config)"
