"""ELAPruningHook in real (tiny) mmengine training runs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from mmengine.hooks import Hook
from mmengine.runner import load_checkpoint

from mmela.hooks import ELAPruningHook, parse_windows
from mmela.models import ELAResNetCIFAR
from mmela.pruning import keep_mask, mapped_divergences
from toy_runner import build_runner, free_port

HERE = os.path.dirname(__file__)


class Probe(Hook):
    """Records masks and recording flags, and with ``count_values`` how often
    each retrieval's value conv runs; can stop the run after an epoch (after
    the checkpoint is written) to simulate an interruption.

    Counting hooks the value convs, which moves layer attention off its
    fused autograd functions onto plain operators (same maths, other float
    rounding): a run compared bit for bit with another must not count."""
    priority = 'LOWEST'

    def __init__(self, stop_after_epoch=None, count_values=False):
        self.masks_before_epoch = {}
        self.recording_in_epoch = {}
        self.masks_in_epoch = {}
        self.value_calls = {}
        self.stop_after_epoch = stop_after_epoch
        self.count_values = count_values

    def before_train_epoch(self, runner):
        backbone = runner.model.backbone
        epoch = runner.epoch + 1
        self.masks_before_epoch[epoch] = [m.tolist()
                                          for m in backbone.get_masks()]
        self.value_calls[epoch] = 0
        if self.count_values and not hasattr(self, '_hooked'):
            for stage in backbone.stages():
                for block in stage:
                    block.layer_attention.value.register_forward_hook(
                        self._count)
            self._hooked = True

    def _count(self, module, args, output):
        self.value_calls[self._epoch] += 1

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._epoch = runner.epoch + 1

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        backbone = runner.model.backbone
        epoch = runner.epoch + 1
        self.recording_in_epoch.setdefault(epoch, set()).update(
            b.layer_attention.recording for s in backbone.stages() for b in s)
        self.masks_in_epoch.setdefault(epoch, []).append(
            [m.tolist() for m in backbone.get_masks()])

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == self.stop_after_epoch:
            raise KeyboardInterrupt('simulated interruption')


def _hook(**kwargs):
    return dict(type='ELAPruningHook', **kwargs)


def _run(work_dir, windows, max_epochs=3, probe=None, resume=False,
         **hook_kwargs):
    runner = build_runner(work_dir=work_dir, max_epochs=max_epochs,
                          depth=38, resume=resume,
                          hooks=[_hook(windows=windows, **hook_kwargs)])
    if probe is not None:
        runner.register_hook(probe)
    runner.train()
    return runner


def test_window_on_epoch_one_prunes_at_its_end_and_only_then(tmp_path):
    probe = Probe(count_values=True)
    runner = _run(tmp_path, windows=[1], probe=probe)
    backbone = runner.model.backbone
    all_on = [[True] * 4] * 3

    # Recording only inside the window; masks unchanged until its end.
    assert probe.recording_in_epoch == {1: {True}, 2: {False}, 3: {False}}
    assert all(m == all_on for m in probe.masks_in_epoch[1])
    final = [m.tolist() for m in backbone.get_masks()]
    assert final != all_on
    assert probe.masks_before_epoch[2] == final
    assert probe.masks_before_epoch[3] == final
    # First blocks are never pruned.
    assert all(stage[0] for stage in final)

    # The JSON report matches the masks and the pure functions.
    (report, ) = json.loads((tmp_path / 'ela_pruning.json').read_text())
    assert report['window'] == [1, 1] and report['iterations'] == 4
    assert report['masks'] == [[int(x) for x in m] for m in final]
    assert len(report['pairs']) == 9  # 3 per stage of 4 blocks
    kl = np.array([p['kl'] for p in report['pairs']])
    keep = keep_mask(kl, 'ebqm', 0.2, gamma=0.5, alpha=2.0, beta=5.0)
    np.testing.assert_array_equal(keep, [p['kept'] for p in report['pairs']])
    np.testing.assert_allclose(mapped_divergences(kl),
                               [p['mapped'] for p in report['pairs']])
    assert report['stages'] == ['layer1', 'layer2', 'layer3']
    for pair in report['pairs']:
        stage = report['stages'].index(pair['stage'])
        assert final[stage][pair['block']] == pair['kept']
    assert report['retrievals_on'] == sum(map(sum, final))
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]

    # Pruned retrievals no longer run: 12 blocks x 4 iterations in epoch 1.
    pruned = 12 - report['retrievals_on']
    assert probe.value_calls[1] == 12 * 4
    assert probe.value_calls[2] == (12 - pruned) * 4

    # Checkpoints carry the masks; loading one for testing prunes the same.
    fresh = ELAResNetCIFAR(38)
    load_checkpoint(fresh, str(tmp_path / 'epoch_1.pth'),
                    revise_keys=[(r'^backbone\.', '')], strict=False)
    assert [m.tolist() for m in fresh.get_masks()] == final


@pytest.mark.slow
@pytest.mark.parametrize('stop_after', [1, 3])
def test_resume_ends_with_the_masks_of_an_uninterrupted_run(
        tmp_path, stop_after):
    windows, epochs = [(1, 2), 4], 4
    full = _run(tmp_path / 'full', windows, max_epochs=epochs)
    expected = json.loads((tmp_path / 'full/ela_pruning.json').read_text())

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / 'cut', windows, max_epochs=epochs,
             probe=Probe(stop_after_epoch=stop_after))
    resumed = _run(tmp_path / 'cut', windows, max_epochs=epochs, resume=True)
    got = json.loads((tmp_path / 'cut/ela_pruning.json').read_text())

    assert [m.tolist() for m in resumed.model.backbone.get_masks()] == \
        [m.tolist() for m in full.model.backbone.get_masks()]
    assert [r['masks'] for r in got] == [r['masks'] for r in expected]
    assert [r['iterations'] for r in got] == [8, 4]
    for a, b in zip(got, expected):
        np.testing.assert_allclose([p['kl'] for p in a['pairs']],
                                   [p['kl'] for p in b['pairs']], rtol=1e-5)


def test_fixed_method_prunes_num_pruned_more_per_window(tmp_path):
    runner = _run(tmp_path, windows=[1, 2], max_epochs=2, method='fixed',
                  num_pruned=2)
    reports = json.loads((tmp_path / 'ela_pruning.json').read_text())
    assert [r['retrievals_on'] for r in reports] == [10, 8]
    # The second window measured only the pairs of still-retrieving blocks.
    assert len(reports[1]['pairs']) == 9 - 2
    assert runner.model.backbone.num_retrievals() == dict(on=8, total=12)


def test_load_from_keeps_masks_but_not_the_old_runs_progress(tmp_path):
    first = _run(tmp_path / 'first', windows=[1], max_epochs=1)
    masks = [m.tolist() for m in first.model.backbone.get_masks()]
    runner = build_runner(work_dir=tmp_path / 'second', max_epochs=1,
                          depth=38, hooks=[_hook(windows=[1])])
    runner._load_from = str(tmp_path / 'first/epoch_1.pth')
    runner.train()
    reports = json.loads((tmp_path / 'second/ela_pruning.json').read_text())
    assert len(reports) == 1 and reports[0]['iterations'] == 4
    # The loaded masks were the starting point: pruned ones stay pruned.
    for old, new in zip(masks, reports[0]['masks']):
        assert all(n <= o for o, n in zip(old, new))


@pytest.mark.parametrize('windows,match', [
    ([(1, 3), (3, 5)], 'must not overlap'),
    ([7, 1], 'in order'),
    ([(0, 2)], '1-based'),
    ([(3, 2)], 'first_epoch <= last_epoch'),
    ([], 'non-empty'),
    ([(1, 2, 3)], r'\(first_epoch, last_epoch\) pair'),
])
def test_bad_windows(windows, match):
    with pytest.raises(ValueError, match=match):
        parse_windows(windows)


def test_bad_method_settings_fail_when_the_hook_is_built():
    with pytest.raises(ValueError, match='method must be one of'):
        ELAPruningHook(windows=[1], method='magic')
    with pytest.raises(ValueError, match='gamma must be in'):
        ELAPruningHook(windows=[1], gamma=0)
    with pytest.raises(ValueError, match='num_pruned'):
        ELAPruningHook(windows=[1], method='fixed')
    with pytest.raises(ValueError, match='eps must be'):
        ELAPruningHook(windows=[1], eps=0.0)


def test_window_past_max_epochs_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match=r'\(4, 4\) ends after the last epoch '
                                         r'\(train_cfg.max_epochs=3\)'):
        _run(tmp_path, windows=[1, 4], max_epochs=3)
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.pth')]


def test_backbone_without_layer_attention_is_rejected(tmp_path):
    runner = build_runner(work_dir=tmp_path, max_epochs=1,
                          layer_attention=None,
                          hooks=[_hook(windows=[1])])
    with pytest.raises(ValueError, match='ELAResNetCIFAR with '
                                         'layer_attention=None'):
        runner.train()


def test_iteration_based_training_is_rejected(tmp_path):
    from mmengine.runner import Runner

    from toy_runner import mmela_config
    cfg = mmela_config(work_dir=tmp_path, hooks=[_hook(windows=[1])])
    cfg.train_cfg = dict(by_epoch=False, max_iters=4)
    cfg.default_hooks.checkpoint.by_epoch = False
    with pytest.raises(ValueError, match='epoch-based training only'):
        Runner.from_cfg(cfg).train()


@pytest.mark.slow
def test_two_processes_with_gloo_apply_identical_masks(tmp_path):
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep +
               os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
           '2', '--master_port', str(free_port()),
           os.path.join(HERE, 'dist_pruning_worker.py'), str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f'rank{r}.json').read_text())
             for r in (0, 1)]
    assert ranks[0]['masks'] == ranks[1]['masks']
    # The window's mean KL covers both ranks' iterations (all_reduce):
    # 16 images, batch 4, 2 ranks -> 2 iterations per rank.
    (report, ) = json.loads((tmp_path / 'ela_pruning.json').read_text())
    assert report['iterations'] == 4
    assert ranks[0]['retrievals_on'] == 12 - 3
    assert ranks[0]['epochs_done'] == ranks[1]['epochs_done'] == 3
    assert not ranks[0]['find_unused_parameters']
    # Weights stay in sync across ranks after training with pruned blocks.
    assert ranks[0]['weight_checksum'] == pytest.approx(
        ranks[1]['weight_checksum'], rel=1e-6)
