"""Parameters and FLOPs of ResNet, MRLA-L and ELA (paper Tables 1-2).

Counts with mmengine's complexity analysis
(:func:`mmengine.analysis.get_model_complexity_info`): a traced forward pass
of one image in eval mode, convolutions and linear layers counted as
multiply-accumulates (1 MAC = 1 FLOP, the convention of the paper's
"ResNet-50 4.1B"), element-wise operations and norms not counted. A pruned
retrieval does not run, so ELA's FLOPs fall with its masks while its
parameters stay those of MRLA-L (the pruned blocks keep theirs).

Presets build mmpretrain classifiers (``ImageClassifier`` with
``GlobalAveragePooling`` and ``LinearClsHead``):

- ``cifar``: CIFAR-100 (100 classes, 32x32) ResNet-20 / 56 / 110.
- ``imagenet``: ImageNet (1000 classes, 224x224) ResNet-50 / 101.

ELA is MRLA-L with the masks of ``--masks ela_pruning.json`` (the last
report; given several files, each model takes the one whose masks fit it).
Without masks that fit, ELA's row equals MRLA-L's and says so.

Configs (mmpretrain or mmdet) are built as they are, from their
``default_scope``, with ``--cfg-options`` merged in as ``tools/train.py``
does. Their input has the channels of the backbone's stem (``in_channels``,
e.g. 1 for Fashion-MNIST) and the size the config's test pipeline gives its
images (a resize or crop, or the dataset's own size, such as 28x28 for
(Fashion-)MNIST; see :func:`mmela.utils.input_shape.input_shape`);
``--shape`` sets height and width instead. ``--depths`` picks depths of a
preset only; options and configs may come in any order.

Parameters are given twice: all of them, and the trainable ones (the 1x
detector configs freeze the stem and ``layer1``, so a detector trains fewer
than it has; the paper's detector counts are trainable ones, its classifier
counts all, which for a classifier are the same).

Examples::

    python tools/analysis/get_flops.py --preset all
    python tools/analysis/get_flops.py --preset cifar \\
        --masks work_dirs/ela_r56_cifar100/ela_pruning.json
    python tools/analysis/get_flops.py configs/some_ela_config.py
    python tools/analysis/get_flops.py \\
        configs/fashion_mnist/resnet38_ela_fashion_mnist.py \\
        --cfg-options model.backbone.depth=56
"""
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli.get_flops import main  # noqa: E402

if __name__ == '__main__':
    main()
