"""Broken and foreign inputs to tools/train.py and tools/test.py (issue 10,
items 4, 5, 7, 8 and 11): each ends in ``error:`` lines naming the file or
setting and what to do, exit status 2, before anything is evaluated or
written."""
import os
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from mmela.cli import (ConfigError, ConfigErrors, apply_test_args,
                       load_config, parse_test_args, preflight)
from test_tools import (CLS, PLAIN, ROOT, data_options, run_tool,
                        tiny_classification, train_cfg)

R56 = os.path.join(ROOT, 'configs', 'cifar', 'resnet56_ela_cifar10.py')


@pytest.fixture(autouse=True)
def local_rank_env(monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')


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


# ------------------------------------------------- item 4: foreign weights
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


# ----------------------------------------- item 5: truncated and empty files
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


# ------------------------------------------------ item 7: a broken config
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


# --------------------------------------- item 8: every problem, model first
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


# ---------------------------------------- item 11: retrievals of a checkpoint
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


# ------------------------------------------ item 6: a diverged run, end to end
@pytest.mark.slow
def test_a_diverged_training_run_ends_with_one_error_line(tmp_path):
    from test_tools import tiny_classification
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
    here = os.path.dirname(os.path.abspath(__file__))
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

