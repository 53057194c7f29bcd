"""Layer attention modules: MRLA-L ('light') and MRLA-B ('base').

One module sits at the end of every block of a layer-attention ResNet stage.
Given the block's output ``x^l`` it retrieves from the earlier blocks of the
stage and returns ``x^l + BN(o^l)`` (SPEC section 1).

Every module owns a *retrieval mask* (a persistent buffer, 1 = retrieval on).
With the mask at 0 the module returns ``x^l`` unchanged: no query, key or
value, no depthwise conv, and (MRLA-B) nothing is offered to later blocks. The
forward pass reads a Python mirror of the mask, so checking it costs no device
synchronisation; the mirror follows the buffer through ``set_retrieval`` and
``load_state_dict``.

Mixed precision: the attention scores (query . key, the sigmoid and the
softmax) are computed in float32 (or float64) whatever the autocast dtype, and
the weights are cast back to the feature dtype before they scale the values,
so a block's output keeps the dtype a plain block's would have.
"""
import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .attention_distribution import base_attention_distribution
from .norm import build_norm

LAYER_ATTENTION_TYPES = (None, 'light', 'base')


def eca_kernel_size(channels: int) -> int:
    """Kernel of the 1-D query/key convs: ECA's ``int(|log2(C) + 1| / 2)``,
    made odd so the conv keeps the channel count."""
    t = int(abs((math.log2(channels) + 1) / 2))
    return t if t % 2 else t + 1


class _LayerAttention(nn.Module):
    """What MRLA-L and MRLA-B share: the query/key/value projections, the
    output norm, the retrieval mask and attention recording.

    Args:
        channels (int): Channels ``C`` of the block output.
        head_dim (int): Channels per head. Default: 32 (the paper's
            ``dim_perhead``); clipped to ``C`` for narrower blocks.
        norm_cfg (dict): Norm layer after the retrieval.
            Default: ``dict(type='BN')``.
    """

    def __init__(self, channels: int, head_dim: int = 32,
                 norm_cfg: Optional[dict] = None):
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

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._retrieval_on = bool(self.retrieval_mask)

    def query_key(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``q, k`` of shape ``(B, heads, head_dim)`` from ``GAP(x)``, in
        float32 at least (they only feed the attention scores)."""
        pooled = x.mean(dim=(2, 3)).unsqueeze(1)  # (B, 1, C)
        qk = self.qk(pooled)
        qk = qk.to(torch.promote_types(qk.dtype, torch.float32))
        q, k = qk.unflatten(2, (self.num_heads, self.head_dim)).unbind(1)
        return q, k

    def per_channel(self, per_head: Tensor) -> Tensor:
        """Repeat ``(B, heads, ...)`` weights to ``(B, C, ...)``."""
        return per_head.repeat_interleave(self.head_dim, dim=1)

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, heads={self.num_heads}, '
                f'retrieval_on={self._retrieval_on}')


class LightLayerAttention(_LayerAttention):
    """MRLA-L: ``o^l = lambda^l * o^{l-1} + sigma(q^l . k^l / sqrt(d)) v^l``.

    As in the published MRLA code, ``o^{l-1}`` is approximated by the block's
    (projected) input, so a block needs nothing from the blocks before it and
    pruning one changes no other block's computation.
    """

    def __init__(self, channels: int, head_dim: int = 32,
                 norm_cfg: Optional[dict] = None):
        super().__init__(channels, head_dim, norm_cfg)
        self.lambda_ = nn.Parameter(torch.randn(channels, 1, 1))

    def forward(self, x: Tensor, identity: Tensor,
                memory: Optional[list] = None) -> Tensor:
        # ``memory`` (MRLA-B's keys and values) is unused: the recurrence
        # needs only this block's input.
        if not self._retrieval_on:
            return x
        q, k = self.query_key(x)
        gate = torch.sigmoid((q * k).sum(-1) * self.scale)  # (B, heads)
        if self.recording:
            self.record = dict(
                gate=gate.detach().float().mean(0),
                decay=self.lambda_.detach().float().abs().flatten())
        channel_gate = self.per_channel(gate.to(x.dtype))[:, :, None, None]
        out = torch.addcmul(identity * self.lambda_.to(identity.dtype),
                            self.value(x), channel_gate)
        return x + self.norm(out)


class BaseLayerAttention(_LayerAttention):
    """MRLA-B: ``o^l = sum_i softmax(q^l . K^l / sqrt(d))_i v^i``.

    ``memory`` is the stage's list of ``(key, value)`` of the earlier
    retrieving blocks; this block appends its own. A pruned block appends
    nothing, so later blocks never see it (it is dropped, not zero-filled).

    The values are summed one by one (:func:`weighted_sum`) rather than
    stacked into one tensor: stacking copies every earlier value again in
    every block (quadratic in the stage's depth, in time and in the memory
    autograd keeps), while the sum only reads them.
    """

    def forward(self, x: Tensor, identity: Tensor,
                memory: List[Tuple[Tensor, Tensor]]) -> Tensor:
        if not self._retrieval_on:
            return x
        q, k = self.query_key(x)
        memory.append((k, self.value(x)))
        keys = torch.stack([key for key, _ in memory], dim=2)  # (B,h,l,d)
        # A product and a sum rather than a matmul, which autocast would
        # run in half precision.
        attention = torch.softmax(
            (keys * q.unsqueeze(2)).sum(-1) * self.scale, dim=-1)
        if self.recording:
            self.record = dict(
                distribution=base_attention_distribution(
                    attention.detach().float()))
        weights = self.per_channel(attention.to(x.dtype))  # (B, C, l)
        out = weighted_sum([value for _, value in memory], weights)
        return x + self.norm(out)


def weighted_sum(values: List[Tensor], weights: Tensor) -> Tensor:
    """``sum_i weights[:, :, i] * values[i]`` for ``(B, C, H, W)`` values and
    ``(B, C, l)`` weights, without copying the values into one tensor."""
    per_value = weights[:, :, None, None].unbind(-1)
    out = values[0] * per_value[0]
    for value, weight in zip(values[1:], per_value[1:]):
        out = torch.addcmul(out, value, weight)  # one fused kernel per term
    return out


def check_layer_attention(kind: Optional[str]) -> None:
    if kind not in LAYER_ATTENTION_TYPES:
        raise ValueError(f'layer_attention must be one of '
                         f'{list(LAYER_ATTENTION_TYPES)}, got {kind!r}')


def build_layer_attention(kind: Optional[str], channels: int,
                          norm_cfg: Optional[dict] = None,
                          head_dim: int = 32) -> Optional[_LayerAttention]:
    """Build the layer attention of one block; ``None`` for a plain block."""
    check_layer_attention(kind)
    if kind is None:
        return None
    cls = LightLayerAttention if kind == 'light' else BaseLayerAttention
    return cls(channels, head_dim=head_dim, norm_cfg=norm_cfg)
