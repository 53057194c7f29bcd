"""Log how many samples each split holds, so a run's log shows what it read.

A dataset setting can point at other files than intended without any error:
mmpretrain 1.2.0's ``MNIST`` / ``FashionMNIST``, for one, pick the training
or test file from ``test_mode`` and ignore ``split``, so ``split='test'``
alone evaluates on the 60,000 training images. This hook writes one line per
split when training starts (train, and val if there is a val loop) and when
testing starts (test)::

    train split: FashionMNIST, 2560 samples (test_mode=False); files:
    train-images-idx3-ubyte sha256=..., train-labels-idx1-ubyte sha256=...

The files (and their sha256) are named for datasets that read a fixed set of
files by ``test_mode`` (mmpretrain's MNIST and FashionMNIST), so a log shows
which images a split held.

``expected`` (e.g. ``dict(train=2560, val=10000, test=10000)``) turns the
line into a check: a split of another size stops the run with an error that
names the split and both sizes.
"""
import hashlib
import os.path as osp
from typing import Dict, List, Optional

from mmengine.hooks import Hook

from ..registry import HOOKS
from .exact_resume_hook import SeededDataset

SPLITS = ('train', 'val', 'test')


@HOOKS.register_module()
class SplitSizeHook(Hook):
    """Log (and optionally check) the number of samples of every split.

    Args:
        expected (dict, optional): Split name (``train``, ``val``, ``test``)
            to the number of samples it must hold. Splits not named are only
            logged. Defaults to None.
    """

    # Before other hooks' before_train, so the sizes are logged (and
    # checked) before anything else prepares the run.
    priority = 'VERY_HIGH'

    def __init__(self, expected: Optional[Dict[str, int]] = None):
        expected = dict(expected or {})
        unknown = set(expected) - set(SPLITS)
        if unknown:
            raise ValueError(f'SplitSizeHook: expected has unknown splits '
                             f'{sorted(unknown)}; use {list(SPLITS)}')
        for split, size in expected.items():
            if not isinstance(size, int) or size < 0:
                raise ValueError(f'SplitSizeHook: expected[{split!r}] must '
                                 f'be a non-negative int, got {size!r}')
        self.expected = expected

    def before_train(self, runner) -> None:
        self._log(runner, 'train', runner.train_dataloader)
        if runner.val_loop is not None:
            self._log(runner, 'val', runner.val_dataloader)

    def before_test(self, runner) -> None:
        self._log(runner, 'test', runner.test_dataloader)

    def _log(self, runner, split: str, dataloader) -> None:
        dataset = dataloader.dataset
        while isinstance(dataset, SeededDataset):  # ExactResumeHook's wrapper
            dataset = dataset.dataset
        try:
            size = len(dataset)
        except TypeError:  # an IterableDataset
            size = None
        count = 'unknown number of' if size is None else size
        mode = getattr(dataset, 'test_mode', None)
        files = ', '.join(f'{osp.basename(path)} sha256={sha256(path)}'
                          for path in split_files(dataset))
        runner.logger.info(
            f'{split} split: {type(dataset).__name__}, {count} samples' +
            ('' if mode is None else f' (test_mode={mode})') +
            (f'; files: {files}' if files else ''))
        want = self.expected.get(split)
        if want is not None and size != want:
            article = 'an ' if size is None else ''
            raise ValueError(
                f'{split} split has {article}{count} samples, expected '
                f'{want}: check '
                f'{split}_dataloader.dataset in the config (data_root, '
                f'indices, split / test_mode)')


def split_files(dataset) -> List[str]:
    """The files an MNIST-style dataset read for its split (``test_list``
    with ``test_mode``, else ``train_list``), unpacked; [] for others."""
    files = getattr(dataset, 'test_list' if getattr(
        dataset, 'test_mode', False) else 'train_list', None)
    root = (getattr(dataset, 'data_prefix', None) or {}).get('root')
    if not isinstance(files, list) or not root:
        return []
    names = [name[:-3] if name.endswith('.gz') else name
             for name, *_ in files]
    return [osp.join(root, name) for name in names
            if osp.isfile(osp.join(root, name))]


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()

