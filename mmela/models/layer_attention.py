"""Layer attention modules: MRLA-L ('light') and MRLA-B ('base').

One module sits at the end of every block of a layer-attention ResNet stage.
Given the block's output ``x^l`` and its (projected) input it retrieves from
the earlier blocks of the stage and returns ``x^l + drop_path(BN(o^l))``
(MRLA-L, the ELA paper's Eq. 7) or ``x^l + drop_path(relu(BN(o^l)))``
(MRLA-B, Eqs. 4-5 with a softmax, and the ReLU of the published MRLA-B).

Every module owns a *retrieval mask* (a persistent buffer, 1 = retrieval on).
With the mask at 0 the module returns ``x^l`` unchanged: no query, key or
value, no depthwise conv, and (MRLA-B) nothing is offered to later blocks. The
forward pass reads a Python mirror of the mask, so checking it costs no device
synchronisation; the mirror follows the buffer through ``set_retrieval`` and
``load_state_dict``.

Each module has two implementations of its forward pass, side by side:
``forward_reference`` (stock operators and modules, the published
formulation) and ``forward_fused`` (the autograd functions of :mod:`.ops`).
Which one runs is chosen in :mod:`.implementation`, never by the module.

Mixed precision: the attention scores (query . key, the sigmoid and the
softmax) are computed in float32 (or float64) whatever the autocast dtype,
and the weights are cast back to the feature dtype before they scale the
values, so a block's output keeps the dtype a plain block's would have.
"""
import math
from typing import Dict, List, Optional, Set, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor, nn

from .attention_distribution import (base_attention_distribution,
                                     light_attention_distributions)
from .implementation import layer_attention_impl, layer_attention_setting
from .norm import build_norm
from .ops import (BaseRetrievalFunction, KeyValueBuffer,
                  LightAttentionFunction, ReluResidualFunction, score_dtype)
from .stage_memory import StageMemory

LAYER_ATTENTION_TYPES = (None, 'light', 'base')


def eca_kernel_size(channels: int) -> int:
    """Kernel of the 1-D query/key convs: ECA's ``int(|log2(C) + 1| / 2)``,
    made odd so the conv keeps the channel count."""
    t = int(abs((math.log2(channels) + 1) / 2))
    return t if t % 2 else t + 1


class DropPath(nn.Module):
    """Stochastic depth on a residual branch (timm's ``DropPath``): in
    training, each sample's branch is zeroed with probability ``p`` and kept
    ones are scaled by ``1 / (1 - p)``."""

    def __init__(self, p: float = 0.):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {p}')
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0 or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1))
        return x * mask.bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f'p={self.p}'


_said: Set[str] = set()


def _say_once(message: str) -> None:
    """Log ``message`` once per process (in the training log, under a
    Runner)."""
    if message not in _said:
        _said.add(message)
        print_log(message, logger='current')


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _has_module_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks
                or module._backward_hooks or module._backward_pre_hooks)


