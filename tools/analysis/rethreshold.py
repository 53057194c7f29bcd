"""Re-threshold a run's measured divergences offline, without retraining.

``ELAPruningHook`` writes ``<work_dir>/ela_pruning.json``: per window, the
mean KL divergence of every adjacent pair of retrieving blocks and the masks
it left. This tool applies other pruning methods and taus to those
divergences and prints, for each, which retrievals would be pruned and how
many would stay on, exactly as the hook would have decided:
:func:`mmela.pruning.decide` on each window's divergences, ANDed into the
masks of the windows before (a pruned retrieval never comes back); see
:mod:`mmela.pruning.replay`.

The hook forms each window's pairs from the retrievals still on, so a later
window's divergences were measured only for the masks the run really had.
When a setting prunes differently in an earlier window, a later window's
pairs would differ and their divergences were never measured: the tool says
so and stops that setting there (``--windows 1`` looks at the first window
only).

Without ``--method`` it re-applies the run's own setting, and with
``--check`` exits with status 1 unless that reproduces the recorded masks.

Examples::

    python tools/analysis/rethreshold.py work_dirs/ela_r56 --check
    python tools/analysis/rethreshold.py work_dirs/ela_r56/ela_pruning.json \\
        --method ebqm threshold --tau 0.1 0.2 0.3 --param alpha=5 beta=1
    python tools/analysis/rethreshold.py RUN --method fixed --num-pruned 2 4 \\
        --windows 1 --json out.json
"""
import sys
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli.rethreshold import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
