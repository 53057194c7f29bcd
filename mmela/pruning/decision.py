"""The pruning decision of one window (paper Section 3, Algorithm 1): which
adjacent pairs were measured, and how their mean divergences change the
masks.

1. :func:`adjacent_pairs`: within each stage, every two consecutive blocks
   whose retrieval is on form a pair; the later block's retrieval is the one
   the pair decides (the first retrieving block of a stage is never pruned).
2. :func:`decide`: :func:`~mmela.pruning.keep_mask` maps the pairs' mean
   divergences (Eq. 11) to keep / prune, and the result is ANDed into the
   masks: a pruned retrieval never comes back.

``ELAPruningHook`` decides with these at the end of every window, and
``tools/analysis/rethreshold.py`` replays them on a run's report
(:mod:`.replay`).
"""
import difflib
from typing import List, NamedTuple, Sequence, Tuple

import numpy as np

from .functional import (EBQM_MAPPINGS, PRUNING_METHODS, QUANTILE_MAPPINGS,
                         keep_mask, mapped_divergences)

# (stage, previous retrieving block, block whose retrieval the pair decides)
Pair = Tuple[int, int, int]
Masks = List[List[bool]]  # per stage, per block: retrieval on


def adjacent_pairs(masks: Sequence[Sequence[bool]]) -> List[Pair]:
    """Consecutive retrieving blocks of each stage."""
    pairs = []
    for stage, mask in enumerate(masks):
        on = [block for block, kept in enumerate(mask) if kept]
        pairs += [(stage, a, b) for a, b in zip(on, on[1:])]
    return pairs


class Decision(NamedTuple):
    """What :func:`decide` returns, per pair and for the whole network."""
    keep: np.ndarray  # bool per pair
    mapped: np.ndarray  # the method's score per pair, e.g. EBQM's
    masks: Masks  # after the window


def decide(masks: Sequence[Sequence[bool]], pairs: Sequence[Pair],
           divergences, method: str, tau: float, **params) -> Decision:
    """Apply a pruning method to the pairs' mean divergences and AND the
    result into ``masks`` (not modified; the new masks are returned)."""
    divergences = np.asarray(divergences, dtype=np.float64)
    if len(divergences) != len(pairs):
        raise ValueError(f'{len(divergences)} divergences for {len(pairs)} '
                         f'pairs')
    new = [[bool(on) for on in stage] for stage in masks]
    if not len(pairs):
        return Decision(np.ones(0, dtype=bool), np.zeros(0), new)
    keep = keep_mask(divergences, method, tau, **params)
    mapped = mapped_divergences(divergences, method, **params)
    for (stage, _, block), kept in zip(pairs, keep):
        new[stage][block] &= bool(kept)
    return Decision(np.asarray(keep, dtype=bool), np.asarray(mapped), new)


def method_parameters(method: str) -> Tuple[str, ...]:
    """The parameters :func:`~mmela.pruning.keep_mask` accepts for
    ``method`` (besides ``tau``)."""
    if method in EBQM_MAPPINGS:
        return ('gamma', *EBQM_MAPPINGS[method].defaults)
    if method in QUANTILE_MAPPINGS:
        return tuple(QUANTILE_MAPPINGS[method].defaults)
    return ('num_pruned', ) if method == 'fixed' else ()


def check_method_arguments(method: str, given, owner: str,
                           own: Sequence[str] = ()) -> None:
    """Raise ValueError, in one line, for an argument ``method`` does not
    take: naming every allowed argument (``own`` ones first) and the
    closest to the one given."""
    if method not in PRUNING_METHODS:
        return  # keep_mask names the methods
    allowed = set(method_parameters(method))
    unknown = sorted(set(given) - allowed)
    if not unknown:
        return
    every = sorted({p for m in PRUNING_METHODS for p in method_parameters(m)}
                   | set(own))
    close = difflib.get_close_matches(unknown[0], every, n=1)
    hint = f'; did you mean {close[0]!r}?' if close else ''
    others = [p for p in every if p not in own and p not in allowed]
    raise ValueError(
        f'{owner} got an unexpected argument {unknown[0]!r}{hint} '
        f"Arguments: {', '.join(own)}, and for method={method!r} "
        f"{', '.join(sorted(allowed)) or 'no others'} (other methods take "
        f"{', '.join(others)})")
