"""Draw each stage's layer-attention distributions as heatmaps (paper Fig. 2a).

Builds the model of an mmpretrain or mmdet config (in its ``default_scope``),
loads ``--checkpoint`` if given (the retrieval masks come with it; a
checkpoint that does not fit the config is refused), runs the backbone on a
few images with attention recording on, and draws one lower-triangular
heatmap per stage (``layer1``, ``layer2``, ... as the ResNet names them):
row ``l`` is block ``l``, column ``i`` a block of the stage up to ``l``, the
value ``P^l_i`` the share of block ``l``'s retrieval that goes to block
``i``, averaged over the images (see
:mod:`mmela.models.attention_distribution`). All stages share one colour
scale. Pruned blocks retrieve nothing and offer nothing: their row is hatched
grey and their column stays empty in later rows. A block whose distribution
is undefined (every weight underflowed to 0, e.g. a saturated gate) is
hatched red and marked n/a instead of being left blank.

Images have the channels of the backbone's stem (its ``in_channels``: image
files are read in grey for 1, in colour for 3), are resized to
``--image-size`` (default: the size the config's test pipeline gives its
images, a resize or crop, or the dataset's own size such as 28x28 for
(Fashion-)MNIST; see :func:`mmela.utils.input_shape.input_shape`) and
normalised by the model's data preprocessor, or, for a model without one,
with the ImageNet mean and std. ``--random N`` draws N random images
instead, so a fresh model needs no data. ``--cfg-options KEY=VALUE ...``
changes the config as in ``tools/train.py``.

The figure goes next to the checkpoint (``epoch_180.pth`` ->
``epoch_180_layer_attention.png``), or for a fresh model into
``work_dirs/<config name>/``, unless ``--out`` says otherwise; its extension
picks the format (``.pdf`` and ``.svg`` for papers).

Examples::

    python tools/analysis/visualize_layer_attention.py CONFIG \\
        --checkpoint work_dirs/x/epoch_180.pth --images a.png b.png
    python tools/analysis/visualize_layer_attention.py CONFIG --random 4 \\
        --out attention.pdf --title 'ELA ResNet-56, CIFAR-100'
    python tools/analysis/visualize_layer_attention.py \\
        configs/fashion_mnist/resnet38_ela_fashion_mnist.py --random 4 \\
        --cfg-options model.backbone.layer_attention=base
"""
import warnings

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmela.cli.visualize_layer_attention import main  # noqa: E402

if __name__ == '__main__':
    main()
