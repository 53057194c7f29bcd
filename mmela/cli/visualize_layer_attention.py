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
import argparse
import math
import os
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope
from torch import Tensor, nn

from ..utils.input_shape import input_shape
from .checkpoints import check_fits, read_state_dict
from .config import read_config
from .errors import ConfigError, user_errors

IMAGENET_MEAN_BGR = (103.53, 116.28, 123.675)
IMAGENET_STD_BGR = (57.375, 57.12, 58.395)
KINDS = {'light': 'MRLA-L', 'base': 'MRLA-B'}
PRUNED_COLOUR, UNDEFINED_COLOUR = '0.85', '#f2b8b5'


def build_model(config: Union[str, Config], checkpoint: Optional[str] = None,
                device: str = 'cpu') -> nn.Module:
    """The model of a config (a file or a read one) in eval mode, with the
    checkpoint's weights and masks if given (a fresh, randomly initialised
    one otherwise). A checkpoint that cannot be read or does not fit the
    model is a :class:`ConfigError`."""
    cfg = config if isinstance(config, Config) else read_config(config)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model)
    if checkpoint:
        if not osp.isfile(checkpoint):
            raise ConfigError(f'--checkpoint: {checkpoint} does not exist')
        state = read_state_dict(checkpoint, '--checkpoint')
        check_fits(model, state, checkpoint, '--checkpoint')
        model.load_state_dict(state)
    return model.to(device).eval()


def find_backbone(model: nn.Module) -> nn.Module:
    """The model's backbone (or the model) when it has layer attention,
    i.e. offers the interface the ELAPruningHook uses."""
    backbone = model if hasattr(model, 'get_attention_distributions') \
        else getattr(model, 'backbone', None)
    if not hasattr(backbone, 'get_attention_distributions') or \
            not getattr(backbone, 'layer_attention', None):
        raise ConfigError(
            'the model needs an ELAResNet or ELAResNetCIFAR backbone with '
            "layer_attention='light' or 'base'")
    return backbone


def stage_names(backbone: nn.Module) -> List[str]:
    """``layer1``, ``layer2``, ...: the names the ResNet gives its stages
    (and the log and ``ela_pruning.json`` use)."""
    names = list(getattr(backbone, 'res_layers', None) or [])
    count = len(backbone.get_masks())
    if len(names) == count and all(isinstance(n, str) for n in names):
        return names
    return [f'layer{i + 1}' for i in range(count)]


def load_images(paths: Sequence[str], size: Sequence[int],
                channels: int = 3) -> List[Tensor]:
    """``uint8`` ``(channels, H, W)`` tensors, as OpenMMLab pipelines read
    them: BGR for 3 channels, grey for 1 (resized to ``size``)."""
    import mmcv
    if channels not in (1, 3):
        raise ConfigError(f'--images: image files have 1 or 3 channels, the '
                          f'model takes {channels}; use --random')
    images = []
    for path in paths:
        if not osp.isfile(path):
            raise ConfigError(f'--images: {path} does not exist')
        image = mmcv.imread(path, flag='color' if channels == 3 else
                            'grayscale', channel_order='bgr')
        if image is None:
            raise ConfigError(f'--images: {path} is not an image file')
        image = mmcv.imresize(image, (size[1], size[0]))
        if image.ndim == 2:
            image = image[..., None]
        images.append(torch.from_numpy(image).permute(2, 0, 1).contiguous())
    return images


def random_images(num: int, size: Sequence[int], seed: int = 0,
                  channels: int = 3) -> List[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return list(torch.randint(0, 256, (num, channels, *size), generator=gen,
                              dtype=torch.uint8))


def preprocess(model: nn.Module, images: List[Tensor],
               device: str) -> Tensor:
    """A normalised batch: through the model's data preprocessor when it
    normalises images, else BGR -> RGB and the ImageNet mean and std (their
    average over the colours for other than 3 channels)."""
    preprocessor = getattr(model, 'data_preprocessor', None)
    if preprocessor is not None:
        inputs = preprocessor(dict(inputs=images), False)['inputs']
        if isinstance(inputs, Tensor) and inputs.is_floating_point():
            return inputs
    batch = torch.stack(images).float()
    mean = torch.tensor(IMAGENET_MEAN_BGR).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD_BGR).view(1, 3, 1, 1)
    if batch.shape[1] != 3:
        return ((batch - mean.mean()) / std.mean()).to(device)
    return ((batch - mean) / std).flip(1).to(device)


