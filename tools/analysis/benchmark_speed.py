"""Training-step time and memory of plain ResNet, MRLA-B, MRLA-L and ELA.

The code, its options and examples: ``mmela/cli/benchmark_speed.py``
(``python tools/analysis/benchmark_speed.py --help``).
"""
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli.benchmark_speed import main  # noqa: E402

if __name__ == '__main__':
    main()
