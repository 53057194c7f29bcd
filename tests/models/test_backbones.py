"""The ELA backbones: the stock ResNet family plus layer attention.

With ``layer_attention=None`` each ELA class is its stock class (same keys,
bitwise the same outputs); with layer attention it adds only the blocks'
``layer_attention`` submodules. Then shapes, freezing, gradients,
checkpointing, masks and the interface the pruning hook relies on.
"""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.registry import DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

from mmela.models import ELAResNetCIFAR, LayerAttentionResNetBase, \
    eca_kernel_size

mmdet_registry = pytest.importorskip('mmdet.registry')
mmpretrain_registry = pytest.importorskip('mmpretrain.registry')
REGISTRIES = dict(mmdet=mmdet_registry.MODELS,
                  mmpretrain=mmpretrain_registry.MODELS)

DCN = dict(type='DCNv2', deform_groups=1, fallback_on_stride=False)
CONTEXT_BLOCK = [dict(cfg=dict(type='ContextBlock', ratio=1. / 16),
                      stages=(False, True, True, True),
                      position='after_conv3')]
# (codebase, stock type, arguments): what stock configs set.
STOCK = [
    ('mmpretrain', 'ResNet', dict(depth=18, out_indices=(0, 1, 2, 3))),
    ('mmpretrain', 'ResNet', dict(depth=50, drop_path_rate=0.1)),
    ('mmpretrain', 'ResNet', dict(depth=50, frozen_stages=2,
                                  norm_eval=True, style='caffe')),
    ('mmpretrain', 'ResNetV1c', dict(depth=50)),
    ('mmpretrain', 'ResNetV1d', dict(depth=50, num_stages=3,
                                     strides=(1, 2, 2), dilations=(1, 1, 1),
                                     out_indices=(2, ))),
    ('mmpretrain', 'ResNeXt', dict(depth=50, groups=32, width_per_group=4)),
    ('mmpretrain', 'SEResNet', dict(depth=50)),
    ('mmpretrain', 'SEResNeXt', dict(depth=50, groups=32,
                                     width_per_group=4)),
    ('mmpretrain', 'Res2Net', dict(depth=50)),
    ('mmpretrain', 'RegNet', dict(arch='regnetx_400mf')),
    ('mmdet', 'ResNet', dict(depth=50)),
    ('mmdet', 'ResNet', dict(depth=50, conv_cfg=dict(type='ConvWS'),
                             norm_cfg=dict(type='GN', num_groups=32,
                                           requires_grad=True))),
    ('mmdet', 'ResNet', dict(depth=50, dcn=DCN,
                             stage_with_dcn=(False, True, True, True))),
    ('mmdet', 'ResNet', dict(depth=50, plugins=CONTEXT_BLOCK)),
    ('mmdet', 'ResNet', dict(depth=18, base_channels=32, stem_channels=None,
                             strides=(1, 2, 2, 1),
                             dilations=(1, 1, 1, 2))),
    ('mmdet', 'ResNetV1d', dict(depth=50)),
    ('mmdet', 'ResNeXt', dict(depth=50, groups=32, base_width=4)),
    ('mmdet', 'Res2Net', dict(depth=50)),
    ('mmdet', 'RegNet', dict(arch='regnetx_400mf')),
    # mmpretrain's stock CIFAR configs (3x3 stride-1 stem, no max-pool).
    ('mmpretrain', 'ResNet_CIFAR', dict(depth=18)),
]
STOCK_IDS = [f'{c}-{t}-{i}' for i, (c, t, _) in enumerate(STOCK)]


def _build(codebase, type_, **kwargs):
    # The registry builds from the default scope's registry when there is
    # one (another test may have set it): make it this codebase's.
    with DefaultScope.overwrite_default_scope(codebase):
        return REGISTRIES[codebase].build(dict(type=type_, **kwargs))


def _forward(model, x, seed=0):
    torch.manual_seed(seed)  # the same drop-path draws for both models
    with torch.no_grad():
        return model(x)