@torch.no_grad()
def attention_matrices(backbone: nn.Module,
                       inputs: Tensor) -> List[np.ndarray]:
    """Per stage an ``(L, L)`` array: row ``l`` holds ``P^l`` at the columns
    of the retrieving blocks up to ``l``; NaN elsewhere (upper triangle,
    pruned rows, columns of pruned blocks) and where ``P^l`` itself is
    undefined (see :func:`undefined_rows`)."""
    backbone.set_attention_recording(True)
    try:
        backbone(inputs)
        stages = backbone.get_attention_distributions()
    finally:
        backbone.set_attention_recording(False)
    matrices = []
    for stage, mask in zip(stages, backbone.get_masks()):
        matrix = np.full((len(mask), len(mask)), np.nan)
        retrieving = [block for block, _ in stage]
        for block, dist in stage:
            matrix[block, retrieving[:len(dist)]] = dist.float().cpu().numpy()
        matrices.append(matrix)
    return matrices


def undefined_rows(matrix: np.ndarray, mask: Sequence[bool]) -> List[int]:
    """Blocks whose retrieval is on but whose distribution has no finite
    value (all its weights underflowed: 0/0)."""
    return [row for row in range(len(mask))
            if mask[row] and not np.isfinite(matrix[row]).any()]


def _tick_step(blocks: int, most: int = 8) -> int:
    """Label every block up to ``most`` labels, else every n-th block."""
    return max(1, math.ceil(blocks / most))


def draw(matrices: List[np.ndarray], masks: Sequence[Sequence[bool]],
         names: Sequence[str], title: Optional[str], path: str):
    """Draw the heatmaps into ``path`` and return the (closed) figure.

    Every cell has the same size, so a deep stage (ResNet-101's 23 blocks)
    gets a large panel and the shallow ones line up with its top; cells
    carry their value when they are large enough to read it."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle
    cell = min(0.55, 11.0 / sum(len(m) for m in masks))  # inches
    slots = [max(cell * len(m), 1.3) for m in masks]  # room for a title
    left, gap, bar = 0.75, 0.5, 0.9  # y labels, between panels, colour bar
    top, bottom = (0.75 if title else 0.4), 0.9
    height = cell * max(len(m) for m in masks)
    fig_width = left + sum(slots) + gap * (len(slots) - 1) + bar
    fig_height = top + height + bottom
    fig = plt.figure(figsize=(fig_width, fig_height))
    axes, x = [], left
    for slot, mask in zip(slots, masks):
        size = cell * len(mask)
        axes.append(fig.add_axes([
            (x + (slot - size) / 2) / fig_width,
            (bottom + height - size) / fig_height,
            size / fig_width, size / fig_height]))
        x += slot + gap
    axes = [axes]
    vmax = _colour_max(matrices)
    cmap = plt.get_cmap('viridis').with_extremes(bad='white')
    # A value such as '0.47' fits its cell at this size; below 7 pt nobody
    # reads it in print, so then the colours alone carry the values.
    # More than 12 rows of numbers is a table, not a figure.
    fontsize = min(9.0, cell * 72 / 3.4)
    values = fontsize >= 7 and max(len(m) for m in masks) <= 12
    seen = set()
    for ax, matrix, mask, name in zip(axes[0], matrices, masks, names):
        blocks = len(mask)
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0,
                          vmax=vmax)
        undefined = undefined_rows(matrix, mask)
        for row in range(blocks):
            if not mask[row]:
                seen.add('pruned')
                ax.add_patch(Rectangle(
                    (-0.5, row - 0.5), row + 1, 1, facecolor=PRUNED_COLOUR,
                    edgecolor='0.45', hatch='///', linewidth=0))
            elif row in undefined:
                seen.add('undefined')
                ax.add_patch(Rectangle(
                    (-0.5, row - 0.5), row + 1, 1,
                    facecolor=UNDEFINED_COLOUR, edgecolor='#b03a2e',
                    hatch='xx', linewidth=0))
                if values:
                    ax.text(row / 2, row, 'n/a', ha='center', va='center',
                            fontsize=fontsize, color='black',
                            bbox=dict(facecolor='white', edgecolor='none',
                                      pad=1))
            elif values:
                for col in np.flatnonzero(np.isfinite(matrix[row])):
                    value = matrix[row, col]
                    ax.text(col, row, f'{value:.2f}', ha='center',
                            va='center', fontsize=fontsize,
                            color='white' if value < 0.6 * vmax
                            else 'black')
        ticks = list(range(0, blocks, _tick_step(blocks)))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.tick_params(labelsize=8)
        ax.set_xlabel('retrieved block i', fontsize=9)
        on = int(sum(bool(m) for m in mask))
        # A narrow panel takes its title on two lines.
        joint = ': ' if cell * blocks >= 1.8 else '\n'
        ax.set_title(f'{name}{joint}{on}/{blocks} retrieving', fontsize=10)
    first = cell * len(masks[0])  # a short label for a short panel
    axes[0][0].set_ylabel('retrieving block l' if first >= 1.5 else
                          'block l', fontsize=9)
    extend = 'max' if any(np.nanmax(m, initial=0) > vmax for m in matrices
                          if np.isfinite(m).any()) else 'neither'
    colour_axis = fig.add_axes([
        (x - gap + 0.25) / fig_width, bottom / fig_height,
        0.15 / fig_width, height / fig_height])
    fig.colorbar(image, cax=colour_axis, extend=extend).set_label(
        '$P^l_i$', fontsize=10)
    legend = []
    if 'pruned' in seen:
        legend.append(Patch(facecolor=PRUNED_COLOUR, edgecolor='0.45',
                            hatch='///', label='pruned (retrieval off)'))
    if 'undefined' in seen:
        legend.append(Patch(
            facecolor=UNDEFINED_COLOUR, edgecolor='#b03a2e', hatch='xx',
            label='n/a: all weights underflow to 0 (saturated gate)'))
    if legend:
        fig.legend(handles=legend, loc='lower center', ncol=len(legend),
                   fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.15 / fig_height,
                     va='top')
    fig.savefig(path, dpi=200, bbox_inches='tight', pad_inches=0.05)
    plt.close(fig)
    return fig


def _colour_max(matrices: List[np.ndarray]) -> float:
    """The top of the shared colour scale: the largest value of any row
    with two or more entries. A stage's first retrieving block always has
    the distribution [1.0]; letting it set the scale would crush every
    informative row into the dark end (those cells show the top colour)."""
    top = [np.nanmax(row) for m in matrices for row in m
           if np.isfinite(row).sum() >= 2]
    if top:
        return float(max(top))
    finite = [m[np.isfinite(m)] for m in matrices]
    return float(max([v.max() for v in finite if v.size] or [1.0]))


def default_out(config: str, checkpoint: Optional[str]) -> str:
    """Next to the checkpoint, or in the config's work dir."""
    if checkpoint:
        stem = osp.splitext(osp.basename(checkpoint))[0]
        return osp.join(osp.dirname(checkpoint), f'{stem}_layer_attention.png')
    stem = osp.splitext(osp.basename(config))[0]
    return osp.join('work_dirs', stem, 'layer_attention_fresh_model.png')


