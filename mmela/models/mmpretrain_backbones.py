"""ELA variants of mmpretrain's ResNet family, in mmpretrain's registry.

Each is the stock class plus :class:`LayerAttentionResNetBase`: the stock
arguments, defaults, submodule names and checkpoint keys, and
``layer_attention`` (default ``'light'``; None gives the stock network).
An mmpretrain config (``default_scope='mmpretrain'``) that sets
``type='ELAResNet'`` gets this one; an mmdet config gets
:mod:`.mmdet_backbones`'.
"""
from mmpretrain.models.backbones import (RegNet, Res2Net, ResNet,
                                         ResNet_CIFAR, ResNetV1c, ResNetV1d,
                                         ResNeXt, SEResNet, SEResNeXt)
from mmpretrain.registry import MODELS

from .base_backbone import LayerAttentionResNetBase


@MODELS.register_module()
class ELAResNet(LayerAttentionResNetBase, ResNet):
    """mmpretrain's ``ResNet`` with layer attention."""


@MODELS.register_module()
class ELAResNet_CIFAR(LayerAttentionResNetBase, ResNet_CIFAR):
    """mmpretrain's ``ResNet_CIFAR`` (its ResNet with a 3x3 stride-1 stem
    and no max-pool, the backbone of its stock CIFAR configs) with layer
    attention; named like it, so a stock config needs only the ``ELA``
    prefix. Not :class:`~mmela.models.ELAResNetCIFAR`, the paper's
    bottleneck CIFAR ResNet (``mmela/models/resnet_cifar.py``)."""


@MODELS.register_module()
class ELAResNetV1c(LayerAttentionResNetBase, ResNetV1c):
    """mmpretrain's ``ResNetV1c`` (deep stem) with layer attention."""


@MODELS.register_module()
class ELAResNetV1d(LayerAttentionResNetBase, ResNetV1d):
    """mmpretrain's ``ResNetV1d`` (deep stem, average-pool downsampling)
    with layer attention."""


@MODELS.register_module()
class ELAResNeXt(LayerAttentionResNetBase, ResNeXt):
    """mmpretrain's ``ResNeXt`` with layer attention."""


@MODELS.register_module()
class ELASEResNet(LayerAttentionResNetBase, SEResNet):
    """mmpretrain's ``SEResNet`` with layer attention."""


@MODELS.register_module()
class ELASEResNeXt(LayerAttentionResNetBase, SEResNeXt):
    """mmpretrain's ``SEResNeXt`` with layer attention."""


@MODELS.register_module()
class ELARes2Net(LayerAttentionResNetBase, Res2Net):
    """mmpretrain's ``Res2Net`` with layer attention."""


@MODELS.register_module()
class ELARegNet(LayerAttentionResNetBase, RegNet):
    """mmpretrain's ``RegNet`` with layer attention."""
