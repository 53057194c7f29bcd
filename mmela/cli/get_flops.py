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
import argparse
import json
import logging
import sys
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import DictAction
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from torch import nn

from ..utils.input_shape import input_shape, is_detector
from .config import read_config
from .errors import ConfigError, user_errors

# (preset, backbone type, depth, classes, input size, paper's params in M
# for ResNet / MRLA-L / ELA: Table 1 (CIFAR-100) and Table 2 (ImageNet))
PRESETS = {
    'cifar': [('ELAResNetCIFAR', depth, 100, (32, 32), paper)
              for depth, paper in ((20, (0.24, 0.25, 0.25)),
                                   (56, (0.61, 0.64, 0.64)),
                                   (110, (1.17, 1.23, 1.23)))],
    'imagenet': [('ELAResNet', depth, 1000, (224, 224), paper)
                 for depth, paper in ((50, (25.6, 25.7, 25.7)),
                                      (101, (44.5, 44.9, 44.9)))],
}


def classifier(backbone: dict, num_classes: int) -> nn.Module:
    """An mmpretrain ImageClassifier around ``backbone``."""
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    feat_dim = MODELS.build(dict(backbone)).feat_dim  # 512 for R18, ...
    return MODELS.build(dict(
        type='ImageClassifier', backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=feat_dim)))


def trainable(model: nn.Module) -> int:
    """Parameters that train (``requires_grad``; frozen stages excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def complexity(model: nn.Module, image_size: Sequence[int],
               inputs: Optional[tuple] = None,
               channels: int = 3) -> Tuple[int, int]:
    """``(parameters, FLOPs)`` of one ``channels x H x W`` image (or
    ``inputs``); all parameters, trainable or not."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)  # mmengine warns of every uncounted op
    try:
        with torch.no_grad():
            result = get_model_complexity_info(
                model.eval(), input_shape=None if inputs else
                (channels, *image_size), inputs=inputs, show_table=False,
                show_arch=False)
    finally:
        logger.setLevel(level)
    return result['params'], result['flops']


def load_masks(paths: Sequence[str]) -> List[list]:
    """The last report's masks of every ``ela_pruning.json``."""
    masks = []
    for path in paths:
        try:
            with open(path) as f:
                masks.append(json.load(f)[-1]['masks'])
        except (OSError, ValueError, LookupError, TypeError) as e:
            raise ConfigError(f'--masks: {path} is not a readable '
                              f'ela_pruning.json ({e})')
    return masks


def _fitting(candidates: Sequence[list], backbone) -> Optional[list]:
    lengths = [len(m) for m in backbone.get_masks()]
    for masks in candidates:
        if [len(m) for m in masks] == lengths:
            return masks
    return None


def preset_rows(preset: str, depths: Optional[Sequence[int]] = None,
                masks: Sequence[list] = ()) -> List[dict]:
    """Rows ``model, params_m, flops_g, paper_params_m`` for ResNet, MRLA-L
    and ELA of every depth of ``preset`` (or of ``depths``).

    Args:
        preset (str): 'cifar' or 'imagenet'.
        depths (Sequence[int], optional): Only these depths.
        masks (Sequence[list]): Candidate ELA masks (per-stage lists of 0/1);
            each model takes the first that fits its stages.
    """
    rows = []
    for backbone_type, depth, classes, size, paper in PRESETS[preset]:
        if depths and depth not in depths:
            continue
        for method, kind, paper_params in zip(
                ('ResNet', 'MRLA-L', 'ELA'), (None, 'light', 'light'),
                paper):
            model = classifier(dict(type=backbone_type, depth=depth,
                                    layer_attention=kind), classes)
            label = f'ResNet-{depth}' if method == 'ResNet' else method
            if method == 'ELA':
                fit = _fitting(masks, model.backbone)
                if fit is None:
                    label += ' (no masks: = MRLA-L)'
                else:
                    model.backbone.set_masks(fit)
                    counts = model.backbone.num_retrievals()
                    label += f" ({counts['on']}/{counts['total']} kept)"
            params, flops = complexity(model, size)
            rows.append(dict(
                preset=preset, model=label, depth=depth, method=method,
                params_m=params / 1e6, flops_g=flops / 1e9,
                trainable_m=trainable(model) / 1e6,
                paper_params_m=paper_params,
                input=f'{size[0]}x{size[1]}, {classes} classes'))
    return rows


