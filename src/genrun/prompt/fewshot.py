"""Few-shot examples (`dataset.fewshot`): k rows drawn once, with a fixed seed, from another
split or file of the same dataset, and shown before every row as user and assistant turns:
the example rendered like any row, then its reference as the answer.

The draw is a reservoir sample over the source's rows in order, so it needs memory for k
rows only and gives the same examples for the same source and seed; run.json records their
ids.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Mapping

from genrun.backend.base import Messages
from genrun.dataset import load_checked, local_files
from genrun.errors import RowError, UserError
from genrun.prompt.modes import id_reader
from genrun.settings.schema import DatasetConfig


def draw(dataset: DatasetConfig, prompt_of: Callable[[Mapping[str, Any]], str],
         reference_of: Callable[[Mapping[str, Any]], Any]) -> tuple[Messages, dict[str, Any] | None]:
    """The example turns and what run.json records of them (None when k is 0)."""
    shots = dataset.fewshot
    k = int(shots.k or 0)
    if k <= 0:
        return [], None
    path, split = str(shots.path or dataset.path), shots.split
    if shots.path is None:
        if local_files(path) is not None:
            raise UserError("dataset.fewshot.path is not set: a local dataset file has one split; "
                            "give the file to draw examples from")
        if split in (None, dataset.split):
            raise UserError(f"dataset.fewshot.split={split!r}: draw the examples from another split than "
                            f"dataset.split={dataset.split!r} (e.g. train or dev)")
    name = dataset.name if shots.path is None else None
    rng = random.Random(int(shots.seed))
    picked: list[tuple[int, Mapping[str, Any]]] = []
    for index, row in enumerate(load_checked(path, name, split or "train")):
        if index < k:
            picked.append((index, row))
        elif (slot := rng.randint(0, index)) < k:
            picked[slot] = (index, row)
    if len(picked) < k:
        raise UserError(f"dataset.fewshot.k={k}, but {path} split {split!r} has {len(picked)} rows")
    picked.sort(key=lambda pair: pair[0])
    row_id = id_reader(dataset.fields.id)
    turns: Messages = []
    try:
        for _, row in picked:
            answer = reference_of(row)
            answer = answer[0] if isinstance(answer, (list, tuple)) and answer else answer
            turns += [{"role": "user", "content": prompt_of(row)}, {"role": "assistant", "content": str(answer)}]
    except RowError as exc:
        raise UserError(f"dataset.fewshot: an example from {path} cannot be shown: {exc}") from None
    ids = []
    for index, row in picked:
        try:
            ids.append(row_id(index, row))
        except KeyError:  # the few-shot source lacks the id column
            ids.append(index)
    return turns, {"k": k, "path": path, "name": name, "split": split, "seed": shots.seed, "ids": ids}
