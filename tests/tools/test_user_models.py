"""The analysis tools on a user's own model: the input shape comes from the
model and its config (a 1-channel Fashion-MNIST ResNet), ``--cfg-options``
changes the config, and the speed benchmark times a config's backbone and
refuses masks of another network in one line."""
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

pytest.importorskip('mmpretrain')

ROOT = Path(__file__).resolve().parents[2]
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


def _one_error_line(capsys, info):
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith('error: ')
    return err


# ------------------------------------------------------------ input shape
@pytest.mark.parametrize('config,shape', [
    ('fashion_mnist/resnet38_ela_fashion_mnist.py', (1, 28, 28)),
    ('cifar/resnet20_ela_cifar10.py', (3, 32, 32)),
    ('imagenet/resnet50_ela_8xb32_in1k.py', (3, 224, 224)),
])
def test_input_shape_comes_from_the_backbone_and_the_pipeline(config, shape):
    from mmela.utils.input_shape import input_shape
    assert input_shape(*_built(str(ROOT / 'configs' / config))) == shape


def test_input_channels_follow_in_channels_and_refuse_another_preprocessor():
    from mmela.utils.input_shape import input_channels
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
    from mmela.utils.input_shape import pipeline_size
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


# ------------------------------------------------------------- benchmark
def test_benchmark_times_a_config_backbone(tmp_path):
    benchmark = _tool('benchmark_speed')
    result = benchmark.main([
        '--config', FASHION_MNIST, '--cfg-options', 'model.backbone.depth=20',
        '--batch-size', '2', '--steps', '1', '--warmup', '0',
        '--mask-iters', '1', '--no-op-count', '--out-dir', str(tmp_path)])
    (record, ) = result['suites']
    assert record['suite'] == 'resnet38_ela_fashion_mnist'
    assert (record['channels'], record['image_size']) == (1, (28, 28))
    (workload, ) = record['workloads']
    assert workload['name'] == 'ELAResNetCIFAR-20'
    rows = {row['method']: row for row in workload['rows']}
    assert list(rows) == list(benchmark.METHODS)
    assert rows['resnet']['retrievals_total'] is None
    assert rows['ela-pruned']['label'] == 'ELA (all pruned, 0/6 kept)'
    # The config's hook settings, on images of the config's shape.
    assert 'synthetic 28x28 images, alpha=5.0, beta=1.0, tau=0.3' in \
        workload['mask_source']
    written = tmp_path / 'benchmark_resnet38_ela_fashion_mnist.json'
    assert json.loads(written.read_text())['suites'][0]['channels'] == 1


@pytest.mark.parametrize('suite', [False, True])
def test_benchmark_refuses_masks_of_another_network_in_one_line(
        tmp_path, capsys, suite):
    benchmark = _tool('benchmark_speed')
    report = tmp_path / 'ela_pruning.json'
    report.write_text(json.dumps([dict(masks=[[1, 0], [1, 1], [0, 1]])]))
    source = ['--suite', 'cifar', '--depths', '20', '56'] if suite else \
        ['--config', FASHION_MNIST]
    with pytest.raises(SystemExit) as info:
        benchmark.main([*source, '--masks', str(report), '--batch-size', '2',
                        '--steps', '1', '--warmup', '0',
                        '--out-dir', str(tmp_path)])
    err = _one_error_line(capsys, info)
    model = 'ResNet-56' if suite else 'ELAResNetCIFAR-38'
    assert f'--masks: {report} has masks of [2, 2, 2] blocks per stage, ' \
        f'but {model} has [{6 if suite else 4}, ' in err
    assert not list(tmp_path.glob('benchmark_*'))  # nothing timed


def test_benchmark_config_errors_are_one_line(tmp_path, capsys):
    benchmark = _tool('benchmark_speed')
    common = ['--steps', '1', '--out-dir', str(tmp_path)]
    stock = tmp_path / 'stock_resnet18.py'
    stock.write_text(
        f'_base_ = {FASHION_MNIST!r}\n'
        "model = dict(backbone=dict(_delete_=True, type='ResNet_CIFAR', "
        'depth=18, in_channels=1))\n')
    with pytest.raises(SystemExit) as info:
        benchmark.main(['--config', str(stock), *common])
    assert 'the backbone ResNet_CIFAR has no layer attention to time; use ' \
        "its ELA variant (e.g. type='ELAResNet', 'ELAResNet_CIFAR'" in \
        _one_error_line(capsys, info)
    (tmp_path / 'bad.json').write_text('{}')
    with pytest.raises(SystemExit) as info:
        benchmark.main(['--config', FASHION_MNIST, '--masks',
                        str(tmp_path / 'bad.json'), *common])
    assert 'is not a readable ela_pruning.json' in \
        _one_error_line(capsys, info)
    with pytest.raises(SystemExit) as info:
        benchmark.parse_args(['--config', FASHION_MNIST, '--suite', 'cifar'])
    assert info.value.code == 2
