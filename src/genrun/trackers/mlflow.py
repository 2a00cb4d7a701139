"""MLflow (`tracker=mlflow`), through its client (MlflowClient: no global active run, so jobs in
one process never mix). With no tracking_uri, MLflow's own default: a local store beside
outputs/ (`mlflow.db`, which `mlflow ui` opens); with one, that server. A sweep's jobs are
children of its parent run (MLflow's `mlflow.parentRunId` tag)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from genrun.errors import UserError
from genrun.trackers.base import Tracker

BATCH = 100  # params per log_batch call (MLflow's limit)


class MlflowTracker(Tracker):
    def __init__(self, tracking_uri: str | None, experiment: str) -> None:
        # A server that is down must cost seconds, not MLflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run end, in every job
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError("tracker=mlflow needs MLflow: pip install 'genrun[mlflow]'") from None
        self.client = MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()
        self.experiment = experiment
        self.run_id: str | None = None

    def experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        return found.experiment_id if found is not None else self.client.create_experiment(self.experiment)

    def started(self) -> str:
        """The run's id (start came first)."""
        assert self.run_id is not None, "start() first"
        return self.run_id

    def start(self, name: str, run_id: str | None, parent_id: str | None, params: dict[str, str],
              kind: str = "job") -> str:
        from mlflow.entities import Param, RunStatus

        if run_id is not None:  # a resume: the same run goes on
            self.run_id = run_id
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            return run_id
        tags = {"mlflow.runName": name, "genrun.kind": kind}
        if parent_id is not None:
            tags["mlflow.parentRunId"] = parent_id
        self.run_id = self.client.create_run(self.experiment_id(), tags=tags, run_name=name).info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.started(), params=items[start:start + BATCH])
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(k, v, stamp, step or 0) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.started(), metrics=items[start:start + 1000])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.started(), tags=[RunTag(k, v) for k, v in tags.items()])

    def log_table(self, columns: dict[str, list[Any]], name: str) -> None:
        self.client.log_table(self.started(), data=columns, artifact_file=f"{name}.json")

    def log_file(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end(self, ok: bool) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")
            self.run_id = None
