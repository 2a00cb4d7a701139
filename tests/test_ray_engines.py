"""A run whose engines are Ray actors (backend.ray_address): a real local Ray instance, two
actors hosting the hf backend, one killed mid-run."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from conftest import descendants_named, read_jsonl, wait_for_lines, write_jsonl

pytestmark = pytest.mark.engine  # every test here starts a model engine (see conftest)


def actors_of(pid: int) -> list:
    return descendants_named(pid, "EngineActor")


def test_two_ray_actors_answer_a_run_and_one_killed_loses_no_row(tmp_path: Path, tiny_model: str) -> None:
    rows = 200  # the kill comes after 40 answers, with rows in flight on both actors; the rest is one actor's
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"Question {i}: say something"} for i in range(rows)])
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "genrun", "backend=hf", f"backend.model_name_or_path={tiny_model}",
                             "backend.dtype=float32", "backend.batch_size=4", "+backend.ray_address=local",
                             "+backend.data_parallel_size=2", "dataset=default", f"dataset.path={data}",
                             "sampling.max_tokens=16", f"hydra.run.dir={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lines(out / "answers.jsonl", 40, proc, timeout=500)  # a hang guard too (see below)
        actors = actors_of(proc.pid)
        assert len(actors) == 2, actors  # one process per actor, started by this run's Ray instance
        actors[0].kill()  # as a lost node would
        # A guard against a hang, not a speed check: a local Ray instance and two actors on two
        # cores took 27 s alone and 171 s beside the suite's other workers.
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    records = read_jsonl(out / "answers.jsonl")
    assert collections.Counter(r["index"] for r in records) == collections.Counter(range(rows))  # each row once
    assert all(r["error"] is None and r["answer"] is not None for r in records)
    log = (out / "genrun.log").read_text()
    assert "was lost (" in log and "its rows go to the other engines" in log
    assert json.loads((out / "run.json").read_text())["model"]["engines"] == 2
    engines = json.loads((out / "metrics.json").read_text())["engines"]
    assert sum(e["rows"] for e in engines.values()) == rows and sum(e["lost"] for e in engines.values()) == 1
    assert not any("EngineActor" in p.name() for p in psutil.process_iter())  # its Ray instance went with the run