class _LayerAttention(nn.Module):
    """What MRLA-L and MRLA-B share: the query/key/value projections, the
    output norm, the retrieval mask, attention recording, and choosing the
    implementation.

    Args:
        channels (int): Channels ``C`` of the block output.
        head_dim (int): Channels per head. Default: 32 (the paper's
            ``dim_perhead``); clipped to ``C`` for narrower blocks.
        norm_cfg (dict): Norm layer after the retrieval.
            Default: ``dict(type='BN')``.
        drop_path_rate (float): Probability of dropping the retrieval branch
            of a sample in training (stochastic depth, as the published MRLA
            ImageNet recipe). Default: 0 (off, as in the ELA paper).
    """
    name = ''  # 'MRLA-L' or 'MRLA-B', for the log

    def __init__(self, channels: int, head_dim: int = 32,
                 norm_cfg: Optional[dict] = None,
                 drop_path_rate: float = 0.):
        super().__init__()
        head_dim = min(head_dim, channels)
        if channels % head_dim:
            raise ValueError(f'channels ({channels}) must be a multiple of '
                             f'head_dim ({head_dim})')
        self.channels = channels
        self.head_dim = head_dim
        self.num_heads = channels // head_dim
        self.scale = head_dim**-0.5
        k = eca_kernel_size(channels)
        # Query and key in one conv: two output maps over the channel axis.
        self.qk = nn.Conv1d(1, 2, k, padding=k // 2, bias=False)
        self.value = nn.Conv2d(
            channels, channels, 3, padding=1, groups=channels, bias=False)
        self.norm = build_norm(norm_cfg or dict(type='BN'), channels)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 \
            else nn.Identity()
        # The retrieval enters the block output with weight zero until
        # trained. Training from scratch, the backbone's default init_cfg
        # sets norm weights to 1 (as in MRLA); fine-tuning from a plain
        # ResNet checkpoint, which has no layer attention, the network
        # starts as exactly that ResNet instead of adding random features.
        nn.init.zeros_(self.norm.weight)
        self.register_buffer('retrieval_mask', torch.ones((), dtype=torch.bool))
        self._retrieval_on = True
        self.recording = False
        self.record: Dict[str, Tensor] = {}

    @property
    def retrieval_on(self) -> bool:
        return self._retrieval_on

    def set_retrieval(self, on: bool) -> None:
        """Switch this block's retrieval on or off (buffer and mirror)."""
        self.retrieval_mask.fill_(bool(on))
        self._retrieval_on = bool(on)
        if not on:
            self.record = {}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A deploy checkpoint (tools/deployment/strip_pruned.py) keeps only
        # the mask of a pruned retrieval: its weights are not missing, and
        # this module keeps the values it has. Children load after this
        # method, from the same dict, so the current values are put there.
        mask = state_dict.get(prefix + 'retrieval_mask')
        if mask is not None and not bool(mask):
            own = {prefix + k: v for k, v in
                   self.state_dict(keep_vars=True).items()
                   if k != 'retrieval_mask'}
            if not any(k in state_dict for k in own):
                state_dict.update(
                    (k, v.detach()) for k, v in own.items())
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._retrieval_on = bool(self.retrieval_mask)

    # ------------------------------------------------------ implementation
    def implementation(self, device_type: str) -> str:
        """The implementation this module runs on ``device_type`` outside
        tracing (:mod:`.implementation`)."""
        impl = layer_attention_impl(device_type)
        if impl == 'fused' and self._fused_skips_hooks():
            return 'reference'
        return impl

    def _fused_skips_hooks(self) -> bool:
        """Whether a module hook would not fire under ``'fused'``."""
        return False

    def _choose(self, device_type: str, memory: StageMemory) -> str:
        impl = self.implementation(device_type)
        if impl != layer_attention_impl(device_type):
            _say_once(
                f'layer attention: a module hook on a query/key conv, value '
                f"conv or norm of {self.name} needs the 'reference' "
                f"implementation (the 'fused' one uses those modules' "
                f'weights without calling them); modules with such hooks '
                f"run 'reference'")
        return impl

    def forward(self, x: Tensor, identity: Tensor,
                memory: Optional[StageMemory] = None) -> Tensor:
        """The block output with this block's retrieval (``x`` when it is
        pruned). ``identity`` is the block's (projected) input; ``memory``
        is the stage's (None for a module used on its own)."""
        if not self._retrieval_on:
            return x
        if memory is None:
            memory = StageMemory()
        if _tracing():  # a graph of stock operators, and no logging
            impl = 'reference'
        else:
            impl = self._choose(x.device.type, memory)
            _say_once(f'layer attention: {self.name} runs the {impl!r} '
                      f'implementation on {x.device.type} (setting '
                      f'{layer_attention_setting()!r}, see MMELA_LA_IMPL)')
        if impl == 'fused':
            out, attention = self.forward_fused(x, identity, memory)
        else:
            out, attention = self.forward_reference(x, identity, memory)
        if self.recording:
            self._record(attention.detach())
        return out

    def forward_reference(self, x: Tensor, identity: Tensor,
                          memory: StageMemory) -> Tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward_fused(self, x: Tensor, identity: Tensor,
                      memory: StageMemory) -> Tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _record(self, attention: Tensor) -> None:
        raise NotImplementedError

    @classmethod
    def stage_distributions(cls, modules: List['_LayerAttention']
                            ) -> List[Tensor]:
        """The attention distributions of a stage's retrieving blocks (in
        order), from what they recorded in one forward pass: the k-th has k
        entries and sums to 1 (the ``P^l`` of the paper's Eq. 11)."""
        raise NotImplementedError

    # ------------------------------------------------------------ helpers
    def query_key(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``q, k`` of shape ``(B, heads, head_dim)`` from ``GAP(x)``, in
        float32 at least (they only feed the attention scores)."""
        qk = self._qk(x)
        return qk.unflatten(2, (self.num_heads, self.head_dim)).unbind(1)

    def _qk(self, x: Tensor) -> Tensor:
        """``(B, 2, C)``: query and key maps in float32 at least."""
        qk = self.qk(x.mean(dim=(2, 3)).unsqueeze(1))
        return qk.to(score_dtype(qk.dtype))

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, heads={self.num_heads}, '
                f'retrieval_on={self._retrieval_on}')


class LightLayerAttention(_LayerAttention):
    """MRLA-L: ``o^l = lambda^l * o^{l-1} + sigma(q^l . k^l / sqrt(d)) v^l``,
    and the block returns ``x^l + drop_path(BN(o^l))``.

    As in the published MRLA code, ``o^{l-1}`` is approximated by the block's
    (projected) input, so a block needs nothing from the blocks before it and
    pruning one changes no other block's computation.

    While ``recording``, ``record`` holds ``gate`` (the gate averaged over the
    batch, per head), ``log_gate`` (its logarithm, computed from the scores
    in log space so a saturated gate gives a finite value) and ``decay``
    (``|lambda|`` per channel).
    """
    name = 'MRLA-L'

    def __init__(self, channels: int, head_dim: int = 32,
                 norm_cfg: Optional[dict] = None,
                 drop_path_rate: float = 0.):
        super().__init__(channels, head_dim, norm_cfg, drop_path_rate)
        self.lambda_ = nn.Parameter(torch.randn(channels, 1, 1))
        # Mean 0 and variance 1 per channel, for the backward pass of the
        # lambda term in the fused function; not part of checkpoints.
        self.register_buffer(
            '_unit_stats',
            torch.stack((torch.zeros(channels), torch.ones(channels))),
            persistent=False)

    def forward_reference(self, x: Tensor, identity: Tensor,
                          memory: StageMemory) -> Tuple[Tensor, Tensor]:
        """Stock operators: the shared depthwise value conv (cuDNN on a
        GPU), the gate applied afterwards, the lambda term, the norm module
        and the residual. Returns the block output and the scores."""
        q, k = self.query_key(x)
        scores = (q * k).sum(-1) * self.scale  # (B, heads)
        gate = torch.sigmoid(scores).to(x.dtype)[:, :, None, None, None]
        lam = self.lambda_.to(identity.dtype)
        o = torch.addcmul(
            (identity * lam).unflatten(1, (self.num_heads, -1)),
            self.value(x).unflatten(1, (self.num_heads, -1)), gate)
        return x + self.drop_path(self.norm(o.flatten(1, 2))), scores

    def forward_fused(self, x: Tensor, identity: Tensor,
                      memory: StageMemory) -> Tuple[Tensor, Tensor]:
        """:class:`~mmela.models.ops.LightAttentionFunction`, with the norm
        and the residual inside for a plain ``nn.BatchNorm2d`` (the
        default); other norms and DropPath run as modules after it."""
        norm = self.norm
        if not self._norm_fusable():
            o, scores = LightAttentionFunction.apply(
                x, identity, self.qk.weight, self.value.weight, self.lambda_,
                None, None, None, None, self._unit_stats, False, False, 0.,
                0., self.num_heads, self.scale)
            return x + self.drop_path(norm(o)), scores
        if norm.training:  # stock batch norm's check
            F._verify_batch_size(x.size())
        out, scores = LightAttentionFunction.apply(
            x, identity, self.qk.weight, self.value.weight, self.lambda_,
            norm.weight, norm.bias, norm.running_mean, norm.running_var,
            self._unit_stats, True, norm.training, norm.momentum, norm.eps,
            self.num_heads, self.scale)
        if norm.training:
            memory.count_batch(norm.num_batches_tracked)
        return out, scores

    def _norm_fusable(self) -> bool:
        """A plain ``nn.BatchNorm2d`` with affine weights, running
        statistics and a momentum, and no DropPath."""
        norm = self.norm
        return (type(norm) is nn.BatchNorm2d and norm.affine
                and norm.track_running_stats and norm.momentum is not None
                and isinstance(self.drop_path, nn.Identity))

    def _fused_skips_hooks(self) -> bool:
        return any(map(_has_module_hooks, (self.qk, self.value, self.norm)))

    def _record(self, scores: Tensor) -> None:
        scores = scores.to(score_dtype(scores.dtype))
        self.record = dict(
            gate=torch.sigmoid(scores).mean(0),
            log_gate=torch.logsumexp(F.logsigmoid(scores), dim=0) -
            math.log(scores.shape[0]),
            decay=self.lambda_.detach().float().abs().flatten())

    @classmethod
    def stage_distributions(cls, modules: List['LightLayerAttention']
                            ) -> List[Tensor]:
        """The unrolled recurrence's weights over the stage's retrieving
        blocks (:func:`.light_attention_distributions`)."""
        if not modules:
            return []
        records = [m.record for m in modules]
        return light_attention_distributions(
            [r['decay'] for r in records], [r['gate'] for r in records],
            head_dim=modules[0].head_dim,
            log_gates=[r['log_gate'] for r in records])


class BaseLayerAttention(_LayerAttention):
    """MRLA-B: ``o^l = sum_i softmax(q^l . K^l / sqrt(d))_i v^i``, and the
    block returns ``x^l + drop_path(relu(BN(o^l)))``: the ReLU after the
    norm is the published MRLA-B's (``resnet_mrla_base.py`` of the official
    MRLA code), which MRLA-L does not have.

    Each retrieving block adds its key and value to the stage's
    :class:`StageMemory`; a pruned block adds nothing, so later blocks never
    see it (it is dropped, not zero-filled). Both implementations run their
    convs and norm as modules, so hooks on them fire either way.

    Args:
        relu (bool): The published ReLU after the norm; False drops it (an
            ablation). Default: True. Other arguments as MRLA-L's.
    """
    name = 'MRLA-B'

    def __init__(self, channels: int, head_dim: int = 32,
                 norm_cfg: Optional[dict] = None,
                 drop_path_rate: float = 0., relu: bool = True):
        super().__init__(channels, head_dim, norm_cfg, drop_path_rate)
        self.relu = relu

    def _choose(self, device_type: str, memory: StageMemory) -> str:
        impl = super()._choose(device_type, memory)
        if impl == 'fused' and memory.keys_values:
            # Earlier blocks of this stage ran traced (a graph break under
            # torch.compile): continue with their keys and values.
            return 'reference'
        return impl

    def forward_reference(self, x: Tensor, identity: Tensor,
                          memory: StageMemory) -> Tuple[Tensor, Tensor]:
        """Stock operators: keys stacked along a layer axis, a softmax over
        them, and the values summed with their weights. Returns the block
        output and the attention ``(B, heads, l)``."""
        if memory.kv_buffer is not None:
            raise RuntimeError(
                'MRLA-B: the implementation of layer attention changed '
                'within a stage; set it before the forward pass')
        q, k = self.query_key(x)
        memory.keys_values.append((k, self.value(x)))
        keys = torch.stack([key for key, _ in memory.keys_values], dim=2)
        # A product and a sum rather than a matmul, which autocast would
        # run in half precision.
        attention = torch.softmax(
            (keys * q.unsqueeze(2)).sum(-1) * self.scale, dim=-1)
        weights = attention.to(x.dtype)[:, :, None, None, None]
        out = weighted_sum([v.unflatten(1, (self.num_heads, -1))
                            for _, v in memory.keys_values],
                           weights.unbind(-1)).flatten(1, 2)
        out = self.norm(out)
        return x + self.drop_path(F.relu(out) if self.relu else out), \
            attention

    def forward_fused(self, x: Tensor, identity: Tensor,
                      memory: StageMemory) -> Tuple[Tensor, Tensor]:
        """:class:`~mmela.models.ops.BaseRetrievalFunction` over the stage's
        :class:`~mmela.models.ops.KeyValueBuffer`; the ReLU keeps a boolean
        mask for the backward pass, not its output."""
        qk = self._qk(x)
        value = self.value(x)
        if memory.kv_buffer is None:
            memory.kv_buffer = KeyValueBuffer(
                self, qk[:, 1].unflatten(1, (self.num_heads, -1)), value)
        out, attention = BaseRetrievalFunction.apply(
            qk, value, memory.kv_buffer, self.num_heads, self.scale)
        out = self.norm(out)
        if not self.relu:
            return x + self.drop_path(out), attention
        if isinstance(self.drop_path, nn.Identity):
            return ReluResidualFunction.apply(x, out), attention
        return x + self.drop_path(F.relu(out)), attention

    def _record(self, attention: Tensor) -> None:
        self.record = dict(
            distribution=base_attention_distribution(attention.float()))

    @classmethod
    def stage_distributions(cls, modules: List['BaseLayerAttention']
                            ) -> List[Tensor]:
        """Each block's softmax over the keys of the stage, averaged over
        the batch and the heads."""
        return [m.record['distribution'] for m in modules]


def weighted_sum(values: List[Tensor], weights: List[Tensor]) -> Tensor:
    """``sum_i weights[i] * values[i]``, one fused multiply-add per term and
    without copying the values into one tensor."""
    out = values[0] * weights[0]
    for value, weight in zip(values[1:], weights[1:]):
        out = torch.addcmul(out, value, weight)
    return out


LAYER_ATTENTIONS = {'light': LightLayerAttention, 'base': BaseLayerAttention}


def check_layer_attention(kind: Optional[str]) -> None:
    if kind not in LAYER_ATTENTION_TYPES:
        raise ValueError(f'layer_attention must be one of '
                         f'{list(LAYER_ATTENTION_TYPES)}, got {kind!r}')


def is_layer_attention_key(key: str) -> bool:
    """Whether a state-dict key belongs to layer attention (a block's
    ``layer_attention`` submodule): the keys a plain ResNet checkpoint
    lacks."""
    return 'layer_attention' in key.split('.')


def build_layer_attention(kind: Optional[str], channels: int,
                          norm_cfg: Optional[dict] = None,
                          head_dim: int = 32,
                          drop_path_rate: float = 0.
                          ) -> Optional[_LayerAttention]:
    """Build the layer attention of one block; ``None`` for a plain block.

    ``drop_path_rate`` > 0 applies stochastic depth to the retrieval branch
    (off by default)."""
    check_layer_attention(kind)
    if kind is None:
        return None
    return LAYER_ATTENTIONS[kind](channels, head_dim=head_dim,
                                 norm_cfg=norm_cfg,
                                 drop_path_rate=drop_path_rate)
