"""Layer attention on any ResNet-style backbone, and the interface
:class:`ELAPruningHook` uses.

:class:`LayerAttentionResNetBase` is a mixin. Put it before a backbone class
whose stages are sequences of residual blocks (``self.res_layers`` names the
stages, each block has ``downsample`` and ``with_cp``, and its last conv is
``conv3`` or ``conv2``): mmdet's and mmpretrain's ``ResNet``, ``ResNeXt``,
``ResNetV1c/V1d`` and their relatives, or our CIFAR ResNet. The stock class
builds the whole network, with every argument, default, submodule name and
checkpoint key it has; the mixin then adds one ``layer_attention`` submodule
to every block and runs each stage so that the block's layer attention sees
the block's output ``x^l`` and its (projected) input::

    x^l = block(x)                       # the stock block, untouched
    out = layer_attention(x^l, identity, memory)

With ``layer_attention=None`` nothing is added and the network is exactly the
stock one.

The mixin provides :class:`~mmela.models.interface.LayerAttentionBackbone`,
the interface ``ELAPruningHook`` and the tools use (recording, distributions,
masks, stages).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule, Sequential
from torch import Tensor, nn

from .layer_attention import build_layer_attention, check_layer_attention
from .stage_memory import StageMemory


class IdentityRecorder(nn.Sequential):
    """A block's ``downsample`` that hands its output (the projected
    identity) to the block's layer attention.

    It holds the same modules under the same names as the ``nn.Sequential``
    it replaces, so checkpoint keys do not change. It keeps its output only
    while ``capture`` is on, i.e. during one call of :func:`forward_block`.
    """

    def __init__(self, downsample: nn.Sequential):
        super().__init__(*downsample)
        self.capture = False
        self.output: Optional[Tensor] = None

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        if self.capture:
            self.output = out
        return out


def _block_and_identity(block: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Run a stock block once; return its output and its identity branch
    (``x``, or what ``downsample`` made of it). The block's own
    checkpointing is switched off: :func:`forward_block` checkpoints the
    block and this capture together."""
    downsample = block.downsample
    with_cp, block.with_cp = block.with_cp, False
    if downsample is not None:
        downsample.capture = True
    try:
        out = block(x)
    finally:
        block.with_cp = with_cp
        if downsample is not None:
            downsample.capture = False
    if downsample is None:
        return out, x
    identity, downsample.output = downsample.output, None
    return out, identity


def forward_block(block: nn.Module, x: Tensor,
                  memory: StageMemory) -> Tensor:
    """One block and its layer attention (if it has one and it is on).

    A pruned block runs exactly as the stock block. With ``with_cp`` the
    block and the identity capture are checkpointed together (not with the
    stock block's own checkpoint, inside which the identity would be
    computed without autograd), so the layer attention gets the identity
    with its gradient, and MRLA-B's memory is appended to once.
    """
    attention = getattr(block, 'layer_attention', None)
    if attention is None or not attention.retrieval_on:
        return block(x)
    if block.with_cp and x.requires_grad:
        out, identity = cp.checkpoint(
            _block_and_identity, block, x, use_reentrant=False)
    else:
        out, identity = _block_and_identity(block, x)
    return attention(out, identity, memory)


