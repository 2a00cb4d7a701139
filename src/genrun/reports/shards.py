"""A sweep over `dataset.shard_index` alone, merged as one run at its end: SWEEP/merged/ holds
every shard's answers in the dataset's order (answers.jsonl), metrics.json with the scores and
their intervals over all rows, and run.json, as a single run's directory would; summary.md
says so. A shard that did not finish is named, with how to finish it (the same sweep again:
the finished shards have nothing left to do).

May use genrun.reports.merge and genrun.rundir; called by the CLI's sweep callback."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from genrun.errors import UserError
from genrun.reports.merge import merge
from genrun.rundir import status
from genrun.rundir.journal import write_json

log = logging.getLogger(__name__)

SHARD_KEY = "dataset.shard_index"
MERGED = "merged"
FINISHED = ("ok", "failed_rows")  # every row has its record (failed rows included)


def shard_jobs(sweep_dir: Path, rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]] | None:
    """The jobs of a sweep over every shard of a dataset and nothing else, by shard index;
    None for any other sweep (more swept keys, or only some of the shards)."""
    swept = {k for r in rows for k in r["params"] if len({x["params"].get(k) for x in rows}) > 1}
    if swept != {SHARD_KEY} or len(rows) < 2:
        return None
    try:
        jobs = {int(r["params"][SHARD_KEY]): r for r in rows}
        num_shards = {int(job_config(sweep_dir / r["job"])["dataset"]["num_shards"]) for r in rows}
    except (KeyError, TypeError, ValueError):
        return None
    if len(num_shards) != 1 or sorted(jobs) != list(range(num_shards.pop())):
        return None
    return jobs


def job_config(job_dir: Path) -> dict[str, Any]:
    """The job's composed config, as Hydra saved it."""
    try:
        config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def merge_shards(sweep_dir: Path, rows: list[dict[str, Any]], metric_order: list[str]) -> Path | None:
    """Merge a sharded sweep's jobs into SWEEP/merged/ once all have finished; the merged run's
    directory, or None (not a sharded sweep, or a shard left to finish: each named on stderr)."""
    jobs = shard_jobs(sweep_dir, rows)
    if jobs is None:
        return None
    unfinished = {shard: job for shard, job in jobs.items() if job["status"] not in FINISHED}
    for shard, job in unfinished.items():
        why = job["error"] or job["status"]
        print(f"genrun: shard {shard} of {len(jobs)} ({sweep_dir / job['job']}) did not finish: {why}; run the "
              f"same sweep again (hydra.sweep.dir={sweep_dir}) to finish it, the finished shards have nothing left to "
              "do", file=sys.stderr)
    if unfinished:
        return None
    out = sweep_dir / MERGED
    out.mkdir(exist_ok=True)
    job_dirs = [sweep_dir / jobs[shard]["job"] for shard in sorted(jobs)]
    try:
        count = merge(job_dirs, out / "answers.jsonl")
    except UserError as exc:
        print(f"genrun: the shards of {sweep_dir} could not be merged: {exc}", file=sys.stderr)
        return None
    run = merged_run(job_dirs)
    index_run(out / "answers.jsonl", ((run.get("scoring") or {}).get("metrics")) or metric_order)
    metrics = merged_metrics(out / "answers.jsonl", job_dirs, metric_order)
    write_json(out / "metrics.json", metrics)
    write_json(out / "run.json", run)
    main = metric_order[0] if metric_order else None
    line = f"Merged: the {len(jobs)} shards' {count} rows are one run in {MERGED}/"
    if main and main in metrics.get("scores", {}):
        low, high = metrics["scores_ci95"][main]
        line += f"; {main} {metrics['scores'][main]:.4f} ({low:.4f}–{high:.4f})"
    with open(sweep_dir / "summary.md", "a") as summary:
        summary.write(f"\n{line}.\n")
    print(f"genrun: merged {len(jobs)} shards, {count} rows -> {out}", file=sys.stderr)
    return out


def index_run(answers: Path, metrics: list[str]) -> None:
    """The merged answers' index and running tally, as a run of its own has them: genrun-check
    finds the directory whole, and genrun-score and the viewer read it as any run."""
    from genrun.rundir.journal import read_records, rewrite
    from genrun.rundir.tally import Tally

    rewrite(answers, read_records(answers), Tally(list(metrics)))


def merged_metrics(answers: Path, job_dirs: list[Path], metric_order: list[str]) -> dict[str, Any]:
    """metrics.json over every row, as one run's: the totals from the merged answers; the
    time and cost are the shards' sums (wall_s is the time the shards took, one after another);
    dataset_rows, each shard's count of the dataset before sharding, is the most any shard read."""
    shards = [status_of(job) for job in job_dirs]
    totals = status.summarize(answers, metric_order)
    costs = [m["cost"] for m in shards if isinstance(m.get("cost"), (int, float))]
    if costs:
        totals["cost"] = round(sum(costs), 6)
    wall = sum(float(m.get("wall_s") or 0) for m in shards)
    new_rows = sum(int(m.get("rows_this_run") or 0) for m in shards)
    metrics = status.collect(totals, wall=wall, new_rows=new_rows, new_tokens=0,
                             dataset_rows=max(int(m.get("dataset_rows") or 0) for m in shards), stopped=None)
    metrics["shards"] = {job.name: {"rows": m.get("rows"), "wall_s": m.get("wall_s")} for job, m in
                         zip(job_dirs, shards)}
    return metrics


def status_of(job_dir: Path) -> dict[str, Any]:
    try:
        metrics = json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def merged_run(job_dirs: list[Path]) -> dict[str, Any]:
    """run.json: the first shard's (the same model, settings and dataset), naming the shards."""
    try:
        record = json.loads((job_dirs[0] / "run.json").read_text())
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict):
        record = {}
    return {**record, "merged_from": [job.name for job in job_dirs]}
