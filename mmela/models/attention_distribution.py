"""Attention distributions over earlier layers (SPEC section 1).

Pure torch functions: they turn what a stage's layer-attention modules recorded
in one forward pass into, for each block whose retrieval is on, a probability
distribution over the retrieving blocks of the stage seen so far. The k-th such
block (counting from 1) gets a distribution with k entries. These are the
``P^l`` whose adjacent KL divergences (paper Eq. 11) ELA measures.
"""
from typing import List, Sequence

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


def light_attention_distributions(decays: Sequence[Tensor],
                                  gates: Sequence[Tensor],
                                  head_dim: int) -> List[Tensor]:
    """MRLA-L: the unrolled recurrence ``o^l = lambda^l o^{l-1} + sigma_l v^l``.

    Unrolled, block ``l`` gives block ``i <= l`` the per-channel weight
    ``w^l_i = |prod_{j=i+1..l} lambda^j| * sigma_i``. Averaged over channels
    (and, through ``gates``, over the batch) and normalised, this is the
    distribution ``P^l`` over the blocks of the stage.

    Only blocks whose retrieval is on take part: a pruned block adds no term
    and its ``lambda`` does not decay earlier terms, because it computes no
    ``o^l`` at all.

    Args:
        decays (Sequence[Tensor]): ``|lambda^j|`` of each retrieving block of
            the stage, in order, each of shape ``(C,)``.
        gates (Sequence[Tensor]): ``sigma_j`` of the same blocks averaged over
            the batch, each of shape ``(heads,)`` with ``heads * head_dim = C``.
        head_dim (int): Channels per head.

    Returns:
        list[Tensor]: One distribution per block; the k-th has k entries.
    """
    if len(decays) != len(gates):
        raise ValueError(f'decays and gates must have the same length, got '
                         f'{len(decays)} and {len(gates)}')
    if not gates:
        return []
    # (L, C): per-channel gate of every block, heads expanded to channels.
    sigma = torch.stack([g.repeat_interleave(head_dim) for g in gates])
    lam = torch.stack(list(decays))
    distributions = []
    for last in range(len(gates)):
        # decay[i] = prod_{j=i+1..last} |lambda^j|: a reversed cumulative
        # product, with 1 for i = last.
        later = lam[1:last + 1].flip(0).cumprod(0).flip(0)
        decay = torch.cat([later, torch.ones_like(lam[:1])])
        weights = (decay * sigma[:last + 1]).mean(dim=1)
        distributions.append(weights / weights.sum())
    return distributions
