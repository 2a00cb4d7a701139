"""The `genrun` command: compose the config with Hydra, then run one job."""

import sys

import hydra
from omegaconf import DictConfig

from genrun import summary
from genrun.config import conf_dir
from genrun.run import run_job


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def hydra_main(cfg: DictConfig) -> int:
    return run_job(cfg)


def main() -> None:
    # Hydra's parser takes -m/--multirun only before the overrides; users write it anywhere.
    flags = [a for a in sys.argv[1:] if a in ("-m", "--multirun")]
    sys.argv = [sys.argv[0], *flags, *(a for a in sys.argv[1:] if a not in flags)]
    hydra_main()
    if summary.sweep_failed:
        sys.exit(1)  # the sweep ran to its end, but some job failed: summary.md says which
