"""ELAResNet / ELAResNetCIFAR: shapes, freezing, gradients, masks and the
layer-attention interface the pruning hook relies on."""
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

from mmela.models import ELAResNet, ELAResNetCIFAR, eca_kernel_size


def _flops(model, x):
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


@pytest.mark.parametrize('kind', [None, 'light', 'base'])
@pytest.mark.parametrize('depth,channels', [(18, [64, 128, 256, 512]),
                                            (50, [256, 512, 1024, 2048])])
def test_resnet_shapes_for_every_out_index(kind, depth, channels):
    model = ELAResNet(depth, layer_attention=kind, out_indices=(0, 1, 2, 3))
    outs = model(torch.randn(2, 3, 64, 64))
    assert [o.shape for o in outs] == [
        (2, c, 64 // s, 64 // s) for c, s in zip(channels, (4, 8, 16, 32))]
    for index in range(4):
        single = ELAResNet(depth, layer_attention=kind, out_indices=(index, ))
        (out, ) = single(torch.randn(1, 3, 64, 64))
        assert out.shape[1] == channels[index]


@pytest.mark.parametrize('kind', [None, 'light', 'base'])
def test_cifar_shapes_for_every_out_index(kind):
    model = ELAResNetCIFAR(20, layer_attention=kind, out_indices=(0, 1, 2))
    outs = model(torch.randn(2, 3, 32, 32))
    assert [o.shape for o in outs] == [(2, 64, 32, 32), (2, 128, 16, 16),
                                       (2, 256, 8, 8)]
    (last, ) = ELAResNetCIFAR(20, layer_attention=kind,
                              out_indices=(-1, ))(torch.randn(1, 3, 32, 32))
    assert last.shape == (1, 256, 8, 8)


def test_caffe_style_moves_the_stride_to_the_first_conv():
    model = ELAResNet(50, style='caffe')
    assert model.layer2[0].conv1.stride == (2, 2)
    assert model.layer2[0].conv2.stride == (1, 1)
    assert ELAResNet(50).layer2[0].conv2.stride == (2, 2)


def _resnet_params(module):
    return [p for n, p in module.named_parameters()
            if 'layer_attention' not in n]


def test_frozen_stages_freeze_stem_and_stages_like_mmdet():
    model = ELAResNet(50, frozen_stages=1)
    model.train()
    for module in (model.conv1, model.bn1, model.layer1):
        assert all(not p.requires_grad for p in _resnet_params(module))
    assert not model.bn1.training and not model.layer1[0].bn2.training
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert model.layer2.training
    # Layer attention is not in a ResNet checkpoint: it keeps training.
    attention = model.layer1[2].layer_attention
    assert attention.training
    assert all(p.requires_grad for p in attention.parameters())
    cifar = ELAResNetCIFAR(20, frozen_stages=2)
    cifar.train()
    assert not any(p.requires_grad for p in _resnet_params(cifar.layer2))
    assert all(p.requires_grad for p in cifar.layer3.parameters())


def test_norm_eval_keeps_every_batchnorm_in_eval_mode():
    model = ELAResNet(18, norm_eval=True)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(not m.training for m in norms)
    # The layer attention's own norm layers are covered too.
    assert not model.layer1[0].layer_attention.norm.training
    assert model.layer1[0].conv1.training


@pytest.mark.parametrize('kind', ['light', 'base'])
def test_gradients_reach_every_layer_attention_parameter(kind):
    model = ELAResNetCIFAR(20, layer_attention=kind)
    model.init_weights()
    model(torch.randn(4, 3, 32, 32))[0].square().mean().backward()
    names = [n for n, _ in model.named_parameters() if 'layer_attention' in n]
    assert len(names) == 6 * (4 if kind == 'base' else 5)
    for name, param in model.named_parameters():
        if 'layer_attention' in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_layer_attention_parameters_per_block_match_the_spec():
    # Wq and Wk (k weights each), depthwise Wv (9C), lambda (C), BN (2C).
    model = ELAResNet(50)
    for stage, channels in zip(model.stages(), (256, 512, 1024, 2048)):
        k = eca_kernel_size(channels)
        for block in stage:
            count = sum(p.numel() for p in block.layer_attention.parameters())
            assert count == 2 * k + 9 * channels + channels + 2 * channels
    assert [eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)] == \
        [3, 5, 5, 5, 5, 7]


@pytest.mark.parametrize('kind', ['light', 'base'])
def test_attention_distributions_have_l_entries_and_sum_to_one(kind):
    model = ELAResNetCIFAR(56, layer_attention=kind)
    model.set_attention_recording(True)
    model(torch.randn(3, 3, 32, 32))
    stages = model.get_attention_distributions()
    assert len(stages) == 3
    for stage in stages:
        assert [i for i, _ in stage] == list(range(6))
        for position, (_, dist) in enumerate(stage, start=1):
            assert dist.shape == (position, )
            assert torch.all(dist >= 0)
            assert dist.sum().item() == pytest.approx(1.0, abs=1e-5)
    # With blocks pruned, the k-th retrieving block has k entries.
    masks = model.get_masks()
    masks[0][2] = masks[0][4] = False
    model.set_masks(masks)
    model(torch.randn(3, 3, 32, 32))
    first = model.get_attention_distributions()[0]
    assert [i for i, _ in first] == [0, 1, 3, 5]
    assert [len(d) for _, d in first] == [1, 2, 3, 4]


def test_recording_is_off_by_default_and_stores_nothing():
    model = ELAResNetCIFAR(20, layer_attention='light')
    model(torch.randn(2, 3, 32, 32))
    modules = [b.layer_attention for s in model.stages() for b in s]
    assert all(not m.recording and not m.record for m in modules)
    with pytest.raises(RuntimeError, match='set_attention_recording'):
        model.get_attention_distributions()


def test_light_distribution_follows_the_unrolled_recurrence():
    model = ELAResNetCIFAR(20, layer_attention='light', head_dim=32)
    model.set_attention_recording(True)
    model(torch.randn(2, 3, 32, 32))
    (_, first), (_, second) = model.get_attention_distributions()[0]
    blocks = model.layer1
    gate0 = blocks[0].layer_attention.record['gate'].repeat_interleave(32)
    gate1 = blocks[1].layer_attention.record['gate'].repeat_interleave(32)
    lam1 = blocks[1].layer_attention.lambda_.detach().abs().flatten()
    weights = torch.stack([(lam1 * gate0).mean(), gate1.mean()])
    torch.testing.assert_close(second, weights / weights.sum())
    torch.testing.assert_close(first, torch.ones(1))


def test_masks_round_trip_through_a_checkpoint(tmp_path):
    model = ELAResNetCIFAR(20, layer_attention='light')
    masks = [torch.tensor([True, False]), torch.tensor([True, True]),
             torch.tensor([True, False])]
    model.set_masks(masks)
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'ckpt.pth')
    assert 'layer1.1.layer_attention.retrieval_mask' in model.state_dict()

    fresh = ELAResNetCIFAR(20, layer_attention='light')
    from mmengine.runner import load_checkpoint
    load_checkpoint(fresh, str(tmp_path / 'ckpt.pth'))
    assert [m.tolist() for m in fresh.get_masks()] == \
        [m.tolist() for m in masks]
    # The forward pass follows the loaded mask, not the one it was built with.
    calls = []
    fresh.layer1[1].layer_attention.value.register_forward_hook(
        lambda *_: calls.append(1))
    fresh(torch.randn(1, 3, 32, 32))
    assert calls == []


