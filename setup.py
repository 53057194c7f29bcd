from setuptools import find_packages, setup


def readme():
    with open('README.md', encoding='utf-8') as f:
        return f.read()


setup(
    name='mmela',
    version='0.1.0',
    description='Efficient Layer Attention (ELA) for MMDetection and MMPretrain',
    long_description=readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmela', 'mmela.*']),
    python_requires='>=3.9',
    install_requires=['torch', 'mmengine>=0.10', 'numpy', 'scipy'],
    extras_require={
        'det': ['mmcv>=2.0.0rc4,<2.2.0', 'mmdet>=3.0', 'pycocotools'],
        'cls': ['mmpretrain>=1.0'],
        # tools/deployment and tools/analysis/benchmark_inference.py; the
        # versions checked with torch 2.14.1 (docs/user_guides/deployment.md)
        'deploy': ['onnx==1.23.2', 'onnxruntime==1.32.0', 'onnxscript==0.7.2',
                   'openvino==2026.4.1'],
    },
    license='Apache License 2.0',
)
