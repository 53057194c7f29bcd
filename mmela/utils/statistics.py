"""Small-sample statistics for comparing training runs (a few seeds each).

Pure functions on lists of numbers (numpy and scipy only): the sample mean
with its standard deviation (``ddof=1``) and a t-interval, the difference of
two methods with a t-interval (paired by seed, or Welch's for independent
runs), and the Jaccard agreement that random subsets reach by chance, the
baseline for the stability of pruning masks across seeds.
"""
import itertools
from typing import Dict, List, NamedTuple, Sequence

import numpy as np
from scipy import stats


class Estimate(NamedTuple):
    """A mean with its sample standard deviation and t-interval."""
    n: int
    mean: float
    sd: float  # sample standard deviation (ddof=1); nan for n < 2
    low: float  # the interval at ``level``; nan for n < 2
    high: float


def mean_interval(values: Sequence[float], level: float = 0.95) -> Estimate:
    """Mean, sample SD (ddof=1) and the t-interval of the mean."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError('no values')
    mean = float(x.mean())
    if n < 2:
        return Estimate(n, mean, float('nan'), float('nan'), float('nan'))
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n))
    return Estimate(n, mean, sd, mean - half, mean + half)


class Difference(NamedTuple):
    """``mean(a) - mean(b)`` with its t-interval."""
    test: str  # 'paired' or 'welch'
    diff: float
    low: float
    high: float
    df: float
    p: float  # two-sided

    @property
    def within_noise(self) -> bool:
        """The interval includes 0 (no difference shown at its level)."""
        return not (self.low > 0 or self.high < 0)


def difference(a: Sequence[float], b: Sequence[float], paired: bool,
               level: float = 0.95) -> Difference:
    """``a - b``: paired by position (the same seed: same data order and
    initialisation) with a one-sample t on the differences, else Welch's
    t for independent samples of unequal variances."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if paired:
        if len(a) != len(b):
            raise ValueError('paired samples need equal lengths')
        d = a - b
        n = len(d)
        if n < 2:
            raise ValueError('a paired interval needs 2 pairs or more')
        se = float(d.std(ddof=1) / np.sqrt(n))
        df = float(n - 1)
        diff = float(d.mean())
    else:
        if len(a) < 2 or len(b) < 2:
            raise ValueError("Welch's interval needs 2 runs or more a side")
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = float(np.sqrt(va + vb))
        df = float((va + vb) ** 2 / (va ** 2 / (len(a) - 1) +
                                     vb ** 2 / (len(b) - 1))) \
            if va + vb > 0 else float(len(a) + len(b) - 2)
        diff = float(a.mean() - b.mean())
    if se == 0:
        return Difference('paired' if paired else 'welch', diff, diff, diff,
                          df, 0.0 if diff else 1.0)
    half = float(stats.t.ppf(0.5 + level / 2, df) * se)
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return Difference('paired' if paired else 'welch', diff, diff - half,
                      diff + half, df, p)


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; two empty sets agree completely (1.0)."""
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def expected_jaccard(n: int, k1: int, k2: int) -> float:
    """The expected Jaccard index of two subsets of sizes ``k1`` and ``k2``
    drawn uniformly at random from ``n`` items: the overlap is
    hypergeometric, ``|A | B| = k1 + k2 - |A & B|``."""
    if not (0 <= k1 <= n and 0 <= k2 <= n):
        raise ValueError(f'subset sizes {k1}, {k2} out of 0..{n}')
    if k1 == 0 and k2 == 0:
        return 1.0
    overlaps = np.arange(max(0, k1 + k2 - n), min(k1, k2) + 1)
    pmf = stats.hypergeom.pmf(overlaps, n, k1, k2)
    return float(np.sum(pmf * overlaps / (k1 + k2 - overlaps)))


def pairwise_jaccard(sets: Sequence[set], n: int) -> Dict[str, float]:
    """Over all pairs of ``sets``: the mean, min and max Jaccard index and
    the mean that random subsets of the same sizes reach by chance."""
    pairs: List = list(itertools.combinations(sets, 2))
    if not pairs:
        raise ValueError('need 2 sets or more')
    values = [jaccard(a, b) for a, b in pairs]
    chance = [expected_jaccard(n, len(a), len(b)) for a, b in pairs]
    return dict(mean=float(np.mean(values)), min=float(min(values)),
                max=float(max(values)), chance=float(np.mean(chance)))
