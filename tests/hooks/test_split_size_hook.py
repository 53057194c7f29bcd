"""SplitSizeHook: one log line per split, and a clear error on a size that
is not the expected one.

The runner here is a stand-in with the attributes the hook reads; the hook
inside a real mmengine Runner is exercised by the Fashion-MNIST smoke
experiment (tests/e2e/test_fashion_mnist.py, marked slow, run in CI), whose
summary checks the logged sizes."""
from types import SimpleNamespace

import pytest

from torch.utils.data import IterableDataset

from mmela.hooks import SeededDataset, SplitSizeHook


class Samples(list):
    """A dataset of ``n`` samples with an mmengine-style ``test_mode``."""

    def __init__(self, n, test_mode=None):
        super().__init__(range(n))
        if test_mode is not None:
            self.test_mode = test_mode


def fake_runner(train=None, val=None, test=None, logged=None):
    def loader(dataset):
        return None if dataset is None else SimpleNamespace(dataset=dataset)
    return SimpleNamespace(
        train_dataloader=loader(train), val_dataloader=loader(val),
        test_dataloader=loader(test),
        val_loop=None if val is None else object(),
        logger=SimpleNamespace(info=(logged if logged is not None else
                                     []).append))


def test_logs_train_val_and_test_sizes():
    logged = []
    runner = fake_runner(Samples(12, False), Samples(5, False),
                         Samples(7, True), logged=logged)
    hook = SplitSizeHook()
    hook.before_train(runner)
    hook.before_test(runner)
    assert 'train split: Samples, 12 samples (test_mode=False)' in logged
    assert 'val split: Samples, 5 samples (test_mode=False)' in logged
    assert 'test split: Samples, 7 samples (test_mode=True)' in logged


def test_without_val_loop_logs_train_only():
    logged = []
    SplitSizeHook().before_train(fake_runner(Samples(3), logged=logged))
    assert logged == ['train split: Samples, 3 samples']


def test_logs_the_dataset_inside_exact_resume_hooks_wrapper():
    logged = []
    SplitSizeHook().before_train(fake_runner(
        SeededDataset(Samples(4, False), seed=0), logged=logged))
    assert logged == ['train split: Samples, 4 samples (test_mode=False)']


class Stream(IterableDataset):

    def __iter__(self):
        return iter(range(3))


def test_a_dataset_without_length_is_logged_and_fails_only_if_expected():
    logged = []
    SplitSizeHook().before_train(fake_runner(Stream(), logged=logged))
    assert logged == ['train split: Stream, unknown number of samples']
    with pytest.raises(ValueError, match='train split has an unknown number '
                       'of samples, expected 3'):
        SplitSizeHook(dict(train=3)).before_train(fake_runner(Stream()))


def test_a_size_other_than_expected_stops_the_run():
    hook = SplitSizeHook(expected=dict(train=12, test=10000))
    hook.before_train(fake_runner(Samples(12)))  # as expected
    with pytest.raises(ValueError, match=r'^test split has 60000 samples, '
                       r'expected 10000: check test_dataloader.dataset'):
        hook.before_test(fake_runner(test=Samples(60000)))


@pytest.mark.parametrize('expected, match', [
    (dict(tset=1), r"unknown splits \['tset'\]"),
    (dict(train=-1), r"expected\['train'\] must be a non-negative int"),
    (dict(val='10'), r"expected\['val'\] must be a non-negative int"),
])
def test_bad_expected_is_refused(expected, match):
    with pytest.raises(ValueError, match=match):
        SplitSizeHook(expected=expected)
