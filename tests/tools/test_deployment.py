"""tools/deployment (mmela/deployment, mmela/cli/export.py and
strip_pruned.py): export (ONNX, torch.export) checked against PyTorch,
pruned retrievals absent from the graph, the legacy ONNX exporter, deploy
checkpoints, and bad input.

Small models: the ELA ImageNet classifier config at depth 18 and the Faster
R-CNN ELA config's backbone and neck at depth 18, on 64-128 px images, with
half of the retrievals pruned in their checkpoints."""
import os
import os.path as osp
import re
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

from mmela.cli import export as export_tool
from mmela.cli import strip_pruned as strip_tool
from mmela.deployment import model as deploy_model
from mmela.deployment.strip import strip_state_dict
from mmela.models import layer_attention_setting, set_layer_attention_impl

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(ROOT, 'tools', 'deployment')
CLASSIFIER = osp.join(ROOT, 'configs/imagenet/resnet50_ela_8xb32_in1k.py')
DETECTOR = osp.join(ROOT, 'configs/faster_rcnn_ela_r50_fpn_1x_coco.py')
DEMO = osp.join(ROOT, 'configs/demo/faster_rcnn_ela_r18_fpn_shapes_demo.py')
# Depth 18 in both configs: the classifier's head and the neck follow.
SETTINGS = {
    CLASSIFIER: {'model.backbone.depth': 18, 'model.head.in_channels': 512},
    DETECTOR: {'model.backbone.depth': 18, 'model.backbone.init_cfg': None,
               'model.neck.in_channels': [64, 128, 256, 512]},
}
# The same as --cfg-options.
OPTIONS = {config: [f"{k}={str(v).replace(' ', '')}" for k, v in s.items()]
           for config, s in SETTINGS.items()}


@pytest.fixture(autouse=True)
def keep_implementation():
    """The tools set layer attention's implementation for the process."""
    previous = layer_attention_setting()
    yield
    set_layer_attention_impl(previous)


def build(config):
    cfg, codebase = deploy_model.load_config(config, SETTINGS.get(config))
    return deploy_model.build_model(cfg, codebase), codebase


def make_checkpoint(path, config, prune=True):
    """A checkpoint of ``config`` with initialised weights, non-trivial
    batch-norm statistics, every other retrieval pruned (or none), and the
    training state a Runner saves."""
    torch.manual_seed(0)
    model, _ = build(config)
    model.init_weights()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    backbone = model.backbone
    backbone.set_masks([[not prune or i % 2 == 0 for i in range(len(m))]
                        for m in backbone.get_masks()])
    params = list(model.parameters())
    # A Runner's message hub holds mmengine's HistoryBuffer and numpy
    # values, which torch.load's safe mode reads only once allowed.
    hub = MessageHub(f'deployment-{path.name}')
    hub.update_scalar('train/loss', np.float64(0.5))
    torch.save(dict(meta=dict(epoch=1, dataset_meta=dict(classes=['a'])),
                    state_dict=model.state_dict(),
                    optimizer=dict(state={i: dict(momentum_buffer=p.detach()
                                                  .clone())
                                          for i, p in enumerate(params)}),
                    message_hub=hub.state_dict(),
                    ela_pruning=dict(reports=[])), path)
    return str(path)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp('checkpoints')
    return {
        CLASSIFIER: make_checkpoint(folder / 'cls.pth', CLASSIFIER),
        DETECTOR: make_checkpoint(folder / 'det.pth', DETECTOR),
        'unpruned': make_checkpoint(folder / 'cls_all_on.pth', CLASSIFIER,
                                    prune=False),
    }


def run_export(capsys, config, checkpoint, fmt, out, *extra):
    argv = [config, checkpoint, '--format', fmt, '--out', str(out),
            '--cfg-options', *OPTIONS[config], *extra]
    try:
        export_tool.main(argv)
    except SystemExit as e:
        captured = capsys.readouterr()
        raise AssertionError(f'exit {e.code}: {captured.err[-2000:]}')
    return capsys.readouterr().out


