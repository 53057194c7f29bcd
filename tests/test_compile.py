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
