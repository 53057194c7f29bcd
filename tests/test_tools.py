"""tools/train.py, tools/test.py and dist_train.sh: scope-dependent behaviour,
the pre-flight checks (one ``error:`` line, exit status 2, nothing written)
and, marked slow, a tiny classification run end to end."""
import argparse
import json
import os
import os.path as osp
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
from mmengine.config import Config

from mmela import cli
from mmela.cli import (ConfigError, apply_test_args, apply_train_args,
                       load_config, parse_test_args, parse_train_args,
                       preflight, use_available_devices)
from toy_runner import free_port

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DET = osp.join(ROOT, 'configs', 'faster_rcnn_ela_r50_fpn_1x_coco.py')
CLS = osp.join(ROOT, 'configs', 'cifar', 'resnet20_ela_cifar10.py')
PLAIN = osp.join(ROOT, 'configs', 'cifar', 'resnet20_plain_cifar10.py')


@pytest.fixture(autouse=True)
def local_rank_env(monkeypatch):
    """The parsers set LOCAL_RANK as mmdet's tools do; undo it after each
    test (monkeypatch restores what it set)."""
    monkeypatch.setenv('LOCAL_RANK', '0')


def fake_coco(root):
    """The COCO layout the pre-flight looks for (empty files suffice)."""
    for split in ('train2017', 'val2017'):
        (root / split).mkdir(parents=True)
        (root / 'annotations').mkdir(exist_ok=True)
        (root / 'annotations' / f'instances_{split}.json').write_text('{}')
    return root


def data_options(root, loaders=('train', 'val', 'test')):
    return [f'{loader}_dataloader.dataset.data_root={root}/'
            for loader in loaders]


def coco_options(root):
    return data_options(root) + [
        f'{name}_evaluator.ann_file={root}/annotations/'
        f'instances_val2017.json' for name in ('val', 'test')
    ]


def train_cfg(config, *options, work_dir='work_dirs/x', extra=()):
    args = parse_train_args([config, '--work-dir', str(work_dir), *extra] +
                            (['--cfg-options', *options] if options else []))
    cfg = load_config(args)
    apply_train_args(cfg, args)
    return cfg


# ------------------------------------------------------------------ scope
@pytest.mark.parametrize('config,scope', [(DET, 'mmdet'), (CLS, 'mmpretrain')])
def test_the_scope_comes_from_the_config(config, scope):
    cfg = train_cfg(config)
    assert cfg.default_scope == scope
    from mmengine.registry import DefaultScope
    assert DefaultScope.get_current_instance().scope_name == scope


def test_a_config_without_a_known_scope_is_refused(tmp_path):
    path = tmp_path / 'bare.py'
    path.write_text('model = dict(type="X")\n')
    with pytest.raises(ConfigError, match='default_scope must be one of'):
        train_cfg(str(path))


def test_classification_dataloaders_get_mmpretrain_defaults():
    cfg = train_cfg(CLS)
    loader = cfg.train_dataloader
    assert loader.collate_fn == dict(type='default_collate')
    assert loader.pin_memory and loader.persistent_workers
    det = train_cfg(DET, extra=['--no-pin-memory'])
    assert 'collate_fn' not in det.train_dataloader
    assert det.train_dataloader.pin_memory is False


def test_train_flags():
    cfg = train_cfg(CLS, extra=['--resume', 'ckpt.pth', '--auto-scale-lr',
                                '--no-validate'])
    assert cfg.resume and cfg.load_from == 'ckpt.pth'
    assert cfg.auto_scale_lr.enable and cfg.auto_scale_lr.base_batch_size
    assert cfg.val_cfg is None and cfg.val_dataloader is None
    cfg = train_cfg(CLS, extra=['--resume'])
    assert cfg.resume and cfg.load_from is None
    assert train_cfg(CLS, 'work_dir=elsewhere', work_dir='cli').work_dir == \
        'cli'