def pytorch_reference(config, checkpoint, images):
    """What mmpretrain / mmdet compute on ``images``: their own data
    preprocessor, then the classifier's logits or the detector's
    features."""
    model, codebase = build(config)
    state = torch.load(checkpoint, map_location='cpu',
                       weights_only=False)['state_dict']
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        inputs = model.data_preprocessor(dict(inputs=images))['inputs']
        if codebase == 'mmpretrain':
            return [model(inputs, mode='tensor').numpy()]
        return [f.numpy() for f in model.extract_feat(inputs)]


def max_relative_difference(got, expected):
    return max(float(np.abs(g - e).max() / np.abs(e).max())
               for g, e in zip(got, expected))


def reported_differences(out):
    return [float(line.rsplit(' ', 1)[1]) for line in out.splitlines()
            if line.startswith('verify')]


@pytest.mark.slow
@pytest.mark.parametrize('config,fmt,batch', [(CLASSIFIER, 'onnx', 1),
                                              (DETECTOR, 'export', 5)])
def test_export_matches_pytorch_at_other_batch_sizes(
        tmp_path, capsys, checkpoints, config, fmt, batch):
    out_file = tmp_path / f'model{export_tool.FORMATS[fmt]}'
    out = run_export(capsys, config, checkpoints[config], fmt, out_file,
                     '--shape', '128', '96')
    assert 'layer attention: 8 blocks, 4 retrievals on, 4 pruned' in out
    assert 'layer attention of 4 blocks in it (0 pruned ones)' in out
    assert 'batch 3, 128x96' in out and 'batch 7, 160x160' in out
    diffs = reported_differences(out)
    assert len(diffs) == 2 and max(diffs) < 1e-5
    assert sorted(os.listdir(tmp_path)) == [out_file.name]  # no leftovers

    # Independently of the tool: the saved file against the codebase's
    # own preprocessing and model, at a batch size and shape of its own.
    images = torch.rand(batch, 3, 96, 128) * 255
    expected = pytorch_reference(config, checkpoints[config], images)
    if fmt == 'onnx':
        import onnxruntime
        session = onnxruntime.InferenceSession(
            str(out_file), providers=['CPUExecutionProvider'])
        got = session.run(None, {'images': images.numpy()})
    else:
        program = torch.export.load(str(out_file)).module()
        with torch.no_grad():
            got = [t.numpy() for t in export_tool._as_tuple(program(images))]
    assert max_relative_difference(got, expected) < 1e-5


@pytest.mark.slow
def test_onnx_export_of_the_detector_backbone_and_neck(tmp_path, capsys,
                                                       checkpoints):
    out = run_export(capsys, DETECTOR, checkpoints[DETECTOR], 'onnx',
                     tmp_path / 'det.onnx', '--shape', '96', '96',
                     '--verify-shapes', '96', '128', '128', '96')
    assert 'batch 3, 96x128' in out and 'batch 7, 128x96' in out
    assert max(reported_differences(out)) < 1e-5


def test_an_example_too_small_for_dynamic_sizes_is_refused(
        tmp_path, capsys, checkpoints):
    # At 64x64 the neck's last level is 1x1: torch.export fixes its size.
    with pytest.raises(SystemExit) as exit:
        export_tool.main([DETECTOR, checkpoints[DETECTOR], '--format',
                          'export', '--out', str(tmp_path / 'det.pt2'),
                          '--shape', '64', '64', '--cfg-options',
                          *OPTIONS[DETECTOR]])
    assert exit.value.code == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('error: the example') and \
        'larger --shape' in line
    assert os.listdir(tmp_path) == []


def test_pruned_retrievals_leave_no_trace_in_the_graph(tmp_path, capsys,
                                                       checkpoints):
    counts = {}
    for name in (CLASSIFIER, 'unpruned'):
        path = tmp_path / f'{len(counts)}.pt2'
        run_export(capsys, CLASSIFIER, checkpoints[name], 'export', path,
                   '--shape', '64', '64', '--verify-batch-sizes', '3')
        nodes, in_graph = export_tool.graph_summary(str(path), 'export')
        program = export_tool.load_program(str(path))  # read by the tool
        weights = [k for k in program.state_dict if 'layer_attention' in k]
        counts[name] = nodes, in_graph, weights
    pruned_nodes, pruned_blocks, pruned_weights = counts[CLASSIFIER]
    all_nodes, all_blocks, all_weights = counts['unpruned']
    assert len(all_blocks) == 8 and len(pruned_blocks) == 4
    # Every other block is pruned: layerN.1 keeps nothing in the graph.
    assert all(name.split('.')[2] == '0' for name in pruned_blocks)
    assert not any('.1.layer_attention' in k for k in pruned_weights)
    assert pruned_nodes < all_nodes
    assert len(pruned_weights) * 2 == len(all_weights)


