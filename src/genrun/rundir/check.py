"""Verify a run directory end to end and say what is wrong (genrun-check).

It reads every record of answers.jsonl (streamed: memory holds one flag a row), and checks
that each line is a record, that no row is there twice, that the index and the running
tally agree with the journal, that metrics.json says what the records say, that run.json is
readable and its local dataset unchanged, and that no judging was left unmerged. Nothing is
changed: a resume repairs what can be repaired (it rebuilds the index and the tally, drops
damaged lines and answers their rows again).

Exit code: 0 when the run is whole, 1 when something is wrong (each problem is one line).
"""

from __future__ import annotations

import json
from array import array
from pathlib import Path
from typing import Any, Iterator

from genrun.errors import UserError


def problems(run_dir: Path) -> Iterator[str]:
    """Each thing wrong with the run directory, as one line; nothing when it is whole."""
    import numpy as np

    from genrun.rundir import index as done_index
    from genrun.rundir.journal import is_record, matches
    from genrun.rundir.tally import Tally, tally_path
    from genrun.rundir.verdicts import verdicts_path

    answers = run_dir / "answers.jsonl"
    if not answers.is_file():
        yield f"{answers}: missing (is {run_dir} a run directory?)"
        return
    run = read_json(run_dir / "run.json")
    if run is None:
        yield "run.json: missing or not JSON (resume and scoring need it)"
    metrics = (read_json(run_dir / "metrics.json") or {}) if (run_dir / "metrics.json").exists() else None
    scoring = ((run or {}).get("scoring") or {}).get("metrics") or []
    tally = Tally(scoring)
    rows = array("q")
    garbled: list[int] = []
    shapes: list[str] = []
    size = answers.stat().st_size
    end = 0  # where the last whole line ends: a torn one follows it
    for number, (end, record, _) in enumerate(done_index.scan(answers), 1):  # noqa: B007 - end is read after
        if record is None or not is_record(record):
            garbled.append(number)
            continue
        rows.append(record["index"])
        wrong = record_shape(record)
        if wrong:
            shapes.append(f"line {number} (row {record['index']}): {wrong}")
        tally.add(record)
    unique, counts = np.unique(np.frombuffer(rows, dtype=np.int64), return_counts=True)
    twice = unique[counts > 1].tolist()
    if garbled:
        yield (f"answers.jsonl: {len(garbled)} lines are not records (damage?), first line {garbled[0]}; "
               "a resume drops them and answers their rows again")
    if end < size:
        yield "answers.jsonl: its last line is torn (a crash mid-write); a resume cuts it off"
    if twice:
        yield (f"answers.jsonl: {len(twice)} rows are recorded twice, first row {twice[0]}; "
               "a resume keeps one record each")
    for shape in shapes[:5]:
        yield f"answers.jsonl: {shape}"
    if len(shapes) > 5:
        yield f"answers.jsonl: {len(shapes) - 5} more records of the wrong shape"
    index = done_index.load(answers, size)
    if index is None:
        yield "the index (.answers.jsonl.idx) is missing or disagrees with the journal; a resume rebuilds it"
    elif index.count != tally.counts["rows"] + len(twice) and not garbled:
        yield (f"the index covers {index.count} of the journal's {tally.counts['rows']} records; a resume indexes "
               "the rest")
    saved = Tally.load(tally_path(answers), scoring) if index is not None else None
    if tally_path(answers).exists() and (saved is None or index is None or not matches(index, *saved)):
        yield "the running tally (.answers.jsonl.tally) is damaged or out of step; a resume counts it anew"
    if metrics is None:
        yield "metrics.json: missing (the run never finished; resume it)"
    elif not metrics:
        yield "metrics.json: not JSON; a resume writes it again"
    else:
        yield from metrics_problems(metrics, tally.result())
    if verdicts_path(answers).exists():
        yield "judge verdicts were journaled but not merged (judging was stopped); resume or genrun-score to finish"
    yield from dataset_problems(run or {})


def record_shape(record: dict[str, Any]) -> str | None:
    answer, error = record.get("answer"), record.get("error")
    if answer is not None and not isinstance(answer, str):
        return f"its answer is a {type(answer).__name__}, not text"
    if error is not None and not isinstance(error, str):
        return f"its error is a {type(error).__name__}, not text"
    if answer is None and error is None and record.get("loglikelihoods") is None:  # (mode=perplexity: no answer)
        return "it has neither an answer nor an error"
    if not isinstance(record.get("scores", {}), dict):
        return "its scores are not an object"
    return None


def metrics_problems(metrics: dict[str, Any], counted: dict[str, Any]) -> Iterator[str]:
    for key in ("rows", "answered", "failed"):
        if metrics.get(key) != counted.get(key):
            yield (f"metrics.json says {key}={metrics.get(key)}, the records {counted.get(key)}; "
                   "resume the run (or genrun-score it) to write it again")
    said, found = metrics.get("scores") or {}, counted.get("scores") or {}
    for name in sorted(set(said) | set(found)):
        if said.get(name) is None or found.get(name) is None or abs(said[name] - found[name]) > 1e-4:
            yield (f"metrics.json says {name}={said.get(name)}, the records {found.get(name)}; "
                   "genrun-score the run to write it again")


def dataset_problems(run: dict[str, Any]) -> Iterator[str]:
    from genrun.dataset import fingerprint, local_files

    dataset = run.get("dataset") or {}
    if not dataset.get("fingerprint") or not dataset.get("path"):
        return
    try:
        there = local_files(str(dataset["path"])) is not None
    except UserError:
        there = False
    now = fingerprint(str(dataset["path"])) if there else None
    if now is None:
        yield f"the dataset {dataset['path']} is not there any more; a resume needs it"
    elif now != dataset["fingerprint"]:
        yield (f"the dataset {dataset['path']} changed since its answers were made (fingerprint "
               f"{dataset['fingerprint']} then, {now} now)")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
