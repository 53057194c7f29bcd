"""Export a trained (ELA) model to ONNX or to a torch.export program, and
check the export against PyTorch.

The code, its options and examples: ``mmela/cli/export.py``
(``python tools/deployment/export.py --help``).
"""
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli.export import main  # noqa: E402

if __name__ == '__main__':
    main()