def test_the_legacy_onnx_exporter_runs(tmp_path, checkpoints):
    """torch.onnx.export(dynamo=False) traces with torch.jit, so layer
    attention runs 'reference' even with 'fused' chosen."""
    import onnxruntime
    model, codebase = deploy_model.load_model(
        CLASSIFIER, checkpoints['unpruned'], SETTINGS[CLASSIFIER])
    module = deploy_model.deployable(model, codebase)
    set_layer_attention_impl('fused')
    path = str(tmp_path / 'legacy.onnx')
    images = torch.rand(2, 3, 64, 64) * 255
    torch.onnx.export(module, (images, ), path, dynamo=False,
                      input_names=['images'],
                      dynamic_axes={'images': {0: 'batch'}})
    session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    images = torch.rand(3, 3, 64, 64) * 255
    with torch.no_grad():
        expected = [module(images).numpy()]
    got = session.run(None, {'images': images.numpy()})
    assert max_relative_difference(got, expected) < 1e-5


def test_strip_keeps_the_masks_and_the_outputs(tmp_path, capsys,
                                               checkpoints):
    source = checkpoints[CLASSIFIER]
    out = tmp_path / 'deploy.pth'
    strip_tool.main([source, str(out)])
    printed = capsys.readouterr().out
    assert 'retrievals: 4 of 8 on' in printed
    assert 'dropped: ela_pruning, message_hub, optimizer' in printed
    assert osp.getsize(out) < osp.getsize(source)
    plain = tmp_path / 'plain_file'
    plain.write_text('')  # what open() gives a new file under this umask
    assert stat.S_IMODE(os.stat(out).st_mode) == stat.S_IMODE(
        os.stat(plain).st_mode)

    original = torch.load(source, map_location='cpu', weights_only=False)
    stripped = torch.load(out, map_location='cpu', weights_only=True)
    assert set(stripped) == {'meta', 'state_dict'}
    assert stripped['meta']['dataset_meta'] == dict(classes=['a'])
    removed = set(original['state_dict']) - set(stripped['state_dict'])
    assert removed and all('.1.layer_attention.' in k for k in removed)
    assert not any(k.endswith('retrieval_mask') for k in removed)
    assert stripped['meta']['deploy']['removed_tensors'] == len(removed)

    images = torch.rand(3, 3, 64, 64)
    outputs, masks = [], []
    for state in (original['state_dict'], stripped['state_dict']):
        model, _ = build(CLASSIFIER)
        assert not model.load_state_dict(state, strict=True).missing_keys
        with torch.no_grad():
            outputs.append(model.eval()(images, mode='tensor'))
        masks.append([m.tolist() for m in model.backbone.get_masks()])
    assert torch.equal(outputs[0], outputs[1])
    assert masks[0] == masks[1] == [[True, False]] * 4


def test_only_whole_pruned_modules_may_be_absent():
    """A pruned retrieval without any weight is a deploy checkpoint; one
    missing only some, or a retrieval that is on, is a broken one."""
    model, _ = build(CLASSIFIER)
    model.backbone.set_masks([[True, False]] * 4)
    state = model.state_dict()
    pruned = 'backbone.layer1.1.layer_attention.'
    stripped, removed = strip_state_dict(state)
    assert {k for k in removed if k.startswith(pruned)} == {
        pruned + k for k in ('lambda_', 'qk.weight', 'value.weight',
                             'norm.weight', 'norm.bias', 'norm.running_mean',
                             'norm.running_var', 'norm.num_batches_tracked')}
    fresh, _ = build(CLASSIFIER)
    fresh.load_state_dict(stripped, strict=True)

    partial = dict(stripped, **{pruned + 'lambda_': state[pruned + 'lambda_']})
    result = build(CLASSIFIER)[0].load_state_dict(partial, strict=False)
    assert pruned + 'qk.weight' in result.missing_keys

    on = 'backbone.layer1.0.layer_attention.'
    broken = {k: v for k, v in state.items() if not k.startswith(on + 'qk')}
    result = build(CLASSIFIER)[0].load_state_dict(broken, strict=False)
    assert result.missing_keys == [on + 'qk.weight']


