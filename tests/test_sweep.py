"""Sweeps write a summary (csv, md, png) even when a job fails; shards merge back exactly."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli, write_jsonl
from genrun.commands.summary import main as summary_main
from genrun.errors import UserError
from genrun.reports.merge import merge


@pytest.mark.engine
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
    parts = (tmp_path / "summary.md").read_text().split("\n\n")
    table, best = parts[0], parts[-1]
    assert table.count("\n") == 5 and best.startswith("Best on accuracy: ")  # header, rule, four jobs
    assert any(p.startswith("mdd_accuracy: the smallest true difference") for p in parts)
    assert all(r["accuracy_ci95_low"] <= r["accuracy"] <= r["accuracy_ci95_high"] for r in rows)
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (tmp_path / "summary.csv").unlink()
    summary_main([str(tmp_path)])  # genrun-summary rebuilds it
    assert (tmp_path / "summary.csv").exists()


@pytest.mark.engine
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


@pytest.mark.engine
def test_four_shards_merge_to_the_dataset_in_order(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"q{i}"} for i in range(10)])
    sweep = tmp_path / "sweep"
    result = run_cli("experiment=tiny", "dataset=default", f"dataset.path={data}", "-m", "dataset.num_shards=4",
                     "dataset.shard_index=0,1,2,3", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    shards = sorted(p.parent.parent for p in sweep.glob("*/.hydra/config.yaml"))
    sizes = sorted(len(read_jsonl(s / "answers.jsonl")) for s in shards)
    assert sizes == [2, 2, 3, 3]
    # the sweep merged itself too
    assert [r["prompt"] for r in read_jsonl(sweep / "merged" / "answers.jsonl")] == [f"q{i}" for i in range(10)]
    merged = tmp_path / "merged.jsonl"
    assert merge(shards, merged) == 10
    assert [r["prompt"] for r in read_jsonl(merged)] == [f"q{i}" for i in range(10)]

    with pytest.raises(UserError, match="rows missing"):  # a missing shard is reported
        merge(shards[:3], tmp_path / "partial.jsonl")


@pytest.mark.engine
def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path: Path) -> None:
    result = run_cli("experiment=tiny", "-m", "hydra/launcher=submitit_local", "sampling.temperature=0.2,0.9",
                     "dataset.limit=2", f"hydra.sweep.dir={tmp_path}", timeout=600)
    assert result.returncode == 0, result.stderr
    jobs = sorted(tmp_path.glob("*/metrics.json"))
    assert len(jobs) == 2 and all(json.loads(j.read_text())["answered"] == 2 for j in jobs)
    assert (tmp_path / "summary.csv").exists()


def capitals(tmp_path: Path, n: int = 30) -> Path:
    return write_jsonl(tmp_path / "d.jsonl", [{"id": f"q{i}", "prompt": f"Capital, take {i}?",
                                               "ref": "Paris" if i % 3 else "Rome"} for i in range(n)])


def capital_args(server_url: str, data: Path, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url={server_url}", "backend.model_name=m", "dataset=default",
            f"dataset.path={data}", "dataset.fields.reference=ref", "scoring.metrics=[accuracy,f1]", *extra]


SAME_AS_ONE_RUN = ("rows", "answered", "failed", "dataset_rows", "prompt_tokens", "completion_tokens", "scores",
                   "scores_ci95", "scores_rows", "status")


def test_a_sweep_over_shards_alone_ends_merged_as_one_run(tmp_path: Path) -> None:
    from genrun.testing.fault_server import FaultServer

    data, sweep = capitals(tmp_path), tmp_path / "sweep"
    with FaultServer(work_s=0, reply="The capital is Paris") as server:
        whole = run_cli(*capital_args(server.url, data, f"hydra.run.dir={tmp_path / 'whole'}"))
        sharded = run_cli(*capital_args(server.url, data, "-m", "dataset.num_shards=4", "dataset.shard_index=0,1,2,3",
                                        f"hydra.sweep.dir={sweep}"))
    assert whole.returncode == 0 and sharded.returncode == 0, sharded.stderr[-3000:]
    one = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    merged = json.loads((sweep / "merged" / "metrics.json").read_text())
    assert {k: merged.get(k) for k in SAME_AS_ONE_RUN} == {k: one.get(k) for k in SAME_AS_ONE_RUN}
    assert 0 < merged["scores"]["accuracy"] < 1 and len(merged["shards"]) == 4
    by_index = sorted(read_jsonl(tmp_path / "whole" / "answers.jsonl"), key=lambda r: r["index"])
    fields = ("id", "index", "answer", "reference", "scores")
    assert ([{k: r[k] for k in fields} for r in read_jsonl(sweep / "merged" / "answers.jsonl")]
            == [{k: r[k] for k in fields} for r in by_index])
    assert json.loads((sweep / "merged" / "run.json").read_text())["merged_from"] == sorted(
        p.name for p in sweep.iterdir() if (p / ".hydra").is_dir())
    low, high = merged["scores_ci95"]["accuracy"]
    line = f"Merged: the 4 shards' 30 rows are one run in merged/; accuracy {merged['scores']['accuracy']:.4f} " \
           f"({low:.4f}–{high:.4f})"
    assert line in (sweep / "summary.md").read_text()
    assert "Best on" not in (sweep / "summary.md").read_text()  # shards are parts of one run, not rivals
    checked = subprocess.run([sys.executable, "-m", "genrun.commands.check", str(sweep / "merged")],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # the merged run is whole: indexed, tallied
    remerged = subprocess.run([sys.executable, "-m", "genrun.commands.merge", *map(str, sorted(sweep.iterdir())),
                               "-o", str(tmp_path / "again.jsonl")], capture_output=True, text=True, timeout=120)
    assert remerged.returncode == 0, remerged.stderr
    assert f"skipping {sweep / 'merged'}: it is the shards merged already" in remerged.stderr
    assert (tmp_path / "again.jsonl").read_bytes() == (sweep / "merged" / "answers.jsonl").read_bytes()
    shutil.rmtree(sweep / "merged")
    summary_main([str(sweep)])  # genrun-summary rebuilds the merged run too
    assert line in (sweep / "summary.md").read_text()
    assert json.loads((sweep / "merged" / "metrics.json").read_text())["scores"] == merged["scores"]


def test_a_shard_that_did_not_finish_is_named_and_the_rerun_answers_only_it(tmp_path: Path) -> None:
    from genrun.rundir.lock import RunLock
    from genrun.testing.fault_server import FaultServer

    data, sweep = capitals(tmp_path, 20), tmp_path / "sweep"
    args = capital_args("URL", data, "-m", "dataset.num_shards=4", "dataset.shard_index=0,1,2,3",
                        "hydra.sweep.subdir=shard${dataset.shard_index}", f"hydra.sweep.dir={sweep}")
    with FaultServer(work_s=0, reply="Paris") as server:
        args = [a.replace("URL", server.url) for a in args]
        with RunLock(sweep / "shard2"):  # another process still writing shard 2: that job stops at once
            first = run_cli(*args)
        assert first.returncode == 1
        assert "genrun: shard 2 of 4" in first.stderr and "did not finish" in first.stderr
        assert f"hydra.sweep.dir={sweep}" in first.stderr and not (sweep / "merged").exists()
        sent_first = sum(len(times) for times in server.attempts.values())
        again = run_cli(*args)
        assert again.returncode == 0, again.stderr[-3000:]
        sent = {prompt: len(times) for prompt, times in server.attempts.items()}
    assert sent_first == 15 and sorted(sent.values()) == [1] * 20  # the rerun sent shard 2's 5 rows alone
    assert len(read_jsonl(sweep / "merged" / "answers.jsonl")) == 20
