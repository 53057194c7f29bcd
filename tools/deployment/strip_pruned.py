"""Write a deploy checkpoint: the weights of pruned retrievals and all
training-only state removed.

    python tools/deployment/strip_pruned.py CHECKPOINT OUT

A pruned retrieval (``<block>.layer_attention.retrieval_mask`` = 0) runs
nothing, so its query/key and value convs, its norm and its lambda are dead
weight. The deploy checkpoint keeps

- ``state_dict`` without those tensors, but with every block's
  ``retrieval_mask``, so the masks load as they were;
- ``meta`` (epoch, config, dataset classes, ...), plus ``meta['deploy']``
  saying what was removed;

and drops everything else (optimizer state, message hub, parameter
schedulers, EMA copies, the state of ELAPruningHook and ExactResumeHook).

The same config loads it, strictly too (a pruned layer attention whose
weights are absent keeps its initial values and reports nothing missing:
``mmela/models/layer_attention.py``), and computes exactly what the
original checkpoint computes. The output is written to a temporary file
next to OUT and renamed when complete.
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Tuple

import torch
from torch import Tensor

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from deploy_model import (DeployError, Parser,  # noqa: E402
                          atomic_output, load_checkpoint_file, user_errors)

MASK = 'layer_attention.retrieval_mask'
KEPT = ('state_dict', 'meta')


def pruned_prefixes(state: Dict[str, Tensor]) -> List[str]:
    """``<block>.layer_attention.`` of every pruned retrieval."""
    return [key[:-len('retrieval_mask')] for key, value in state.items()
            if key.endswith(MASK) and not bool(value)]


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


def parse_args(argv=None) -> argparse.Namespace:
    parser = Parser(description='Write a deploy checkpoint without the '
                    'weights of pruned retrievals and training-only state.')
    parser.add_argument('checkpoint', help='training checkpoint')
    parser.add_argument('out', help='deploy checkpoint to write')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    with user_errors():
        if osp.abspath(args.out) == osp.abspath(args.checkpoint):
            raise DeployError('OUT must differ from CHECKPOINT')
        checkpoint = load_checkpoint_file(args.checkpoint)
        deploy, summary = strip_checkpoint(checkpoint, args.checkpoint)
        with atomic_output(args.out) as tmp:
            torch.save(deploy, tmp)
    before = osp.getsize(args.checkpoint)
    after = osp.getsize(args.out)
    print(f"retrievals: {summary['retrievals_on']} of "
          f"{summary['retrievals_total']} on; removed the "
          f"{summary['removed_tensors']} tensors "
          f"({summary['removed_parameters']:,} values) of the pruned ones, "
          f'kept their masks')
    print(f"dropped: {', '.join(summary['dropped']) or 'nothing'}")
    print(f'size: {before / 2**20:.2f} MiB -> {after / 2**20:.2f} MiB '
          f'({after / before:.1%}); wrote {args.out}')


if __name__ == '__main__':
    main()
