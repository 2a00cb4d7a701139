"""Few-shot examples (`dataset.fewshot`): k rows of another split or file of the same dataset,
shown before a row as user and assistant turns: the example rendered like any row, then its
answer (its reference; in mode=choice the text of its right choice).

How the k are chosen (`sampler`), as lm-evaluation-harness's samplers do:
- `fixed`: one draw with a fixed seed, the same examples for every row. The draw is a
  reservoir sample over the source in order, so it needs memory for k rows only.
- `first_n`: the source's first k rows (MMLU's 5-shot: the first 5 `dev` questions).
- `random`: k drawn for each row, seeded by the seed and the row's id, so a row sees the
  same examples whatever its batch, order or resume. The source is held in memory.
`per_group=COLUMN` draws a row's examples from the source rows with the same value in that
column (MMLU's subject). No row is shown itself: an example whose prompt is the row's own
is replaced by the next candidate (lm-eval likewise drops the row from its candidates).
run.json records the examples' ids (for `random`, each record does: `fewshot_ids`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from genrun.backend.base import Messages
from genrun.dataset import load_checked, local_files
from genrun.errors import RowError, UserError
from genrun.prompt.modes import id_reader
from genrun.settings.schema import DatasetConfig

SAMPLERS = ("fixed", "first_n", "random")


def group_of(row: Mapping[str, Any], column: str | None) -> Any:
    """A row's group: its value in the per_group column, made hashable (a list or a mapping
    in that column is data, and must not crash the draw)."""
    if not column:
        return None
    value = row.get(column)
    return value if isinstance(value, (str, int, float, bool, type(None))) else json.dumps(value, sort_keys=True,
                                                                                            default=str)


@dataclass(frozen=True)
class Example:
    id: Any
    prompt: str
    answer: str
    group: Any = None


@dataclass
class Shots:
    """The examples a row is shown: for_row(row, row_id, prompt) -> (turns, example ids)."""

    sampler: str
    k: int
    seed: int
    per_group: str | None
    candidates: dict[Any, list[Example]] = field(default_factory=dict)  # by group (None: no groups)

    def for_row(self, row: Mapping[str, Any], row_id: Any, prompt: Any) -> tuple[Messages, list[Any]]:
        group = group_of(row, self.per_group)
        pool = [e for e in self.candidates.get(group, []) if e.prompt != prompt]  # never the row itself
        if self.sampler == "random":
            pool = random.Random(f"{self.seed}:{row_id}").sample(pool, min(self.k, len(pool)))
        chosen = pool[:self.k]
        if len(chosen) < self.k:
            where = f" with {self.per_group}={group!r}" if self.per_group else ""
            raise RowError(f"dataset.fewshot.k={self.k}, but the few-shot source has {len(chosen)} other rows{where}")
        turns: Messages = []
        for example in chosen:
            turns += [{"role": "user", "content": example.prompt}, {"role": "assistant", "content": example.answer}]
        return turns, [e.id for e in chosen]


def draw(dataset: DatasetConfig, prompt_of: Callable[[Mapping[str, Any]], str],
         answer_of: Callable[[Mapping[str, Any]], Any]) -> tuple[Shots | None, dict[str, Any] | None]:
    """The few-shot examples and what run.json records of them (None, None when k is 0)."""
    shots = dataset.fewshot
    k = int(shots.k or 0)
    if k <= 0:
        return None, None
    sampler = str(shots.sampler)
    if sampler not in SAMPLERS:
        raise UserError(f"dataset.fewshot.sampler={sampler!r} is unknown (choose from {', '.join(SAMPLERS)})")
    path, split = str(shots.path or dataset.path), shots.split
    if shots.path is None:
        if local_files(path) is not None:
            raise UserError("dataset.fewshot.path is not set: a local dataset file has one split; "
                            "give the file to draw examples from")
        if split in (None, dataset.split):
            raise UserError(f"dataset.fewshot.split={split!r}: draw the examples from another split than "
                            f"dataset.split={dataset.split!r} (e.g. train or dev)")
    name = dataset.name if shots.path is None else None
    per_group = shots.per_group or None
    source = enumerate(load_checked(path, name, split or "train"))
    picked = _pick(source, sampler, k, int(shots.seed), per_group, path)
    row_id = id_reader(dataset.fields.id)
    result = Shots(sampler, k, int(shots.seed), per_group)
    row: Mapping[str, Any] = {}
    try:
        for index, row in picked:
            answer = answer_of(row)
            answer = answer[0] if isinstance(answer, (list, tuple)) and answer else answer
            try:
                example_id = row_id(index, row)
            except KeyError:  # the few-shot source lacks the id column
                example_id = index
            group = group_of(row, per_group)
            result.candidates.setdefault(group, []).append(Example(example_id, prompt_of(row), str(answer), group))
    except RowError as exc:
        raise UserError(f"dataset.fewshot: an example from {path} cannot be shown: {exc}") from None
    except KeyError as exc:  # the few-shot source lacks a column the dataset's fields or templates read
        columns = ", ".join(map(str, row))
        raise UserError(f"dataset.fewshot: {path} has no column {exc.args[0]!r} (its columns: {columns}); "
                        "give a few-shot source with the dataset's columns, or templates that read its own") from None
    record: dict[str, Any] = {"k": k, "sampler": sampler, "per_group": per_group, "path": path, "name": name,
                              "split": split, "seed": shots.seed}
    if sampler == "random":
        record["source_rows"] = sum(map(len, result.candidates.values()))
    elif per_group:  # what a row of each group is shown, unless it is one of them
        record["ids"] = {str(group): [e.id for e in rows[:k]] for group, rows in result.candidates.items()}
    else:
        record["ids"] = [e.id for e in result.candidates[None][:k]]
    return result, record


def _pick(source: Any, sampler: str, k: int, seed: int, per_group: str | None,
          path: str) -> list[tuple[int, Mapping[str, Any]]]:
    """The source rows kept as candidates, in source order: all of them (random), or per
    group the first k + 1 (first_n) or a seeded reservoir of k and one spare (fixed). The
    one more is what replaces an example that is the row itself."""
    if sampler == "random":
        return list(source)
    kept: dict[Any, list[tuple[int, Mapping[str, Any]]]] = {}
    spare: dict[Any, tuple[int, Mapping[str, Any]] | None] = {}
    seen: dict[Any, int] = {}
    rng, spare_rng = random.Random(seed), random.Random(seed + 1)
    for index, row in source:
        if per_group and per_group not in row:
            raise UserError(f"dataset.fewshot.per_group={per_group!r} is not a column of {path} "
                            f"(columns: {', '.join(row)})")
        group = group_of(row, per_group)
        rows, n = kept.setdefault(group, []), seen.get(group, 0)
        seen[group] = n + 1
        if sampler == "first_n":
            if n <= k:
                rows.append((index, row))
            continue
        if n < k:
            rows.append((index, row))
            continue
        slot = rng.randint(0, n)
        if slot < k:  # the reservoir (as before: the same k for the same source and seed)
            out, rows[slot] = rows[slot], (index, row)
        else:
            out = (index, row)
        # one spare, drawn from the rows the reservoir left out, by its own reservoir
        if spare.get(group) is None or spare_rng.randint(0, n - k) == 0:
            spare[group] = out
    if not kept:
        raise UserError(f"dataset.fewshot.k={k}, but {path} split has no rows")
    if not per_group and len(kept[None]) < k:
        raise UserError(f"dataset.fewshot.k={k}, but {path} has {len(kept[None])} rows")
    picked = []
    for group, rows in kept.items():
        rows.sort(key=lambda pair: pair[0])
        extra = spare.get(group)
        picked += rows + ([extra] if extra is not None else [])
    return picked
