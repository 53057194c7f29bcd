"""The running sums of one measurement window: per adjacent pair, the padded
KL divergences (paper Eq. 11) of every training iteration, averaged at the
window's end (Section 3: "averaged over the training iterations of a
measurement window").

An iteration whose distributions are not finite for a pair (a saturated
gate, a skipped AMP step) is left out of that pair's mean and counted as
skipped. The sums travel as one flat array, so ranks can add theirs with one
all_reduce and checkpoints can hold them.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .decision import Pair
from .functional import padded_kl


class WindowMeasurement:
    """Sums of one window on one rank (or, after :meth:`from_totals`, on
    all ranks together).

    Args:
        pairs (list[Pair]): The window's adjacent pairs (see
            :func:`~mmela.pruning.adjacent_pairs`).
        eps (float): Padding of the shorter distribution in Eq. 11.
    """

    def __init__(self, pairs: Sequence[Pair], eps: float = 1e-8):
        self.pairs: List[Pair] = [tuple(p) for p in pairs]
        self.eps = eps
        self.kl_sum = np.zeros(len(self.pairs))
        self.used = np.zeros(len(self.pairs))  # iterations in each sum
        self.iterations = 0

    def add(self, distributions: Dict[Tuple[int, int], np.ndarray]
            ) -> List[Tuple[int, int]]:
        """Add one iteration. ``distributions`` maps ``(stage, block)`` of
        every retrieving block to its attention distribution. Returns the
        blocks whose distribution was not finite."""
        finite = {key: bool(np.isfinite(d).all())
                  for key, d in distributions.items()}
        for i, (s, a, b) in enumerate(self.pairs):
            if finite[s, a] and finite[s, b]:
                self.kl_sum[i] += padded_kl(distributions[s, a],
                                            distributions[s, b], eps=self.eps)
                self.used[i] += 1
        self.iterations += 1
        return [key for key, ok in finite.items() if not ok]

    # -------------------------------------------- one array, for ranks
    def totals(self) -> np.ndarray:
        """``[kl_sum..., used..., iterations]``: what ranks add up."""
        return np.concatenate([self.kl_sum, self.used, [self.iterations]])

    def load_totals(self, totals: Sequence[float]) -> None:
        """Take sums from :meth:`totals` (one rank's or several ranks'
        added up)."""
        num = len(self.pairs)
        totals = np.asarray(totals, dtype=np.float64)
        self.kl_sum = totals[:num].copy()
        self.used = totals[num:2 * num].copy()
        self.iterations = int(totals[-1])

    def mean(self) -> np.ndarray:
        """The mean divergence of every pair over its usable iterations."""
        return self.kl_sum / self.used

    def unusable(self) -> List[Pair]:
        """Pairs with no usable iteration in the window."""
        return [pair for pair, n in zip(self.pairs, self.used) if n == 0]

    def skipped(self) -> List[int]:
        """Per pair, the iterations left out of its mean."""
        return [self.iterations - int(n) for n in self.used]
