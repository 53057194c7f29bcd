"""The command lines of ``tools/train.py`` and ``tools/test.py``: the flags
of mmdet's and mmpretrain's own tools."""
import argparse
import os
import sys
from typing import List, Optional

from mmengine.config import DictAction

from .errors import ConfigError, print_errors


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``error:`` line and exit status
    2, as the tools' other errors."""

    def error(self, message):
        print_errors([ConfigError(f'{message} (see --help)')])
        sys.exit(2)


def _parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file path')
    return parser


def _add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, xxx=yyy pairs merged into it, '
        'e.g. train_cfg.max_epochs=24 or key="[a,b]"; no white space.')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher (dist_train.sh: pytorch)')
    parser.add_argument(
        '--no-pin-memory', action='store_true',
        help='disable pin_memory in the dataloaders')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help='set by torch.distributed.launch; not needed '
                        'with dist_train.sh / dist_test.sh (torchrun)')


def _finish(parser: argparse.ArgumentParser,
            argv: Optional[List[str]]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def train_parser() -> argparse.ArgumentParser:
    parser = _parser('Train a detector or classifier (mmdet / mmpretrain '
                     'config) with mmela')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or without a path from the '
        'latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual batch '
                        'size over auto_scale_lr.base_batch_size')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate during training')
    parser.add_argument('--no-persistent-workers', action='store_true',
                        help='disable persistent_workers in the dataloaders')
    _add_common_args(parser)
    return parser


def parse_train_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return _finish(train_parser(), argv)


def test_parser() -> argparse.ArgumentParser:
    parser = _parser('Test (and evaluate) a detector or classifier with '
                     'mmela')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the metrics file goes '
                        '(default: work_dirs/<config name>)')
    parser.add_argument(
        '--out', help='dump predictions to this .pkl file (classification '
        'with --out-item metrics: the metrics, .json/.yaml/.pkl)')
    parser.add_argument(
        '--out-item', choices=['pred', 'metrics'],
        help='classification only: what --out holds (default: pred)')
    parser.add_argument('--show-dir', help='draw predictions into this '
                        'directory (inside the run\'s timestamped dir)')
    parser.add_argument('--show', action='store_true',
                        help='show predictions in a window')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each shown image stays (--show)')
    parser.add_argument('--interval', type=int, default=1,
                        help='classification: draw every n-th sample')
    parser.add_argument('--amp', action='store_true',
                        help='test in mixed precision (test_cfg.fp16)')
    _add_common_args(parser)
    return parser


def parse_test_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return _finish(test_parser(), argv)
