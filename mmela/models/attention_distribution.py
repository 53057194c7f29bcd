"""Attention distributions over earlier layers (the P^l of the paper's Eq. 11).

Pure torch functions: they turn what a stage's layer-attention modules recorded
in one forward pass into, for each block whose retrieval is on, a probability
distribution over the retrieving blocks of the stage seen so far. The k-th such
block (counting from 1) gets a distribution with k entries. These are the
``P^l`` whose adjacent KL divergences (paper Eq. 11) ELA measures.
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor


def base_attention_distribution(attention: Tensor) -> Tensor:
    """MRLA-B: the softmax attention averaged over the batch and the heads.

    Args:
        attention (Tensor): ``(B, heads, l)`` softmax weights of one block over
            the ``l`` keys of its stage (its own included).

    Returns:
        Tensor: ``(l,)``, sums to 1.
    """
    return attention.mean(dim=(0, 1))


def light_attention_distributions(
        decays: Sequence[Tensor],
        gates: Optional[Sequence[Tensor]],
        head_dim: int,
        log_gates: Optional[Sequence[Tensor]] = None) -> List[Tensor]:
    """MRLA-L: the unrolled recurrence ``o^l = lambda^l o^{l-1} + sigma_l v^l``.

    Unrolled, block ``l`` gives block ``i <= l`` the per-channel weight
    ``w^l_i = |prod_{j=i+1..l} lambda^j| * sigma_i``. Averaged over channels
    (and, through ``gates``, over the batch) and normalised, this is the
    distribution ``P^l`` over the blocks of the stage.

    Only blocks whose retrieval is on take part: a pruned block adds no term
    and its ``lambda`` does not decay earlier terms, because it computes no
    ``o^l`` at all.

    Where the weights vanish. ``sigma`` is a sigmoid: in float32 it is
    exactly 0 below a score of about -104 (and loses precision below -88), and
    a product of many small ``|lambda|`` underflows too. Normalising weights
    that all underflowed is 0/0. Two rules make ``P^l`` defined there:

    - A block that retrieves from one block only (the first retrieving block
      of a stage) gets ``[1.0]`` whatever its gate: a distribution over one
      element has no other value, and it is the limit of ``w / w.sum()`` as
      the gate goes to 0.
    - Otherwise, when the plain weights sum to 0, to less than the smallest
      normal float, or to inf / NaN, the distribution is computed in log
      space in float64: ``log w_i = logsumexp_c(sum_{j=i+1..l} log|lambda^j_c|
      + log sigma_{i,c})``, then a softmax over ``i``. This is the same
      ``P^l`` (normalisation cancels any common scale), only without the
      underflow: the ratio of two tiny weights stays what the scores say
      instead of becoming 0/0. ``log sigma`` comes from ``log_gates`` when
      given (``log(mean_batch sigmoid(score))``, computed by the module as
      ``logsumexp_b(logsigmoid(score_b)) - log B``, finite for any finite
      score); from ``gates`` otherwise, where a gate that is already 0
      stays ``log 0 = -inf``: that block then gets weight 0, and if every
      block of the distribution has such a gate the distribution is
      undefined and returned as NaN, for the caller to skip.

    Wherever the plain weights are well defined (every normal run) the result
    is exactly the plain computation's, bit for bit.

    Args:
        decays (Sequence[Tensor]): ``|lambda^j|`` of each retrieving block of
            the stage, in order, each of shape ``(C,)``.
        gates (Sequence[Tensor], optional): ``sigma_j`` of the same blocks
            averaged over the batch, each of shape ``(heads,)`` with
            ``heads * head_dim = C``. May be None when ``log_gates`` is given.
        head_dim (int): Channels per head.
        log_gates (Sequence[Tensor], optional): The logarithm of the same
            batch-mean gates, computed without underflow, each ``(heads,)``.
            Used only where the plain weights vanish. Default: None.

    Returns:
        list[Tensor]: One distribution per block; the k-th has k entries.
        Entries are NaN only where the distribution is undefined (see above)
        or the inputs are not finite (e.g. a diverged network).
    """
    if gates is None and log_gates is None:
        raise ValueError('light_attention_distributions needs gates or '
                         'log_gates')
    for name, given in (('gates', gates), ('log_gates', log_gates)):
        if given is not None and len(given) != len(decays):
            raise ValueError(f'decays and {name} must have the same length, '
                             f'got {len(decays)} and {len(given)}')
    if not decays:
        return []
    lam = torch.stack(list(decays))
    if gates is None:
        return _log_space_distributions(lam, _per_channel(log_gates,
                                                          head_dim))
    # (L, C): per-channel gate of every block, heads expanded to channels.
    sigma = _per_channel(gates, head_dim)
    # A single entry normalised is 1.0 exactly (w / w), and stays 1.0 where
    # its gate vanished.
    distributions = [torch.ones_like(sigma[0, :1])]
    totals = []
    for last in range(1, len(gates)):
        # decay[i] = prod_{j=i+1..last} |lambda^j|: a reversed cumulative
        # product, with 1 for i = last.
        later = lam[1:last + 1].flip(0).cumprod(0).flip(0)
        decay = torch.cat([later, torch.ones_like(lam[:1])])
        weights = (decay * sigma[:last + 1]).mean(dim=1)
        total = weights.sum()
        distributions.append(weights / total)
        totals.append(total)
    if not totals:
        return distributions
    totals = torch.stack(totals)
    vanished = ~(torch.isfinite(totals)
                 & (totals >= torch.finfo(totals.dtype).tiny))
    if bool(vanished.any()):  # one device sync per stage
        log_sigma = _per_channel(log_gates, head_dim) \
            if log_gates is not None else sigma.double().log()
        fallback = _log_space_distributions(lam, log_sigma)
        for last in (torch.nonzero(vanished).flatten() + 1).tolist():
            distributions[last] = fallback[last].to(distributions[last].dtype)
    return distributions


def _per_channel(per_head: Sequence[Tensor], head_dim: int) -> Tensor:
    """``(L, heads)`` values of L blocks repeated to ``(L, C)``."""
    return torch.stack([g.repeat_interleave(head_dim) for g in per_head])


def _log_space_distributions(lam: Tensor, log_sigma: Tensor) -> List[Tensor]:
    """Every block's ``P^l`` from ``log|lambda|`` and ``log sigma`` (both
    ``(L, C)``), in float64, all blocks at once; see
    :func:`light_attention_distributions`."""
    # |lambda| = 0 would make the cumulative sums -inf - -inf = NaN; the
    # smallest positive double gives that channel a weight of ~1e-308 instead.
    log_lam = lam.double().clamp_min(torch.finfo(torch.float64).tiny).log()
    cum = log_lam.cumsum(0)
    # log_decay[l, i, c] = sum_{j=i+1..l} log|lambda^j_c| (valid for i <= l).
    log_decay = cum[:, None, :] - cum[None, :, :]
    log_weights = torch.logsumexp(log_decay + log_sigma.double()[None], dim=2)
    num = len(lam)
    later = torch.ones(num, num, dtype=torch.bool,
                       device=lam.device).triu(diagonal=1)
    log_weights = log_weights.masked_fill(later, float('-inf'))
    dists = torch.softmax(log_weights, dim=1)
    result = [dists[last, :last + 1] for last in range(num)]
    result[0] = torch.ones_like(result[0])
    return result