def test_devices(monkeypatch):
    """Without CUDA: gloo and a DDP wrapper without device ids; with CUDA
    the config's NCCL and mmengine's default wrapper stay."""
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    monkeypatch.setattr('torch.cuda.is_available', lambda: True)
    use_available_devices(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert 'model_wrapper_cfg' not in cfg
    monkeypatch.setattr('torch.cuda.is_available', lambda: False)
    use_available_devices(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(
        type='AnyDeviceDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=False)
    # A wrapper the config chose itself is kept.
    cfg = Config(
        dict(model_wrapper_cfg=dict(type='MMFullyShardedDataParallel')))
    use_available_devices(cfg)
    assert cfg.model_wrapper_cfg.type == 'MMFullyShardedDataParallel'


def test_amp_needs_a_gpu(monkeypatch):
    monkeypatch.setattr('torch.cuda.is_available', lambda: False)
    with pytest.raises(ConfigError, match='--amp needs a GPU'):
        train_cfg(CLS, extra=['--amp'])


def test_test_flags(tmp_path):
    checkpoint = tmp_path / 'epoch_1.pth'
    checkpoint.write_bytes(b'')

    def test_cfg(config, *extra):
        args = parse_test_args([config, str(checkpoint), *extra])
        cfg = load_config(args)
        apply_test_args(cfg, args)
        return cfg

    cfg = test_cfg(DET, '--show-dir', 'vis', '--amp')
    assert cfg.load_from == str(checkpoint)
    assert cfg.default_hooks.visualization.draw
    assert cfg.default_hooks.visualization.test_out_dir == 'vis'
    assert cfg.test_cfg.fp16
    cfg = test_cfg(CLS, '--show-dir', 'vis')
    assert cfg.default_hooks.visualization.enable
    assert cfg.default_hooks.visualization.out_dir == 'vis'
    for config, extra, message in [
        (DET, ['--out', 'dets.json'], 'name the file'),
        (DET, ['--out', 'dets.pkl', '--out-item', 'metrics'],
         'for classification configs'),
        (CLS, ['--out-item', 'metrics'], 'needs --out'),
    ]:
        with pytest.raises(ConfigError, match=message):
            test_cfg(config, *extra)
    test_cfg(CLS, '--out', 'metrics.json', '--out-item', 'metrics')
    with pytest.raises(ConfigError, match='does not exist'):
        args = parse_test_args([CLS, str(tmp_path / 'missing.pth')])
        apply_test_args(load_config(args), args)


# ------------------------------------------------------------- pre-flight
def test_preflight_passes_on_a_good_config(tmp_path):
    preflight(train_cfg(DET, *coco_options(fake_coco(tmp_path / 'coco'))),
              'train')
    preflight(train_cfg(CLS, *data_options(tmp_path)), 'train')


def test_preflight_finds_missing_annotation_and_image_folders(tmp_path):
    root = fake_coco(tmp_path / 'coco')
    os.remove(root / 'annotations' / 'instances_train2017.json')
    with pytest.raises(ConfigError, match=r'train_dataloader\.dataset\.'
                       r'ann_file: .*instances_train2017.json does not'):
        preflight(train_cfg(DET, *coco_options(root)), 'train')
    fake_coco(tmp_path / 'coco2')
    os.rmdir(tmp_path / 'coco2' / 'val2017')
    with pytest.raises(ConfigError, match=r'val_dataloader\.dataset\.'
                       r'data_prefix\.img'):
        preflight(train_cfg(DET, *coco_options(tmp_path / 'coco2')), 'train')
    # Only what the command uses: --no-validate skips the val data.
    preflight(train_cfg(DET, *coco_options(tmp_path / 'coco2'),
                        extra=['--no-validate']), 'train')


def test_preflight_looks_inside_dataset_wrappers(tmp_path):
    cfg = train_cfg(CLS, *data_options(tmp_path))
    cfg.train_dataloader.dataset = dict(
        type='ConcatDataset',
        datasets=[cfg.train_dataloader.dataset,
                  dict(type='RepeatDataset', times=2,
                       dataset=dict(type='CustomDataset',
                                    data_root=str(tmp_path / 'nowhere')))])
    with pytest.raises(ConfigError,
                       match=r'dataset\.datasets\.1\.dataset\.data_root'):
        preflight(cfg, 'train')


def test_datasets_that_download_themselves_may_be_missing(tmp_path):
    missing = tmp_path / 'cifar'
    preflight(train_cfg(CLS, *data_options(missing)), 'train')  # default
    with pytest.raises(ConfigError, match='data_root'):
        preflight(train_cfg(CLS, *data_options(missing),
                            'train_dataloader.dataset.download=False'),
                  'train')


@pytest.mark.parametrize('options,message', [
    (['train_cfg.max_epochs=92'], r'window \(91, 93\) ends after the last '
     r'epoch \(train_cfg.max_epochs=92\)'),
    (['custom_hooks.0.windows=[3,2]'], 'must not overlap'),
    (['train_cfg.type=IterBasedTrainLoop', 'train_cfg.max_iters=5',
      'train_cfg.by_epoch=False'], 'needs epoch-based training'),
    (['model.backbone.depth=42'], 'depth must be 9n \\+ 2'),
    (['model.backbone.type=ResNetCIFAR'],
     'model.backbone: ResNetCIFAR is not in the mmpretrain::model registry'),
    (['model.backbone.type=ResNet_CIFAR'],
     "unexpected keyword argument 'layer_attention'"),
    (['model.backbone.layer_attention=lite'], 'layer_attention must be'),
    (['load_from=nowhere.pth'], 'load_from: checkpoint nowhere.pth'),
    (['model.backbone.init_cfg.type=Pretrained',
      'model.backbone.init_cfg.checkpoint=nowhere.pth'],
     r'model\.backbone\.init_cfg\.checkpoint: nowhere.pth'),
])
def test_preflight_errors(tmp_path, options, message):
    cfg = train_cfg(CLS, *data_options(tmp_path), *options)
    with pytest.raises(ConfigError, match=message):
        preflight(cfg, 'train')


def test_the_hook_needs_layer_attention(tmp_path):
    cfg = train_cfg(PLAIN, *data_options(tmp_path))
    cfg.custom_hooks = [dict(type='ELAPruningHook', windows=[1])]
    with pytest.raises(ConfigError, match='needs a backbone with layer '
                       'attention, got ELAResNetCIFAR'):
        preflight(cfg, 'train')


def test_user_errors_print_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv('RANK', raising=False)
    with pytest.raises(SystemExit) as exit_info:
        with cli.user_errors():
            raise ConfigError('two\nlines')
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == 'error: two lines\n'
    with pytest.raises(ValueError):  # anything else keeps its traceback
        with cli.user_errors():
            raise ValueError('a bug')


# ---------------------------------------------- the command line contract
def run_tool(tool, *args, env=None):
    return subprocess.run([sys.executable, osp.join(ROOT, 'tools', tool),
                           *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS='1',
                                   **(env or {})),
                          timeout=300)


def bad_train_input(tmp_path, case):
    """(config, --cfg-options) with everything right but ``case``."""
    if case == 'missing dataset path':
        return DET, [f'train_dataloader.dataset.data_root={tmp_path}/coco/']
    if case == 'depth 42':
        return DET, coco_options(fake_coco(tmp_path / 'coco')) + [
            'model.backbone.depth=42']
    assert case == 'window past max_epochs'
    return CLS, data_options(tmp_path) + ['train_cfg.max_epochs=90']


@pytest.mark.parametrize('case,message', [
    ('missing dataset path', r'train_dataloader\.dataset\.data_root: .*coco/ '
     r'does not exist'),
    ('depth 42', r'model\.backbone: depth must be one of \[18, 34, 50, 101, '
     r'152\], got 42'),
    ('window past max_epochs', r'window \(91, 93\) ends after the last '
     r'epoch \(train_cfg\.max_epochs=90\)'),
], ids=['missing-dataset-path', 'depth-42', 'window-past-max-epochs'])
def test_bad_input_fails_before_training(tmp_path, case, message):
    config, options = bad_train_input(tmp_path, case)
    work_dir = tmp_path / 'work_dir'
    result = run_tool('train.py', config, '--work-dir', work_dir,
                      '--cfg-options', *options)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    # One line per problem (the val data is missing too in the first case).
    assert all(line.startswith('error: ') for line in lines), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not work_dir.exists()


def test_test_tool_with_a_missing_checkpoint(tmp_path):
    result = run_tool('test.py', CLS, tmp_path / 'epoch_9.pth', '--work-dir',
                      tmp_path / 'work_dir', '--cfg-options',
                      *data_options(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == \
        f'error: checkpoint {tmp_path}/epoch_9.pth does not exist'
    assert not (tmp_path / 'work_dir').exists()


# ------------------------------------------------------ end to end (slow)
def tiny_classification(tmp_path):
    """Eight 32x32 PNGs in two class folders and a config that trains the
    CIFAR ELA ResNet-20 on them for two epochs (one pruning window)."""
    import mmcv
    rng = np.random.default_rng(0)
    for label in ('dark', 'bright'):
        for i in range(4):
            base = 40 if label == 'dark' else 200
            image = rng.integers(base - 30, base + 30, (32, 32, 3))
            mmcv.imwrite(image.astype(np.uint8),
                         str(tmp_path / 'data' / label / f'{i}.png'))
    config = tmp_path / 'tiny_ela_cls.py'
    config.write_text(f"""
_base_ = {CLS!r}
dataset = dict(_delete_=True, type='CustomDataset',
               data_root={str(tmp_path / 'data')!r},
               pipeline=[dict(type='LoadImageFromFile'),
                         dict(type='PackInputs')])
train_dataloader = dict(batch_size=4, num_workers=0, dataset=dataset)
val_dataloader = dict(batch_size=4, num_workers=0, dataset=dataset)
test_dataloader = val_dataloader
model = dict(head=dict(num_classes=2))
data_preprocessor = dict(num_classes=2)
train_cfg = dict(max_epochs=2)
custom_hooks = [dict(type='ELAPruningHook', windows=[1], method='fixed',
                     num_pruned=1)]
default_hooks = dict(logger=dict(interval=1))
""")
    return config


@pytest.mark.slow
def test_train_then_test_a_tiny_classifier(tmp_path):
    config = tiny_classification(tmp_path)
    work_dir = tmp_path / 'work_dir'
    result = run_tool('train.py', config, '--work-dir', work_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work_dir / 'epoch_2.pth').exists()
    with open(work_dir / 'ela_pruning.json') as f:
        reports = json.load(f)
    assert [r['window'] for r in reports] == [[1, 1]]
    assert reports[0]['retrievals_on'] == reports[0]['retrievals_total'] - 1

    predictions = tmp_path / 'predictions.pkl'
    result = run_tool('test.py', config, work_dir / 'epoch_2.pth',
                      '--work-dir', tmp_path / 'test', '--out', predictions)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(predictions, 'rb') as f:
        assert len(pickle.load(f)) == 8
    assert 'accuracy/top1' in result.stdout + result.stderr


@pytest.mark.slow
def test_dist_train_sh_with_two_processes(tmp_path):
    """dist_train.sh on a machine without CUDA: two gloo processes."""
    config = tiny_classification(tmp_path)
    work_dir = tmp_path / 'work_dir'
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
               OMP_NUM_THREADS='1')
    result = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), str(config), '2',
         '--work-dir', str(work_dir)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work_dir / 'epoch_2.pth').exists()
    log = (result.stdout + result.stderr)
    assert 'Distributed training: True' in log
    with open(work_dir / 'ela_pruning.json') as f:
        assert json.load(f)[0]['retrievals_on'] > 0


def test_parsers_accept_the_mmdet_and_mmpretrain_flags():
    args = parse_train_args(['c.py', '--work-dir', 'w', '--resume', '--amp',
                             '--auto-scale-lr', '--launcher', 'pytorch',
                             '--cfg-options', 'a=1', '--local-rank', '0'])
    assert isinstance(args, argparse.Namespace)
    assert (args.resume, args.amp, args.cfg_options) == ('auto', True,
                                                          {'a': 1})
    args = parse_test_args(['c.py', 'k.pth', '--out', 'o.pkl', '--show-dir',
                            'v', '--work-dir', 'w', '--launcher', 'pytorch'])
    assert (args.checkpoint, args.out, args.show_dir) == ('k.pth', 'o.pkl',
                                                          'v')
