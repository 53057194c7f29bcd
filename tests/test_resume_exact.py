"""kill -9 in the middle of a window, then --resume: the resumed run ends with
the uninterrupted run's reports, masks and weights, bit for bit, with random
augmentation (numpy, Python and torch draws), with and without (persistent)
workers, in one process and with 2 gloo ranks (issue 10, items 1 and 2)."""
import json
import os
import signal
import subprocess
import sys

import pytest

from toy_runner import free_port, read_logs

HERE = os.path.dirname(os.path.abspath(__file__))
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


def _settings(exact_resume=True, **kwargs):
    hooks = [dict(type='ELAPruningHook', windows=[(1, 2), 3])]
    if exact_resume:
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
@pytest.mark.parametrize('num_workers,persistent', [(0, False), (2, False),
                                                    (2, True)])
def test_kill_and_resume_in_one_process_is_exact(tmp_path, num_workers,
                                                 persistent):
    full, resumed = _crash_and_resume(
        tmp_path, **_settings(num_workers=num_workers,
                              persistent_workers=persistent))
    # Reports (every KL to the last bit, masks) and final weights.
    assert resumed == full
    assert [r['iterations'] for r in full[0]] == [8, 4]
    log = read_logs(tmp_path / 'cut')
    assert 'resumed after epoch 1 with 0 window(s) done, window 1-2 in ' \
        'progress' in log
    assert 'ExactResumeHook:' not in log  # its warnings
    assert 'without ExactResumeHook' not in log


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
    """Why the hook exists: the toy's augmentation matters, and without the
    hook a resumed run says that it is not exact."""
    full, resumed = _crash_and_resume(tmp_path,
                                      **_settings(exact_resume=False))
    assert [p['kl'] for p in resumed[0][0]['pairs']] != \
        [p['kl'] for p in full[0][0]['pairs']]
    assert 'resumed without ExactResumeHook' in read_logs(tmp_path / 'cut')