def test_mmengine_loads_a_deploy_checkpoint_strictly(tmp_path, checkpoints):
    """mmengine's load_checkpoint (what tools/test.py and init_cfg use)
    accepts a deploy checkpoint strictly."""
    from mmengine.runner import load_checkpoint
    out = tmp_path / 'deploy.pth'
    strip_tool.main([checkpoints[DETECTOR], str(out)])
    model, _ = build(DETECTOR)
    load_checkpoint(model, str(out), map_location='cpu', strict=True,
                    logger='silent')
    assert [m.tolist() for m in model.backbone.get_masks()] == \
        [[True, False]] * 4


@pytest.mark.parametrize('case,message', [
    ('missing', 'does not exist'),
    ('json', 'cannot be read'),
    ('other model', "does not fit the config's model"),
    ('format', "invalid choice: 'tflite'"),
    ('extension', 'writes a .pt2 file'),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, checkpoints, case,
                                     message):
    checkpoint = {'missing': str(tmp_path / 'missing.pth'),
                  'json': str(tmp_path / 'metrics.json')}.get(
                      case, checkpoints[CLASSIFIER])
    (tmp_path / 'metrics.json').write_text('{"top1": 0.5}')
    fmt = 'tflite' if case == 'format' else \
        'export' if case == 'extension' else 'onnx'
    options = [] if case == 'other model' else \
        ['--cfg-options', *OPTIONS[CLASSIFIER]]
    out = tmp_path / 'out' / 'model.onnx'
    out.parent.mkdir()
    with pytest.raises(SystemExit) as exit:
        export_tool.main([CLASSIFIER, checkpoint, '--format', fmt, '--out',
                          str(out), *options])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    assert message in lines[0]
    assert os.listdir(out.parent) == []  # nothing half-written


def test_strip_bad_input_is_one_error_line(tmp_path):
    """The command line as a user sees it: stderr holds only that line."""
    (tmp_path / 'notes.txt').write_text('not a checkpoint')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(
        [sys.executable, osp.join(TOOLS, 'strip_pruned.py'),
         str(tmp_path / 'notes.txt'), str(tmp_path / 'deploy.pth')],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: checkpoint ')
    assert os.listdir(tmp_path) == ['notes.txt']


@pytest.mark.slow
def test_tools_test_gives_the_same_metrics_on_a_stripped_checkpoint(
        tmp_path):
    """tools/test.py on the demo config: the training checkpoint and its
    deploy checkpoint give the same COCO metrics. Runs both at once (one
    thread each)."""
    from mmela.datasets import generate_shapes_coco
    generate_shapes_coco(tmp_path / 'data/shapes_coco', num_train=4,
                         num_val=8)
    source = make_checkpoint(tmp_path / 'epoch_8.pth', DEMO)
    stripped = str(tmp_path / 'deploy.pth')
    strip_tool.main([source, stripped])
    env = dict(os.environ, OMP_NUM_THREADS='1')
    runs = [subprocess.Popen(
        [sys.executable, osp.join(ROOT, 'tools/test.py'), DEMO, checkpoint,
         '--work-dir', str(tmp_path / name), '--cfg-options',
         'model.test_cfg.rcnn.score_thr=0.0'],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
        for name, checkpoint in (('source', source), ('stripped', stripped))]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-3000:]
    # The COCO metrics (not the timings on the same line).
    metrics = [[re.findall(r'coco/(\w+): ([-\d.]+)', line)
                for line in output.splitlines() if 'coco/bbox_mAP:' in line]
               for output in outputs]
    assert metrics[0] and metrics[0] == metrics[1]
