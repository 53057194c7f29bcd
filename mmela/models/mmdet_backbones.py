"""ELA variants of mmdet's ResNet family, in mmdet's registry.

Each is the stock class plus :class:`LayerAttentionResNetBase`: the stock
arguments, defaults, submodule names and checkpoint keys, and
``layer_attention`` (default ``'light'``; None gives the stock network).
An mmdet config (``default_scope='mmdet'``) that sets ``type='ELAResNet'``
gets this one; an mmpretrain config gets :mod:`.mmpretrain_backbones`'.
"""
from mmdet.models.backbones import (RegNet, Res2Net, ResNet, ResNetV1d,
                                    ResNeXt)
from mmdet.registry import MODELS

from .base_backbone import LayerAttentionResNetBase


@MODELS.register_module()
class ELAResNet(LayerAttentionResNetBase, ResNet):
    """mmdet's ``ResNet`` with layer attention."""


@MODELS.register_module()
class ELAResNetV1d(LayerAttentionResNetBase, ResNetV1d):
    """mmdet's ``ResNetV1d`` (deep stem, average-pool downsampling) with
    layer attention."""


@MODELS.register_module()
class ELAResNeXt(LayerAttentionResNetBase, ResNeXt):
    """mmdet's ``ResNeXt`` with layer attention."""


@MODELS.register_module()
class ELARes2Net(LayerAttentionResNetBase, Res2Net):
    """mmdet's ``Res2Net`` with layer attention."""


@MODELS.register_module()
class ELARegNet(LayerAttentionResNetBase, RegNet):
    """mmdet's ``RegNet`` with layer attention."""