@pytest.mark.parametrize('kind', ['light', 'base'])
def test_masked_block_does_less_work(kind):
    x = torch.randn(2, 3, 32, 32)
    model = ELAResNetCIFAR(20, layer_attention=kind).eval()
    full = _flops(model, x)
    calls = []
    block = model.layer2[1].layer_attention
    for part in (block.qk, block.value, block.norm):
        part.register_forward_hook(lambda *_: calls.append(1))
    model(x)
    assert len(calls) == 3
    model.set_masks([[1, 1], [1, 0], [1, 1]])
    calls.clear()
    pruned_one = _flops(model, x)
    assert calls == [] and pruned_one < full
    # A network whose retrievals are all pruned does what a plain one does.
    model.set_masks([[0, 0], [0, 0], [0, 0]])
    plain = ELAResNetCIFAR(20, layer_attention=None).eval()
    assert _flops(model, x) == _flops(plain, x)


def test_base_drops_a_masked_block_from_keys_and_values():
    model = ELAResNetCIFAR(38, layer_attention='base').eval()  # 4 blocks
    seen = []
    model.layer1[3].layer_attention.register_forward_pre_hook(
        lambda module, args: seen.append(len(args[2])))
    model(torch.randn(1, 3, 32, 32))
    model.set_masks([[1, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    model(torch.randn(1, 3, 32, 32))
    # Block 3 sees the keys/values of blocks 0-2, then only of 0 and 2.
    assert seen == [3, 2]


def test_resnet_loads_a_torchvision_checkpoint_with_only_attention_missing(
        tmp_path):
    torchvision = pytest.importorskip('torchvision')
    reference = torchvision.models.resnet50()
    path = tmp_path / 'resnet50.pth'
    torch.save(reference.state_dict(), path)
    model = ELAResNet(50, init_cfg=dict(type='Pretrained',
                                        checkpoint=str(path)))
    result = model.load_state_dict(torch.load(path), strict=False)
    assert result.missing_keys and all(
        '.layer_attention.' in k for k in result.missing_keys)
    assert sorted(result.unexpected_keys) == ['fc.bias', 'fc.weight']
    model.init_weights()  # through mmengine's Pretrained init
    torch.testing.assert_close(model.layer3[2].conv2.weight,
                               reference.layer3[2].conv2.weight)
    assert model.layer1[0].layer_attention.retrieval_on


@pytest.mark.parametrize('kwargs,match', [
    (dict(depth=42), r'depth must be one of \[18, 34, 50, 101, 152\]'),
    (dict(depth=50, layer_attention='heavy'),
     r"layer_attention must be one of \[None, 'light', 'base'\]"),
    (dict(depth=50, out_indices=(4, )), r'out_indices .* \[0, 3\]'),
    (dict(depth=50, num_stages=5), r'num_stages must be in \[1, 4\]'),
    (dict(depth=50, style='tf'), r"style must be one of \['pytorch'"),
    (dict(depth=50, norm_cfg=dict(type='LN')), r"norm_cfg\['type'\]"),
])
def test_resnet_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ELAResNet(**kwargs)


@pytest.mark.parametrize('kwargs,match', [
    (dict(depth=21), r'depth must be 9n \+ 2'),
    (dict(depth=20, layer_attention='Light'), 'layer_attention must be'),
    (dict(depth=20, out_indices=(3, )), r'out_indices .* \[0, 2\]'),
])
def test_cifar_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ELAResNetCIFAR(**kwargs)


def test_masks_of_the_wrong_length_are_rejected():
    model = ELAResNetCIFAR(20)
    with pytest.raises(ValueError, match=r'lengths \[2, 2, 2\], got \[2, 3\]'):
        model.set_masks([[1, 1], [1, 1, 1]])
    with pytest.raises(ValueError, match=r'got \[2, 2, 3\]'):
        model.set_masks([[1, 1], [1, 1], [1, 1, 1]])


def test_plain_backbone_has_no_retrievals():
    model = ELAResNet(18, layer_attention=None)
    with pytest.raises(RuntimeError, match='layer_attention=None'):
        model.get_masks()


def test_zero_init_residual_zeroes_the_last_norm_unless_pretrained():
    model = ELAResNet(50)
    model.init_weights()
    assert model.layer2[1].bn3.weight.abs().sum() == 0
    assert model.layer2[1].bn2.weight.abs().sum() > 0
    cifar = ELAResNetCIFAR(20)  # zero_init_residual defaults to False
    cifar.init_weights()
    assert cifar.layer1[1].bn3.weight.abs().sum() > 0


def test_a_resnet_checkpoint_starts_the_network_as_that_resnet(tmp_path):
    torchvision = pytest.importorskip('torchvision')
    reference = torchvision.models.resnet50().eval()
    path = tmp_path / 'resnet50.pth'
    torch.save(reference.state_dict(), path)
    model = ELAResNet(50, init_cfg=dict(type='Pretrained',
                                        checkpoint=str(path)))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    trunk = torch.nn.Sequential(*list(reference.children())[:-2])
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], trunk(x))
    # Trained from scratch, the retrieval's norm starts at 1, as in MRLA.
    scratch = ELAResNet(50)
    scratch.init_weights()
    assert torch.all(scratch.layer1[0].layer_attention.norm.weight == 1)
