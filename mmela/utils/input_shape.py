"""The input a model of a config expects: channels from its first conv,
height and width from its test (else val, else train) pipeline, or the fixed
size of its dataset's images (28x28 for (Fashion-)MNIST, 32x32 for CIFAR).
The analysis tools feed random inputs of this shape."""
from typing import Optional, Sequence, Tuple

from torch import Tensor, nn

# Datasets of fixed-size images that the stock pipelines do not resize.
NATIVE_SIZES = {'MNIST': (28, 28), 'FashionMNIST': (28, 28),
                'CIFAR10': (32, 32), 'CIFAR100': (32, 32)}


def input_shape(cfg, model: nn.Module) -> Tuple[int, int, int]:
    """``(C, H, W)`` of one image for the model of ``cfg``:
    :func:`input_channels` of the model and :func:`pipeline_size` of the
    config, else 800x1333 for a detector, 32x32 for a CIFAR backbone and
    224x224 for the rest."""
    size = pipeline_size(cfg)
    if size is None:
        backbone = getattr(model, 'backbone', model)
        size = (800, 1333) if is_detector(model) else (32, 32) \
            if 'CIFAR' in type(backbone).__name__ else (224, 224)
    return (input_channels(model), *size)


def is_detector(model: nn.Module) -> bool:
    return hasattr(model, 'rpn_head') or hasattr(model, 'bbox_head')


def input_channels(model: nn.Module) -> int:
    """The channels the backbone's first convolution takes (its
    ``in_channels``); ValueError when the data preprocessor normalises
    another number of channels (its ``mean`` and ``std``)."""
    backbone = getattr(model, 'backbone', model)
    conv = next((m for m in backbone.modules()
                 if isinstance(m, nn.modules.conv._ConvNd)), None)
    preprocessor = getattr(model, 'data_preprocessor', None)
    mean = getattr(preprocessor, 'mean', None) \
        if getattr(preprocessor, '_enable_normalize', False) else None
    values = mean.numel() if isinstance(mean, Tensor) else None
    if conv is None:
        return values if values and values > 1 else 3
    if values not in (None, 1, conv.in_channels):
        raise ValueError(
            f'model.data_preprocessor normalises {values} channels (its mean '
            f'and std), but the backbone takes {conv.in_channels}-channel '
            f'images (in_channels={conv.in_channels})')
    return conv.in_channels


def pipeline_size(cfg, splits: Sequence[str] = ('test', 'val', 'train')
                  ) -> Optional[Tuple[int, int]]:
    """``(H, W)`` of the images the first of ``splits``' dataloaders with a
    known size hands the model: the dataset's native size
    (:data:`NATIVE_SIZES`) through the sizes its pipeline resizes and crops
    to. The test pipeline comes first: it is deterministic, and its size is
    the training crop's in the stock configs. None if no split says."""
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if isinstance(loader, dict):
            size = _dataset_size(loader.get('dataset'))
            if size is not None:
                return size
    return None


def _dataset_size(dataset) -> Optional[Tuple[int, int]]:
    if not isinstance(dataset, dict):
        return None
    # Wrappers (RepeatDataset, ConcatDataset, ...) hold the dataset whose
    # images their own pipeline, if any, starts from.
    inner = dataset.get('dataset') or next(iter(dataset.get('datasets')
                                                 or []), None)
    size = _dataset_size(inner) if inner is not None else \
        NATIVE_SIZES.get(_type_name(dataset.get('type')))
    for transform in dataset.get('pipeline') or []:
        if isinstance(transform, dict):
            size = _size_after(transform, size)
    return size


def _type_name(type_) -> str:
    name = type_ if isinstance(type_, str) else getattr(type_, '__name__', '')
    return name.rsplit('.', 1)[-1]


def _size_after(transform: dict, size: Optional[Tuple[int, int]]
                ) -> Optional[Tuple[int, int]]:
    """The ``(H, W)`` after one transform of an mmcv, mmpretrain or mmdet
    pipeline (``size`` before it: None if unknown); transforms that keep
    the size, or whose output size is random, keep ``size``."""
    name = _type_name(transform.get('type'))
    if name in ('RandomResizedCrop', 'EfficientNetRandomCrop'):
        return _hw(transform.get('scale'), size)  # mmpretrain: (h, w)
    if name in ('RandomCrop', 'EfficientNetCenterCrop'):
        return _hw(transform.get('crop_size'), size)
    if name == 'CenterCrop':
        return _hw(transform.get('crop_size'), size, wh=True)  # mmcv: (w, h)
    if name == 'ResizeEdge':
        return _resize_edge(transform, size)
    if name in ('Resize', 'RandomResize'):
        return _resize(transform, size)
    return size


def _hw(value, size, wh: bool = False) -> Optional[Tuple[int, int]]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and \
            all(isinstance(v, int) for v in value):
        return (value[1], value[0]) if wh else tuple(value)
    return size


def _resize_edge(transform: dict, size) -> Optional[Tuple[int, int]]:
    """mmpretrain's ``ResizeEdge``: one edge to ``scale``, the other in
    proportion (square when the size before is unknown)."""
    scale, edge = transform.get('scale'), transform.get('edge', 'short')
    if not isinstance(scale, int):
        return size
    if size is None:
        return scale, scale
    height, width = size
    if (edge == 'short' and width < height) or \
            (edge == 'long' and width > height) or edge == 'width':
        return int(scale * height / width), scale
    return scale, int(scale * width / height)


def _resize(transform: dict, size) -> Optional[Tuple[int, int]]:
    """mmcv's ``Resize`` (``scale`` as ``(w, h)``, or ``scale_factor``);
    with ``keep_ratio``, the largest size within ``scale`` (``scale`` itself
    when the size before is unknown, e.g. 800x1333 for mmdet's 1x)."""
    scale = transform.get('scale')
    if isinstance(scale, int):
        scale = (scale, scale)
    if not (isinstance(scale, (list, tuple)) and len(scale) == 2):
        factor = transform.get('scale_factor')
        if size is None or not isinstance(factor, (int, float)):
            return size
        return int(size[0] * factor + 0.5), int(size[1] * factor + 0.5)
    bound = (scale[1], scale[0])
    if size is None or not transform.get('keep_ratio', False):
        return bound
    factor = min(max(bound) / max(size), min(bound) / min(size))
    return int(size[0] * factor + 0.5), int(size[1] * factor + 0.5)
