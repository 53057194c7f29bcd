"""Re-threshold a run's measured divergences offline, without retraining.

The code, its options and examples: ``mmela/cli/rethreshold.py``
(``python tools/analysis/rethreshold.py --help``).
"""
import sys
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli.rethreshold import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
