"""What every layer-attention ResNet shares: the stage loop, ``frozen_stages``
and ``norm_eval``, and the interface :class:`ELAPruningHook` uses.

The interface (all per stage, stages in order):

- :meth:`set_attention_recording` switches recording on or off (off by
  default; when off the forward pass records nothing and costs nothing extra).
- :meth:`get_attention_distributions` returns, after a recorded forward pass,
  each retrieving block's distribution over the retrieving blocks before it.
- :meth:`get_masks` / :meth:`set_masks` read and write all retrieval masks.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .attention_distribution import light_attention_distributions
from .layer_attention import (BaseLayerAttention, LightLayerAttention,
                              check_layer_attention)


class LayerAttentionResNetBase(BaseModule):
    """Base class of :class:`ELAResNet` and :class:`ELAResNetCIFAR`.

    Subclasses build a stem of ``conv1``, ``bn1`` (and whatever follows,
    applied in ``forward_stem``) and register their stages, naming them in
    ``self.res_layers``. Arguments as in the subclasses.
    """

    default_init_cfg = [
        dict(type='Kaiming', layer=['Conv2d']),
        dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
    ]

    def __init__(self, layer_attention: Optional[str],
                 out_indices: Sequence[int], num_stages: int,
                 frozen_stages: int, norm_eval: bool,
                 zero_init_residual: bool, init_cfg=None):
        super().__init__(init_cfg=init_cfg or self.default_init_cfg)
        check_layer_attention(layer_attention)
        out_indices = tuple(out_indices)
        bad = [i for i in out_indices if not -num_stages <= i < num_stages]
        if bad or not out_indices:
            raise ValueError(f'out_indices must be a non-empty sequence of '
                             f'stage indices in [0, {num_stages - 1}] (or '
                             f'negative from -{num_stages}), got {out_indices}')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], '
                             f'got {frozen_stages}')
        self.layer_attention = layer_attention
        self.out_indices = tuple(i % num_stages for i in out_indices)
        self.num_stages = num_stages
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        self.res_layers: List[str] = []
        self._la_modules = None

    # ------------------------------------------------------------- forward
    def forward_stem(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        x = self.forward_stem(x)
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        if self.training and self._ddp_needs_tie():
            outs[-1] = outs[-1] + self._pruned_parameters_tie()
        return tuple(outs)

    # Under DistributedDataParallel every parameter must receive a gradient
    # in every step unless DDP searches the graph for unused ones
    # (find_unused_parameters=True, a slowdown on every step). Pruned blocks
    # skip their retrieval, so their parameters would get none. We tie them
    # to the output with a zero weight instead: one add of a scalar per step,
    # they receive zero gradients, and DDP needs no search.
    def _ddp_needs_tie(self) -> bool:
        return (dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1
                and any(not m.retrieval_on for m in self._attention_modules()))

    def _pruned_parameters_tie(self) -> Tensor:
        params = [p for m in self._attention_modules() if not m.retrieval_on
                  for p in m.parameters() if p.requires_grad]
        if not params:
            return torch.zeros((), device=self._device())
        return torch.stack([p.sum() for p in params]).sum() * 0.0

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def init_weights(self) -> None:
        super().init_weights()
        pretrained = isinstance(self.init_cfg, dict) and \
            self.init_cfg.get('type') == 'Pretrained'
        if self.zero_init_residual and not pretrained:
            for stage in self.stages():
                for block in stage:
                    constant_init(block.last_norm, 0)

    # --------------------------------------------------- train / freezing
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
        # frozen_stages keeps checkpoint weights fixed; a ResNet checkpoint
        # has no layer attention, so it keeps training in frozen stages too.
        for stage in self.stages()[:self.frozen_stages]:
            for block in stage:
                if block.layer_attention is not None:
                    block.layer_attention.train(self.training)
                    for param in block.layer_attention.parameters():
                        param.requires_grad = True

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------- layer-attention interface
    def stages(self) -> List[nn.Module]:
        return [getattr(self, name) for name in self.res_layers]

    def _attention_modules(self) -> List:
        if self._la_modules is None:
            self._la_modules = [
                m for m in self.modules()
                if isinstance(m, (LightLayerAttention, BaseLayerAttention))]
        return self._la_modules

    def _require_layer_attention(self) -> None:
        if self.layer_attention is None:
            raise RuntimeError(f'{type(self).__name__} was built with '
                               f'layer_attention=None: it has no retrievals')

    def set_attention_recording(self, enabled: bool) -> None:
        """Record attention in the following forward passes (or stop)."""
        self._require_layer_attention()
        for m in self._attention_modules():
            m.recording = bool(enabled)
            m.record = {}

    def get_attention_distributions(self) -> List[List[Tuple[int, Tensor]]]:
        """Distributions of the last recorded forward pass.

        Returns:
            list[list[tuple[int, Tensor]]]: For each stage, ``(block index,
            distribution)`` for every block whose retrieval is on, in block
            order; the k-th retrieving block's distribution has k entries and
            sums to 1. Tensors stay on the model's device.
        """
        self._require_layer_attention()
        result = []
        for stage_idx, stage in enumerate(self.stages()):
            active = [(i, block.layer_attention) for i, block in
                      enumerate(stage) if block.layer_attention.retrieval_on]
            if any(not m.record for _, m in active):
                raise RuntimeError(
                    f'no attention recorded in stage {stage_idx}: call '
                    f'set_attention_recording(True), then run a forward pass')
            if self.layer_attention == 'base':
                dists = [m.record['distribution'] for _, m in active]
            else:
                dists = light_attention_distributions(
                    [m.record['decay'] for _, m in active],
                    [m.record['gate'] for _, m in active],
                    head_dim=active[0][1].head_dim) if active else []
            result.append([(i, d) for (i, _), d in zip(active, dists)])
        return result

    def get_masks(self) -> List[Tensor]:
        """One bool tensor per stage (on the CPU), True = retrieval on."""
        self._require_layer_attention()
        return [torch.tensor([block.layer_attention.retrieval_on
                              for block in stage]) for stage in self.stages()]

    def set_masks(self, masks: Sequence) -> None:
        """Set every retrieval mask; ``masks`` is as :meth:`get_masks` returns
        (any per-stage sequence of bools or 0/1)."""
        self._require_layer_attention()
        stages = self.stages()
        expected = [len(stage) for stage in stages]
        got = [len(m) for m in masks]
        if got != expected:
            raise ValueError(f'masks must have one entry per block of each '
                             f'stage, i.e. lengths {expected}, got {got}')
        for stage, stage_mask in zip(stages, masks):
            for block, on in zip(stage, stage_mask):
                block.layer_attention.set_retrieval(bool(on))

    def num_retrievals(self) -> Dict[str, int]:
        """How many retrievals are on, and how many there are."""
        masks = self.get_masks()
        return dict(on=int(sum(m.sum() for m in masks)),
                    total=sum(len(m) for m in masks))