def _shapes(model):
    return {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize('codebase,type_,kwargs', STOCK, ids=STOCK_IDS)
def test_without_layer_attention_it_is_the_stock_network(codebase, type_,
                                                         kwargs):
    torch.manual_seed(0)
    stock = _build(codebase, type_, **kwargs)
    stock.init_weights()
    ela = _build(codebase, f'ELA{type_}', layer_attention=None, **kwargs)
    assert isinstance(ela, type(stock))
    assert _shapes(ela) == _shapes(stock)
    ela.load_state_dict(stock.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for train in (True, False):
        stock.train(train)
        ela.train(train)
        assert [m.training for m in ela.modules()] == \
            [m.training for m in stock.modules()]
        for ours, theirs in zip(_forward(ela, x), _forward(stock, x)):
            assert torch.equal(ours, theirs)


@pytest.mark.parametrize('codebase,type_,kwargs', STOCK, ids=STOCK_IDS)
def test_layer_attention_adds_only_its_submodules(codebase, type_, kwargs):
    stock = _build(codebase, type_, **kwargs)
    stock.init_weights()
    ela = _build(codebase, f'ELA{type_}', **kwargs)  # 'light' by default
    assert ela.layer_attention == 'light'
    ours, theirs = _shapes(ela), _shapes(stock)
    assert {k: v for k, v in ours.items() if k in theirs} == theirs
    added = set(ours) - set(theirs)
    num_blocks = sum(len(stage) for stage in ela.stages())
    assert all('.layer_attention.' in k for k in added)
    assert len([k for k in added if k.endswith('retrieval_mask')]) == \
        num_blocks
    # A stock checkpoint loads with only the layer attention missing, and
    # the network then starts as exactly the stock network.
    result = ela.load_state_dict(stock.state_dict(), strict=False)
    # (BN layers fill in a missing num_batches_tracked themselves.)
    assert set(result.missing_keys) == {
        k for k in added if not k.endswith('num_batches_tracked')}
    assert not result.unexpected_keys
    stock.eval()
    ela.eval()
    x = torch.randn(2, 3, 64, 64)
    for ours, theirs in zip(_forward(ela, x), _forward(stock, x)):
        assert torch.equal(ours, theirs)


def test_same_name_follows_the_codebase():
    from mmdet.models.backbones import ResNet as MMDetResNet
    from mmpretrain.models.backbones import ResNet as MMPretrainResNet
    det = REGISTRIES['mmdet'].get('ELAResNet')
    cls = REGISTRIES['mmpretrain'].get('ELAResNet')
    assert issubclass(det, MMDetResNet) and not issubclass(
        det, MMPretrainResNet)
    assert issubclass(cls, MMPretrainResNet) and not issubclass(
        cls, MMDetResNet)
    # The stock defaults come along: mmdet's differ from mmpretrain's.
    assert det(depth=50).norm_eval and det(depth=50).out_indices == \
        (0, 1, 2, 3)
    assert not cls(depth=50).norm_eval and cls(depth=50).out_indices == (3, )


def _params_and_grads(model, x):
    out = model(x)
    sum(o.square().mean() for o in out).backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()
                 if p.grad is not None}


@pytest.mark.parametrize('codebase', ['mmdet', 'mmpretrain'])
@pytest.mark.parametrize('kind', ['light', 'base'])
def test_with_cp_gives_the_same_outputs_and_gradients(codebase, kind):
    torch.manual_seed(0)
    kwargs = dict(depth=18, layer_attention=kind, out_indices=(0, 1, 2, 3),
                  norm_eval=False)
    plain = _build(codebase, 'ELAResNet', **kwargs).double()
    plain.init_weights()
    checkpointed = _build(codebase, 'ELAResNet', with_cp=True,
                          **kwargs).double()
    checkpointed.load_state_dict(plain.state_dict())
    # A pruned block runs the stock block (and its own checkpointing).
    masks = [[1, 0], [0, 1], [1, 1], [1, 0]]
    plain.set_masks(masks)
    checkpointed.set_masks(masks)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    outs, grads = _params_and_grads(plain, x)
    cp_outs, cp_grads = _params_and_grads(checkpointed, x)
    for a, b in zip(outs, cp_outs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert grads.keys() == cp_grads.keys()
    # Layer attention's own parameters and the downsample convs, whose
    # output is the identity it retrieves from, get their gradients.
    assert 'layer2.0.downsample.0.weight' in grads
    assert 'layer3.0.layer_attention.value.weight' in grads
    for name in grads:
        torch.testing.assert_close(grads[name], cp_grads[name], rtol=0,
                                   atol=1e-10, msg=name)


def _flops(model, x):
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


@pytest.mark.parametrize('kind', [None, 'light', 'base'])
def test_cifar_shapes_for_every_out_index(kind):
    model = ELAResNetCIFAR(20, layer_attention=kind, out_indices=(0, 1, 2))
    outs = model(torch.randn(2, 3, 32, 32))
    assert [o.shape for o in outs] == [(2, 64, 32, 32), (2, 128, 16, 16),
                                       (2, 256, 8, 8)]
    (last, ) = ELAResNetCIFAR(20, layer_attention=kind,
                              out_indices=(-1, ))(torch.randn(1, 3, 32, 32))
    assert last.shape == (1, 256, 8, 8)


def _resnet_params(module):
    return [p for n, p in module.named_parameters()
            if 'layer_attention' not in n]


@pytest.mark.parametrize('codebase', ['mmdet', 'mmpretrain'])
def test_frozen_stages_keep_their_layer_attention_training(codebase):
    model = _build(codebase, 'ELAResNet', depth=50, frozen_stages=1,
                   norm_eval=False)
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
    assert cifar.layer2[0].layer_attention.training


def test_norm_eval_covers_the_layer_attention_norms():
    model = _build('mmdet', 'ELAResNet', depth=18)  # mmdet: norm_eval=True
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(not m.training for m in norms)
    assert not model.layer1[0].layer_attention.norm.training
    assert model.layer1[0].conv1.training


def test_layer_attention_norm_follows_norm_cfg_and_always_trains():
    model = _build('mmdet', 'ELAResNet', depth=50, norm_cfg=dict(
        type='GN', num_groups=32, requires_grad=False))
    norm = model.layer2[0].layer_attention.norm
    assert isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == 32
    assert norm.weight.requires_grad
    assert not model.layer2[0].gn1.weight.requires_grad


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
    model = _build('mmpretrain', 'ELAResNet', depth=50)
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
        lambda module, args: seen.append(args[2].retrievals))
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
    model = _build('mmpretrain', 'ELAResNet', depth=50, init_cfg=dict(
        type='Pretrained', checkpoint=str(path)))
    result = model.load_state_dict(torch.load(path), strict=False)
    assert result.missing_keys and all(
        '.layer_attention.' in k for k in result.missing_keys)
    assert sorted(result.unexpected_keys) == ['fc.bias', 'fc.weight']
    model.init_weights()  # through mmengine's Pretrained init
    torch.testing.assert_close(model.layer3[2].conv2.weight,
                               reference.layer3[2].conv2.weight)
    assert model.layer1[0].layer_attention.retrieval_on


def test_bad_layer_attention_is_rejected_before_the_network_is_built():
    for codebase in ('mmdet', 'mmpretrain'):
        with pytest.raises(ValueError, match=r"layer_attention must be one "
                           r"of \[None, 'light', 'base'\], got 'heavy'"):
            _build(codebase, 'ELAResNet', depth=50, layer_attention='heavy')


@pytest.mark.parametrize('kwargs,match', [
    (dict(depth=21), r'depth must be 9n \+ 2'),
    (dict(depth=20, layer_attention='Light'), 'layer_attention must be'),
    (dict(depth=20, out_indices=(3, )), r'out_indices .* \[0, 2\]'),
    (dict(depth=20, frozen_stages=4), r'frozen_stages must be in \[-1, 3\]'),
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
    model = _build('mmdet', 'ELAResNet', depth=18, layer_attention=None)
    assert isinstance(model, LayerAttentionResNetBase)
    with pytest.raises(RuntimeError, match='layer_attention=None'):
        model.get_masks()


@pytest.mark.parametrize('codebase', ['mmdet', 'mmpretrain'])
@pytest.mark.parametrize('kind', [None, 'light'])
def test_zero_init_residual_zeroes_the_last_norm_unless_pretrained(
        codebase, kind):
    # mmdet zero-inits through the blocks' init_cfg, which the stage must
    # pass on; mmpretrain in ResNet.init_weights.
    model = _build(codebase, 'ELAResNet', depth=50, layer_attention=kind)
    model.init_weights()
    last_norms = [block.bn3.weight for stage in model.stages()
                  for block in stage]
    assert len(last_norms) == 16
    assert all(w.abs().sum() == 0 for w in last_norms)
    assert model.layer2[1].bn2.weight.abs().sum() > 0

def test_cifar_zero_init_residual_is_off_by_default():
    cifar = ELAResNetCIFAR(20)
    cifar.init_weights()
    assert cifar.layer1[1].bn3.weight.abs().sum() > 0
    cifar = ELAResNetCIFAR(20, zero_init_residual=True)
    cifar.init_weights()
    assert cifar.layer1[1].bn3.weight.abs().sum() == 0


def test_a_resnet_checkpoint_starts_the_network_as_that_resnet(tmp_path):
    torchvision = pytest.importorskip('torchvision')
    reference = torchvision.models.resnet50().eval()
    path = tmp_path / 'resnet50.pth'
    torch.save(reference.state_dict(), path)
    model = _build('mmdet', 'ELAResNet', depth=50, out_indices=(3, ),
                   init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    trunk = torch.nn.Sequential(*list(reference.children())[:-2])
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], trunk(x))
    # Trained from scratch, the retrieval's norm starts at 1, as in MRLA.
    scratch = _build('mmdet', 'ELAResNet', depth=50)
    scratch.init_weights()
    assert torch.all(scratch.layer1[0].layer_attention.norm.weight == 1)


def test_attention_drop_path_reaches_every_retrieval():
    model = ELAResNetCIFAR(20, attention_drop_path_rate=0.2)
    rates = [b.layer_attention.drop_path.p for s in model.stages() for b in s]
    assert rates == [0.2] * 6
    default = ELAResNetCIFAR(20).layer1[0].layer_attention.drop_path
    assert getattr(default, 'p', 0) == 0


def test_regnet_widths_that_32_does_not_divide_get_narrower_heads():
    # regnetx_1.6gf: stage widths 72, 168, 408, 912.
    model = _build('mmdet', 'ELARegNet', arch='regnetx_1.6gf')
    dims = [stage[0].layer_attention.head_dim for stage in model.stages()]
    assert dims == [24, 28, 24, 24]
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [72, 168, 408, 912]
    assert [s[0].layer_attention.head_dim for s in _build(
        'mmpretrain', 'ELAResNet', depth=50).stages()] == [32] * 4


@pytest.mark.slow
@pytest.mark.parametrize('codebase,config', [
    ('mmdet', 'dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py'),
    ('mmdet', 'gn+ws/faster-rcnn_r50_fpn_gn-ws-all_1x_coco.py'),
    ('mmpretrain', 'resnet/resnetv1d50_8xb32_in1k.py'),
])
def test_stock_configs_build_with_their_ela_backbone(codebase, config):
    tool = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                    'tools', 'misc', 'check_stock_configs.py')
    result = subprocess.run(
        [sys.executable, tool, codebase, '--filter', config, '--limit', '1'],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'{codebase} {config}: built: ' in result.stdout
    assert '1 target configs: 1 built, 0 failed' in result.stdout


def test_a_stock_cifar_config_builds_and_runs_with_ela_resnet_cifar():
    from mmengine.hub import get_config
    cfg = get_config('mmpretrain::resnet/resnet18_8xb16_cifar10.py')
    cfg.merge_from_dict({'model.backbone.type': 'ELAResNet_CIFAR'})
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = REGISTRIES['mmpretrain'].build(cfg.model).eval()
    backbone = model.backbone
    assert type(backbone).__name__ == 'ELAResNet_CIFAR'
    assert backbone.num_retrievals() == dict(on=8, total=8)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (features, ) = backbone(x)
        logits = model(x, mode='tensor')
    # The CIFAR stem (3x3, stride 1, no max-pool): 32 / 8 = 4, not 1.
    assert features.shape == (2, 512, 4, 4)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
