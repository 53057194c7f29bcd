"""Layer attention and the backbones that carry it.

``ELAResNetCIFAR`` needs no codebase. The ELA variants of the stock ResNet
family are registered in mmdet's registry and in mmpretrain's, for each of
the two that is installed (see :mod:`.mmdet_backbones` and
:mod:`.mmpretrain_backbones`).
"""
import importlib

from .attention_distribution import (base_attention_distribution,
                                     light_attention_distributions)
from .base_backbone import LayerAttentionResNetBase
from .interface import (LayerAttentionBackbone, check_backbone,
                        is_layer_attention_backbone)
from .implementation import (layer_attention_impl, layer_attention_setting,
                             set_layer_attention_impl)
from .layer_attention import (LAYER_ATTENTION_TYPES, BaseLayerAttention,
                              LightLayerAttention, eca_kernel_size,
                              is_layer_attention_key)
from .resnet_cifar import CIFARResNet, ELAResNetCIFAR

__all__ = [
    'ELAResNetCIFAR', 'CIFARResNet', 'LayerAttentionResNetBase',
    'LightLayerAttention', 'BaseLayerAttention', 'LAYER_ATTENTION_TYPES',
    'eca_kernel_size', 'base_attention_distribution',
    'light_attention_distributions', 'layer_attention_impl',
    'layer_attention_setting', 'set_layer_attention_impl',
    'LayerAttentionBackbone', 'is_layer_attention_backbone', 'check_backbone',
    'is_layer_attention_key'
]


def _register_codebase_variants(codebase: str) -> None:
    """Import ``.<codebase>_backbones`` if ``codebase`` is installed."""
    try:
        importlib.import_module(f'.{codebase}_backbones', __name__)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split('.')[0] != codebase:
            raise  # the codebase is there but something it needs is not


for _codebase in ('mmdet', 'mmpretrain'):
    _register_codebase_variants(_codebase)
