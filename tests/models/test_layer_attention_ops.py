"""Kernel launches of layer attention, counted with
:mod:`mmela.utils.op_count` on one training step of ELAResNetCIFAR."""
import pytest
import torch
import torch.nn.functional as F

from mmela.models import ELAResNetCIFAR
from mmela.utils.op_count import KernelOpCounter, count_kernel_ops


def step_ops(depth, kind, masks=None, batch=2):
    """Ops of the second training step (SGD, momentum, foreach=True)."""
    torch.manual_seed(0)
    model = ELAResNetCIFAR(depth, layer_attention=kind)
    if masks == 'none':
        model.set_masks([[0] * len(m) for m in model.get_masks()])
    head = torch.nn.Linear(model.feat_dim, 10)
    optimizer = torch.optim.SGD(
        list(model.parameters()) + list(head.parameters()), lr=0.1,
        momentum=0.9, weight_decay=1e-4, foreach=True)
    x = torch.randn(batch, 3, 32, 32)
    labels = torch.arange(batch) % 10

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = head(model(x)[-1].mean((2, 3)))
        F.cross_entropy(logits, labels).backward()
        optimizer.step()

    step()
    return count_kernel_ops(step).total


def test_counter_excludes_views_and_counts_each_kernel():
    x = torch.randn(4, 4)
    with KernelOpCounter() as ops:
        x.view(16).unsqueeze(0).expand(3, 16).t()
        (x + 1).sum()
    assert ops.total == 2
    assert ops.counts == {'aten.add': 1, 'aten.sum': 1}


def test_counts_do_not_depend_on_the_batch_size():
    assert step_ops(11, 'light', batch=2) == step_ops(11, 'light', batch=5)


def test_layer_attention_adds_few_kernels_per_block():
    plain = step_ops(20, None)
    light, base = step_ops(20, 'light'), step_ops(20, 'base')
    blocks = 6
    # At most 21 extra ops per MRLA-L block, plus one per stage for the
    # norms' batch counters (27 for a plain bottleneck block, which has
    # three convs and norms).
    assert (light - plain - 3) / blocks <= 21
    assert (base - plain) / blocks <= 33
    # A fully pruned network launches what a plain one does.
    assert step_ops(20, 'light', masks='none') == plain


@pytest.mark.slow
def test_mrla_b_kernels_do_not_grow_with_the_stage_depth():
    """ResNet-20 has 2 blocks per stage, ResNet-56 6: the extra ops per
    MRLA-B block are the same (they grew with every earlier block before:
    one multiply-add per earlier value, forward and backward)."""
    per_block = {}
    for depth, blocks in ((20, 6), (56, 18)):
        plain = step_ops(depth, None)
        per_block[depth] = (step_ops(depth, 'base') - plain) / blocks
    # The first block of a stage allocates and frees the stage's buffers.
    assert per_block[56] <= per_block[20]
    assert per_block[20] - per_block[56] < 2
