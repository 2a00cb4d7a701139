"""Weights & Biases (`tracker=wandb`), through its SDK: `WANDB_MODE=offline`, `WANDB_API_KEY`
and its other settings are its own. A run's files go under its run directory (wandb/); a
sweep's jobs share the sweep's `group`, and the sweep itself is one more run of that group
(job_type `sweep`) holding its summary."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

from genrun.errors import UserError
from genrun.trackers.base import Tracker


class WandbTracker(Tracker):
    def __init__(self, project: str, entity: str | None, folder: Path, group: str | None = None) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError("tracker=wandb needs Weights & Biases: pip install 'genrun[wandb]'") from None
        self.wandb, self.project, self.entity, self.folder, self.group = wandb, project, entity, folder, group
        self.run: Any = None

    def start(self, name: str, run_id: str | None, parent_id: str | None, params: dict[str, str],
              kind: str = "job") -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(project=self.project, entity=self.entity, dir=str(self.folder), name=name,
                                   id=run_id or uuid.uuid4().hex[:12], resume="allow", group=self.group,
                                   job_type=kind, config=params, reinit="finish_previous",
                                   settings=self.wandb.Settings(silent=True, console="off"))
        return str(self.run.id)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log(metrics)

    def summarize(self, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.run.config.update({f"run.{k}": v for k, v in tags.items()}, allow_val_change=True)

    def log_table(self, columns: dict[str, list[Any]], name: str) -> None:
        names = list(columns)
        rows = [list(row) for row in zip(*(columns[c] for c in names))]
        self.run.log({name: self.wandb.Table(columns=cast(Any, names), data=rows)})

    def log_file(self, path: Path) -> None:
        artifact = self.wandb.Artifact(f"{self.run.id}-{path.stem}", type="genrun-file")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def end(self, ok: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if ok else 1)
            self.run = None
