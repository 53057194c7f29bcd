"""Heatmaps of the layer-attention distributions of a model, per stage.

The code, its options and examples: ``mmela/cli/visualize_layer_attention.py``
(``python tools/analysis/visualize_layer_attention.py --help``).
"""
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli.visualize_layer_attention import main  # noqa: E402

if __name__ == '__main__':
    main()
