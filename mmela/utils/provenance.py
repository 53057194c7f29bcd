"""Where a result came from: the commit, the software and the machine.

Written into every benchmark and experiment JSON, so a figure can be traced
to the code and the machine that produced it. On a copy of the working tree
(a device machine) pass the commit in the environment variables
``MMELA_COMMIT`` and ``MMELA_TREE_DIRTY`` (see ``tools/device_check.sh``).
"""
import os
import os.path as osp
import platform
import subprocess
from typing import Optional

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(['git', '-C', ROOT, *args], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """``commit`` (None if unknown) and ``dirty`` (whether tracked files
    differ from it; None if unknown). ``MMELA_COMMIT`` wins over git: a
    copy of the tree on another machine may carry a stale ``.git``."""
    if os.environ.get('MMELA_COMMIT'):
        dirty = os.environ.get('MMELA_TREE_DIRTY')
        return dict(commit=os.environ['MMELA_COMMIT'],
                    dirty=None if dirty is None else dirty not in ('0', ''))
    commit = _git('rev-parse', 'HEAD')
    if commit is None:
        return dict(commit=None, dirty=None)
    status = _git('status', '--porcelain', '--untracked-files=no')
    return dict(commit=commit, dirty=None if status is None else bool(status))


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = 'cpu') -> dict:
    """Commit, software versions and machine of this process."""
    cuda = device.startswith('cuda')
    return dict(
        **git_state(),
        device=device,
        device_name=torch.cuda.get_device_name() if cuda else cpu_model(),
        cpu_model=cpu_model(),
        torch=torch.__version__,
        cuda=torch.version.cuda if cuda else None,
        cudnn=torch.backends.cudnn.version() if cuda else None,
        python=platform.python_version(),
        cpu_threads=torch.get_num_threads())


def main(argv=None) -> None:
    """``python -m mmela.utils.provenance OUT.json [--device cpu]``: write
    :func:`environment` (and the layer-attention setting) to a file, e.g.
    into a run's work dir when it starts."""
    import argparse
    import json

    from ..models import layer_attention_setting
    parser = argparse.ArgumentParser(description=main.__doc__.split('\n')[0])
    parser.add_argument('out')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    info = dict(environment(args.device),
                layer_attention_setting=layer_attention_setting())
    with open(args.out, 'w') as f:
        json.dump(info, f, indent=2)


if __name__ == '__main__':
    main()
