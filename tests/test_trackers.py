"""Experiment trackers for real: a `mlflow server` on 127.0.0.1 with a SQLite store, read back
through MlflowClient, and Weights & Biases in offline mode, read back from the run file it
writes. The model is a real local server (genrun.testing.fault_server)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from conftest import free_port, read_jsonl, run_cli, write_jsonl
from genrun.testing.fault_server import FaultServer

SECRET = "sk-tracker-test-secret-4242"


class MlflowServer:
    """`mlflow server` with a SQLite store and proxied artifacts, on a free port of 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(folder / "server.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 180) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server not healthy after {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


def model_args(server: FaultServer, data: Path, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake", "backend.retries=0",
            f"backend.api_key={SECRET}", "dataset=default", f"dataset.path={data}", "dataset.fields.reference=ref",
            "scoring.metrics=[accuracy]", *extra]


def questions(tmp_path: Path, n: int = 12) -> Path:
    return write_jsonl(tmp_path / "d.jsonl", [{"id": f"q{i}", "prompt": f"q{i}",
                                               "ref": f"answer to q{i}" if i % 3 else "no"} for i in range(n)])


def runs_of(url: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found is not None else []


def test_a_2x2_sweep_is_one_parent_and_four_children_with_params_metrics_and_rows(
        tmp_path: Path, mlflow_server: MlflowServer) -> None:
    from mlflow.tracking import MlflowClient

    data, sweep = questions(tmp_path), tmp_path / "sweep"
    with FaultServer() as server:
        result = run_cli("-m", *model_args(server, data, "tracker=mlflow", f"tracker.tracking_uri={mlflow_server.url}",
                                           "tracker.experiment=sweep2x2", f"hydra.sweep.dir={sweep}"),
                         "sampling.temperature=0,0.5", "sampling.top_p=0.8,0.9")
    assert result.returncode == 0, result.stderr
    assert "could not" not in result.stdout + result.stderr and "View run" not in result.stdout  # no warning, no noise
    runs = runs_of(mlflow_server.url, "sweep2x2")
    parents = [r for r in runs if r.data.tags.get("genrun.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("genrun.kind") == "job"]
    assert len(parents) == 1 and len(children) == 4 and len(runs) == 5
    parent = parents[0]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all(r.info.status == "FINISHED" for r in runs)
    client = MlflowClient(mlflow_server.url)
    jobs = {p.name: p for p in sweep.iterdir() if (p / "metrics.json").exists()}
    assert len(jobs) == 4
    cells = set()
    for child in children:
        job = jobs[child.info.run_name]
        assert json.loads((job / ".tracker.json").read_text())["mlflow"] == child.info.run_id
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        params = child.data.params
        assert float(params["sampling.temperature"]) == float(overrides["sampling.temperature"])
        assert float(params["sampling.top_p"]) == float(overrides["sampling.top_p"])
        assert params["backend.model_name"] == "fake" and params["scoring.metrics"] == '["accuracy"]'
        cells.add((float(params["sampling.temperature"]), float(params["sampling.top_p"])))
        metrics = json.loads((job / "metrics.json").read_text())
        assert child.data.metrics["accuracy"] == metrics["scores"]["accuracy"]
        assert [child.data.metrics["accuracy_ci95_low"], child.data.metrics["accuracy_ci95_high"]] == \
            metrics["scores_ci95"]["accuracy"]
        assert child.data.metrics["rows"] == 12 and child.data.metrics["failed"] == 0
        assert child.data.metrics["rows_done"] == 12
        run_json = json.loads((job / "run.json").read_text())
        assert child.data.tags["model.model"] == "fake"
        assert child.data.tags["dataset.fingerprint"] == run_json["dataset"]["fingerprint"]
        assert child.data.tags["genrun_version"] == run_json["genrun_version"]
        # no secret anywhere the tracker keeps
        kept = json.dumps([child.data.params, child.data.tags])
        assert SECRET not in kept and "api_key" not in json.dumps(list(params))
        # the rows table holds every row, and answers.jsonl is an artifact
        table = json.loads(Path(client.download_artifacts(child.info.run_id, "rows.json", str(tmp_path))).read_text())
        rows = [dict(zip(table["columns"], row)) for row in table["data"]]
        records = {r["id"]: r for r in read_jsonl(job / "answers.jsonl")}
        assert sorted(r["id"] for r in rows) == sorted(records) and len(rows) == 12
        for row in rows:
            assert row["answer"] == records[row["id"]]["answer"]
            assert row["score.accuracy"] == records[row["id"]]["scores"]["accuracy"]
            assert row["reference"] == records[row["id"]]["reference"] and row["finish_reason"] == "stop"
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"answers.jsonl", "metrics.json",
                                                                             "run.json", "rows.json"}
    assert cells == {(0, 0.8), (0, 0.9), (0.5, 0.8), (0.5, 0.9)}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"summary.md", "summary.csv",
                                                                          "summary.png"}
    assert SECRET not in (sweep / ".tracker.json").read_text()


def test_a_resumed_run_goes_on_in_the_same_tracker_run(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    data, out = questions(tmp_path, 20), tmp_path / "run"
    tracked = ("tracker=mlflow", f"tracker.tracking_uri={mlflow_server.url}", "tracker.experiment=resumed")
    with FaultServer(work_s=0.05) as server:
        first = run_cli(*model_args(server, data, *tracked, "dataset.limit=8", f"hydra.run.dir={out}"))
        assert first.returncode == 0, first.stderr
        run_id = json.loads((out / ".tracker.json").read_text())["mlflow"]
        again = run_cli(*model_args(server, data, *tracked, f"resume={out}"))
        assert again.returncode == 0, again.stderr
    runs = runs_of(mlflow_server.url, "resumed")
    assert [r.info.run_id for r in runs] == [run_id]  # one run, never a duplicate
    assert runs[0].data.metrics["rows"] == 20 and runs[0].info.status == "FINISHED"
    assert json.loads((out / ".tracker.json").read_text())["mlflow"] == run_id


def test_a_tracker_stopped_mid_sweep_leaves_every_answer_and_one_warning(tmp_path: Path) -> None:
    (tmp_path / "mlflow").mkdir()
    tracker = MlflowServer(tmp_path / "mlflow")
    data, sweep = questions(tmp_path), tmp_path / "sweep"

    def stop_after_the_first_job() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(sweep.glob("0_*/metrics.json")):
            time.sleep(0.05)
        tracker.stop()

    stopper = threading.Thread(target=stop_after_the_first_job)
    try:
        with FaultServer(work_s=0.05) as server:
            stopper.start()
            result = run_cli("-m", *model_args(server, data, "tracker=mlflow",
                                               f"tracker.tracking_uri={tracker.url}", "tracker.experiment=down",
                                               f"hydra.sweep.dir={sweep}"), "sampling.temperature=0,0.3,0.6,0.9")
            stopper.join()
    finally:
        tracker.stop()
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "tracker=mlflow could not" in line]
    assert len(warnings) == 1, output
    assert "the run goes on without it" in warnings[0] and SECRET not in output
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 4
    for job in jobs:
        records = read_jsonl(job / "answers.jsonl")
        assert sorted(r["index"] for r in records) == list(range(12))
        assert all(r["error"] is None for r in records)
        assert json.loads((job / "metrics.json").read_text())["status"] == "ok"
    assert (sweep / "summary.md").exists()


def wandb_records(path: Path) -> Iterator:
    """The records of a W&B run file (a LevelDB-style log of protobuf records, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data, position, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        room = 32768 - position % 32768
        if room < 7:  # a block's tail too short for a header is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_runs_read_back_with_their_config_and_summary(tmp_path: Path) -> None:
    data, out = questions(tmp_path), tmp_path / "run"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path / "wandb-home")}
    with FaultServer() as server:
        result = run_cli(*model_args(server, data, "tracker=wandb", "tracker.experiment=genrun-test",
                                     f"hydra.run.dir={out}"), env=env)
    assert result.returncode == 0, result.stderr
    assert "could not" not in result.stdout + result.stderr
    run_id = json.loads((out / ".tracker.json").read_text())["wandb"]
    (run_file,) = list((out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    config, summary = {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update if item.key})
        elif kind == "summary":
            summary.update({item.key: json.loads(item.value_json) for item in record.summary.update if item.key})
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["sampling.temperature"] == "0.7" and config["backend.model_name"] == "fake"
    assert config["run.model.model"] == "fake"
    assert summary["accuracy"] == metrics["scores"]["accuracy"] and summary["rows"] == 12
    assert summary["accuracy_ci95_low"] == metrics["scores_ci95"]["accuracy"][0]
    assert SECRET not in run_file.read_bytes().decode("latin-1")
    tables = list((out / "wandb").glob("offline-run-*/files/media/table/rows_*.table.json"))
    assert len(tables) == 1 and len(json.loads(tables[0].read_text())["data"]) == 12
    shutil.rmtree(tmp_path / "wandb-home", ignore_errors=True)
