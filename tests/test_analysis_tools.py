"""tools/analysis: FLOPs, the speed benchmark and the attention heatmaps,
end to end on the CPU with tiny settings."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

TOOLS = Path(__file__).resolve().parents[1] / 'tools' / 'analysis'


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_get_flops_cifar20_params_match_the_paper_and_masks_cut_flops():
    pytest.importorskip('mmpretrain')
    get_flops = _tool('get_flops')
    rows = get_flops.preset_rows('cifar', depths=[20],
                                 masks=[[[0, 0], [0, 0], [0, 0]]])
    plain, light, ela = rows
    assert [r['method'] for r in rows] == ['ResNet', 'MRLA-L', 'ELA']
    for row in rows:  # CIFAR-100, Table 1
        assert row['params_m'] == pytest.approx(row['paper_params_m'],
                                                abs=0.01)
    assert plain['flops_g'] < light['flops_g']
    # Every retrieval pruned: the FLOPs of the plain network, the
    # parameters of MRLA-L.
    assert ela['model'] == 'ELA (0/6 kept)'
    assert ela['flops_g'] == plain['flops_g']
    assert ela['params_m'] == light['params_m']
    table = get_flops.format_table(rows)
    assert '| ResNet-20 | 32x32, 100 classes | 0.24 | 0.24 |' in table


def test_get_flops_without_fitting_masks_reports_mrla_l():
    pytest.importorskip('mmpretrain')
    get_flops = _tool('get_flops')
    _, light, ela = get_flops.preset_rows('cifar', depths=[20],
                                          masks=[[[1, 0, 1], [1], [1]]])
    assert ela['model'] == 'ELA (no masks: = MRLA-L)'
    assert ela['flops_g'] == light['flops_g']


def test_benchmark_runs_end_to_end_on_cpu(tmp_path):
    benchmark = _tool('benchmark_speed')
    result = benchmark.main([
        '--suite', 'cifar', '--depths', '20', '--batch-size', '4',
        '--steps', '2', '--warmup', '1', '--mask-iters', '2', '--hook-cost',
        '--hook-cost-iters', '1', '--hook-cost-pairs', '1',
        '--out-dir', str(tmp_path)
    ])
    for suffix in ('md', 'json', 'png'):
        assert (tmp_path / f'benchmark_cifar.{suffix}').stat().st_size > 0
    assert json.loads((tmp_path / 'benchmark_cifar.json').read_text()) == \
        json.loads(json.dumps(result))

    (suite, ) = result['suites']
    (workload, ) = suite['workloads']
    rows = {row['method']: row for row in workload['rows']}
    assert list(rows) == list(benchmark.METHODS)
    kept = sum(map(sum, workload['masks']))
    assert rows['ela']['label'] == f'ELA (hook masks, {kept}/6 kept)'
    assert rows['ela']['retrievals_on'] == kept
    assert rows['ela-pruned']['label'] == 'ELA (all pruned, 0/6 kept)'
    assert rows['mrla-l']['label'] == 'MRLA-L (= ELA, all 6/6 kept)'
    for row in rows.values():
        assert len(row['times_ms']) == 2 and row['median_ms'] > 0
        assert row['peak_step_mib'] is None  # CUDA only
        assert row['saved_activations_mib'] > 0
    assert rows['resnet']['vs_resnet'] == 1.0
    assert rows['mrla-b']['vs_mrla-b'] == 1.0
    # Autograd keeps more for layer attention, and nothing extra for
    # pruned retrievals.
    assert rows['mrla-l']['saved_activations_mib'] > \
        rows['resnet']['saved_activations_mib']
    assert rows['ela-pruned']['saved_activations_mib'] == pytest.approx(
        rows['resnet']['saved_activations_mib'], rel=0.05)
    assert set(suite['hook_cost']) >= {'iter_ratio', 'epoch_ratio'}

    markdown = (tmp_path / 'benchmark_cifar.md').read_text()
    for label in ('| ResNet-20 | ResNet |', '| ResNet-20 | MRLA-B |',
                  '| ResNet-20 | MRLA-L (= ELA, all 6/6 kept) |',
                  f'| ResNet-20 | ELA (hook masks, {kept}/6 kept) |',
                  '| ResNet-20 | ELA (all pruned, 0/6 kept) |',
                  'Hook cost (ResNet-20'):
        assert label in markdown


def test_benchmark_takes_masks_from_a_pruning_report(tmp_path):
    benchmark = _tool('benchmark_speed')
    report = tmp_path / 'ela_pruning.json'
    report.write_text(json.dumps([
        dict(masks=[[1, 1], [1, 1], [1, 1]]),
        dict(masks=[[1, 0], [1, 1], [1, 0]]),  # the last one counts
    ]))
    result = benchmark.main([
        '--suite', 'cifar', '--depths', '20', '--batch-size', '2',
        '--steps', '1', '--warmup', '0', '--methods', 'resnet', 'mrla-b',
        'ela', '--masks', str(report), '--out-dir', str(tmp_path)
    ])
    rows = result['suites'][0]['workloads'][0]['rows']
    assert [r['label'] for r in rows] == [
        'ResNet', 'MRLA-B', 'ELA (hook masks, 4/6 kept)']


def test_benchmark_skips_faster_rcnn_on_cpu_by_default(tmp_path):
    benchmark = _tool('benchmark_speed')
    args = benchmark.parse_args(['--suite', 'all'])
    record = benchmark.run_suite('faster-rcnn', args)
    assert 'skipped' in record and '--suite faster-rcnn' in record['skipped']


_CIFAR_CONFIG = """
custom_imports = dict(imports=['mmela'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ELAResNetCIFAR', depth=29, layer_attention='{kind}'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=256),
    data_preprocessor=dict(mean=[125.3, 123.0, 113.9],
                           std=[63.0, 62.1, 66.7], to_rgb=True))
"""


@pytest.mark.parametrize('kind', ['light', 'base'])
def test_visualize_draws_a_fresh_model_with_pruned_blocks(tmp_path, kind):
    pytest.importorskip('mmpretrain')
    visualize = _tool('visualize_layer_attention')
    config = tmp_path / 'cifar_ela.py'
    config.write_text(_CIFAR_CONFIG.format(kind=kind))
    # A checkpoint of the fresh model with one retrieval pruned per stage.
    model = visualize.build_model(str(config))
    model.backbone.set_masks([[1, 0, 1], [1, 1, 0], [1, 1, 1]])
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'ckpt.pth')

    out = tmp_path / 'attention.png'
    matrices = visualize.main([str(config), '--checkpoint',
                               str(tmp_path / 'ckpt.pth'), '--random', '2',
                               '--out', str(out)])
    assert out.stat().st_size > 0
    first, second, third = matrices
    assert np.isnan(first[1]).all() and np.isnan(second[2]).all()
    # Block 2 of stage 1 retrieves from blocks 0 and 2, not from pruned 1.
    assert np.isnan(first[2, 1]) and not np.isnan(first[2, [0, 2]]).any()
    for matrix in matrices:
        assert np.isnan(matrix[np.triu_indices(3, k=1)]).all()
        rows = ~np.isnan(matrix).all(axis=1)
        np.testing.assert_allclose(np.nansum(matrix[rows], axis=1), 1.0,
                                   rtol=1e-5)
    assert not np.isnan(np.tril(third)).any()  # all of stage 3 retrieves
