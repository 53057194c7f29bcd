"""--resume with torch >= 2.6 (torch.load's weights_only default)."""
import subprocess
import sys

from toy_runner import build_runner


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