def config_rows(config: str, shape: Optional[Sequence[int]],
                masks: Sequence[list] = (),
                cfg_options: Optional[dict] = None) -> List[dict]:
    """One row for the model of an mmpretrain or mmdet config (with
    ``cfg_options`` merged in), at its input shape; ``shape`` sets height
    and width."""
    from mmengine.registry import MODELS
    cfg = read_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model)
    backbone = getattr(model, 'backbone', None)
    label = cfg.filename.split('/')[-1].rsplit('.', 1)[0]
    if masks and getattr(backbone, 'layer_attention', None):
        fit = _fitting(masks, backbone)
        if fit is not None:
            backbone.set_masks(fit)
    if getattr(backbone, 'layer_attention', None):
        counts = backbone.num_retrievals()
        label += f" ({counts['on']}/{counts['total']} retrievals kept)"
    try:
        channels, *size = input_shape(cfg, model)
    except ValueError as e:
        raise ConfigError(f'{config}: {e}') from None
    size = tuple(shape or size)
    inputs = _detector_inputs(model, size, channels) \
        if is_detector(model) else None
    params, flops = complexity(model, size, inputs, channels)
    described = f'{size[0]}x{size[1]}' + (
        '' if channels == 3 else f', {channels}-channel')
    return [dict(preset=None, model=label, depth=None, method=None,
                 params_m=params / 1e6, flops_g=flops / 1e9,
                 trainable_m=trainable(model) / 1e6,
                 paper_params_m=None, input=described)]


def _detector_inputs(model: nn.Module, size: Sequence[int],
                     channels: int = 3) -> tuple:
    """A detector's forward needs data samples with image shapes: bind them
    to ``forward`` and hand the analysis the image only."""
    from functools import partial

    from mmdet.structures import DetDataSample
    padded = tuple(-(-s // 32) * 32 for s in size)
    sample = DetDataSample(metainfo=dict(
        img_shape=tuple(size), ori_shape=tuple(size), pad_shape=padded,
        batch_input_shape=padded, scale_factor=(1.0, 1.0)))
    model.forward = partial(model.forward, data_samples=[sample],
                            mode='tensor')
    return (torch.zeros(1, channels, *padded), )


def format_table(rows: List[dict]) -> str:
    """Markdown, one row per model as in the paper's Tables 1-2."""
    lines = ['| Model | Input | Params, all (M) | Params, trainable (M) | '
             'Paper params (M) | FLOPs (G) |',
             '|---|---|---:|---:|---:|---:|']
    for row in rows:
        paper = '-' if row['paper_params_m'] is None \
            else f"{row['paper_params_m']:.2f}"
        lines.append(f"| {row['model']} | {row['input']} | "
                     f"{row['params_m']:.2f} | {row['trainable_m']:.2f} | "
                     f"{paper} | {row['flops_g']:.3f} |")
    return '\n'.join(lines)


def _lists_last(argv: Sequence[str]) -> List[str]:
    """Move ``--depths N [N ...]`` and ``--cfg-options KEY=VALUE [...]`` to
    the end of ``argv``, so that a config after them is not read as one more
    depth or option."""
    argv = list(argv)
    for flag, belongs in (('--depths', lambda a: a.lstrip('-').isdigit()),
                          ('--cfg-options', lambda a: '=' in a)):
        if flag not in argv:
            continue
        start = argv.index(flag)
        end = start + 1
        while end < len(argv) and belongs(argv[end]):
            end += 1
        argv = argv[:start] + argv[end:] + argv[start:end]
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='*', help='mmpretrain / mmdet '
                        'configs to count (besides any --preset)')
    parser.add_argument('--preset', choices=['cifar', 'imagenet', 'all'],
                        help="the paper's models: CIFAR-100 ResNet-20/56/110"
                        ', ImageNet ResNet-50/101, or both (the default '
                        'without configs)')
    parser.add_argument('--depths', type=int, nargs='+',
                        help='only these depths of the preset, e.g. 20 56')
    parser.add_argument('--masks', nargs='+', default=[],
                        help='ela_pruning.json files for the ELA rows')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="input size for configs (default: the size the "
                        "config's test pipeline gives, e.g. 28 28 for "
                        'Fashion-MNIST; else 224 224, 32 32 for a CIFAR '
                        'backbone, 800 1333 for detectors); the channels '
                        "are always the backbone's in_channels")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the configs, KEY=VALUE '
                        'pairs as for tools/train.py, e.g. '
                        'model.backbone.depth=56')
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(_lists_last(
        sys.argv[1:] if argv is None else argv))
    if args.cfg_options and not args.configs:
        parser.error('--cfg-options changes configs; give one (presets '
                     'take --depths and --masks)')
    if args.depths and not args.preset:
        if args.configs:
            parser.error('--depths picks depths of a --preset; a config is '
                         'counted at the depth it sets (for ResNet-20: '
                         '--preset cifar --depths 20)')
        args.preset = 'all'
    if not args.preset and not args.configs:
        args.preset = 'all'
    return args


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    with user_errors():
        masks = load_masks(args.masks)
        rows = []
        presets = ('cifar', 'imagenet') if args.preset == 'all' else \
            (args.preset, ) if args.preset else ()
        for preset in presets:
            rows += preset_rows(preset, args.depths, masks)
        for config in args.configs:
            rows += config_rows(config, args.shape, masks,
                                args.cfg_options)
    print(format_table(rows))
    print('\nParams, all: every parameter; trainable: those not frozen '
          '(requires_grad). FLOPs: multiply-accumulates of convolutions and '
          'linear layers (mmengine.analysis), one image; element-wise '
          'operations and norms are not counted.')
    return rows
