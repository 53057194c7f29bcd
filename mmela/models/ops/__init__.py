"""The hand-written autograd functions of layer attention: the ``'fused'``
implementation (see :mod:`mmela.models.implementation`). The modules in
:mod:`mmela.models.layer_attention` hold both implementations side by side
and call these."""
from .base_retrieval import (BaseRetrievalFunction, KeyValueBuffer,
                             ReluResidualFunction)
from .common import conv_dtype, score_dtype, scratch
from .light_attention import LightAttentionFunction

__all__ = [
    'LightAttentionFunction', 'BaseRetrievalFunction', 'KeyValueBuffer',
    'ReluResidualFunction', 'conv_dtype', 'score_dtype', 'scratch'
]
