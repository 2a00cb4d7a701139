"""The uncertainty of a mean score over rows, and paired comparisons of two runs.

Textbook estimators: the Wilson score interval for a mean of 0/1 scores; otherwise the
percentile bootstrap over rows (2,000 resamples, a fixed seed, so a rerun prints the same
interval), or beyond 10,000 rows the normal approximation (mean +- 1.96 standard errors),
which is as good there and costs no resampling. A corpus-level ratio (perplexity: the
log-likelihood per word over all texts) gets the ratio estimator's delta-method interval.
With several samples per row a row's score is the mean of its samples, and rows, not
samples, are resampled: rows are what was drawn from the population.
"""

from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054
RESAMPLES = 2000
SEED = 0


def ci95(values: Sequence[float]) -> list[float]:
    """The 95% confidence interval of the mean of values, [low, high]."""
    if not values:
        return [math.nan, math.nan]
    if all(v in (0.0, 1.0) for v in values):
        return wilson(sum(values), len(values))
    if len(values) > BOOTSTRAP_ROWS:
        return normal(values)
    return bootstrap(values)


BOOTSTRAP_ROWS = 10_000


def normal(values: Sequence[float]) -> list[float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return [mean - Z95 * sd / math.sqrt(n), mean + Z95 * sd / math.sqrt(n)]


def wilson(successes: float, n: int, z: float = Z95) -> list[float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap(values: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> list[float]:
    """Percentile bootstrap of the mean, resampling in chunks so memory stays bounded. The
    values are sorted first: the interval depends on which values there are, not on the order
    they came in (a run's journal holds answers as they arrive; shards merge in row order)."""
    import numpy as np

    data = np.sort(np.asarray(values, dtype=float))
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // len(data)))  # about 32 MB of indices and values at a time
    means = []
    for start in range(0, resamples, chunk):
        picks = rng.integers(0, len(data), size=(min(chunk, resamples - start), len(data)))
        means.append(data[picks].mean(axis=1))
    low, high = np.percentile(np.concatenate(means), [2.5, 97.5])
    return [float(low), float(high)]


def paired_bootstrap(differences: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> list[float]:
    """95% CI of the mean paired difference (rows resampled together)."""
    if all(d == 0 for d in differences):
        return [0.0, 0.0]
    return bootstrap(differences, resamples, seed)


def mcnemar(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact McNemar test for paired 0/1 scores: a two-sided binomial test on the rows where
    the runs disagree. 1.0 when they never do."""
    only_a = sum(1 for x, y in zip(a, b) if x == 1 and y == 0)
    only_b = sum(1 for x, y in zip(a, b) if x == 0 and y == 1)
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def permutation(differences: Sequence[float], resamples: int = 10_000, seed: int = SEED) -> float:
    """Two-sided paired permutation (sign-flip) test of a mean difference of 0."""
    import numpy as np

    data = np.asarray(differences, dtype=float)
    observed = abs(data.mean())
    if observed == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // len(data)))
    extreme = 0
    for start in range(0, resamples, chunk):
        signs = rng.choice([-1.0, 1.0], size=(min(chunk, resamples - start), len(data)))
        extreme += int((np.abs((signs * data).mean(axis=1)) >= observed - 1e-12).sum())
    return (extreme + 1) / (resamples + 1)


# Student's t, two-sided 95%, for 1-30 degrees of freedom (beyond: the normal's 1.96 is close).
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def ratio_ci95(n: int, sum_y: float, sum_x: float, sum_yy: float, sum_xx: float, sum_xy: float) -> list[float]:
    """The 95% interval of a ratio of sums over rows, r = sum(y) / sum(x) (a corpus's
    log-likelihood per word): the ratio estimator's linearization (delta-method) standard
    error, sqrt(sum((y - r x)^2) / (n (n - 1))) / mean(x), rows being what was drawn."""
    if n < 2 or sum_x <= 0:
        return [math.nan, math.nan]
    r = sum_y / sum_x
    residuals = max(sum_yy - 2 * r * sum_xy + r * r * sum_xx, 0.0)
    se = math.sqrt(residuals / (n * (n - 1))) / (sum_x / n)
    return [r - Z95 * se, r + Z95 * se]


def mean_ci95(values: Sequence[float]) -> list[float]:
    """The t interval of a mean over a few independent repeats (a sweep's seeds)."""
    k = len(values)
    mean = sum(values) / k
    if k < 2:
        return [mean, mean]
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    half = (T95[k - 2] if k - 1 <= len(T95) else Z95) * sd / math.sqrt(k)
    return [mean - half, mean + half]
