"""ExactResumeHook: ``--resume`` replays what the uninterrupted run did.

mmengine's resume restores the weights, the optimizer, the schedulers and
the epoch, and the sampler shuffles by ``seed + epoch``. It does not restore
the random state that data augmentation draws from, and cannot: that state
lives in the main process (``num_workers=0``) or in worker processes that a
resumed run starts afresh (with ``persistent_workers=True`` they would have
carried it across epochs). So after a resume every random flip or crop comes
out differently, and ELA's masks, which depend on every iteration's attention,
differ from an uninterrupted run's.

The hook makes every random draw of training a function of the seed, the epoch
and a position, never of what ran before:

- each training sample's augmentation: ``dataset[i]`` runs with Python's
  ``random``, numpy's global generator and torch's CPU generator seeded from
  ``(seed, epoch, i)`` (without workers, the main process's states are put
  back afterwards), so it does not matter which process fetches the sample,
  how many workers there are, or whether they persist;
- the main process at the start of every epoch: ``random``, numpy and torch
  (CPU and CUDA) are seeded from ``(seed, epoch, rank)`` (rank only with
  ``randomness.diff_rank_seed``), so randomness in the model (dropout,
  proposal sampling) and whatever ran between epochs (validation) cannot
  carry over;
- the sampler's shuffling seed and the data seed travel in the checkpoint:
  with ``randomness.seed=None`` (mmdet's and mmpretrain's default) mmengine
  builds the resumed run's sampler with a fresh random seed.

What stays out of reach: randomness a dataset or transform draws from its
own generator object (not the global ones), an ``IterableDataset``, a
checkpoint written in the middle of an epoch (mmengine restarts that epoch
from its beginning), and non-deterministic GPU kernels (set
``randomness=dict(deterministic=True)`` for bit-identical GPU runs).
"""
import contextlib
import operator
import random
from typing import Iterator, List

import numpy as np
import torch
from mmengine.dist import broadcast_object_list, get_rank
from mmengine.hooks import Hook
from torch.utils.data import IterableDataset, get_worker_info

from ..registry import HOOKS

_MASK64 = (1 << 64) - 1
# Keep the per-sample and the per-epoch streams apart.
_SAMPLE_STREAM, _EPOCH_STREAM = 0, 1


def seed_words(*entropy: int) -> np.ndarray:
    """Four independent 32-bit words from non-negative integers."""
    return np.random.SeedSequence([e & _MASK64 for e in entropy]) \
        .generate_state(4)


def seed_global_rngs(words: np.ndarray, cuda: bool = False) -> None:
    """Seed Python's ``random``, numpy's global generator and torch's CPU
    generator (and every CUDA device's, if ``cuda``) from ``words``."""
    random.seed(int(words[0]))
    np.random.seed(int(words[1]))
    torch_seed = int(words[2]) | int(words[3]) << 32
    if cuda:
        torch.manual_seed(torch_seed)
    else:
        torch.default_generator.manual_seed(torch_seed)


@contextlib.contextmanager
def seeded_rngs(*entropy: int, restore: bool = True) -> Iterator[None]:
    """Run the body with the global generators seeded from ``entropy``;
    put the caller's states back afterwards if ``restore``."""
    if not restore:
        seed_global_rngs(seed_words(*entropy))
        yield
        return
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed_global_rngs(seed_words(*entropy))
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


class SeededDataset:
    """A map-style dataset whose ``dataset[i]`` draws its randomness from
    ``(seed, epoch, i)`` only.

    Every other attribute is the wrapped dataset's (read and written through),
    so hooks and samplers that use ``metainfo``, ``pipeline`` or
    ``get_data_info`` see no difference. The epoch lives in shared memory:
    worker processes, persistent ones included, read the value the main
    process sets before each epoch's first batch is requested.
    """

    def __init__(self, dataset, seed: int):
        self.__dict__.update(
            dataset=dataset, seed=int(seed),
            _epoch=torch.zeros((), dtype=torch.int64).share_memory_())

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        index = operator.index(index)
        # A worker process draws nothing else; the main process (no workers)
        # gets its training randomness back untouched. Putting numpy's state
        # back is most of the cost (~0.3 ms), so workers skip it.
        with seeded_rngs(self.seed, _SAMPLE_STREAM, int(self._epoch), index,
                         restore=get_worker_info() is None):
            return self.dataset[index]

    def __getattr__(self, name):
        # Only reached for names this wrapper lacks; never for the wrapper's
        # own fields (absent only while unpickling, before __dict__ is set).
        if name in ('dataset', 'seed', '_epoch') or name.startswith('__'):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __setattr__(self, name, value):
        if name in self.__dict__:
            self.__dict__[name] = value
        else:
            setattr(self.dataset, name, value)

    def __repr__(self) -> str:
        return f'SeededDataset(seed={self.seed}, dataset={self.dataset!r})'


