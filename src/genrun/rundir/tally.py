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
import math
import os
import zlib
from pathlib import Path
from typing import Any, Iterable

from genrun.scoring.metrics import RATIO_METRICS, from_loglikelihood_per_unit
from genrun.scoring.stats import BOOTSTRAP_ROWS, Z95, ci95, ratio_ci95, wilson

COUNTS = ("rows", "answered", "cache_hits", "prompt_tokens", "completion_tokens", "paid_prompt", "paid_completion",
          "scored", "unclosed", "scoring_errors")


class Score:
    def __init__(self, n: int = 0, total: float = 0.0, squares: float = 0.0, binary: bool = True,
                 values: list[float] | None = None) -> None:
        self.n, self.total, self.squares, self.binary = n, total, squares, binary
        self.values: list[float] | None = [] if values is None and n == 0 else values

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.squares += value * value
        self.binary = self.binary and value in (0.0, 1.0)
        if self.values is not None:
            self.values.append(value)
            if len(self.values) > BOOTSTRAP_ROWS:
                self.values = None  # the interval is now computed from the sums

    def value(self) -> float:
        return self.total / self.n

    def interval(self) -> list[float]:
        if self.values is not None:
            return ci95(self.values)
        if self.binary:
            return wilson(self.total, self.n)
        mean = self.total / self.n
        sd = math.sqrt(max(self.squares - self.n * mean * mean, 0.0) / (self.n - 1))
        return [mean - Z95 * sd / math.sqrt(self.n), mean + Z95 * sd / math.sqrt(self.n)]


class Ratio:
    """A corpus-level metric (mode=perplexity): the texts' summed log-likelihood over their
    summed words or bytes, as lm-eval aggregates it, kept as the sums its interval needs."""

    def __init__(self, metric: str, n: int = 0, y: float = 0.0, x: float = 0.0, yy: float = 0.0, xx: float = 0.0,
                 xy: float = 0.0) -> None:
        self.metric, self.n, self.y, self.x, self.yy, self.xx, self.xy = metric, n, y, x, yy, xx, xy

    def add(self, logprob: float, units: float) -> None:
        self.n += 1
        self.y, self.x = self.y + logprob, self.x + units
        self.yy, self.xx, self.xy = self.yy + logprob * logprob, self.xx + units * units, self.xy + logprob * units

    def value(self) -> float:
        return from_loglikelihood_per_unit(self.metric, self.y / self.x) if self.x else math.nan

    def interval(self) -> list[float]:
        low, high = ratio_ci95(self.n, self.y, self.x, self.yy, self.xx, self.xy)
        return sorted(from_loglikelihood_per_unit(self.metric, r) for r in (low, high))


class Tally:
    def __init__(self, metrics: Iterable[str] = ()) -> None:
        self.metrics = list(metrics)
        self.counts = dict.fromkeys(COUNTS, 0)
        self.have_tokens = False
        self.first_error: str | None = None
        # the metrics first, in order
        self.scores: dict[str, Score | Ratio] = {name: Ratio(name) if name in RATIO_METRICS else Score()
                                                 for name in self.metrics}

    def add(self, record: dict[str, Any]) -> None:
        counts = self.counts
        counts["rows"] += 1
        if record.get("error") is not None:
            self.first_error = self.first_error or f"row {record['index']}: {record['error']}"
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
        if scores:
            counts["scored"] += 1
            counts["unclosed"] += bool(scores.get("unclosed_thinking"))
            kept = self.scores
            for name, value in scores.items():
                if name in RATIO_METRICS:  # a row's own; the corpus's is summed below
                    continue
                kind = type(value)
                if kind is float or kind is int or (isinstance(value, (int, float)) and kind is not bool):
                    score = kept.get(name)
                    if score is None:
                        score = kept[name] = Score()
                    score.add(float(value))
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
            result["scored_rows"] = counts["scored"]
            result["unclosed_thinking"] = counts["unclosed"]
        return result

    def save(self, path: Path, covers: int, stamp: dict[str, int] | None = None) -> None:
        """Write the tally of the first `covers` bytes of answers.jsonl; stamp: the index entry
        it was made at (its count and checksums), which a resume checks it against."""
        state = {"covers": covers, "stamp": stamp, "metrics": self.metrics, "counts": self.counts,
                 "have_tokens": self.have_tokens, "first_error": self.first_error,
                 "scores": {name: vars(s) for name, s in self.scores.items()}}
        body = json.dumps(state, sort_keys=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"checksum": zlib.crc32(body.encode()), "state": state}))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, metrics: list[str]) -> tuple[Tally, int, dict[str, Any]] | None:
        """A saved tally made with the same metrics, how many bytes of answers.jsonl it covers,
        and its stamp; None when there is none, or it was edited or damaged (its checksum)."""
        try:
            saved = json.loads(path.read_text())
            state = saved["state"]
            if zlib.crc32(json.dumps(state, sort_keys=True).encode()) != saved["checksum"]:
                return None
            if state["metrics"] != list(metrics) or not isinstance(state["stamp"], dict):
                return None
            tally = cls(metrics)
            tally.counts.update({k: int(v) for k, v in state["counts"].items() if k in tally.counts})
            tally.have_tokens, tally.first_error = bool(state["have_tokens"]), state["first_error"]
            tally.scores = {name: Ratio(**score) if "metric" in score else Score(**score)
                            for name, score in state["scores"].items()}
            return tally, int(state["covers"]), state["stamp"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none saved, or another version's
            return None


def tally_path(answers: Path) -> Path:
    return answers.with_name(f".{answers.name}.tally")
