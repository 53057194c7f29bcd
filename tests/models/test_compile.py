"""torch.compile of the layer-attention backbones (CPU, inductor): the same
outputs as eager, and a pruned block's retrieval stays skipped."""
import copy

import pytest
import torch

from mmela.models import ELAResNetCIFAR

pytestmark = pytest.mark.slow

MASKS = [[1, 0], [1, 1], [1, 0]]  # layer1.1 and layer3.1 pruned


def _model(kind):
    torch.manual_seed(0)
    model = ELAResNetCIFAR(20, layer_attention=kind)
    model.init_weights()  # retrievals enter the output with weight 1
    model.eval()
    model.set_masks(MASKS)
    return model


def _perturb(module):
    with torch.no_grad():
        module.weight.mul_(-3.0).add_(0.5)


@pytest.mark.parametrize('kind', ['light', 'base'])
def test_compiled_backbone_matches_eager_and_skips_pruned_blocks(kind):
    model = _model(kind)
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = compiled(x)[-1]
        torch.testing.assert_close(out, model(x)[-1], rtol=1e-4, atol=1e-4)

        # A pruned block's value conv does not take part: changing its
        # weights changes nothing, compiled or not.
        _perturb(model.layer1[1].layer_attention.value)
        torch.testing.assert_close(compiled(x)[-1], out, rtol=0, atol=0)
        # While changing a retrieving block's does (the check can fail).
        _perturb(model.layer1[0].layer_attention.value)
        changed = compiled(x)[-1]
        assert not torch.allclose(changed, out, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(changed, model(x)[-1], rtol=1e-4,
                                   atol=1e-4)


def test_compiled_backbone_follows_new_masks():
    """Masks set after compiling (as the pruning hook does mid-training)
    are honoured: the mask mirror is guarded, so the graph is rebuilt."""
    model = _model('light')
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        compiled(x)
        model.set_masks([[1, 0], [1, 0], [1, 0]])
        out = compiled(x)[-1]
        torch.testing.assert_close(out, model(x)[-1], rtol=1e-4, atol=1e-4)
        _perturb(model.layer2[1].layer_attention.value)
        torch.testing.assert_close(compiled(x)[-1], out, rtol=0, atol=0)


@pytest.mark.parametrize('kind', ['light', 'base'])
def test_compiled_training_step_matches_eager(kind):
    # float64: inductor reorders sums, and in float32 that alone moves the
    # gradients through training-mode BN at batch 4 by up to ~2%.
    eager = _model(kind).double().train()
    compiled_copy = copy.deepcopy(eager)
    compiled = torch.compile(compiled_copy)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    eager(x)[-1].square().mean().backward()
    compiled(x)[-1].square().mean().backward()
    grads = {n: p.grad for n, p in compiled_copy.named_parameters()}
    for name, param in eager.named_parameters():
        if param.grad is None:  # pruned: no gradient in either
            assert name.startswith(('layer1.1.layer_attention',
                                    'layer3.1.layer_attention'))
            assert grads[name] is None, name
        else:
            torch.testing.assert_close(grads[name], param.grad, rtol=1e-7,
                                       atol=1e-9, msg=name)


# ---------------------------------------------- through mmengine's Runner
def _graphs() -> int:
    return torch._dynamo.utils.counters['stats']['unique_graphs']


def _runner_losses(tmp_path, compile_cfg=None):
    """Train ELAResNetCIFAR-11 (one block per stage) for 6 iterations with
    mmengine's Runner and ``compile=compile_cfg``; before iteration 4 prune
    ``layer2``'s retrieval (as the pruning hook would). ``lr=0``: every
    iteration sees the same weights, so the losses compare across runs.
    Returns the losses and the number of graphs compiled so far after each
    iteration."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from mmela.testing import QuadrantImages, ToyELAClassifier

    losses, frames = [], []

    class Record(Hook):

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if runner.iter == 0:  # retrievals enter with weight 1
                for module in runner.model.modules():
                    if hasattr(module, 'retrieval_on'):
                        torch.nn.init.ones_(module.norm.weight)
            if runner.iter == 3:
                runner.model.backbone.set_masks([[1], [0], [1]])

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            losses.append(float(outputs['loss'].detach()))
            frames.append(_graphs())

    torch.manual_seed(0)  # the same weights in every run
    model = ToyELAClassifier(dict(type='ELAResNetCIFAR', depth=11,
                                  layer_attention='light'))
    runner = Runner(
        model=model,
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=QuadrantImages(2, 32),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2, num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        train_cfg=dict(by_epoch=True, max_epochs=6),
        default_hooks=dict(checkpoint=None,
                           logger=dict(type='LoggerHook', interval=10**9)),
        custom_hooks=[Record()], randomness=dict(seed=0),
        default_scope='mmengine', log_level='WARNING',
        cfg=dict(compile=compile_cfg))  # a config's ``compile = ...``
    runner.train()
    return losses, frames


def test_mmengine_compile_matches_eager_and_recompiles_only_for_masks(
        tmp_path):
    """``compile=...`` in a config compiles the model's ``train_step``: the
    same losses as eager, and new graphs only when the masks change."""
    torch._dynamo.reset()
    eager, _ = _runner_losses(tmp_path / 'eager')
    compiled, frames = _runner_losses(tmp_path / 'compiled',
                                      dict(backend='inductor'))
    assert len(compiled) == len(eager) == 6
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    assert eager[3] != eager[2]  # pruning changed the loss
    # The first two iterations compile (the second adds a graph for state
    # the first step created); iteration 3 (same masks) compiles nothing,
    # iteration 4 (new masks) does, and iterations 5 and 6 reuse its graphs.
    assert frames[0] > 0
    assert frames[2] == frames[1]
    assert frames[3] > frames[2]
    assert frames[5] == frames[4] == frames[3]
