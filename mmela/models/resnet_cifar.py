"""The bottleneck CIFAR ResNet of the paper's CIFAR experiments (Section 4,
Table 1), plain and with layer attention.

Not mmpretrain's ``ResNet_CIFAR`` (an ImageNet ResNet with a 3x3 stem): this
is the ``depth = 9n + 2`` network with a 16-channel 3x3 stem, three stages of
``n`` bottleneck blocks with 16 / 32 / 64 planes (64 / 128 / 256 outputs) and
strides 1 / 2 / 2. ResNet-20 / 56 / 110 have n = 2 / 6 / 12.
"""
from typing import Optional, Sequence

from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..registry import MODELS
from .base_backbone import LayerAttentionResNetBase
from .blocks import Bottleneck, make_res_layer
from .norm import build_norm


class CIFARResNet(BaseModule):
    """The plain bottleneck CIFAR ResNet, laid out like mmpretrain's
    ``ResNet`` (``conv1``/``bn1`` stem, ``layer1``..``layer3`` named in
    ``res_layers``, ``frozen_stages``, ``norm_eval``, ``zero_init_residual``).

    Args:
        depth (int): ``9n + 2`` with n >= 1 (20, 56, 110 in the paper).
        in_channels (int): Input image channels. Default: 3.
        out_indices (Sequence[int]): Stages whose outputs are returned.
            Default: (2, ).
        frozen_stages (int): Stages whose weights are frozen (stem included
            when >= 0). Default: -1.
        norm_cfg (dict): Norm layers. Default: ``dict(type='BN')``.
        norm_eval (bool): Keep BN layers in eval mode. Default: False.
        with_cp (bool): Checkpoint each block. Default: False.
        zero_init_residual (bool): Zero-init each residual branch's last norm.
            Default: False.
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    stage_planes = (16, 32, 64)
    stage_strides = (1, 2, 2)
    num_stages = 3

    def __init__(self,
                 depth: int,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (2, ),
                 frozen_stages: int = -1,
                 norm_cfg: Optional[dict] = None,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 zero_init_residual: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg or [
            dict(type='Kaiming', layer=['Conv2d']),
            dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
        ])
        if not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
            raise ValueError(f'depth must be 9n + 2 with n >= 1 (e.g. 20, 56, '
                             f'110), got {depth!r}')
        out_indices = tuple(out_indices)
        n = self.num_stages
        if not out_indices or any(not -n <= i < n for i in out_indices):
            raise ValueError(f'out_indices must be a non-empty sequence of '
                             f'stage indices in [0, {n - 1}] (or negative '
                             f'from -{n}), got {out_indices}')
        if not -1 <= frozen_stages <= n:
            raise ValueError(f'frozen_stages must be in [-1, {n}], '
                             f'got {frozen_stages}')
        self.depth = depth
        self.out_indices = tuple(i % n for i in out_indices)
        self.frozen_stages = frozen_stages
        self.norm_cfg = norm_cfg or dict(type='BN')
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        num_blocks = (depth - 2) // 9

        stem_channels = self.stage_planes[0]
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, padding=1,
                               bias=False)
        self.bn1 = build_norm(self.norm_cfg, stem_channels)
        self.relu = nn.ReLU(inplace=True)

        self.res_layers = []
        in_ch = stem_channels
        for i, (planes, stride) in enumerate(
                zip(self.stage_planes, self.stage_strides)):
            layer = make_res_layer(in_ch, planes, num_blocks, stride=stride,
                                   with_cp=with_cp, norm_cfg=self.norm_cfg)
            in_ch = planes * Bottleneck.expansion
            self.add_module(f'layer{i + 1}', layer)
            self.res_layers.append(f'layer{i + 1}')
        self.feat_dim = in_ch
        self._freeze_stages()

    def forward(self, x: Tensor):
        x = self.relu(self.bn1(self.conv1(x)))
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def init_weights(self) -> None:
        super().init_weights()
        pretrained = isinstance(self.init_cfg, dict) and \
            self.init_cfg.get('type') == 'Pretrained'
        if self.zero_init_residual and not pretrained:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    constant_init(m.bn3, 0)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.conv1, self.bn1] + [
            getattr(self, name) for name in self.res_layers[:self.frozen_stages]
        ]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


@MODELS.register_module()
class ELAResNetCIFAR(LayerAttentionResNetBase, CIFARResNet):
    """The bottleneck CIFAR ResNet with layer attention.

    Arguments as :class:`CIFARResNet`, plus ``layer_attention`` (default
    ``'light'``; None gives :class:`CIFARResNet` exactly), ``head_dim`` and
    ``attention_drop_path_rate`` (see :class:`LayerAttentionResNetBase`).
    """
