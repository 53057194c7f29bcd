"""A deploy checkpoint: a training checkpoint without the weights of pruned
retrievals and without training-only state (``tools/deployment/
strip_pruned.py``).

A pruned retrieval (``<block>.layer_attention.retrieval_mask`` = 0) runs
nothing, so its query/key and value convs, its norm and its lambda are dead
weight. The deploy checkpoint keeps ``state_dict`` without those tensors but
with every block's ``retrieval_mask``, and ``meta`` (plus ``meta['deploy']``
saying what was removed); it drops optimizer state, message hub, parameter
schedulers, EMA copies and the hooks' state. The same config loads it,
strictly too (``mmela/models/layer_attention.py``).
"""
import os.path as osp
from typing import Dict, List, Tuple

from torch import Tensor

MASK = 'layer_attention.retrieval_mask'
KEPT = ('state_dict', 'meta')


def pruned_prefixes(state: Dict[str, Tensor]) -> List[str]:
    """``<block>.layer_attention.`` of every pruned retrieval."""
    return [key[:-len('retrieval_mask')] for key, value in state.items()
            if key.endswith(MASK) and not bool(value)]


def stripped_prefixes(state: Dict[str, Tensor]) -> List[str]:
    """The pruned retrievals whose weights ``state`` does not hold (a deploy
    checkpoint's): their mask is 0 and no other key of theirs is there."""
    return [prefix for prefix in pruned_prefixes(state)
            if not any(k.startswith(prefix) and not k.endswith(MASK)
                       for k in state)]


def strip_state_dict(state: Dict[str, Tensor]
                     ) -> Tuple[Dict[str, Tensor], List[str]]:
    """``state`` without the tensors of pruned retrievals (their masks
    kept), and the removed keys."""
    prefixes = tuple(pruned_prefixes(state))
    removed = [key for key in state
               if key.startswith(prefixes) and not key.endswith(MASK)]
    dropped = set(removed)
    return {k: v for k, v in state.items() if k not in dropped}, removed


def strip_checkpoint(checkpoint: dict, source: str = '') -> Tuple[dict, dict]:
    """The deploy checkpoint of a training checkpoint, and what was
    removed (``meta['deploy']``)."""
    state = checkpoint['state_dict']
    stripped, removed = strip_state_dict(state)
    masks = [bool(v) for k, v in state.items() if k.endswith(MASK)]
    summary = dict(
        source=osp.basename(source),
        retrievals_on=sum(masks), retrievals_total=len(masks),
        removed_tensors=len(removed),
        removed_parameters=sum(state[k].numel() for k in removed),
        dropped=sorted(k for k in checkpoint if k not in KEPT))
    meta = dict(checkpoint.get('meta') or {}, deploy=summary)
    return dict(meta=meta, state_dict=stripped), summary
