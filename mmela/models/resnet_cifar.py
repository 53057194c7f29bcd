"""ELAResNetCIFAR: the bottleneck CIFAR ResNet of the paper (SPEC section 1).

Not mmpretrain's ``ResNet_CIFAR`` (an ImageNet ResNet with a 3x3 stem): this
is the ``depth = 9n + 2`` network with a 16-channel 3x3 stem, three stages of
``n`` bottleneck blocks with 16 / 32 / 64 planes (64 / 128 / 256 outputs) and
strides 1 / 2 / 2. ResNet-20 / 56 / 110 have n = 2 / 6 / 12.
"""
from typing import Optional, Sequence

from torch import Tensor, nn

from ..registry import MODELS
from .base_backbone import LayerAttentionResNetBase
from .blocks import Bottleneck, make_res_layer
from .norm import build_norm


@MODELS.register_module()
class ELAResNetCIFAR(LayerAttentionResNetBase):
    """Bottleneck CIFAR ResNet with layer attention.

    Args:
        depth (int): ``9n + 2`` with n >= 1 (20, 56, 110 in the paper).
        layer_attention (str, optional): 'light' (MRLA-L), 'base' (MRLA-B) or
            None (plain). Default: 'light'.
        in_channels (int): Input image channels. Default: 3.
        out_indices (Sequence[int]): Stages whose outputs are returned.
            Default: (2, ).
        frozen_stages (int): Stages whose ResNet weights are frozen (stem
            included when >= 0); their layer attention keeps training.
            Default: -1.
        norm_cfg (dict): Norm layers. Default: ``dict(type='BN')``.
        norm_eval (bool): Keep BN layers in eval mode. Default: False.
        with_cp (bool): Checkpoint each block's residual part. Default: False.
        zero_init_residual (bool): Zero-init each residual branch's last norm.
            Default: False.
        head_dim (int): Channels per layer-attention head. Default: 32.
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    stage_planes = (16, 32, 64)
    stage_strides = (1, 2, 2)

    def __init__(self,
                 depth: int,
                 layer_attention: Optional[str] = 'light',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (2, ),
                 frozen_stages: int = -1,
                 norm_cfg: Optional[dict] = None,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 zero_init_residual: bool = False,
                 head_dim: int = 32,
                 init_cfg=None):
        if not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
            raise ValueError(f'depth must be 9n + 2 with n >= 1 (e.g. 20, 56, '
                             f'110), got {depth!r}')
        super().__init__(layer_attention, out_indices, 3, frozen_stages,
                         norm_eval, zero_init_residual, init_cfg)
        norm_cfg = norm_cfg or dict(type='BN')
        self.depth = depth
        num_blocks = (depth - 2) // 9

        stem_channels = self.stage_planes[0]
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, padding=1,
                               bias=False)
        self.bn1 = build_norm(norm_cfg, stem_channels)
        self.relu = nn.ReLU(inplace=True)

        in_ch = stem_channels
        for i, (planes, stride) in enumerate(
                zip(self.stage_planes, self.stage_strides)):
            layer = make_res_layer(
                Bottleneck, in_ch, planes, num_blocks, stride=stride,
                with_cp=with_cp, norm_cfg=norm_cfg,
                layer_attention=layer_attention, head_dim=head_dim)
            in_ch = planes * Bottleneck.expansion
            self.add_module(f'layer{i + 1}', layer)
            self.res_layers.append(f'layer{i + 1}')
        self.feat_dim = in_ch

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.conv1(x)))
