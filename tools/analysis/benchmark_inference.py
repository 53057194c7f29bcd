"""Inference latency and throughput of plain ResNet, MRLA-L and ELA in
PyTorch, ONNX Runtime and OpenVINO.

The code, its options and examples: ``mmela/cli/benchmark_inference.py``
(``python tools/analysis/benchmark_inference.py --help``).
"""
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli.benchmark_inference import main  # noqa: E402

if __name__ == '__main__':
    main()
