"""Parameters and FLOPs of ResNet, MRLA-L and ELA (paper Tables 1-2).

The code, its options and examples: ``mmela/cli/get_flops.py``
(``python tools/analysis/get_flops.py --help``).
"""
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli.get_flops import main  # noqa: E402

if __name__ == '__main__':
    main()
