"""tools/train.py, tools/test.py, dist_train.sh and the analysis tools:
scope-dependent behaviour, the pre-flight checks (one ``error:`` line,
exit status 2, nothing written), broken and foreign inputs, FLOPs, the
speed benchmark and the attention heatmaps; the slow ones end to end.
"""
import argparse
import importlib
import json
import os
import os.path as osp
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from mmela import cli
from mmela.cli import (ConfigError, ConfigErrors, apply_test_args,
                       apply_train_args, load_config, parse_test_args,
                       parse_train_args, preflight, use_available_devices)
from tool_cases import CLS, DET, PLAIN, ROOT, run_tool, tiny_classification
from toy_runner import free_port


# ----------------------------------------------------------------------
# tools/train.py, tools/test.py and dist_train.sh: scope-dependent behaviour,
# the pre-flight checks (one ``error:`` line, exit status 2, nothing written)
# and, marked slow, a tiny classification run end to end.


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


# ----------------------------------------------------------------------
# Broken and foreign inputs to tools/train.py and tools/test.py: each ends
# in ``error:`` lines naming the file or setting and what to do, exit status
# 2, before anything is evaluated or written.


R56 = os.path.join(ROOT, 'configs', 'cifar', 'resnet56_ela_cifar10.py')


def save_checkpoint(config, path, masks=None):
    """A checkpoint (mmengine layout) of ``config``'s freshly built model."""
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    if masks is not None:
        model.backbone.set_masks(masks)
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()),
               path)
    return path


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def cfg_for_test(tmp_path, checkpoint, config=CLS):
    args = parse_test_args([config, str(checkpoint), '--work-dir',
                            str(tmp_path / 'test_dir'), '--cfg-options',
                            *data_options(tmp_path)])
    cfg = load_config(args)
    apply_test_args(cfg, args)
    return cfg


# ------------------------------------------------- foreign weights
def test_test_refuses_a_checkpoint_of_another_depth(tmp_path):
    ckpt = save_checkpoint(R56, tmp_path / 'r56.pth')
    with pytest.raises(ConfigError) as info:
        preflight(cfg_for_test(tmp_path, ckpt), 'test')
    message = str(info.value)
    assert f'checkpoint: {ckpt} does not fit the model' in message
    assert re.search(r'\d+ unexpected \(backbone\.layer1\.2\.', message)


def test_test_refuses_an_ela_config_with_a_plain_checkpoint(tmp_path):
    ckpt = save_checkpoint(PLAIN, tmp_path / 'plain.pth')
    with pytest.raises(ConfigError, match=r'missing \(backbone\.layer1\.0\.'
                       r'layer_attention.*has no layer attention'):
        preflight(cfg_for_test(tmp_path, ckpt), 'test')
    preflight(cfg_for_test(tmp_path, ckpt, config=PLAIN), 'test')  # it fits


def test_load_from_a_plain_resnet_into_ela_is_fine_but_not_another_depth(
        tmp_path):
    plain = save_checkpoint(PLAIN, tmp_path / 'plain.pth')
    preflight(train_cfg(CLS, *data_options(tmp_path), f'load_from={plain}'),
              'train')  # layer attention starts fresh: documented
    r56 = save_checkpoint(R56, tmp_path / 'r56.pth')
    with pytest.raises(ConfigError, match='load_from: .* does not fit'):
        preflight(train_cfg(CLS, *data_options(tmp_path),
                            f'load_from={r56}'), 'train')


def test_resume_needs_the_same_architecture(tmp_path):
    plain = save_checkpoint(PLAIN, tmp_path / 'epoch_1.pth')
    with pytest.raises(ConfigError, match='--resume: .* does not fit'):
        preflight(train_cfg(CLS, *data_options(tmp_path),
                            extra=['--resume', str(plain)]), 'train')


