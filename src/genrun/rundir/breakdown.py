"""What metrics.json says beyond a run's overall means, kept record by record beside the tally:
the rows that hit the token cap, with the scores of finished and truncated rows apart; each
group's scores (scoring.group_by) and the macro mean over groups; and cluster-robust
intervals (scoring.cluster_by). Memory grows with the groups and clusters, not the rows.

A record carries the values of those columns under `columns` (the request builder keeps them).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from genrun.rundir.scores import Score
from genrun.scoring.stats import Z95, cluster_ci95


def is_truncated(record: dict[str, Any]) -> bool:
    """Whether the answer (or one of its samples) stopped at the token cap."""
    if record.get("finish_reason") == "length":
        return True
    reasons = record.get("finish_reasons")
    return isinstance(reasons, list) and "length" in reasons


def column_value(record: dict[str, Any], column: str) -> str | None:
    columns = record.get("columns")
    value = columns.get(column) if isinstance(columns, dict) else None
    return None if value is None else str(value)


def missing(column: str) -> str:
    """The group of rows that have no value in the column."""
    return f"(no {column})"


def rounded(values: list[float]) -> list[float | None]:
    return [round(v, 4) if math.isfinite(v) else None for v in values]


def rest(whole: Score, part: Score | None) -> Score:
    """The score of the rows of `whole` that are not in `part` (a subset of them)."""
    if part is None or not part.n:
        return whole
    values = None
    if whole.values is not None and part.values is not None:
        left = Counter(whole.values)
        left.subtract(part.values)
        values = [v for v, k in left.items() for _ in range(k)]
    return Score(whole.n - part.n, whole.total - part.total, max(whole.squares - part.squares, 0.0), whole.binary,
                 values if values is not None else (None if whole.n - part.n else []))


class Breakdown:
    def __init__(self, group_by: str | None = None, cluster_by: str | None = None) -> None:
        self.group_by, self.cluster_by = group_by, cluster_by
        self.truncated_rows = 0
        # metric -> its score over the truncated rows; the finished rows' is the rest of the run's
        # (result()), so a run whose answers all finish pays nothing per row for it
        self.truncated: dict[str, Score] = {}
        self.groups: dict[str, dict[str, Score]] = {}  # group -> metric -> score
        self.clusters: dict[str, dict[str, list[float]]] = {}  # metric -> cluster -> [rows, sum]

    def add(self, record: dict[str, Any], values: dict[str, float]) -> None:
        """An answered record, with its numeric scores."""
        if is_truncated(record):
            self.truncated_rows += 1
            for name, value in values.items():
                score = self.truncated.get(name)
                if score is None:
                    score = self.truncated[name] = Score()
                score.add(value)
        if self.group_by and values:
            group = column_value(record, self.group_by) or missing(self.group_by)
            scores = self.groups.setdefault(group, {})
            for name, value in values.items():
                score = scores.get(name)
                if score is None:
                    score = scores[name] = Score()
                score.add(value)
        if self.cluster_by and values:
            # a row without the column is a cluster of its own: nothing is assumed about it
            cluster = column_value(record, self.cluster_by) or f"row {record.get('index')}"
            for name, value in values.items():
                sums = self.clusters.setdefault(name, {}).setdefault(cluster, [0, 0.0])
                sums[0] += 1
                sums[1] += value

    def result(self, answered: int, overall: dict[str, Any]) -> dict[str, Any]:
        """metrics.json's keys for truncation, groups and clusters. overall: the run's own
        scores (Score by metric), whose intervals the clusters replace."""
        result: dict[str, Any] = {"truncated_rows": self.truncated_rows,
                                  "truncated_share": round(self.truncated_rows / answered, 4) if answered else 0.0}
        finished = {name: rest(s, self.truncated.get(name)) for name, s in overall.items() if isinstance(s, Score)}
        for key, part in (("finished", finished), ("truncated", self.truncated)):
            kept = {name: s for name, s in part.items() if s.n}
            if kept:
                result[f"scores_{key}"] = {name: round(s.value(), 4) for name, s in kept.items()}
                result[f"scores_{key}_ci95"] = {name: rounded(s.interval()) for name, s in kept.items()}
                result[f"scores_{key}_rows"] = {name: s.n for name, s in kept.items()}
        if self.group_by:
            result.update(self.group_result())
        if self.cluster_by:
            result.update(self.cluster_result(overall))
        return result

    def group_result(self) -> dict[str, Any]:
        groups = {group: {"rows": max(s.n for s in scores.values()),
                          "scores": {name: round(s.value(), 4) for name, s in scores.items()},
                          "scores_ci95": {name: rounded(s.interval()) for name, s in scores.items()}}
                  for group, scores in sorted(self.groups.items())}
        names = list(dict.fromkeys(name for scores in self.groups.values() for name in scores))
        macro, macro_ci = {}, {}
        for name in names:  # the unweighted mean of the group means; its SE from theirs (groups independent)
            parts = [scores[name] for scores in self.groups.values() if name in scores and scores[name].n]
            mean = sum(s.value() for s in parts) / len(parts)
            variance = sum(s.sd() ** 2 / s.n for s in parts) / len(parts) ** 2
            macro[name] = round(mean, 4)
            half = Z95 * math.sqrt(variance) if math.isfinite(variance) else math.nan
            low, high = mean - half, mean + half
            if all(s.binary for s in parts):  # a mean of 0/1 scores stays within [0, 1]
                low, high = max(low, 0.0), min(high, 1.0)
            macro_ci[name] = rounded([low, high])
        return {"group_by": self.group_by, "groups": groups, "scores_macro": macro, "scores_macro_ci95": macro_ci}

    def cluster_result(self, overall: dict[str, Any]) -> dict[str, Any]:
        intervals, counts = {}, {}
        for name, clusters in self.clusters.items():
            score = overall.get(name)
            if score is None or not isinstance(score, Score) or not score.n:
                continue
            intervals[name] = rounded(cluster_ci95(score.n, score.total, [(int(k), s) for k, s in clusters.values()]))
            counts[name] = len(clusters)
        return {"cluster_by": self.cluster_by, "clusters": max(counts.values(), default=0),
                "scores_ci95_clustered": intervals}

    def state(self) -> dict[str, Any]:
        return {"group_by": self.group_by, "cluster_by": self.cluster_by, "truncated_rows": self.truncated_rows,
                "truncated": {k: vars(s) for k, s in self.truncated.items()},
                "groups": {g: {k: vars(s) for k, s in scores.items()} for g, scores in self.groups.items()},
                "clusters": self.clusters}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Breakdown:
        kept = cls(state["group_by"], state["cluster_by"])
        kept.truncated_rows = int(state["truncated_rows"])
        kept.truncated = {k: Score(**v) for k, v in state["truncated"].items()}
        kept.groups = {g: {k: Score(**v) for k, v in scores.items()} for g, scores in state["groups"].items()}
        kept.clusters = {k: {c: [int(n), float(t)] for c, (n, t) in v.items()} for k, v in state["clusters"].items()}
        return kept
