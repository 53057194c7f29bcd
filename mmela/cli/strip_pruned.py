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

import torch

from ..deployment.model import (DeployError, atomic_output,
                                load_checkpoint_file)
from ..deployment.strip import strip_checkpoint
from .args import OneLineParser
from .errors import user_errors


def parse_args(argv=None) -> argparse.Namespace:
    parser = OneLineParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
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
