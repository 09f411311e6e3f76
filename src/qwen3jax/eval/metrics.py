"""Per-record scores to task metrics: the unbiased pass@k estimator, mean@k, and confidence intervals over records.

pass@k (Chen et al. 2021): with n samples of a problem of which c are correct, the probability that at least one of
k samples drawn without replacement is correct is 1 - C(n-c, k) / C(n, k); it is computed as a running product
so that large n never overflows. mean@k here is the mean score of the n samples (the expected score of one sample).

Confidence intervals are over records (the problems are the random draw): Wilson's score interval when every
per-record value is 0 or 1 (accuracy of one sample per problem, multiple choice), else a percentile bootstrap over
records with a fixed seed (pass@k and mean@k of several samples are fractions per record).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples with c correct (k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k / i)  ==  1 - C(n-c, k) / C(n, k)
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def ks_for(n: int) -> list[int]:
    """The k of pass@k reported for n samples: 1, then powers of two up to n, and n itself."""
    ks = {1, n} | {1 << i for i in range(1, n.bit_length()) if 1 << i <= n}
    return sorted(ks)


def wilson_interval(successes: int, total: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """Wilson's score interval of a binomial proportion."""
    if total == 0:
        return float("nan"), float("nan")
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values: Sequence[float], level: float = CI_LEVEL, *, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling records)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(BOOTSTRAP_RESAMPLES, values.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def summarise(values: Sequence[float]) -> dict:
    """{"value", "ci": [low, high], "ci_method", "records"} of per-record values (the metric is their mean); value and
    interval are None (JSON null) without records."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return {"value": None, "ci": [None, None], "ci_method": "none", "records": 0}
    binary = bool(np.all((values == 0) | (values == 1)))
    if binary:
        low, high = wilson_interval(int(values.sum()), values.size)
        method = f"wilson_{CI_LEVEL:.0%}"
    else:
        low, high = bootstrap_interval(values)
        method = f"bootstrap_percentile_{CI_LEVEL:.0%}_{BOOTSTRAP_RESAMPLES}"
    return {"value": float(values.mean()), "ci": [low, high], "ci_method": method, "records": int(values.size)}