def _ddp_running() -> bool:
    return (dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


class _StageForward:
    """The forward pass of a layer-attention stage: its blocks share the
    layer-attention memory (:class:`StageMemory`)."""

    def forward(self, x: Tensor) -> Tensor:
        memory = StageMemory(batch_counters=[])
        for block in self:
            x = forward_block(block, x, memory)
        memory.advance_batch_counts()
        if self.training and _ddp_running():
            x = self._tie_pruned_parameters(x)
        return x

    # Under DistributedDataParallel every parameter must receive a gradient
    # in every step unless DDP searches the graph for unused ones
    # (find_unused_parameters=True, a slowdown on every step). Pruned blocks
    # skip their retrieval, so their parameters would get none. We tie them
    # to the stage output with a zero weight instead: they receive zero
    # gradients, and DDP needs no search.
    def _tie_pruned_parameters(self, x: Tensor) -> Tensor:
        params = [p for block in self
                  for p in _pruned_parameters(block)]
        if not params:
            return x
        return x + torch.stack([p.sum() for p in params]).sum() * 0.0


class LayerAttentionStage(_StageForward, nn.Sequential):
    """A layer-attention stage in place of a stock ``nn.Sequential`` stage
    (mmpretrain's ``ResLayer``)."""


class LayerAttentionBaseModuleStage(_StageForward, Sequential):
    """A layer-attention stage in place of a stock mmengine ``Sequential``
    stage (mmdet's ``ResLayer``), which passes ``init_weights`` on to its
    blocks (mmdet's ``zero_init_residual`` is the blocks' ``init_cfg``)."""


def layer_attention_stage(stage: nn.Sequential) -> nn.Sequential:
    """The stock stage's blocks, under the same names, in a stage that runs
    their layer attention; of the stock stage's kind (with or without
    mmengine's ``init_weights``), with its plain attributes (``block``,
    ``expansion``, ...)."""
    if isinstance(stage, BaseModule):
        new = LayerAttentionBaseModuleStage(*stage, init_cfg=stage.init_cfg)
    else:
        new = LayerAttentionStage(*stage)
    for name, value in vars(stage).items():
        if not name.startswith('_') and name != 'training':
            new.__dict__.setdefault(name, value)
    return new


def _pruned_parameters(block: nn.Module) -> List[nn.Parameter]:
    attention = getattr(block, 'layer_attention', None)
    if attention is None or attention.retrieval_on:
        return []
    return [p for p in attention.parameters() if p.requires_grad]


def block_out_channels(block: nn.Module) -> int:
    """Output channels of a residual block: those of its last conv."""
    last = getattr(block, 'conv3', None) or getattr(block, 'conv2', None)
    if last is None or not hasattr(last, 'out_channels'):
        raise TypeError(f'{type(block).__name__}: layer attention needs a '
                        f'block whose last conv is conv3 or conv2')
    return last.out_channels


class LayerAttentionResNetBase:
    """Mixin that adds layer attention (MRLA-L / MRLA-B) to a ResNet-style
    backbone; :class:`ELAPruningHook` prunes its retrievals.

    Use it as the first base: ``class ELAResNet(LayerAttentionResNetBase,
    ResNet)``. It takes the stock class's arguments unchanged, plus:

    Args:
        layer_attention (str, optional): ``'light'`` (MRLA-L, the layer
            attention ELA prunes in the paper), ``'base'`` (MRLA-B) or None
            (exactly the stock network). Default: 'light'.
        head_dim (int): Channels per layer-attention head. Default: 32 (the
            paper's ``dim_perhead``). A block whose width it does not divide
            (some RegNets) gets the largest head width below it that does.
        attention_drop_path_rate (float): DropPath on the retrieval branch,
            as in the published MRLA ImageNet recipe. The ELA paper does not
            mention it. Default: 0.

    Behaviour added to the stock class:

    - each retrieval's norm layer has the backbone's ``norm_cfg`` type (always
      trainable), and starts at weight 0, so a network loaded from a plain
      ResNet checkpoint starts as exactly that ResNet; trained from scratch,
      the stock ``init_cfg`` sets it to 1, as in MRLA;
    - ``frozen_stages`` freezes only the ResNet weights of its stages: their
      layer attention keeps training, since a ResNet checkpoint has none;
    - ``norm_eval`` applies to the retrievals' BN layers too.
    """

    def __init__(self,
                 *args,
                 layer_attention: Optional[str] = 'light',
                 head_dim: int = 32,
                 attention_drop_path_rate: float = 0.,
                 **kwargs):
        check_layer_attention(layer_attention)
        super().__init__(*args, **kwargs)
        self.layer_attention = layer_attention
        if layer_attention is not None:
            norm_cfg = dict(getattr(self, 'norm_cfg', None) or dict(type='BN'))
            norm_cfg.pop('requires_grad', None)
            for name in self.res_layers:
                stage = getattr(self, name)
                for block in stage:
                    _attach(block, layer_attention, norm_cfg, head_dim,
                            attention_drop_path_rate)
                setattr(self, name, layer_attention_stage(stage))
        # The stock constructor froze its stages before layer attention
        # existed; apply frozen_stages again, now to the whole network.
        self._freeze_stages()

    # --------------------------------------------------- train / freezing
    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        # frozen_stages keeps checkpoint weights fixed; a ResNet checkpoint
        # has no layer attention, so it keeps training in frozen stages too.
        for stage in self.stages()[:max(self.frozen_stages, 0)]:
            for attention in _attention_modules(stage):
                attention.train(self.training)
                for param in attention.parameters():
                    param.requires_grad = True

    # ------------------------------------------- layer-attention interface
    def stages(self) -> List[nn.Module]:
        return [getattr(self, name) for name in self.res_layers]

    def layer_attention_modules(self) -> List[nn.Module]:
        """Every block's layer attention, stage by stage (empty with
        ``layer_attention=None``)."""
        return [m for stage in self.stages()
                for m in _attention_modules(stage)]

    def _require_layer_attention(self) -> None:
        if not self.layer_attention_modules():
            raise RuntimeError(f'{type(self).__name__} was built with '
                               f'layer_attention=None: it has no retrievals')

    def set_attention_recording(self, enabled: bool) -> None:
        """Record attention in the following forward passes (or stop)."""
        self._require_layer_attention()
        for stage in self.stages():
            for attention in _attention_modules(stage):
                attention.recording = bool(enabled)
                attention.record = {}

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
        for name, stage in zip(self.res_layers, self.stages()):
            active = [(i, block.layer_attention)
                      for i, block in enumerate(stage)
                      if block.layer_attention.retrieval_on]
            if any(not m.record for _, m in active):
                raise RuntimeError(
                    f'no attention recorded in {name}: call '
                    f'set_attention_recording(True), then run a forward pass')
            modules = [m for _, m in active]
            dists = type(modules[0]).stage_distributions(modules) \
                if modules else []
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

    def layer_attention_impl(self, device_type: Optional[str] = None) -> str:
        """The implementation of layer attention its retrieving blocks run
        eagerly on ``device_type`` (default: the backbone's), e.g.
        ``'fused'``; ``'fused+reference'`` where module hooks make some
        blocks run ``'reference'`` (see :mod:`.implementation`); ``'none'``
        with every retrieval pruned."""
        self._require_layer_attention()
        if device_type is None:
            device_type = next(self.parameters()).device.type
        impls = {block.layer_attention.implementation(device_type)
                 for stage in self.stages() for block in stage
                 if block.layer_attention.retrieval_on}
        return '+'.join(sorted(impls)) or 'none'

    def num_retrievals(self) -> Dict[str, int]:
        """How many retrievals are on, and how many there are."""
        masks = self.get_masks()
        return dict(on=int(sum(m.sum() for m in masks)),
                    total=sum(len(m) for m in masks))


def _attach(block: nn.Module, kind: str, norm_cfg: dict, head_dim: int,
            drop_path_rate: float) -> None:
    if block.downsample is not None:
        if not isinstance(block.downsample, nn.Sequential):
            raise TypeError(f'{type(block).__name__}.downsample must be an '
                            f'nn.Sequential to attach layer attention')
        block.downsample = IdentityRecorder(block.downsample)
    channels = block_out_channels(block)
    block.layer_attention = build_layer_attention(
        kind, channels, norm_cfg=norm_cfg,
        head_dim=fitting_head_dim(channels, head_dim),
        drop_path_rate=drop_path_rate)


def fitting_head_dim(channels: int, head_dim: int) -> int:
    """The largest head width up to ``head_dim`` that divides ``channels``
    (``head_dim`` itself for every ResNet/ResNeXt width; RegNets have widths
    such as 72 or 168 that 32 does not divide)."""
    return max(d for d in range(1, min(head_dim, channels) + 1)
               if channels % d == 0)


def _attention_modules(stage: nn.Module) -> List[nn.Module]:
    return [block.layer_attention for block in stage
            if getattr(block, 'layer_attention', None) is not None]
