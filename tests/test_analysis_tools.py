"""tools/analysis: FLOPs, the speed benchmark and the attention heatmaps,
end to end on the CPU with tiny settings."""
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

TOOLS = Path(__file__).resolve().parents[1] / 'tools' / 'analysis'


def _tool(name):
    """The tool's code: ``tools/analysis/<name>.py`` runs
    ``mmela.cli.<name>.main``."""
    return importlib.import_module(f'mmela.cli.{name}')


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


def test_benchmark_plot_gives_every_method_its_own_colour():
    from mmela.benchmark.report import PLOT_STYLES
    from mmela.benchmark.workloads import METHODS
    assert set(PLOT_STYLES) == set(METHODS)
    colours = [colour for colour, _, _ in PLOT_STYLES.values()]
    assert len(set(colours)) == len(colours)


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


# ----------------------------------------- issue 10 items 9, 10, 12; issue 12
def _cifar20(tmp_path):
    config = tmp_path / 'resnet20_ela.py'
    config.write_text(_CIFAR_CONFIG.format(kind='light').replace(
        'depth=29', 'depth=20').replace('in_channels=256', 'in_channels=64'))
    return config


def _saturate_first_gate(model):
    """``layer1`` block 0's query and key weights of opposite sign and large:
    every score is far below -100, the gate sigmoid(score) is exactly 0."""
    attention = next(m for m in model.backbone.modules() if hasattr(m, 'qk'))
    with torch.no_grad():
        attention.qk.weight[0].fill_(60.0)
        attention.qk.weight[1].fill_(-60.0)


def test_visualize_shows_a_saturated_gate_and_writes_next_to_the_checkpoint(
        tmp_path, monkeypatch):
    pytest.importorskip('mmpretrain')
    visualize = _tool('visualize_layer_attention')
    config = _cifar20(tmp_path)
    model = visualize.build_model(str(config))
    _saturate_first_gate(model)
    run_dir = tmp_path / 'work_dirs' / 'run'
    run_dir.mkdir(parents=True)
    torch.save(dict(state_dict=model.state_dict()), run_dir / 'epoch_5.pth')
    monkeypatch.chdir(tmp_path)  # the figure must not land here

    matrices = visualize.main([str(config), '--checkpoint',
                               str(run_dir / 'epoch_5.pth'), '--random', '2'])
    out = run_dir / 'epoch_5_layer_attention.png'
    assert out.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'resnet20_ela.py', 'work_dirs']
    layer1 = matrices[0]
    masks = [[True] * 2] * 3  # ResNet-20: 2 bottlenecks per stage
    # Block 0 retrieves (its mask is on): shown with a value or as n/a.
    assert np.isfinite(layer1[0, 0]) or \
        visualize.undefined_rows(layer1, masks[0]) == [0]
    fig = visualize.draw(matrices, masks, ['layer1', 'layer2', 'layer3'],
                         None, str(tmp_path / 'again.png'))
    ax = fig.axes[0]
    assert ax.get_title() == 'layer1\n2/2 retrieving'
    cell_texts = {(t.get_position(), t.get_text()) for t in ax.texts}
    assert any(pos == (0, 0) and text for pos, text in cell_texts)


def test_visualize_marks_undefined_rows_and_thins_deep_stages(tmp_path):
    visualize = _tool('visualize_layer_attention')
    shallow = np.full((3, 3), np.nan)
    shallow[1, :2] = [0.3, 0.7]
    shallow[2, :3] = [0.2, 0.3, 0.5]  # row 0 retrieves, but is all NaN
    deep = np.tril(np.ones((23, 23)))
    deep /= deep.sum(axis=1, keepdims=True)
    deep[np.triu_indices(23, k=1)] = np.nan
    masks = [[True] * 3, [True] * 4, [True] * 23, [True, False, True]]
    third = np.full((3, 3), np.nan)
    third[0, 0], third[2, [0, 2]] = 1.0, [0.4, 0.6]
    four = np.tril(np.full((4, 4), 0.25))
    four[np.triu_indices(4, k=1)] = np.nan
    fig = visualize.draw([shallow, four, deep, third], masks,
                         ['layer1', 'layer2', 'layer3', 'layer4'],
                         'ELA ResNet-101', str(tmp_path / 'r101.png'))
    assert (tmp_path / 'r101.png').stat().st_size > 0
    layer1, _, layer3, layer4 = fig.axes[:4]
    assert [ax.get_title() for ax in fig.axes[:4]] == [
        'layer1\n3/3 retrieving', 'layer2\n4/4 retrieving',
        'layer3: 23/23 retrieving', 'layer4\n2/3 retrieving']
    # 23 blocks: at most 8 tick labels; cells too small for numbers.
    assert len(layer3.get_xticks()) <= 8 and len(layer3.get_yticks()) <= 8
    assert all(len(ax.texts) == 0 for ax in fig.axes[:4])
    assert [p.get_hatch() for p in layer1.patches] == ['xx']  # row 0: n/a
    assert [p.get_hatch() for p in layer4.patches] == ['///']  # pruned
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        'pruned (retrieval off)',
        'n/a: all weights underflow to 0 (saturated gate)']
    assert fig._suptitle.get_text() == 'ELA ResNet-101'

    # Two small stages: cells large enough to carry their values.
    fig = visualize.draw([shallow, third], [masks[0], masks[3]],
                         ['layer1', 'layer2'], None, str(tmp_path / 's.png'))
    layer1, layer2 = fig.axes[:2]
    assert [t.get_text() for t in layer1.texts] == [
        'n/a', '0.30', '0.70', '0.20', '0.30', '0.50']
    assert [t.get_text() for t in layer2.texts] == ['1.00', '0.40', '0.60']
    assert fig._suptitle is None


