"""The `genrun` command: compose the config with Hydra, then run one job."""

import hydra
from omegaconf import DictConfig

from genrun.config import conf_dir
from genrun.run import run_job


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def main(cfg: DictConfig) -> int:
    return run_job(cfg)
