"""A score's running totals: a mean over rows with what its interval needs (Score), and a
corpus-level ratio of sums (Ratio, mode=perplexity)."""

from __future__ import annotations

import math

from genrun.scoring.metrics import from_loglikelihood_per_unit
from genrun.scoring.stats import BOOTSTRAP_ROWS, Z95, ci95, min_detectable_difference, ratio_ci95, wilson


class Score:
    def __init__(self, n: int = 0, total: float = 0.0, squares: float = 0.0, binary: bool = True,
                 values: list[float] | None = None, unit: bool = True) -> None:
        self.n, self.total, self.squares, self.binary = n, total, squares, binary
        self.unit = unit  # every row's score lies in [0, 1]: so do the mean's interval and what is detectable
        self.values: list[float] | None = [] if values is None and n == 0 else values

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.squares += value * value
        self.binary = self.binary and value in (0.0, 1.0)
        self.unit = self.unit and 0.0 <= value <= 1.0
        if self.values is not None:
            self.values.append(value)
            if len(self.values) > BOOTSTRAP_ROWS:
                self.values = None  # the interval is now computed from the sums

    def value(self) -> float:
        return self.total / self.n

    def sd(self) -> float:
        """The sample standard deviation of the rows' scores."""
        if self.n < 2:
            return math.nan
        mean = self.total / self.n
        return math.sqrt(max(self.squares - self.n * mean * mean, 0.0) / (self.n - 1))

    def interval(self) -> list[float]:
        if self.values is not None:
            return ci95(self.values)
        if self.binary:
            return wilson(self.total, self.n)
        mean, sd = self.total / self.n, self.sd()
        low, high = mean - Z95 * sd / math.sqrt(self.n), mean + Z95 * sd / math.sqrt(self.n)
        return [max(low, 0.0), min(high, 1.0)] if self.unit else [low, high]  # a bounded score's stays in its bounds

    def detectable(self) -> float | None:
        """The minimum detectable difference against another run of as many rows (stats);
        None where it is larger than the score's whole scale (nothing is detectable at this size)."""
        mdd = min_detectable_difference(self.sd(), self.n)
        return None if self.unit and mdd > 1.0 else mdd


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
