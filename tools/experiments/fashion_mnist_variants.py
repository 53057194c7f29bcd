"""Variants of layer attention for the Fashion-MNIST investigation of MRLA-B
(tools/experiments/fashion_mnist_tune.sh), trained and judged on the
validation split only. Imported through ``custom_imports`` with this folder
on PYTHONPATH; not part of the package.

``LayerAttentionVariant`` changes the model before training starts (after
``init_weights``; a resumed run keeps what its checkpoint holds):

- ``norm_init``: the weight every layer-attention norm starts with (the
  backbones' default ``init_cfg`` sets it to 1, as the published MRLA does;
  0 makes the retrieval enter the block output with weight 0 until trained);
- ``relu``: False drops MRLA-B's ReLU after its norm (the published MRLA-B
  has it, MRLA-L does not).
"""
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmela.models import BaseLayerAttention
from mmela.registry import HOOKS


@HOOKS.register_module()
class LayerAttentionVariant(Hook):
    priority = 'VERY_LOW'  # after the checkpoint is loaded

    def __init__(self, norm_init: Optional[float] = None, relu: bool = True):
        self.norm_init = norm_init
        self.relu = relu

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        modules = model.backbone.layer_attention_modules()
        for module in modules:
            if isinstance(module, BaseLayerAttention):
                module.relu = self.relu
        if self.norm_init is not None and runner.iter == 0:
            with torch.no_grad():
                for module in modules:
                    module.norm.weight.fill_(self.norm_init)
        runner.logger.info(
            f'LayerAttentionVariant: norm_init={self.norm_init}, '
            f'relu={self.relu} on {len(modules)} modules')