def _samplers(loader) -> List:
    """The loader's sampler(s) that shuffle by a ``seed`` attribute."""
    candidates = [getattr(loader, 'sampler', None),
                  getattr(getattr(loader, 'batch_sampler', None), 'sampler',
                          None)]
    found = []
    for sampler in candidates:
        if hasattr(sampler, 'seed') and sampler not in found:
            found.append(sampler)
    return found


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Make ``--resume`` after a crash end exactly as the uninterrupted run.

    Add ``dict(type='ExactResumeHook')`` to ``custom_hooks``. It changes the
    random draws of a run (each is seeded as described in
    :mod:`mmela.hooks.exact_resume_hook`), not their distribution; a run is
    still decided by ``randomness.seed``. Costs about 0.1 ms per sample in a
    worker process, 0.4 ms without workers (where the main process's random
    state is put back after each sample).
    """

    priority = 'VERY_HIGH'  # reseed before any other hook draws in an epoch

    def __init__(self):
        self._data_seed = None
        self._sampler_seeds = None
        self._diff_rank_seed = False

    def before_train(self, runner) -> None:
        loader = runner.train_loop.dataloader
        if self._data_seed is None:  # a fresh run (not resumed)
            # Rank 0's seed: the same on every rank even with
            # diff_rank_seed, so a sample's augmentation does not depend on
            # which rank draws it.
            seed = [runner.seed]
            broadcast_object_list(seed)
            self._data_seed = int(seed[0])
        self._diff_rank_seed = bool(getattr(runner, '_randomness_cfg', {})
                                    .get('diff_rank_seed', False))
        samplers = _samplers(loader)
        if self._sampler_seeds is not None:
            for sampler, seed in zip(samplers, self._sampler_seeds):
                sampler.seed = seed
        if isinstance(loader.dataset, SeededDataset):
            return
        if isinstance(loader.dataset, IterableDataset) or getattr(
                loader, '_iterator', None) is not None:
            runner.logger.warning(
                'ExactResumeHook: the training dataset is an IterableDataset '
                '(or its loader already runs), so its augmentation cannot be '
                'seeded per sample: a resumed run will not replay it exactly')
            return
        # DataLoader refuses a new ``dataset`` once built; nothing has read
        # it yet (no iterator exists), so replacing it is safe.
        object.__setattr__(loader, 'dataset',
                           SeededDataset(loader.dataset, self._data_seed))

    def before_train_epoch(self, runner) -> None:
        dataset = runner.train_loop.dataloader.dataset
        if isinstance(dataset, SeededDataset):
            dataset.set_epoch(runner.epoch)
        rank = get_rank() if self._diff_rank_seed else 0
        seed_global_rngs(
            seed_words(self._data_seed, _EPOCH_STREAM, runner.epoch, rank),
            cuda=torch.cuda.is_available())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['exact_resume'] = dict(
            data_seed=self._data_seed,
            sampler_seeds=[s.seed for s in
                           _samplers(runner.train_loop.dataloader)])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):
            return  # load_from: a new run, with its own seeds
        state = checkpoint.get('exact_resume')
        if state is None:
            runner.logger.warning(
                'ExactResumeHook: the resumed checkpoint was written without '
                'ExactResumeHook, so this run cannot replay the random draws '
                'the interrupted run would have made; from here on they are '
                'seeded per epoch and sample')
            return
        self._data_seed = state['data_seed']
        self._sampler_seeds = state['sampler_seeds']
