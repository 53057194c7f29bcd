"""Saturated MRLA-L gates and non-finite distributions (issue 12): the
distribution is defined where its weights vanish, and the hook skips what it
cannot measure instead of dying."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.hooks import Hook

from mmela.hooks import ELAPruningError
from mmela.models import ELAResNetCIFAR
from mmela.models.attention_distribution import light_attention_distributions
from toy_runner import build_runner, read_logs


def _before_fix(decays, gates, head_dim):
    """The formula as it was computed before issue 12 (plain weights, no
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
    """The reproduction of issue 12, ``(0, )``: before, ``ValueError: p must
    be finite`` in the first iteration. ``(0, 1)``: every weight of layer1
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
