"""The uncertainty of a mean score over rows, and paired comparisons of two runs.

Textbook estimators: the Wilson score interval for a mean of 0/1 scores; otherwise the
percentile bootstrap over rows (2,000 resamples, a fixed seed, so a rerun prints the same
interval), or beyond 10,000 rows the normal approximation (mean +- 1.96 standard errors),
which is as good there and costs no resampling. A corpus-level ratio (perplexity: the
log-likelihood per word over all texts) gets the ratio estimator's delta-method interval.
With several samples per row a row's score is the mean of its samples, and rows, not
samples, are resampled: rows are what was drawn from the population. Rows that are not
independent (scoring.cluster_by) get the cluster-robust (CR1) standard error; many
comparisons get Holm's and Benjamini-Hochberg's adjusted p-values; every mean its minimum
detectable difference (80% power, alpha 0.05).
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
    half = t95(k - 1) * sd / math.sqrt(k)
    return [mean - half, mean + half]


def t95(df: int) -> float:
    """Student's t two-sided 95% quantile for df degrees of freedom (the normal's beyond 30)."""
    return T95[df - 1] if 1 <= df <= len(T95) else Z95


def cluster_se(n: int, total: float, clusters: Sequence[tuple[int, float]]) -> float:
    """The cluster-robust standard error of a mean over n rows in G clusters, each given as its
    (rows, sum of scores): the sandwich estimator of a regression on a constant with the CR1
    small-sample factor G / (G - 1), as statsmodels' OLS(...).fit(cov_type="cluster") computes
    it: sqrt(G / (G - 1) * sum_g (sum_{i in g} (y_i - mean))^2) / n."""
    g = len(clusters)
    if g < 2 or n < 2:
        return math.nan
    mean = total / n
    spread = sum((s - k * mean) ** 2 for k, s in clusters)
    return math.sqrt(g / (g - 1) * spread) / n


def cluster_ci95(n: int, total: float, clusters: Sequence[tuple[int, float]]) -> list[float]:
    """mean +- t(G - 1) * cluster-robust SE: with G clusters there are G - 1 degrees of freedom."""
    se = cluster_se(n, total, clusters)
    mean = total / n if n else math.nan
    half = t95(len(clusters) - 1) * se
    return [mean - half, mean + half]


# The minimum detectable difference: the smallest true difference between two runs that a
# two-sided test at alpha 0.05 finds 80% of the time (z 0.975 + z 0.80, normal approximation).
Z80 = 0.8416212335729143


def min_detectable_difference(sd: float, n: int, paired: bool = False) -> float:
    """For two independent runs of n rows with the score's standard deviation sd (sd * sqrt(2 / n)
    is the difference's standard error), or for a paired comparison where sd is that of the
    row-wise differences (sd / sqrt(n))."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return (Z95 + Z80) * sd * math.sqrt((1 if paired else 2) / n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i], reverse=True)
    adjusted, running = [0.0] * m, 1.0
    for back, i in enumerate(order):
        running = min(running, m / (m - back) * p_values[i])
        adjusted[i] = min(1.0, running)
    return adjusted
