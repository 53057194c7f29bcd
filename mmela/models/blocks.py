"""The bottleneck block and stage of the paper's CIFAR ResNet, in torch only.

No stock class builds this network (see :mod:`.resnet_cifar`), and the
classification-free side of mmela (this network, the pruning maths) needs no
codebase, so the block is written here in the shape of mmdet's and
mmpretrain's ``Bottleneck``: ``conv1``/``bn1`` ... ``conv3``/``bn3``, a
``downsample`` ``nn.Sequential`` (1x1 conv + norm), ``with_cp``. Layer
attention attaches to it as to the stock blocks.
"""
from typing import Optional

import torch.utils.checkpoint as cp
from torch import Tensor, nn

from .norm import build_norm


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 convs with ``expansion`` 4; the stride is on the 3x3
    conv.

    Args:
        in_channels (int): Input channels.
        planes (int): Channels of the 3x3 conv; the output has
            ``4 * planes``.
        stride (int): Stride of the 3x3 conv. Default: 1.
        downsample (nn.Sequential, optional): Projection of the identity.
        with_cp (bool): Checkpoint the block to save memory. Default: False.
        norm_cfg (dict): Norm layers. Default: ``dict(type='BN')``.
    """
    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Sequential] = None,
                 with_cp: bool = False, norm_cfg: Optional[dict] = None):
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN')
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = build_norm(norm_cfg, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1,
                               bias=False)
        self.bn2 = build_norm(norm_cfg, planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = build_norm(norm_cfg, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.with_cp = with_cp

    def _residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(self._residual, x, use_reentrant=False)
        else:
            out = self._residual(x)
        return self.relu(out)


def make_res_layer(in_channels: int, planes: int, num_blocks: int,
                   stride: int = 1, **block_kwargs) -> nn.Sequential:
    """Build a stage; the first block projects the identity (1x1 conv + norm)
    when the stride or the channel count changes."""
    out_channels = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            build_norm(block_kwargs.get('norm_cfg') or dict(type='BN'),
                       out_channels))
    blocks = [Bottleneck(in_channels, planes, stride, downsample,
                         **block_kwargs)]
    blocks += [Bottleneck(out_channels, planes, **block_kwargs)
               for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)
