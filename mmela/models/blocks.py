"""ResNet blocks and stages with optional layer attention.

Parameter names of the ResNet part (``conv1``, ``bn1``, ..., ``downsample.0``)
are those of torchvision's and mmpretrain's ResNet, so their checkpoints load
with only the ``layer_attention.*`` keys missing.
"""
from typing import List, Optional

import torch.utils.checkpoint as cp
from torch import Tensor, nn

from .layer_attention import build_layer_attention
from .norm import build_norm


class _Block(nn.Module):
    """A residual block followed by its layer attention (if any).

    ``forward`` computes ``x^l = relu(residual(x) + identity)`` and then
    ``layer_attention(x^l, identity, memory)``. With ``with_cp`` only the
    residual part is checkpointed: the layer attention appends to the stage's
    memory, which must not happen twice.
    """

    def __init__(self, downsample: Optional[nn.Module], with_cp: bool,
                 layer_attention: Optional[str], out_channels: int,
                 norm_cfg: dict, head_dim: int):
        super().__init__()
        self.downsample = downsample
        self.with_cp = with_cp
        self.relu = nn.ReLU(inplace=True)
        self.layer_attention = build_layer_attention(
            layer_attention, out_channels, norm_cfg=norm_cfg,
            head_dim=head_dim)

    def residual(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _residual_and_identity(self, x: Tensor):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual(x) + identity), identity

    def forward(self, x: Tensor, memory: Optional[list] = None) -> Tensor:
        if self.with_cp and x.requires_grad:
            out, identity = cp.checkpoint(
                self._residual_and_identity, x, use_reentrant=False)
        else:
            out, identity = self._residual_and_identity(x)
        if self.layer_attention is not None:
            out = self.layer_attention(out, identity, memory)
        return out


class BasicBlock(_Block):
    """Two 3x3 convs (ResNet-18/34).

    Args:
        in_channels (int): Input channels.
        planes (int): Output channels (``expansion`` is 1).
        stride (int): Stride of the first conv. Default: 1.
        dilation (int): Dilation of both convs. Default: 1.
        downsample (nn.Module, optional): Projection of the identity.
        style (str): Unused by basic blocks; kept for a uniform signature.
        with_cp (bool): Checkpoint the residual part to save memory.
        norm_cfg (dict): Norm layers. Default: ``dict(type='BN')``.
        layer_attention (str, optional): None, 'light' or 'base'.
        head_dim (int): Channels per layer-attention head. Default: 32.
    """
    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 dilation: int = 1, downsample: Optional[nn.Module] = None,
                 style: str = 'pytorch', with_cp: bool = False,
                 norm_cfg: Optional[dict] = None,
                 layer_attention: Optional[str] = None, head_dim: int = 32):
        norm_cfg = norm_cfg or dict(type='BN')
        super().__init__(downsample, with_cp, layer_attention,
                         planes * self.expansion, norm_cfg, head_dim)
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride,
                               padding=dilation, dilation=dilation, bias=False)
        self.bn1 = build_norm(norm_cfg, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = build_norm(norm_cfg, planes)

    @property
    def last_norm(self) -> nn.Module:
        return self.bn2

    def residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(_Block):
    """1x1 - 3x3 - 1x1 convs with ``expansion`` 4 (ResNet-50/101/152 and the
    CIFAR bottleneck ResNets).

    Arguments as :class:`BasicBlock`; the output has ``4 * planes`` channels.
    ``style='pytorch'`` puts the stride on the 3x3 conv, ``'caffe'`` on the
    first 1x1 conv.
    """
    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 dilation: int = 1, downsample: Optional[nn.Module] = None,
                 style: str = 'pytorch', with_cp: bool = False,
                 norm_cfg: Optional[dict] = None,
                 layer_attention: Optional[str] = None, head_dim: int = 32):
        norm_cfg = norm_cfg or dict(type='BN')
        super().__init__(downsample, with_cp, layer_attention,
                         planes * self.expansion, norm_cfg, head_dim)
        conv1_stride, conv2_stride = (stride, 1) if style == 'caffe' \
            else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, planes, 1, stride=conv1_stride,
                               bias=False)
        self.bn1 = build_norm(norm_cfg, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=conv2_stride,
                               padding=dilation, dilation=dilation, bias=False)
        self.bn2 = build_norm(norm_cfg, planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = build_norm(norm_cfg, planes * self.expansion)

    @property
    def last_norm(self) -> nn.Module:
        return self.bn3

    def residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class ResLayer(nn.Sequential):
    """One stage: a sequence of blocks sharing the stage's layer-attention
    memory (the keys and values MRLA-B retrieves from)."""

    def forward(self, x: Tensor) -> Tensor:
        memory: List = []
        for block in self:
            x = block(x, memory)
        return x


def make_res_layer(block: type, in_channels: int, planes: int,
                   num_blocks: int, stride: int = 1, dilation: int = 1,
                   **block_kwargs) -> ResLayer:
    """Build a stage; the first block projects the identity (1x1 conv + norm)
    when the stride or the channel count changes."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            build_norm(block_kwargs.get('norm_cfg') or dict(type='BN'),
                       out_channels))
    blocks = [block(in_channels, planes, stride, dilation, downsample,
                    **block_kwargs)]
    blocks += [block(out_channels, planes, 1, dilation, **block_kwargs)
               for _ in range(1, num_blocks)]
    return ResLayer(*blocks)