def default_title(config: str, checkpoint: Optional[str], backbone,
                  num_images: int) -> str:
    counts = backbone.num_retrievals()
    source = osp.basename(checkpoint) if checkpoint else 'fresh model'
    kind = KINDS.get(backbone.layer_attention, backbone.layer_attention)
    images = f"{num_images} image{'s' if num_images > 1 else ''}"
    return (f'{osp.splitext(osp.basename(config))[0]}, {source}: {kind}, '
            f"{counts['on']}/{counts['total']} retrievals on, mean over "
            f'{images}')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='mmpretrain or mmdet config file')
    parser.add_argument('--checkpoint', help='checkpoint (.pth) whose '
                        'weights and retrieval masks to draw (default: a '
                        'fresh, randomly initialised model)')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--images', nargs='+',
                        help='image files to average the attention over')
    source.add_argument('--random', type=int, metavar='N',
                        help='average over N random images instead')
    parser.add_argument('--image-size', type=int, nargs=2,
                        metavar=('H', 'W'), help='resize images to H x W '
                        "(default: the size the config's test pipeline "
                        'gives, e.g. 28 28 for Fashion-MNIST; else 32 32 for '
                        'a CIFAR backbone, 224 224 for the rest)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, KEY=VALUE '
                        'pairs as for tools/train.py, e.g. '
                        'model.backbone.layer_attention=base')
    parser.add_argument('--device', default='cpu',
                        help='device to run the model on (default: cpu)')
    parser.add_argument('--out', help='figure file; .png, .pdf or .svg '
                        '(default: next to the checkpoint, '
                        '<checkpoint>_layer_attention.png, or '
                        'work_dirs/<config name>/ for a fresh model)')
    parser.add_argument('--title', help="the figure's title (default: "
                        'config and checkpoint names, retrievals on, '
                        "images); '' for none")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.random is not None and args.random < 1:
        parser.error('--random needs N >= 1')
    return args


def main(argv=None) -> List[np.ndarray]:
    args = parse_args(argv)
    with user_errors():
        if args.checkpoint and args.checkpoint.endswith('.json'):
            raise ConfigError(
                f'--checkpoint: {args.checkpoint} is a JSON file (a pruning '
                f'report?); give the .pth checkpoint it was written with')
        cfg = read_config(args.config, args.cfg_options)
        model = build_model(cfg, args.checkpoint, args.device)
        backbone = find_backbone(model)
        try:
            channels, *size = input_shape(cfg, model)
        except ValueError as e:
            raise ConfigError(f'{args.config}: {e}') from None
        size = args.image_size or size
        images = random_images(args.random, size, channels=channels) \
            if args.random else load_images(args.images, size, channels)
    matrices = attention_matrices(
        backbone, preprocess(model, images, args.device))
    out = args.out or default_out(args.config, args.checkpoint)
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    title = args.title if args.title is not None else default_title(
        args.config, args.checkpoint, backbone, len(images))
    draw(matrices, backbone.get_masks(), stage_names(backbone), title, out)
    print(f'wrote {out}')
    return matrices
