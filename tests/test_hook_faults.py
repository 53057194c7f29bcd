"""ELAPruningHook under faults: a diverging loss, a resume with changed
windows (issue 10, items 3 and 6), and what it logs at the start of training
and names stages by (items 9 and 11)."""
import json

import pytest
import torch
from mmengine.hooks import Hook

from mmela.hooks import ELAPruningError
from toy_runner import build_runner, read_logs


def _hook(**kwargs):
    return dict(type='ELAPruningHook', **kwargs)


class PoisonWeights(Hook):
    """Sets the head's weights to NaN after the given 1-based iteration of
    the run, as a diverging step would."""
    priority = 'LOWEST'

    def __init__(self, after_iteration):
        self.after_iteration = after_iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == self.after_iteration:
            with torch.no_grad():
                runner.model.head.weight.fill_(float('nan'))


def test_a_diverged_loss_stops_the_window_in_one_line(tmp_path):
    """Before: ``ValueError: p must be finite`` from inside the KL maths."""
    runner = build_runner(work_dir=tmp_path, max_epochs=2, depth=20,
                          hooks=[_hook(windows=[2])])
    runner.register_hook(PoisonWeights(after_iteration=2))
    with pytest.raises(ELAPruningError) as error:
        runner.train()
    message = str(error.value)
    assert '\n' not in message
    assert message.startswith(
        'ELAPruningHook: the training loss diverged: loss is nan at epoch 2, '
        'iteration 1/4 (iteration 5 of the run)')
    assert 'window 2 cannot be measured' in message


class SkippedStep(Hook):
    """Reports a NaN loss for one iteration while the weights stay finite,
    as AMP's loss scaler does for a step it skips."""
    priority = 'ABOVE_NORMAL'  # before ELAPruningHook reads the outputs

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter == 1:
            outputs['loss'] = torch.tensor(float('nan'))


def test_a_nan_loss_with_finite_weights_is_not_divergence(tmp_path):
    runner = build_runner(work_dir=tmp_path, max_epochs=1, depth=20,
                          hooks=[_hook(windows=[1])])
    runner.register_hook(SkippedStep())
    runner.train()
    (report, ) = json.loads((tmp_path / 'ela_pruning.json').read_text())
    assert report['iterations'] == 4 and report['skipped'] == 0


class StopAfterEpoch(Hook):
    priority = 'LOWEST'  # after the checkpoint of the epoch is written

    def __init__(self, epoch):
        self.epoch = epoch

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == self.epoch:
            raise KeyboardInterrupt('simulated interruption')


def _interrupt_then_resume(tmp_path, windows, resumed_windows, max_epochs=5):
    runner = build_runner(work_dir=tmp_path, max_epochs=max_epochs,
                          hooks=[_hook(windows=windows)])
    runner.register_hook(StopAfterEpoch(1))
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    build_runner(work_dir=tmp_path, max_epochs=max_epochs, resume=True,
                 hooks=[_hook(windows=resumed_windows)]).train()
    return json.loads((tmp_path / 'ela_pruning.json').read_text())


def test_resuming_with_other_windows_discards_the_old_windows_sums(tmp_path):
    """Before: window 4-5 reported 12 iterations, 4 of them from epoch 1."""
    (report, ) = _interrupt_then_resume(tmp_path, [(1, 3)], [(4, 5)])
    assert report['window'] == [4, 5] and report['iterations'] == 8
    log = read_logs(tmp_path)
    assert ('the checkpoint was written after epoch 1, inside window 1-3 (4 '
            'iterations measured), which the configured windows 4-5 do not '
            'continue; those measurements are discarded') in log


def test_resuming_with_a_longer_window_continues_it(tmp_path):
    (report, ) = _interrupt_then_resume(tmp_path, [(1, 2)], [(1, 3)])
    assert report['window'] == [1, 3] and report['iterations'] == 12
    assert 'discarded' not in read_logs(tmp_path)


def test_resuming_past_a_new_window_says_it_is_skipped(tmp_path):
    reports = _interrupt_then_resume(tmp_path, [3], [1, (2, 3), 4])
    assert [r['window'] for r in reports] == [[2, 3], [4, 4]]
    # Window 2-3 was resumed at its start: nothing is missing from it.
    assert reports[0]['iterations'] == 8
    log = read_logs(tmp_path)
    assert 'window 1 ends at or before epoch 1, where the resumed checkpoint ' \
        'was written, and was not measured by the run that wrote it; it is ' \
        'skipped' in log


def test_start_of_training_log_and_stage_names(tmp_path):
    build_runner(work_dir=tmp_path, max_epochs=2, depth=38,
                 hooks=[_hook(windows=[1, 2], method='fixed',
                              num_pruned=2)]).train()
    log = read_logs(tmp_path)
    assert ('ELAPruningHook: windows (epochs) 1, 2; method=fixed, tau=0.2, '
            'num_pruned=2; retrievals on: 12 of 12 (layer1 4/4, layer2 4/4, '
            'layer3 4/4)') in log
    reports = json.loads((tmp_path / 'ela_pruning.json').read_text())
    assert all(r['stages'] == ['layer1', 'layer2', 'layer3']
               for r in reports)
    assert {p['stage'] for p in reports[0]['pairs']} == \
        {'layer1', 'layer2', 'layer3'}
    table = log[log.index('ELA pruning, window epochs 1-1'):]
    assert '  layer1     1' in table and '  layer3     3' in table