def test_visualize_title_is_short_and_fresh_models_go_to_the_work_dir(
        tmp_path, monkeypatch):
    pytest.importorskip('mmpretrain')
    visualize = _tool('visualize_layer_attention')
    config = _cifar20(tmp_path)
    monkeypatch.chdir(tmp_path)
    visualize.main([str(config), '--random', '1'])
    assert (tmp_path / 'work_dirs' / 'resnet20_ela' /
            'layer_attention_fresh_model.png').stat().st_size > 0
    model = visualize.build_model(str(config))
    title = visualize.default_title(
        str(config), '/very/long/path/to/epoch_180.pth', model.backbone, 4)
    assert title == ('resnet20_ela, epoch_180.pth: MRLA-L, 6/6 retrievals '
                     'on, mean over 4 images')


def test_visualize_refuses_a_json_checkpoint_in_one_line(tmp_path, capsys):
    pytest.importorskip('mmpretrain')
    visualize = _tool('visualize_layer_attention')
    config = _cifar20(tmp_path)
    report = tmp_path / 'ela_pruning.json'
    report.write_text('[{"masks": [[1, 1, 1]]}]')
    renamed = tmp_path / 'report.pth'
    renamed.write_text('[{"masks": [[1, 1, 1]]}]')
    for path, message in [(report, 'is a JSON file (a pruning report?)'),
                          (renamed, 'is a JSON file, not a checkpoint')]:
        with pytest.raises(SystemExit) as info:
            visualize.main([str(config), '--checkpoint', str(path),
                            '--random', '1', '--out', str(tmp_path / 'a.png')])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f'error: --checkpoint: {path} {message}')
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'a.png').exists()


def test_get_flops_does_not_swallow_a_config_after_depths(capsys):
    get_flops = _tool('get_flops')
    args = get_flops.parse_args(['--preset', 'cifar', '--depths', '20', '56',
                                 'configs/x.py'])
    assert args.configs == ['configs/x.py'] and args.depths == [20, 56]
    with pytest.raises(SystemExit) as info:
        get_flops.parse_args(['--depths', '20', 'configs/x.py'])
    assert info.value.code == 2
    assert '--depths picks depths of a --preset' in capsys.readouterr().err


def test_get_flops_says_all_and_trainable_parameters():
    pytest.importorskip('mmdet')
    get_flops = _tool('get_flops')
    config = TOOLS.parents[1] / 'configs' / \
        'faster_rcnn_ela_r50_fpn_1x_coco.py'
    (row, ) = get_flops.config_rows(str(config), (64, 64))
    # The paper's 41.7M are the trainable ones: stem and layer1 are frozen.
    assert row['trainable_m'] == pytest.approx(41.70, abs=0.01)
    assert row['params_m'] - row['trainable_m'] > 0.2
    header = get_flops.format_table([row]).splitlines()[0]
    assert 'Params, all (M) | Params, trainable (M)' in header


@pytest.mark.parametrize('tool', ['get_flops', 'visualize_layer_attention'])
def test_analysis_tools_help_every_option_without_warnings(tool):
    import subprocess
    import sys
    module = _tool(tool)
    for action in module.build_parser()._actions:
        assert action.help, f'{tool}: {action.option_strings} has no help'
    result = subprocess.run([sys.executable, str(TOOLS / f'{tool}.py'),
                             '--help'], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert 'pkg_resources' not in result.stderr, result.stderr
