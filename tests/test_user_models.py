"""The analysis tools on a user's own model: the input shape comes from the
model and its config (a 1-channel Fashion-MNIST ResNet), and
``--cfg-options`` changes the config."""
import importlib
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

pytest.importorskip('mmpretrain')

ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST = str(ROOT / 'configs' / 'fashion_mnist' /
                    'resnet38_ela_fashion_mnist.py')


def _tool(name):
    return importlib.import_module(f'mmela.cli.{name}')


def _built(config, **options):
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options)
    init_default_scope(cfg.default_scope)
    return cfg, MODELS.build(cfg.model)


# ------------------------------------------------------------ input shape
@pytest.mark.parametrize('config,shape', [
    ('fashion_mnist/resnet38_ela_fashion_mnist.py', (1, 28, 28)),
    ('cifar/resnet20_ela_cifar10.py', (3, 32, 32)),
    ('imagenet/resnet50_ela_8xb32_in1k.py', (3, 224, 224)),
])
def test_input_shape_comes_from_the_backbone_and_the_pipeline(config, shape):
    from mmela.benchmark.workloads import input_shape
    assert input_shape(*_built(str(ROOT / 'configs' / config))) == shape


def test_input_channels_follow_in_channels_and_refuse_another_preprocessor():
    from mmela.benchmark.workloads import input_channels
    _, model = _built(FASHION_MNIST, **{'model.backbone.in_channels': 3})
    assert input_channels(model) == 3  # a 1-value mean serves 3 channels
    _, model = _built(FASHION_MNIST, **{
        'model.data_preprocessor.mean': [1., 2., 3.],
        'model.data_preprocessor.std': [1., 2., 3.]})
    with pytest.raises(ValueError, match='normalises 3 channels .* takes '
                       r'1-channel images \(in_channels=1\)'):
        input_channels(model)


@pytest.mark.parametrize('dataset,size', [
    # mmcv's Resize and CenterCrop: (w, h); mmpretrain's crops: (h, w).
    (dict(type='ImageNet', pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='ResizeEdge', scale=256, edge='short'),
        dict(type='CenterCrop', crop_size=(200, 100))]), (100, 200)),
    (dict(type='ImageNet', pipeline=[
        dict(type='RandomResizedCrop', scale=(96, 64))]), (96, 64)),
    (dict(type='CocoDataset', pipeline=[
        dict(type='Resize', scale=(1333, 800), keep_ratio=True)]),
     (800, 1333)),
    (dict(type='mmpretrain.CIFAR100', pipeline=[
        dict(type='Resize', scale=(64, 48))]), (48, 64)),
    (dict(type='MNIST', pipeline=[dict(type='Resize', scale_factor=2.0)]),
     (56, 56)),
    (dict(type='MNIST', pipeline=[
        dict(type='Resize', scale=(100, 50), keep_ratio=True)]), (50, 50)),
    (dict(type='RepeatDataset', times=2,
          dataset=dict(type='FashionMNIST', pipeline=[])), (28, 28)),
    (dict(type='ImageNet', pipeline=[dict(type='PackInputs')]), None),
])
def test_pipeline_size(dataset, size):
    from mmela.benchmark.workloads import pipeline_size
    cfg = Config(dict(test_dataloader=dict(dataset=dataset)))
    assert pipeline_size(cfg) == size


# -------------------------------------------------- get_flops, visualize
def test_get_flops_counts_a_1_channel_config_with_cfg_options(capsys):
    get_flops = _tool('get_flops')
    (row, ) = get_flops.main([FASHION_MNIST])
    assert row['input'] == '28x28, 1-channel' and row['flops_g'] > 0
    assert '| 28x28, 1-channel |' in capsys.readouterr().out
    # Options and configs in any order.
    (small, ) = get_flops.main(['--cfg-options', 'model.backbone.depth=20',
                                FASHION_MNIST, '--shape', '32', '32'])
    assert small['input'] == '32x32, 1-channel'
    assert small['params_m'] < row['params_m']
    assert small['model'].endswith('(6/6 retrievals kept)')


def test_visualize_draws_a_1_channel_config_with_cfg_options(tmp_path):
    import mmcv
    visualize = _tool('visualize_layer_attention')
    out = tmp_path / 'attention.png'
    matrices = visualize.main([
        FASHION_MNIST, '--random', '2', '--out', str(out), '--cfg-options',
        'model.backbone.layer_attention=base', 'model.backbone.depth=20'])
    assert out.stat().st_size > 0
    assert [m.shape for m in matrices] == [(2, 2)] * 3  # ResNet-20
    # Colour image files are read in grey for a 1-channel model.
    mmcv.imwrite(np.full((40, 30, 3), 200, np.uint8), str(tmp_path / 'a.png'))
    matrices = visualize.main([FASHION_MNIST, '--images',
                               str(tmp_path / 'a.png'), '--out', str(out)])
    assert [m.shape for m in matrices] == [(4, 4)] * 3  # ResNet-38
