"""ELAPruningHook: windows, the decision, distributed runs, faults (a
diverged loss, windows without measurements) and saturated gates.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.runner import load_checkpoint

from mmela.hooks import ELAPruningError, ELAPruningHook, parse_windows
from mmela.models import ELAResNetCIFAR
from mmela.models.attention_distribution import light_attention_distributions
from mmela.pruning import keep_mask, mapped_divergences
from toy_runner import build_runner, free_port, read_logs


# ----------------------------------------------------------------------
# ELAPruningHook in real (tiny) mmengine training runs.


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/


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


# ----------------------------------------------------------------------
# ELAPruningHook under faults: a diverging loss, a resume with changed
# windows, and what it logs at the start of training and names stages by.


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


# ----------------------------------------------------------------------
# Saturated MRLA-L gates and non-finite distributions: the
# distribution is defined where its weights vanish, and the hook skips what it
# cannot measure instead of dying.


def _before_fix(decays, gates, head_dim):
    """The plain formula (weights normalised directly, no log-space
    fallback): normal inputs must still give exactly these numbers."""
    sigma = torch.stack([g.repeat_interleave(head_dim) for g in gates])
    lam = torch.stack(list(decays))
    out = []
    for last in range(len(gates)):
        later = lam[1:last + 1].flip(0).cumprod(0).flip(0)
        decay = torch.cat([later, torch.ones_like(lam[:1])])
        weights = (decay * sigma[:last + 1]).mean(dim=1)
        out.append(weights / weights.sum())
    return out


def _inputs(scores, heads=2, head_dim=4, seed=0):
    """Decays, batch-mean gates and their logs, as the module records them,
    from per-block scores ``(blocks, batch, heads)``."""
    gen = torch.Generator().manual_seed(seed)
    decays = [torch.rand(heads * head_dim, generator=gen) + 0.5
              for _ in scores]
    gates = [torch.sigmoid(s).mean(0) for s in scores]
    log_gates = [torch.logsumexp(F.logsigmoid(s), 0) - math.log(len(s))
                 for s in scores]
    return decays, gates, log_gates


def test_normal_inputs_give_the_numbers_of_before_bit_for_bit():
    gen = torch.Generator().manual_seed(1)
    for blocks in (1, 2, 6, 23):
        scores = torch.randn(blocks, 8, 2, generator=gen) * 3
        decays, gates, log_gates = _inputs(scores)
        expected = _before_fix(decays, gates, 4)
        for got in (light_attention_distributions(decays, gates, 4),
                    light_attention_distributions(decays, gates, 4,
                                                  log_gates=log_gates)):
            assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_a_single_block_is_one_whatever_its_gate():
    for gate in (0.0, float('nan'), 1e-40):
        (dist, ) = light_attention_distributions(
            [torch.ones(8)], [torch.full((2, ), gate)], 4)
        assert dist.tolist() == [1.0]


def test_saturated_gates_in_log_space_match_the_exact_ratio():
    # Scores near -120 and -110: float32 sigmoids are exactly 0, so the
    # plain weights are 0/0; float64 still holds them.
    scores = torch.tensor([-120.0, -110.0, -115.0])[:, None, None] \
        .expand(3, 4, 2).clone()
    scores[:, 1] -= 2.0  # the batch is not uniform
    decays, gates, log_gates = _inputs(scores)
    assert all((g == 0).all() for g in gates)
    got = light_attention_distributions(decays, gates, 4, log_gates=log_gates)
    sigma64 = [torch.sigmoid(s.double()).mean(0) for s in scores]
    expected = _before_fix([d.double() for d in decays], sigma64, 4)
    assert got[0].tolist() == [1.0]
    for a, b in zip(got, expected):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, rtol=1e-6, atol=1e-30)


def test_without_log_gates_one_vanished_gate_weighs_zero_and_all_is_nan():
    decays, gates, _ = _inputs(torch.zeros(3, 4, 2))
    gates[0] = torch.zeros(2)  # the first block's gate underflowed
    dists = light_attention_distributions(decays, gates, 4)
    assert dists[0].tolist() == [1.0]
    assert dists[1][0] == 0 and dists[1][1] == 1
    gates[1] = torch.zeros(2)  # both blocks before block 2: no information
    dists = light_attention_distributions(decays, gates, 4)
    assert torch.isnan(dists[1]).all()
    assert torch.isfinite(dists[2]).all() and dists[2][2] == 1


def test_underflowing_decay_products_fall_back_to_log_space():
    # |lambda| = 1e-25: a product of two is 0 in float32, and the later
    # blocks' gates are 0, so the last block's plain weights are all 0.
    decays = [torch.full((8, ), 1e-25) for _ in range(3)]
    gates = [torch.full((2, ), 0.5), torch.zeros(2), torch.zeros(2)]
    assert torch.isnan(_before_fix(decays, gates, 4)[2]).all()
    dists = light_attention_distributions(decays, gates, 4)
    assert dists[2].tolist() == [1.0, 0.0, 0.0]


# --------------------------------------------------------------- hook runs
def saturate_gates(backbone, blocks=(0, )):
    """Make the scores of ``layer1``'s ``blocks`` hugely negative (q = -k,
    large), so their float32 gates are exactly 0; their gradients are then 0
    too, so training keeps them there."""
    for block in blocks:
        qk = backbone.layer1[block].layer_attention.qk
        with torch.no_grad():
            qk.weight[0] = 30.0
            qk.weight[1] = -30.0


class SaturateGates(Hook):
    """Saturates gates of ``layer1`` before training; records them."""
    priority = 'VERY_HIGH'

    def __init__(self, blocks):
        self.blocks = blocks
        self.gates = []

    def before_train(self, runner):
        saturate_gates(runner.model.backbone, self.blocks)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        stage = runner.model.backbone.layer1
        self.gates += [stage[b].layer_attention.record['gate'].clone()
                       for b in self.blocks]


@pytest.mark.parametrize('blocks', [(0, ), (0, 1)])
def test_saturated_gates_run_finishes_and_reports_no_skips(tmp_path,
                                                           blocks):
    """``(0, )``: saturated gates, which once ended the first iteration with
    ``ValueError: p must be finite``. ``(0, 1)``: every weight of layer1
    block 1 underflows in float32; the recorded ``log_gate`` still ranks
    them."""
    probe = SaturateGates(blocks)
    runner = build_runner(work_dir=tmp_path, max_epochs=1, depth=20,
                          hooks=[dict(type='ELAPruningHook', windows=[1])])
    runner.register_hook(probe)
    runner.train()
    assert len(probe.gates) == 4 * len(blocks)
    assert all((g == 0).all() for g in probe.gates)
    (report, ) = json.loads((tmp_path / 'ela_pruning.json').read_text())
    assert report['iterations'] == 4 and report['skipped'] == 0
    assert all(math.isfinite(p['kl']) and p['skipped'] == 0
               for p in report['pairs'])


def test_saturated_block_distribution_is_one():
    model = ELAResNetCIFAR(20)
    saturate_gates(model)
    model.set_attention_recording(True)
    model(torch.rand(2, 3, 32, 32))
    dists = model.get_attention_distributions()
    assert dists[0][0][1].tolist() == [1.0]
    assert torch.isfinite(dists[0][1][1]).all()


class PoisonDistribution(Hook):
    """Replaces the backbone's distributions with NaN for ``(stage, block)``
    in the given 0-based window iterations (None: all)."""

    def __init__(self, stage, block, iterations=None):
        self.stage, self.block, self.iterations = stage, block, iterations
        self.calls = 0

    def before_train(self, runner):
        backbone = runner.model.backbone
        real = backbone.get_attention_distributions

        def poisoned():
            stages = real()
            if self.iterations is None or self.calls in self.iterations:
                stages[self.stage] = [
                    (b, torch.full_like(d, float('nan')) if b == self.block
                     else d) for b, d in stages[self.stage]]
            self.calls += 1
            return stages

        backbone.get_attention_distributions = poisoned


def test_a_non_finite_distribution_is_skipped_and_counted(tmp_path):
    runner = build_runner(work_dir=tmp_path, max_epochs=1, depth=38,
                          hooks=[dict(type='ELAPruningHook', windows=[1])])
    runner.register_hook(PoisonDistribution(stage=1, block=2,
                                            iterations=[1, 3]))
    runner.train()
    (report, ) = json.loads((tmp_path / 'ela_pruning.json').read_text())
    skipped = {(p['stage'], p['block']): p['skipped'] for p in report['pairs']}
    # Block 2 of layer2 is in pairs (1, 2) and (2, 3): 2 iterations each.
    assert skipped.pop(('layer2', 2)) == 2 and skipped.pop(('layer2', 3)) == 2
    assert set(skipped.values()) == {0}
    assert report['skipped'] == 4 and report['iterations'] == 4
    assert all(math.isfinite(p['kl']) for p in report['pairs'])
    log = read_logs(tmp_path)
    assert '4 pair measurements skipped as not finite' in log
    assert 'epoch 1, iteration 2/4 (iteration 2 of the run): the attention ' \
        'distribution of layer2 block 2 is not finite' in log


def test_a_window_without_any_usable_distribution_stops_in_one_line(tmp_path):
    runner = build_runner(work_dir=tmp_path, max_epochs=2, depth=38,
                          hooks=[dict(type='ELAPruningHook', windows=[2])])
    runner.register_hook(PoisonDistribution(stage=2, block=1))
    with pytest.raises(ELAPruningError) as error:
        runner.train()
    message = str(error.value)
    assert '\n' not in message
    assert message.startswith('ELAPruningHook: window 2 yielded no usable '
                              'measurement of layer3 block 1, layer3 block 2')
    assert 'not finite in all 4 iterations' in message
    assert not (tmp_path / 'ela_pruning.json').exists()
