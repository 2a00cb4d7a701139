"""Sweeps write a summary (csv, md, png) even when a job fails; shards merge back exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli, write_jsonl
from genrun.commands.summary import main as summary_main
from genrun.errors import UserError
from genrun.reports.merge import merge


def test_two_by_two_sweep_writes_four_jobs_and_a_summary(tmp_path: Path) -> None:
    result = run_cli("experiment=tiny", "-m", "sampling.temperature=0.2,1.0", "sampling.top_p=0.8,0.95",
                     "dataset.limit=6", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("*/answers.jsonl"))) == 4
    with open(tmp_path / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert {(r["sampling.temperature"], r["sampling.top_p"]) for r in rows} == {
        ("0.2", "0.8"), ("0.2", "0.95"), ("1.0", "0.8"), ("1.0", "0.95")}
    assert all(r["status"] == "ok" and r["rows"] == "6" and r["accuracy"] != "" for r in rows)
    table, best = (tmp_path / "summary.md").read_text().split("\n\n")
    assert table.count("\n") == 5 and best.startswith("Best on accuracy: ")  # header, rule, four jobs
    assert all(r["accuracy_ci95_low"] <= r["accuracy"] <= r["accuracy_ci95_high"] for r in rows)
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (tmp_path / "summary.csv").unlink()
    summary_main([str(tmp_path)])  # genrun-summary rebuilds it
    assert (tmp_path / "summary.csv").exists()


def test_a_failing_job_still_gets_its_row(tmp_path: Path, tiny_model: str) -> None:
    # model paths hold slashes: each job still gets one folder, named without them
    result = run_cli("experiment=tiny", "-m", f"backend.model_name_or_path={tiny_model},/no/such/model",
                     "dataset.limit=2", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 1  # the sweep finished, but not every job did
    with open(tmp_path / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert "no such folder" in rows[1]["error"]
    assert (tmp_path / "summary.png").exists()
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_four_shards_merge_to_the_dataset_in_order(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"q{i}"} for i in range(10)])
    sweep = tmp_path / "sweep"
    result = run_cli("experiment=tiny", "dataset=default", f"dataset.path={data}", "-m", "dataset.num_shards=4",
                     "dataset.shard_index=0,1,2,3", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    shards = sorted(p.parent for p in sweep.glob("*/answers.jsonl"))
    sizes = sorted(len(read_jsonl(s / "answers.jsonl")) for s in shards)
    assert sizes == [2, 2, 3, 3]
    merged = tmp_path / "merged.jsonl"
    assert merge(shards, merged) == 10
    assert [r["prompt"] for r in read_jsonl(merged)] == [f"q{i}" for i in range(10)]

    with pytest.raises(UserError, match="rows missing"):  # a missing shard is reported
        merge(shards[:3], tmp_path / "partial.jsonl")


def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path: Path) -> None:
    result = run_cli("experiment=tiny", "-m", "hydra/launcher=submitit_local", "sampling.temperature=0.2,0.9",
                     "dataset.limit=2", f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert result.returncode == 0, result.stderr
    jobs = sorted(tmp_path.glob("*/metrics.json"))
    assert len(jobs) == 2 and all(json.loads(j.read_text())["answered"] == 2 for j in jobs)
    assert (tmp_path / "summary.csv").exists()
