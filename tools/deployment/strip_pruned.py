"""Write a deploy checkpoint: the weights of pruned retrievals and all
training-only state removed.

The code, its options and examples: ``mmela/cli/strip_pruned.py``
(``python tools/deployment/strip_pruned.py --help``).
"""
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli.strip_pruned import main  # noqa: E402

if __name__ == '__main__':
    main()
