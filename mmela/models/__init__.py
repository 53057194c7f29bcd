from .attention_distribution import (base_attention_distribution,
                                     light_attention_distributions)
from .base_backbone import LayerAttentionResNetBase
from .blocks import BasicBlock, Bottleneck, ResLayer
from .layer_attention import (LAYER_ATTENTION_TYPES, BaseLayerAttention,
                              LightLayerAttention, eca_kernel_size)
from .resnet import ELAResNet
from .resnet_cifar import ELAResNetCIFAR

__all__ = [
    'ELAResNet', 'ELAResNetCIFAR', 'LayerAttentionResNetBase', 'BasicBlock',
    'Bottleneck', 'ResLayer', 'LightLayerAttention', 'BaseLayerAttention',
    'LAYER_ATTENTION_TYPES', 'eca_kernel_size', 'base_attention_distribution',
    'light_attention_distributions'
]
