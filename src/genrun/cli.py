"""The `genrun` command: compose the config with Hydra, then run one job."""

import os
import re
import sys

import hydra
from omegaconf import DictConfig

from genrun import summary
from genrun.config import conf_dir
from genrun.run import run_job


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
    hydra_main()
    if summary.sweep_failed:
        sys.exit(1)  # the sweep ran to its end, but some job failed: summary.md says which
