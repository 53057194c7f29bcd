"""ELAResNet: the ImageNet / COCO ResNet with layer attention."""
from typing import Optional, Sequence

from torch import Tensor, nn

from ..registry import MODELS
from .base_backbone import LayerAttentionResNetBase
from .blocks import BasicBlock, Bottleneck, make_res_layer
from .norm import build_norm


@MODELS.register_module()
class ELAResNet(LayerAttentionResNetBase):
    """ResNet with layer attention (MRLA-L / MRLA-B), whose retrievals
    :class:`ELAPruningHook` prunes.

    The constructor takes the arguments of mmdet's and mmpretrain's ``ResNet``
    that detection and classification configs set, plus ``layer_attention``.
    With ``layer_attention=None`` it is a plain ResNet. Parameter names match
    torchvision's and mmpretrain's ResNet, so their checkpoints load with only
    the ``layer_attention.*`` keys missing.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        layer_attention (str, optional): ``'light'`` (MRLA-L, the layer
            attention ELA prunes in the paper), ``'base'`` (MRLA-B) or None.
            Default: 'light'.
        in_channels (int): Input image channels. Default: 3.
        stem_channels (int): Channels of the 7x7 stem conv. Default: 64.
        base_channels (int): Planes of the first stage. Default: 64.
        num_stages (int): Stages, 1 to 4. Default: 4.
        strides (Sequence[int]): Stride of each stage's first block.
            Default: (1, 2, 2, 2).
        dilations (Sequence[int]): Dilation of each stage. Default: (1, 1, 1, 1).
        out_indices (Sequence[int]): Stages whose outputs are returned.
            Default: (3, ).
        style (str): 'pytorch' (stride on the 3x3 conv) or 'caffe' (on the
            first 1x1 conv). Default: 'pytorch'.
        frozen_stages (int): Stages whose ResNet weights are frozen (stem
            included when >= 0); -1 freezes nothing. Their layer attention
            keeps training: a ResNet checkpoint does not supply it.
            Default: -1.
        norm_cfg (dict): Norm layers. Default: ``dict(type='BN',
            requires_grad=True)``.
        norm_eval (bool): Keep BN layers in eval mode while training.
            Default: False.
        with_cp (bool): Checkpoint each block's residual part. Default: False.
        zero_init_residual (bool): Zero-init the last norm of every residual
            branch (skipped when loading a pretrained checkpoint).
            Default: True.
        head_dim (int): Channels per layer-attention head. Default: 32.
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    arch_settings = {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(self,
                 depth: int,
                 layer_attention: Optional[str] = 'light',
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (3, ),
                 style: str = 'pytorch',
                 frozen_stages: int = -1,
                 norm_cfg: Optional[dict] = None,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 zero_init_residual: bool = True,
                 head_dim: int = 32,
                 init_cfg=None):
        if depth not in self.arch_settings:
            raise ValueError(f'depth must be one of '
                             f'{sorted(self.arch_settings)}, got {depth!r}')
        if not 1 <= num_stages <= 4:
            raise ValueError(f'num_stages must be in [1, 4], got {num_stages}')
        if style not in ('pytorch', 'caffe'):
            raise ValueError(f"style must be one of ['pytorch', 'caffe'], "
                             f'got {style!r}')
        if len(strides) < num_stages or len(dilations) < num_stages:
            raise ValueError(f'strides and dilations need {num_stages} '
                             f'entries (num_stages), got {tuple(strides)} '
                             f'and {tuple(dilations)}')
        super().__init__(layer_attention, out_indices, num_stages,
                         frozen_stages, norm_eval, zero_init_residual,
                         init_cfg)
        norm_cfg = norm_cfg or dict(type='BN', requires_grad=True)
        self.depth = depth
        block, stage_blocks = self.arch_settings[depth]

        self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2,
                               padding=3, bias=False)
        self.bn1 = build_norm(norm_cfg, stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        in_ch = stem_channels
        for i, num_blocks in enumerate(stage_blocks[:num_stages]):
            planes = base_channels * 2**i
            layer = make_res_layer(
                block, in_ch, planes, num_blocks, stride=strides[i],
                dilation=dilations[i], style=style, with_cp=with_cp,
                norm_cfg=norm_cfg, layer_attention=layer_attention,
                head_dim=head_dim)
            in_ch = planes * block.expansion
            self.add_module(f'layer{i + 1}', layer)
            self.res_layers.append(f'layer{i + 1}')
        self.feat_dim = in_ch

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))