def test_test_tool_does_not_evaluate_a_foreign_checkpoint(tmp_path):
    ckpt = save_checkpoint(R56, tmp_path / 'r56.pth')
    result = run_tool('test.py', CLS, ckpt, '--work-dir',
                      tmp_path / 'work_dir', '--cfg-options',
                      *data_options(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f'error: checkpoint: {ckpt} does not fit the model'), lines
    assert not (tmp_path / 'work_dir').exists()


# ----------------------------------------- truncated and empty files
@pytest.mark.parametrize('damage', ['empty', 'truncated'])
def test_broken_checkpoint_for_test_and_load_from(tmp_path, damage):
    ckpt = save_checkpoint(CLS, tmp_path / 'epoch_2.pth')
    save_checkpoint(CLS, tmp_path / 'epoch_1.pth')
    if damage == 'empty':
        ckpt.write_bytes(b'')
        what = r'is empty \(0 bytes\)'
    else:
        truncate(ckpt)
        what = r'cannot be read \(\d+ bytes, truncated or not a PyTorch'
    with pytest.raises(ConfigError,
                       match=f'checkpoint: {ckpt} {what}.*another '
                       f'checkpoint, e.g. {tmp_path}/epoch_1.pth'):
        preflight(cfg_for_test(tmp_path, ckpt), 'test')
    with pytest.raises(ConfigError, match=f'load_from: {ckpt} {what}'):
        preflight(train_cfg(CLS, *data_options(tmp_path),
                            f'load_from={ckpt}'), 'train')


def test_resume_from_a_truncated_checkpoint_names_an_earlier_one(tmp_path):
    work_dir = tmp_path / 'work_dir'
    work_dir.mkdir()
    save_checkpoint(CLS, work_dir / 'epoch_3.pth')
    truncate(save_checkpoint(CLS, work_dir / 'epoch_4.pth'))
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_4.pth'))
    for extra in (['--resume'], ['--resume', str(work_dir / 'epoch_4.pth')]):
        cfg = train_cfg(CLS, *data_options(tmp_path), work_dir=work_dir,
                        extra=extra)
        with pytest.raises(ConfigError, match=(
                f'--resume: {work_dir}/epoch_4.pth cannot be read.*remove '
                f'it and resume from an earlier checkpoint: --resume '
                f'{work_dir}/epoch_3.pth')):
            preflight(cfg, 'train')


@pytest.mark.parametrize('pointer', ['', 'epoch_'])
def test_resume_with_a_broken_last_checkpoint_pointer(tmp_path, pointer):
    work_dir = tmp_path / 'work_dir'
    work_dir.mkdir()
    save_checkpoint(CLS, work_dir / 'epoch_1.pth')
    truncate(save_checkpoint(CLS, work_dir / 'epoch_2.pth'))  # not advised
    (work_dir / 'last_checkpoint').write_text(
        str(work_dir / pointer) if pointer else '')
    cfg = train_cfg(CLS, *data_options(tmp_path), work_dir=work_dir,
                    extra=['--resume'])
    what = 'is empty' if not pointer else 'names .*epoch_, which does not'
    with pytest.raises(ConfigError, match=(
            f'--resume: {work_dir}/last_checkpoint {what}.*--resume '
            f'{work_dir}/epoch_1.pth')):
        preflight(cfg, 'train')


def test_train_tool_with_an_empty_resume_checkpoint(tmp_path):
    work_dir = tmp_path / 'work_dir'
    work_dir.mkdir()
    (work_dir / 'epoch_1.pth').write_bytes(b'')
    result = run_tool('train.py', CLS, '--work-dir', work_dir, '--resume',
                      work_dir / 'epoch_1.pth', '--cfg-options',
                      *data_options(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (
        f'error: --resume: {work_dir}/epoch_1.pth is empty (0 bytes); '
        f'there is no earlier checkpoint: remove it and '
        f'{work_dir}/last_checkpoint to train from the start')
    assert os.listdir(work_dir) == ['epoch_1.pth']  # nothing written


# ------------------------------------------------ a broken config
def test_a_config_with_a_syntax_error_is_one_line(tmp_path):
    config = tmp_path / 'broken.py'
    config.write_text(f"_base_ = {CLS!r}\nmodel = dict(\n"
                      "    backbone=dict(depth=20,)\n    head=dict()\n)\n")
    result = run_tool('train.py', config, '--work-dir', tmp_path / 'w')
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert re.fullmatch(rf'error: {config}:3: syntax error: .*', lines[0])


def test_a_syntax_error_in_a_base_config_names_the_base(tmp_path):
    base = tmp_path / 'base.py'
    base.write_text('a = 1\nb = [1, 2\n')
    config = tmp_path / 'child.py'
    config.write_text("_base_ = './base.py'\n")
    args = parse_test_args([str(config), 'x.pth'])
    with pytest.raises(ConfigError, match=rf'^{base}:2: syntax error: '):
        load_config(args)


# --------------------------------------- every problem, model first
def test_preflight_reports_every_problem_model_first(tmp_path):
    cfg = train_cfg(CLS, *data_options(tmp_path / 'nowhere'),
                    'train_dataloader.dataset.download=False',
                    'model.backbone.depth=42', 'train_cfg.max_epochs=90',
                    'load_from=missing.pth')
    with pytest.raises(ConfigErrors) as info:
        preflight(cfg, 'train')
    messages = [str(e) for e in info.value.errors]
    assert len(messages) == 4, messages
    assert messages[0].startswith('model.backbone: depth must be 9n + 2')
    assert messages[1].startswith('custom_hooks.0 (ELAPruningHook): window '
                                  '(91, 93) ends after the last epoch')
    assert messages[2] == 'load_from: checkpoint missing.pth does not exist'
    assert messages[3].startswith('train_dataloader.dataset.data_root')


def test_train_tool_prints_each_problem_on_its_own_line(tmp_path):
    result = run_tool('train.py', CLS, '--work-dir', tmp_path / 'w',
                      '--cfg-options', *data_options(tmp_path / 'nowhere'),
                      'train_dataloader.dataset.download=False',
                      'model.backbone.depth=42')
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(':')[1].strip() for line in lines] == [
        'model.backbone', 'train_dataloader.dataset.data_root'], lines
    assert not (tmp_path / 'w').exists()


# ---------------------------------------- retrievals of a checkpoint
@pytest.mark.slow
def test_test_tool_logs_the_retrievals_of_the_checkpoint(tmp_path):
    config = tiny_classification(tmp_path)
    ckpt = save_checkpoint(config, tmp_path / 'pruned.pth',
                           masks=[[1, 0], [1, 1], [0, 1]])
    result = run_tool('test.py', config, ckpt, '--work-dir',
                      tmp_path / 'test')
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'ELA: 4 of 6 retrievals on ({ckpt})' in result.stdout + \
        result.stderr


def test_every_option_of_train_and_test_has_help():
    from mmela import cli
    for parser in (cli.train_parser(), cli.test_parser()):
        for action in parser._actions:
            assert action.help, action.option_strings


# ------------------------------------------ a diverged run, end to end
@pytest.mark.slow
def test_a_diverged_training_run_ends_with_one_error_line(tmp_path):
    from tool_cases import tiny_classification
    config = tiny_classification(tmp_path)
    result = run_tool('train.py', config, '--work-dir', tmp_path / 'w',
                      '--cfg-options', 'optim_wrapper.optimizer.lr=1e38')
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines()
              if line.startswith('error:')]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith('error: ELAPruningHook: ') and \
        'diverged' in errors[0], errors


@pytest.mark.slow
def test_a_loss_diverging_on_one_rank_stops_every_rank(tmp_path):
    """Two gloo ranks started without torchrun (whose agent would end the
    other rank itself), rank 1's loss NaN: both stop within seconds, each
    with one error line, instead of rank 0 waiting for rank 1 in the next
    collective."""
    import subprocess
    import sys
    import time

    from toy_runner import free_port
    config = tiny_classification(tmp_path)
    with open(config, 'a') as f:
        f.write("model = dict(type='NaNOnRankClassifier', nan_rank=1)\n"
                "custom_imports = dict(imports=['mmela', 'nan_on_rank'], "
                "allow_failed_imports=False)\n")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
    env = dict(os.environ, OMP_NUM_THREADS='1', WORLD_SIZE='2',
               MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()),
               PYTHONPATH=here + os.pathsep + os.environ.get('PYTHONPATH', ''))
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'tools', 'train.py'), str(config),
         '--work-dir', str(tmp_path / 'w'), '--launcher', 'pytorch'],
        env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)), cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)]
    ended = {}
    deadline = time.monotonic() + 600
    while len(ended) < 2 and time.monotonic() < deadline:
        for rank, proc in enumerate(procs):
            if rank not in ended and proc.poll() is not None:
                ended[rank] = time.monotonic()
        time.sleep(0.2)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    stderr = [proc.communicate()[1] for proc in procs]
    assert len(ended) == 2, stderr[0][-2000:]
    assert abs(ended[0] - ended[1]) < 30, stderr
    for rank, proc in enumerate(procs):
        assert proc.returncode != 0, stderr[rank][-2000:]
        errors = [line for line in stderr[rank].splitlines()
                  if line.startswith('error:')]
        assert len(errors) == 1, stderr[rank][-3000:]
        assert 'diverged' in errors[0] and 'not finite on rank 1 of 2' in \
            errors[0], errors
    assert stderr[0].count('error:') == stderr[1].count('error:') == 1


# ----------------------------------------------------------------------
# tools/analysis: FLOPs, the speed benchmark and the attention heatmaps, end
# to end on the CPU with tiny settings.


TOOLS = Path(__file__).resolve().parents[2] / 'tools' / 'analysis'


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


# ------------------------------- the analysis tools on a trained ELA model
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
