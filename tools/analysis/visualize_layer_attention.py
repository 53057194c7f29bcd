"""Draw each stage's layer-attention distributions as heatmaps (paper Fig. 2a).

Builds the model of an mmpretrain or mmdet config (in its ``default_scope``),
loads ``--checkpoint`` if given (the retrieval masks come with it), runs the
backbone on a few images with attention recording on, and draws one
lower-triangular heatmap per stage: row ``l`` is block ``l``, column ``i`` an
earlier block of the stage (or ``l`` itself), the value ``P^l_i`` the share
of block ``l``'s retrieval that goes to block ``i``, averaged over the images
(see :mod:`mmela.models.attention_distribution`). Pruned blocks retrieve
nothing and offer nothing: their row is hatched grey and their column stays
empty in later rows.

Images are resized to ``--image-size`` (default 32x32 for a CIFAR backbone,
224x224 otherwise) and normalised by the model's data preprocessor, or, for a
model without one, with the ImageNet mean and std. ``--random N`` draws N
random images instead, so a fresh model needs no data.

Examples::

    python tools/analysis/visualize_layer_attention.py CONFIG \\
        --checkpoint work_dirs/x/epoch_180.pth --images a.png b.png \\
        --out attention.png
    python tools/analysis/visualize_layer_attention.py CONFIG --random 4 \\
        --out attention.png
"""
import argparse
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint
from torch import Tensor, nn

from mmela.models import ELAResNetCIFAR, LayerAttentionResNetBase

IMAGENET_MEAN_BGR = (103.53, 116.28, 123.675)
IMAGENET_STD_BGR = (57.375, 57.12, 58.395)


def build_model(config: str, checkpoint: Optional[str] = None,
                device: str = 'cpu') -> nn.Module:
    """The config's model in eval mode, with the checkpoint's weights and
    masks if given (a fresh, randomly initialised one otherwise)."""
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device).eval()


def find_backbone(model: nn.Module) -> LayerAttentionResNetBase:
    backbone = model if isinstance(model, LayerAttentionResNetBase) \
        else getattr(model, 'backbone', None)
    if not isinstance(backbone, LayerAttentionResNetBase) or \
            backbone.layer_attention is None:
        raise ValueError('the model needs an ELAResNet or ELAResNetCIFAR '
                         "backbone with layer_attention='light' or 'base'")
    return backbone


def load_images(paths: Sequence[str], size: Sequence[int]) -> List[Tensor]:
    """``uint8`` BGR ``(3, H, W)`` tensors, as OpenMMLab pipelines read them
    (resized to ``size``)."""
    import mmcv
    images = []
    for path in paths:
        image = mmcv.imresize(mmcv.imread(path, channel_order='bgr'),
                              (size[1], size[0]))
        images.append(torch.from_numpy(image).permute(2, 0, 1).contiguous())
    return images


def random_images(num: int, size: Sequence[int],
                  seed: int = 0) -> List[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return list(torch.randint(0, 256, (num, 3, *size), generator=gen,
                              dtype=torch.uint8))


def preprocess(model: nn.Module, images: List[Tensor],
               device: str) -> Tensor:
    """A normalised batch: through the model's data preprocessor when it
    normalises images, else BGR -> RGB and the ImageNet mean and std."""
    preprocessor = getattr(model, 'data_preprocessor', None)
    if preprocessor is not None:
        inputs = preprocessor(dict(inputs=images), False)['inputs']
        if isinstance(inputs, Tensor) and inputs.is_floating_point():
            return inputs
    batch = torch.stack(images).float()
    mean = torch.tensor(IMAGENET_MEAN_BGR).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD_BGR).view(1, 3, 1, 1)
    return ((batch - mean) / std).flip(1).to(device)


@torch.no_grad()
def attention_matrices(backbone: LayerAttentionResNetBase,
                       inputs: Tensor) -> List[np.ndarray]:
    """Per stage an ``(L, L)`` array: row ``l`` holds ``P^l`` at the columns
    of the retrieving blocks up to ``l``; NaN elsewhere (upper triangle,
    pruned rows, columns of pruned blocks)."""
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


def draw(matrices: List[np.ndarray], masks: List[Tensor], title: str,
         path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    fig, axes = plt.subplots(
        1, len(matrices), squeeze=False,
        figsize=(1.2 + 4.2 * len(matrices), 4.4))
    cmap = plt.get_cmap('viridis').with_extremes(bad='white')
    for idx, (ax, matrix, mask) in enumerate(zip(axes[0], matrices, masks)):
        blocks = len(mask)
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0,
                          vmax=np.nanmax(matrix))
        for row in range(blocks):
            if not mask[row]:
                ax.add_patch(Rectangle(
                    (-0.5, row - 0.5), row + 1, 1, facecolor='0.85',
                    edgecolor='0.4', hatch='///', linewidth=0))
            elif blocks <= 8:
                for col in np.flatnonzero(~np.isnan(matrix[row])):
                    value = matrix[row, col]
                    ax.text(col, row, f'{value:.2f}', ha='center',
                            va='center', fontsize=7,
                            color='white' if value < 0.6 * np.nanmax(matrix)
                            else 'black')
        ticks = range(blocks)
        step = max(1, blocks // 12)
        ax.set_xticks(list(ticks)[::step])
        ax.set_yticks(list(ticks))
        ax.set_yticklabels([f'{b}' if mask[b] else f'{b} (pruned)'
                            for b in ticks], fontsize=7)
        ax.set_xlabel('earlier block i')
        ax.set_ylabel('block l')
        ax.set_title(f'stage {idx + 1}: {int(mask.sum())}/{blocks} '
                     f'retrieving')
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                     label='$P^l_i$')
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Heatmaps of layer-attention distributions per stage.')
    parser.add_argument('config', help='mmpretrain or mmdet config')
    parser.add_argument('--checkpoint', help='weights and masks to load')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--images', nargs='+', help='image files')
    source.add_argument('--random', type=int, metavar='N',
                        help='N random images instead')
    parser.add_argument('--image-size', type=int, nargs=2,
                        metavar=('H', 'W'))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--out', default='attention.png')
    args = parser.parse_args(argv)
    if args.random is not None and args.random < 1:
        parser.error('--random needs N >= 1')
    return args


def main(argv=None) -> List[np.ndarray]:
    args = parse_args(argv)
    model = build_model(args.config, args.checkpoint, args.device)
    backbone = find_backbone(model)
    size = args.image_size or ((32, 32) if isinstance(
        backbone, ELAResNetCIFAR) else (224, 224))
    images = random_images(args.random, size) if args.random else \
        load_images(args.images, size)
    matrices = attention_matrices(
        backbone, preprocess(model, images, args.device))
    kind = {'light': 'MRLA-L', 'base': 'MRLA-B'}[backbone.layer_attention]
    counts = backbone.num_retrievals()
    source = args.checkpoint or 'fresh model'
    draw(matrices, backbone.get_masks(),
         f'{type(backbone).__name__} ({kind}, {counts["on"]}/'
         f'{counts["total"]} retrievals on), {source}\nrow l = block, '
         f'columns = blocks it retrieves from, mean over {len(images)} '
         f"image{'s' if len(images) > 1 else ''}", args.out)
    print(f'wrote {args.out}')
    return matrices


if __name__ == '__main__':
    main()
