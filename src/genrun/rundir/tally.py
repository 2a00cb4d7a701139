"""The totals behind metrics.json, kept record by record as answers are written, so the end of
a run does not reread answers.jsonl, and saved beside it (`.answers.jsonl.tally`) so a
resume starts from them.

Each score keeps its count, sum and sum of squares; its values too while there are at most
stats.BOOTSTRAP_ROWS of them, which the bootstrap interval needs. Beyond that the interval
is Wilson's (0/1 scores) or the normal one, both computed from the sums, so memory stays
flat however many rows a run has.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterable

from genrun.rundir.breakdown import Breakdown
from genrun.rundir.scores import Ratio, Score
from genrun.scoring.metrics import RATIO_METRICS

MAX_REASONS = 100  # distinct failure reasons counted; past that only the ones seen are (bounded memory)
COUNTS = ("rows", "answered", "cache_hits", "prompt_tokens", "completion_tokens", "paid_prompt", "paid_completion",
          "scored", "unclosed", "scoring_errors", "choice_read", "ambiguous")


class Tally:
    def __init__(self, metrics: Iterable[str] = (), group_by: str | None = None,
                 cluster_by: str | None = None) -> None:
        self.metrics = list(metrics)
        self.breakdown = Breakdown(group_by, cluster_by)
        self.counts = dict.fromkeys(COUNTS, 0)
        self.have_tokens = False
        self.first_error: str | None = None
        self.reasons: dict[str, int] = {}  # each failure reason (the record's error) and its rows
        # the metrics first, in order
        self.scores: dict[str, Score | Ratio] = {name: Ratio(name) if name in RATIO_METRICS else Score()
                                                 for name in self.metrics}

    def add(self, record: dict[str, Any]) -> None:
        counts = self.counts
        counts["rows"] += 1
        if record.get("error") is not None:
            self.first_error = self.first_error or f"row {record['index']}: {record['error']}"
            reason = str(record["error"])[:300]
            if reason in self.reasons or len(self.reasons) < MAX_REASONS:
                self.reasons[reason] = self.reasons.get(reason, 0) + 1
            return
        counts["answered"] += 1
        cached = bool(record.get("cached"))
        counts["cache_hits"] += cached
        if record.get("completion_tokens") is not None:
            self.have_tokens = True
            counts["prompt_tokens"] += record.get("prompt_tokens") or 0
            counts["completion_tokens"] += record["completion_tokens"]
            if not cached:
                counts["paid_prompt"] += record.get("prompt_tokens") or 0
                counts["paid_completion"] += record["completion_tokens"]
        counts["scoring_errors"] += "scoring_error" in record
        scores = record.get("scores")
        values: dict[str, float] = {}
        if scores:
            counts["scored"] += 1
            counts["unclosed"] += bool(scores.get("unclosed_thinking"))
            if "ambiguous" in scores:  # extract=choice read both the letter and the choice's text
                counts["choice_read"] += 1
                counts["ambiguous"] += scores["ambiguous"] is True
            kept = self.scores
            for name, value in scores.items():
                if name in RATIO_METRICS:  # a row's own; the corpus's is summed below
                    continue
                kind = type(value)
                if kind is float or kind is int or (isinstance(value, (int, float)) and kind is not bool):
                    score = kept.get(name)
                    if score is None:
                        score = kept[name] = Score()
                    values[name] = float(value)
                    score.add(values[name])  # type: ignore[call-arg]  # a Score: the ratio metrics were skipped
        self.breakdown.add(record, values)
        parts = record.get("perplexity")
        if isinstance(parts, dict) and isinstance(parts.get("logprob"), (int, float)):
            for name, unit in RATIO_METRICS.items():
                if isinstance(self.scores.get(name), Ratio) and isinstance(parts.get(unit), (int, float)):
                    self.scores[name].add(float(parts["logprob"]), float(parts[unit]))  # type: ignore[call-arg]

    def result(self, prices: dict[str, float] | None = None) -> dict[str, Any]:
        """metrics.json's totals: rows, answers, failures, tokens, cost, and every score's mean
        with its 95% interval (scores_ci95) and row count (scores_rows)."""
        counts = self.counts
        result: dict[str, Any] = {"rows": counts["rows"], "answered": counts["answered"],
                                  "failed": counts["rows"] - counts["answered"]}
        if self.first_error:
            result["first_error"] = self.first_error  # what a sweep summary shows for a job with failed rows
        if self.reasons:  # what the last line says of a run with failed rows
            reason, rows = max(self.reasons.items(), key=lambda item: item[1])
            result["commonest_error"] = {"error": reason, "rows": rows}
        if self.have_tokens:
            result.update(prompt_tokens=counts["prompt_tokens"], completion_tokens=counts["completion_tokens"])
        if counts["cache_hits"]:
            result["cache_hits"] = counts["cache_hits"]
        if counts["scoring_errors"]:  # answered, kept, but not scored (see the records' scoring_error)
            result["scoring_errors"] = counts["scoring_errors"]
        if prices:
            result["cost"] = round((counts["paid_prompt"] * float(prices.get("input_per_1m", 0))
                                    + counts["paid_completion"] * float(prices.get("output_per_1m", 0))) / 1e6, 6)
        scores = {name: score for name, score in self.scores.items() if score.n}
        if scores:
            result["scores"] = {name: round(s.value(), 4) for name, s in scores.items()}
            result["scores_ci95"] = {name: [round(x, 4) for x in s.interval()] for name, s in scores.items()}
            result["scores_rows"] = {name: s.n for name, s in scores.items()}
            result["scores_mdd"] = {name: rounded(s.detectable()) for name, s in scores.items()
                                    if isinstance(s, Score) and s.n > 1}
            # scores whose every row lies in [0, 1]: a sweep's interval over seeds stays inside too
            result["scores_range"] = {name: [0, 1] for name, s in scores.items() if isinstance(s, Score) and s.unit}
            result["scored_rows"] = counts["scored"]
            result["unclosed_thinking"] = counts["unclosed"]
        if counts["choice_read"]:  # rows whose letter and choice text named different choices
            result["ambiguous_rows"] = counts["ambiguous"]
            result["ambiguous_share"] = round(counts["ambiguous"] / counts["choice_read"], 4)
        if counts["answered"]:
            extra = self.breakdown.result(counts["answered"], scores)
            clustered = extra.pop("scores_ci95_clustered", None)
            if clustered:  # the clustered intervals are the run's; the ones that assume independent rows stay beside
                result["scores_ci95_iid"] = {name: result["scores_ci95"][name] for name in clustered}
                result["scores_ci95"].update(clustered)
                result["ci95_estimator"] = (f"cluster-robust (CR1) by {self.breakdown.cluster_by}, "
                                            f"{extra['clusters']} clusters, t with {extra['clusters'] - 1} df")
            result.update(extra)
        return result

    def save(self, path: Path, covers: int, stamp: dict[str, int] | None = None) -> None:
        """Write the tally of the first `covers` bytes of answers.jsonl; stamp: the index entry
        it was made at (its count and checksums), which a resume checks it against."""
        state = {"covers": covers, "stamp": stamp, "metrics": self.metrics, "counts": self.counts,
                 "have_tokens": self.have_tokens, "first_error": self.first_error, "reasons": self.reasons,
                 "scores": {name: vars(s) for name, s in self.scores.items()}, "breakdown": self.breakdown.state()}
        body = json.dumps(state, sort_keys=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"checksum": zlib.crc32(body.encode()), "state": state}))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, metrics: list[str], group_by: str | None = None,
             cluster_by: str | None = None) -> tuple[Tally, int, dict[str, Any]] | None:
        """A saved tally made with the same metrics and groups, how many bytes of answers.jsonl it covers,
        and its stamp; None when there is none, or it was edited or damaged (its checksum)."""
        try:
            saved = json.loads(path.read_text())
            state = saved["state"]
            if zlib.crc32(json.dumps(state, sort_keys=True).encode()) != saved["checksum"]:
                return None
            if state["metrics"] != list(metrics) or not isinstance(state["stamp"], dict):
                return None
            breakdown = Breakdown.from_state(state["breakdown"])
            if (breakdown.group_by, breakdown.cluster_by) != (group_by, cluster_by):
                return None
            tally = cls(metrics)
            tally.breakdown = breakdown
            tally.counts.update({k: int(v) for k, v in state["counts"].items() if k in tally.counts})
            tally.have_tokens, tally.first_error = bool(state["have_tokens"]), state["first_error"]
            tally.reasons = {str(k): int(v) for k, v in (state.get("reasons") or {}).items()}
            tally.scores = {name: Ratio(**score) if "metric" in score else Score(**{"unit": False, **score})
                            for name, score in state["scores"].items()}
            return tally, int(state["covers"]), state["stamp"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none saved, or another version's
            return None


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def tally_path(answers: Path) -> Path:
    return answers.with_name(f".{answers.name}.tally")
