"""--resume: mmengine's checkpoints under torch.load's weights-only default,
and kill -9 in the middle of a window then --resume ending exactly as the
uninterrupted run.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

from toy_runner import build_runner, free_port, read_logs


# ----------------------------------------------------------------------
# --resume with torch >= 2.6 (torch.load's weights_only default).


def test_checkpoint_saves_and_resumes(tmp_path):
    runner = build_runner(work_dir=tmp_path, max_epochs=2)
    runner.train()
    ckpt = tmp_path / 'epoch_2.pth'
    assert ckpt.exists()

    resumed = build_runner(work_dir=tmp_path, max_epochs=3, resume=True)
    resumed.train()
    assert resumed.epoch == 3
    assert (tmp_path / 'epoch_3.pth').exists()

    # Without mmela's allow-list the default safe loader refuses mmengine's
    # checkpoints (importing mmela alone does not install it); with it, they
    # load. (Subprocesses: the allow-list is process-wide once installed.)
    load = f'import torch; torch.load({str(ckpt)!r})'
    for prefix in ('', 'import mmela; '):
        plain = subprocess.run([sys.executable, '-c', prefix + load],
                               capture_output=True, text=True)
        assert plain.returncode != 0 and 'weights_only' in plain.stderr
    fixed = subprocess.run(
        [sys.executable, '-c', 'from mmela.compat import allow_mmengine_'
         'checkpoint_types as allow; allow(); ' + load],
        capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr


def test_the_getattr_stand_in_allows_only_history_buffer_methods():
    import pickle

    import pytest
    from mmengine.logging import HistoryBuffer

    from mmela.compat import _history_buffer_method
    assert _history_buffer_method(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for owner, name in [(HistoryBuffer, '__init__'), (HistoryBuffer, 'nope'),
                        (pickle, 'loads')]:
        with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
            _history_buffer_method(owner, name)


# ----------------------------------------------------------------------
# kill -9 in the middle of a window, then --resume: the resumed run ends with
# the uninterrupted run's reports, masks and weights, bit for bit, with random
# augmentation (numpy, Python and torch draws), with and without (persistent)
# workers, in one process and with 2 gloo ranks; with ELAPruningHook alone in
# the config (it adds ExactResumeHook itself), through the toy runner and
# through tools/train.py.


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/


TOY_RUNNER = os.path.join(HERE, 'toy_runner.py')


def _train(work_dir, nproc=1, **kwargs):
    """Train in a fresh process (``nproc`` > 1: under torchrun, gloo)."""
    kwargs = dict(work_dir=str(work_dir), **kwargs)
    if nproc == 1:
        cmd = [sys.executable, TOY_RUNNER]
    else:
        kwargs['launcher'] = 'pytorch'
        cmd = [sys.executable, '-m', 'torch.distributed.run',
               '--nproc_per_node', str(nproc), '--master_port',
               str(free_port()), TOY_RUNNER]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(
        [HERE, os.path.dirname(HERE), os.environ.get('PYTHONPATH', '')]))
    return subprocess.run(cmd + [json.dumps(kwargs)], env=env, text=True,
                          capture_output=True, timeout=600)


def _settings(exact_resume=True, explicit=False, **kwargs):
    """ELAPruningHook alone (``explicit``: with ExactResumeHook in the config
    too, as mmela's configs have it)."""
    hooks = [dict(type='ELAPruningHook', windows=[(1, 2), 3],
                  exact_resume=exact_resume)]
    if explicit:
        hooks.append(dict(type='ExactResumeHook'))
    return dict(max_epochs=3, depth=38, dataset='AugmentedQuadrants',
                hooks=hooks, **kwargs)


def _crash_and_resume(tmp_path, nproc=1, **settings):
    """An uninterrupted run, and a run killed (SIGKILL, rank 0) in the first
    iteration of epoch 2, i.e. in the middle of window 1-2, then resumed from
    its epoch-1 checkpoint."""
    full = _train(tmp_path / 'full', nproc, **settings)
    assert full.returncode == 0, full.stderr[-3000:]
    cut = _train(tmp_path / 'cut', nproc, kill_at=[2, 1, 0], **settings)
    assert cut.returncode != 0
    if nproc == 1:
        assert cut.returncode == -signal.SIGKILL
    assert (tmp_path / 'cut/epoch_1.pth').exists()
    assert not (tmp_path / 'cut/epoch_2.pth').exists()
    resumed = _train(tmp_path / 'cut', nproc, resume=True, **settings)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return [
        [json.loads((tmp_path / run / name).read_text())
         for name in ['ela_pruning.json'] +
         [f'result_rank{r}.json' for r in range(nproc)]]
        for run in ('full', 'cut')
    ]


@pytest.mark.slow
@pytest.mark.parametrize('num_workers,persistent,explicit', [
    (0, False, False), (2, False, True), (2, True, False)])
def test_kill_and_resume_in_one_process_is_exact(tmp_path, num_workers,
                                                 persistent, explicit):
    full, resumed = _crash_and_resume(
        tmp_path, **_settings(num_workers=num_workers, explicit=explicit,
                              persistent_workers=persistent))
    # Reports (every KL to the last bit, masks) and final weights.
    assert resumed == full
    assert [r['iterations'] for r in full[0]] == [8, 4]
    log = read_logs(tmp_path / 'cut')
    assert 'resumed after epoch 1 with 0 window(s) done, window 1-2 in ' \
        'progress' in log
    assert 'ExactResumeHook:' not in log  # its warnings
    assert 'without ExactResumeHook' not in log
    # Added once per start when the config has none, and said so.
    added = log.count('ELAPruningHook: added ExactResumeHook')
    assert added == (0 if explicit else 2)


@pytest.mark.slow
@pytest.mark.parametrize('num_workers', [0, 2])
def test_kill_and_resume_with_two_gloo_ranks_is_exact(tmp_path, num_workers):
    full, resumed = _crash_and_resume(
        tmp_path, nproc=2, **_settings(num_workers=num_workers,
                                       persistent_workers=True))
    # Both ranks' partial KL sums of window 1-2 came back from the
    # checkpoint: the window's KL is the uninterrupted run's to the last bit.
    assert resumed == full
    assert [r['iterations'] for r in full[0]] == [8, 4]  # 2 ranks x 2 x 2
    assert full[1]['masks'] == full[2]['masks']


@pytest.mark.slow
def test_resume_without_exact_resume_hook_warns_and_differs(tmp_path):
    """Why the hook exists: the toy's augmentation matters, and with it
    turned off (``exact_resume=False``) a resumed run says that it is not
    exact."""
    full, resumed = _crash_and_resume(tmp_path,
                                      **_settings(exact_resume=False))
    assert [p['kl'] for p in resumed[0][0]['pairs']] != \
        [p['kl'] for p in full[0][0]['pairs']]
    assert 'resumed without ExactResumeHook' in read_logs(tmp_path / 'cut')


def _train_tool(config, work_dir, nproc=1, resume=False):
    """tools/train.py in a fresh process (``nproc`` > 1: under torchrun)."""
    tool = os.path.join(os.path.dirname(HERE), 'tools', 'train.py')
    args = [str(config), '--work-dir', str(work_dir)]
    if resume:
        args.append('--resume')
    if nproc == 1:
        cmd = [sys.executable, tool, *args]
    else:
        cmd = [sys.executable, '-m', 'torch.distributed.run',
               '--nproc_per_node', str(nproc), '--master_port',
               str(free_port()), tool, *args, '--launcher', 'pytorch']
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(
        [HERE, os.environ.get('PYTHONPATH', '')]))
    return subprocess.run(cmd, env=env, text=True, capture_output=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize('nproc', [1, 2])
def test_a_users_config_with_only_the_pruning_hook_resumes_exactly(
        tmp_path, nproc):
    """A config as the README shows it (custom_hooks holds ELAPruningHook
    alone), random crop and flip, killed with SIGKILL in the middle of its
    window by tools/train.py, then --resume: the uninterrupted run's
    ela_pruning.json, to the last bit of every divergence."""
    from tool_cases import tiny_classification
    config = tiny_classification(tmp_path)
    with open(config, 'a') as f:
        f.write("""
dataset['pipeline'] = [dict(type='LoadImageFromFile'),
                       dict(type='RandomCrop', crop_size=32, padding=4),
                       dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                       dict(type='PackInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, dataset=dataset)
val_cfg = val_dataloader = val_evaluator = None
train_cfg = dict(max_epochs=3, val_interval=10)
custom_imports = dict(imports=['mmela', 'toy_runner'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='ELAPruningHook', windows=[(1, 2)], method='fixed',
                     num_pruned=2)]
default_hooks = dict(checkpoint=dict(interval=1))
randomness = dict(seed=0)
""")
    killed = tmp_path / 'killed.py'
    killed.write_text(f"_base_ = {str(config)!r}\n"
                      "custom_hooks = [dict(type='ELAPruningHook', "
                      "windows=[(1, 2)], method='fixed', num_pruned=2), "
                      "dict(type='KillAt', epoch=2, iteration=1)]\n")
    full = _train_tool(config, tmp_path / 'full', nproc)
    assert full.returncode == 0, full.stderr[-3000:]
    cut = _train_tool(killed, tmp_path / 'cut', nproc)
    assert cut.returncode != 0
    assert (tmp_path / 'cut/epoch_1.pth').exists()
    assert not (tmp_path / 'cut/epoch_2.pth').exists()
    resumed = _train_tool(config, tmp_path / 'cut', nproc, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reports = [json.loads((tmp_path / run / 'ela_pruning.json').read_text())
               for run in ('full', 'cut')]
    assert reports[0] == reports[1]
    assert reports[0][0]['iterations'] == 8  # 8 images, batch 2, 2 epochs
    assert reports[0][0]['retrievals_on'] == reports[0][0][
        'retrievals_total'] - 2
    log = read_logs(tmp_path / 'cut')
    assert 'ELAPruningHook: added ExactResumeHook' in log
    assert 'resumed after epoch 1' in log
