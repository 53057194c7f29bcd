"""Whether training diverged, decided by all ranks together.

A loss that is not finite with weights that are no longer finite means the
run diverged; a non-finite loss with finite weights (a step AMP's loss
scaler skipped) does not. One small all_reduce makes every rank reach the
same answer in the same iteration, so a loss that diverges on one rank stops
every rank with the same message instead of leaving the others waiting in
the next collective.
"""
import math
from typing import Optional

import torch
from mmengine.dist import all_reduce, get_rank, get_world_size
from torch import nn


def weights_finite(model: nn.Module) -> bool:
    params = [p.detach() for p in model.parameters()]
    return not params or bool(torch.stack(
        [torch.isfinite(p).all() for p in params]).all())


def diverged(loss, model: nn.Module) -> Optional[str]:
    """None if training goes on; else how the loss diverged, for a message
    (``'is nan'``, or ``'is not finite on rank 1 of 2'``). A collective:
    every rank must call it."""
    if isinstance(loss, torch.Tensor):
        loss = loss.detach()
    loss_bad = loss is not None and not math.isfinite(float(loss))
    weights_bad = loss_bad and not weights_finite(model)
    world, rank = get_world_size(), get_rank()
    # Per rank: its loss is not finite; last: the weights are not.
    flags = torch.zeros(world + 1, dtype=torch.float64)
    flags[rank], flags[world] = float(loss_bad), float(weights_bad)
    all_reduce(flags, op='sum')
    if not flags[world]:
        return None
    if world == 1:
        return f'is {float(loss)}'
    ranks = ', '.join(str(r) for r in range(world) if flags[r])
    return f'is not finite on rank {ranks} of {world}'
