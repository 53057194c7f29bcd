"""Layer attention modules: MRLA-L ('light') and MRLA-B ('base').

One module sits at the end of every block of a layer-attention ResNet stage.
Given the block's output ``x^l`` it retrieves from the earlier blocks of the
stage and returns ``x^l + drop_path(BN(o^l))`` (MRLA-L) or
``x^l + drop_path(relu(BN(o^l)))`` (MRLA-B), SPEC section 1.

Every module owns a *retrieval mask* (a persistent buffer, 1 = retrieval on).
With the mask at 0 the module returns ``x^l`` unchanged: no query, key or
value, no depthwise conv, and (MRLA-B) nothing is offered to later blocks. The
forward pass reads a Python mirror of the mask, so checking it costs no device
synchronisation; the mirror follows the buffer through ``set_retrieval`` and
``load_state_dict``.

Mixed precision: the attention scores (query . key, the sigmoid and the
softmax; in MRLA-L's fused function also the pooling and the query/key conv,
which are tiny) are computed in float32 (or float64) whatever the autocast
dtype, and the weights are cast back to the feature dtype before they scale
the values, so a block's output keeps the dtype a plain block's would have.

Kernel launches. On a GPU a CIFAR-sized step is bound by kernel launches, so
the retrieval is written to launch few (``tools/analysis/benchmark_speed.py``
counts them per training step):

- per-head weights reach the channels through a view of the features as
  ``(B, heads, head_dim, H, W)``, never a ``repeat_interleave``;
- MRLA-L's whole retrieval with its batch norm and the residual (pooling,
  query and key, gate, value, lambda term, norm, ``x + ...``) is one
  autograd function (:class:`_LightAttention`) whose backward does per-head
  reductions as batched matrix products with the scale folded in, gets both
  gradients of the lambda term from one kernel, and adds the residual's and
  the pooling's gradients to the input gradient in place; the stage
  advances its norms' batch counters in one kernel
  (:func:`advance_batch_counts`);
- MRLA-B keeps the keys and values of a stage in one buffer
  (:class:`_StageMemory`) and retrieves with one batched matrix product, so a
  block launches the same kernels however many blocks precede it; the backward
  accumulates every earlier value's gradient into one buffer in one kernel
  (:class:`_BaseRetrieval`), and its ReLU keeps a boolean mask, not its output
  (:class:`_ReluResidual`).

Under ``torch.compile``, or when a forward hook watches the query/key or value
conv or the norm (FLOPs counters, feature extractors), the same maths runs as
plain autograd operators (the compiler fuses them itself; hooks see their
calls); so does MRLA-L with a norm other than a plain ``nn.BatchNorm2d``
with a momentum (SyncBN, GN, ...) or with DropPath.
"""
import math
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module

from .attention_distribution import base_attention_distribution
from .norm import build_norm

LAYER_ATTENTION_TYPES = (None, 'light', 'base')

aten = torch.ops.aten


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


def _conv_dtype(x: Tensor) -> torch.dtype:
    """The dtype autocast would run a conv in (``x.dtype`` without it)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _score_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _scratch(t: Tensor) -> Tensor:
    """A one-element view of ``t`` to stand as the ignored ``input`` of
    ``baddbmm(..., beta=0)`` (no allocation, no kernel)."""
    return t.as_strided((1, 1, 1), (0, 0, 0))


class _LightAttention(torch.autograd.Function):
    """MRLA-L in one autograd node: ``o = lambda * identity + sigmoid(q . k
    * scale) * dwconv(x)`` with ``q, k = conv1d(GAP(x))``, the gate per
    sample and head, and with ``normalize`` the block output ``x + BN(o)``.
    Returns that and the (non-differentiable) scores ``q . k * scale`` for
    recording.

    Arguments, in order: ``x, identity``; the weights of the query/key conv,
    the value conv and lambda; the batch norm's weight, bias, running mean
    and variance (``None`` without ``normalize``); ``unit_stats`` (see
    below); ``normalize, training, momentum, eps`` of the norm;
    ``num_heads, scale``.

    The norm is the operator ``nn.BatchNorm2d`` runs on the CPU
    (``native_batch_norm``; on CUDA stock BN may take cuDNN's instead), with
    the same running-statistics update; the caller advances its batch
    counter.

    A gate is constant over a sample's channel map, so it is folded into the
    depthwise weights: one conv with a 3x3 kernel per sample and channel
    (``groups = B * C``) computes the gated value, and its backward gives the
    input gradient already gated and per-sample weight gradients, from which
    two small batched products give the weight's and the gate's gradients.
    The lambda term's two gradients (``lambda * g`` for the identity and the
    per-channel sums of ``g * identity`` for lambda) come from one kernel:
    they are exactly the backward pass of an eval-mode batch norm of the
    identity with mean 0, variance 1, eps 0 and weight lambda
    (``unit_stats`` holds the zeros and ones). The residual's and the
    pooling's gradients are added in place to the input gradient. Saved
    full-size tensors: the norm's input ``o``, and ``x`` and ``identity``,
    which the blocks save anyway (unless ``x`` needs a copy: channels-last
    or not in the autocast dtype).
    """

    @staticmethod
    def forward(ctx, x, identity, qk_weight, value_weight, lambda_,
                bn_weight, bn_bias, running_mean, running_var, unit_stats,
                normalize: bool, training: bool, momentum: float, eps: float,
                num_heads: int, scale: float):
        ctx.set_materialize_grads(False)
        batch, channels, height, width = x.shape
        # The value conv in the autocast dtype, unless the features are
        # wider; the pooling and the query/key conv (tiny) in the scores'.
        cdtype = torch.promote_types(_conv_dtype(x), x.dtype)
        sdtype = _score_dtype(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            pooled = x.mean((2, 3), dtype=sdtype).unsqueeze(1)  # (B, 1, C)
            wqk = qk_weight.to(sdtype)
            qk = F.conv1d(pooled, wqk, padding=wqk.shape[-1] // 2).view(
                batch, 2, num_heads, -1)
            q, k = qk.unbind(1)
            scores = torch.baddbmm(_scratch(qk), q, k.transpose(1, 2),
                                   beta=0, alpha=scale).diagonal(0, 1, 2)
            gate = torch.sigmoid(scores)  # (B, heads)
            xc = x.to(cdtype).contiguous().view(1, batch * channels, height,
                                                width)
            wv = value_weight.to(cdtype)
            gated_weight = (wv.view(1, num_heads, -1, 9) *
                            gate.to(cdtype)[:, :, None, None]).view(
                                batch * channels, 1, 3, 3)
            value = F.conv2d(xc, gated_weight, padding=1,
                             groups=batch * channels).view(
                                 batch, channels, height, width)
            lam = lambda_.to(identity.dtype)
            # In place where the dtypes allow: one full-size buffer less.
            o = value.addcmul_(identity, lam) if value.dtype == \
                identity.dtype else torch.addcmul(value, identity, lam)
            mean = invstd = None
            if not normalize:
                out = o
            else:
                # Batch norm keeps its input's dtype under autocast too.
                out, mean, invstd = aten.native_batch_norm(
                    o, bn_weight, bn_bias, running_mean, running_var,
                    training, momentum, eps)
                if out.dtype == torch.promote_types(out.dtype, x.dtype) and \
                        x.is_contiguous():
                    out = out.add_(x)
                else:  # x's dtype or memory format (channels-last) wins
                    out = torch.add(x, out)
        # In eval mode the backward pass needs the running statistics; they
        # must not change before it, as with stock batch norm.
        stats = (None, None) if training else (running_mean, running_var)
        ctx.save_for_backward(xc, identity, pooled, wqk, qk, gate, wv, lam,
                              gated_weight, o if normalize else None,
                              bn_weight, mean, invstd, unit_stats, *stats)
        ctx.num_heads, ctx.scale = num_heads, scale
        ctx.normalize, ctx.training, ctx.eps = normalize, training, eps
        ctx.x_dtype = x.dtype
        ctx.mark_non_differentiable(scores)
        return out, scores

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _):
        (xc, identity, pooled, wqk, qk, gate, wv, lam, gated_weight, o,
         bn_weight, mean, invstd, unit_stats, running_mean,
         running_var) = ctx.saved_tensors
        heads, scale = ctx.num_heads, ctx.scale
        batch, channels = identity.shape[:2]
        height, width = xc.shape[-2:]
        need_x, need_id, need_wqk, need_wv, need_lam, need_bnw, need_bnb = \
            ctx.needs_input_grad[:7]
        grad_x = grad_id = grad_wqk = grad_wv = grad_lam = None
        grad_bnw = grad_bnb = None
        if grad_out is None:
            return (None, ) * 16
        with torch.autocast(xc.device.type, enabled=False):
            if ctx.normalize:
                grad_o, grad_bnw, grad_bnb = aten.native_batch_norm_backward(
                    grad_out.to(o.dtype), o, bn_weight, running_mean,
                    running_var, mean, invstd, ctx.training, ctx.eps,
                    [True, need_bnw, need_bnb])
            else:
                grad_o = grad_out
            # In the wider of the two dtypes: with float32 features under
            # autocast the gate's gradient sums products that cancel.
            bdtype = torch.promote_types(grad_o.dtype, xc.dtype)
            grad_xc, grad_gated, _ = aten.convolution_backward(
                grad_o.to(bdtype).contiguous().view_as(xc), xc.to(bdtype),
                gated_weight.to(bdtype), None, [1, 1], [1, 1], [1, 1], False,
                [0, 0], batch * channels, [need_x, True, False])
            # Per head: (heads, B, head_dim * 9) against the gate and the
            # weights, in the score dtype (these sums may cancel).
            grad_gated = grad_gated.view(batch, heads, -1).transpose(
                0, 1).to(gate.dtype)
            if need_wv:
                grad_wv = torch.bmm(gate.t().unsqueeze(1),
                                    grad_gated).view(channels, 1, 3, 3)
            if need_x or need_wqk:
                # d/d(score) of sigmoid, times d(score)/d(q . k) = scale.
                grad_gate = torch.baddbmm(
                    _scratch(grad_gated), grad_gated,
                    wv.to(gate.dtype).view(heads, -1, 1), beta=0,
                    alpha=scale).view(heads, batch).t()
                grad_scores = aten.sigmoid_backward(grad_gate, gate)
                # d(q . k)/dq = k and d/dk = q: the query/key pair swapped.
                grad_qk = torch.mul(qk.flip(1), grad_scores[:, None, :, None])
                grad_pooled, grad_wqk, _ = aten.convolution_backward(
                    grad_qk.view(batch, 2, channels), pooled,
                    wqk, None, [1], [wqk.shape[-1] // 2], [1], False, [0],
                    1, [need_x, need_wqk, False])
            if need_x:
                grad_x = grad_xc.view(batch, channels, height, width).to(
                    ctx.x_dtype)
                if ctx.normalize:  # the residual's gradient
                    grad_x.add_(grad_out)
                # The pooling's: 1 / HW of grad_pooled everywhere.
                grad_x.add_(grad_pooled.view(batch, channels, 1, 1),
                            alpha=1 / (height * width))
            if need_id or need_lam:
                # Mean 0 and inverse std 1 as the saved statistics too: CUDA
                # reads them in eval mode as well.
                zeros, ones = unit_stats.unbind()
                grad_id, grad_lam, _ = aten.native_batch_norm_backward(
                    grad_o.to(identity.dtype), identity,
                    lam.to(unit_stats.dtype).view(channels), zeros, ones,
                    zeros, ones, False, 0., [need_id, need_lam, False])
                if grad_lam is not None:
                    grad_lam = grad_lam.view(channels, 1, 1)
        return (grad_x, grad_id, grad_wqk, grad_wv, grad_lam, grad_bnw,
                grad_bnb) + (None, ) * 9


class _StageMemory:
    """The keys and values MRLA-B's blocks of one stage offer to later ones,
    for one forward pass, in two buffers (and, in the backward pass, their
    gradients in two more).

    ``keys`` is ``(B, heads, capacity, head_dim)`` in the score dtype, already
    multiplied by ``1 / sqrt(head_dim)``; ``values`` is
    ``(capacity, B, C, H, W)`` in the feature dtype. A block writes its slot
    once; later writes go to later slots, which earlier blocks never read, so
    the buffers are written through ``.data`` (autograd's version check
    would flag the later writes). The capacity is the number of retrievals
    the stage had last time (held by the first retrieving block); when a
    stage has more, the buffers double, and the smaller ones stay alive until
    the backward pass: the first forward pass of a model (and the first after
    a retrieval of the stage is switched back on) keeps more memory than the
    next ones.
    """

    def __init__(self, owner: nn.Module, key: Tensor, value: Tensor):
        self.owner = owner
        capacity = max(getattr(owner, '_stage_capacity', 0), 1)
        batch, heads, head_dim = key.shape
        self.keys = key.new_empty(batch, heads, capacity, head_dim)
        self.values = value.new_empty((capacity, ) + value.shape)
        self.count = 0
        self.grad_keys: Optional[Tensor] = None
        self.grad_values: Optional[Tensor] = None

    def append(self, key: Tensor, value: Tensor, scale: float) -> int:
        slot = self.count
        if slot == self.values.shape[0]:
            self._grow()
        torch.mul(key, scale, out=self.keys.data[:, :, slot])
        self.values.data[slot].copy_(value)
        self.count += 1
        self.owner._stage_capacity = self.count
        return slot

    def _grow(self) -> None:
        old_keys, old_values = self.keys, self.values
        capacity = 2 * old_values.shape[0]
        self.keys = old_keys.new_empty(
            old_keys.shape[:2] + (capacity, old_keys.shape[-1]))
        self.values = old_values.new_empty(
            (capacity, ) + old_values.shape[1:])
        self.keys.data[:, :, :self.count].copy_(old_keys)
        self.values.data[:self.count].copy_(old_values)


class _BaseRetrieval(torch.autograd.Function):
    """MRLA-B's retrieval of one block: appends its key and value to the
    stage's :class:`_StageMemory` and returns ``o = sum_i softmax_i v^i``
    (one batched matrix product) and the (non-differentiable) softmax.

    Backward: later blocks run their backward first (their inputs depend on
    this block's output), and each adds its gradients for every earlier key
    and value into the stage's gradient buffers in one kernel; when this
    block's turn comes its slot holds the full gradient of its key and value.
    """

    @staticmethod
    def forward(ctx, qk, value, memory: _StageMemory, num_heads: int,
                scale: float):
        ctx.set_materialize_grads(False)
        batch, channels, height, width = value.shape
        q, k = qk.view(batch, 2, num_heads, -1).unbind(1)
        slot = memory.append(k, value, scale)
        count = slot + 1
        keys = memory.keys[:, :, :count]  # (B, heads, l, head_dim)
        attention = torch.softmax((keys * q.unsqueeze(2)).sum(-1), dim=-1)
        # (B * C, 1, l): each head's weights for its channels, feature dtype.
        weights = attention.unsqueeze(2).expand(
            -1, -1, channels // num_heads, -1).to(value.dtype).reshape(
                batch * channels, 1, count)
        values = memory.values[:count].view(count, batch * channels, -1)
        out = torch.bmm(weights, values.transpose(0, 1))
        # ``values`` and ``keys`` are saved to be counted (and kept alive)
        # like any saved tensor; the backward reads the stage's current
        # buffers, which hold the same data.
        ctx.save_for_backward(q, attention, weights, values, keys)
        ctx.memory, ctx.slot, ctx.scale = memory, slot, scale
        ctx.mark_non_differentiable(attention)
        return out.view(batch, channels, height, width), attention

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _):
        memory, slot, scale = ctx.memory, ctx.slot, ctx.scale
        if grad_out is None:
            grad_out = torch.zeros_like(memory.values[slot])
        q, attention, weights, _, _ = ctx.saved_tensors
        count = slot + 1
        batch, channels, height, width = grad_out.shape
        heads = q.shape[1]
        if memory.grad_values is None:  # the stage's last block comes first
            memory.grad_keys = torch.zeros_like(memory.keys)
            memory.grad_values = torch.zeros_like(memory.values)
        keys = memory.keys[:, :, :count]
        values = memory.values[:count].view(count, batch * channels, -1)
        grad = grad_out.to(values.dtype).reshape(batch * channels, 1, -1)
        grad_weights = torch.bmm(grad, values.permute(1, 2, 0))
        grad_attention = grad_weights.view(
            batch, heads, channels // heads, count).sum(
                2, dtype=attention.dtype)
        grad_scores = aten._softmax_backward_data(
            grad_attention, attention, -1, attention.dtype)
        # An outer product, added in place (a broadcast multiply-add runs
        # faster here than a batched matrix product on strided slots).
        memory.grad_values[:count].view(count, batch * channels, -1).addcmul_(
            weights.permute(2, 0, 1), grad.transpose(0, 1))
        memory.grad_keys[:, :, :count].addcmul_(
            grad_scores.unsqueeze(-1), q.unsqueeze(2), value=scale)
        grad_q = (grad_scores.unsqueeze(-1) * keys).sum(2)
        grad_qk = torch.stack((grad_q, memory.grad_keys[:, :, slot]), 1)
        grad_value = memory.grad_values[slot]
        if slot == 0:  # the stage's backward is done
            memory.grad_keys = memory.grad_values = None
        return grad_qk.view(batch, 2, channels), grad_value, None, None, None


class _ReluResidual(torch.autograd.Function):
    """``x + relu(y)``, keeping a boolean mask for the backward pass instead
    of the ReLU's output (a quarter of its memory in float32)."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.set_materialize_grads(False)
        mask = y > 0
        ctx.save_for_backward(mask)
        return torch.addcmul(x, y, mask)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (mask, ) = ctx.saved_tensors
        return grad, None if grad is None else grad * mask


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks
                or module._backward_hooks or module._backward_pre_hooks
                or _module._global_forward_hooks
                or _module._global_forward_pre_hooks
                or _module._global_backward_hooks
                or _module._global_backward_pre_hooks)


class _LayerAttention(nn.Module):
    """What MRLA-L and MRLA-B share: the query/key/value projections, the
    output norm, the retrieval mask and attention recording.

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

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._retrieval_on = bool(self.retrieval_mask)

    def query_key(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``q, k`` of shape ``(B, heads, head_dim)`` from ``GAP(x)``, in
        float32 at least (they only feed the attention scores)."""
        qk = self._qk(x)
        return qk.unflatten(2, (self.num_heads, self.head_dim)).unbind(1)

    def _qk(self, x: Tensor) -> Tensor:
        """``(B, 2, C)``: query and key maps in float32 at least."""
        qk = self.qk(x.mean(dim=(2, 3)).unsqueeze(1))
        return qk.to(_score_dtype(qk.dtype))

    def _fused(self) -> bool:
        """Whether the hand-written autograd functions may run: not while
        compiling, and not when a hook watches the query/key or value conv
        (the functions call the convs' weights, not the modules)."""
        return not (torch.compiler.is_compiling() or _hooked(self.qk)
                    or _hooked(self.value))

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

    def __init__(self, channels: int, head_dim: int = 32,
                 norm_cfg: Optional[dict] = None,
                 drop_path_rate: float = 0.):
        super().__init__(channels, head_dim, norm_cfg, drop_path_rate)
        self.lambda_ = nn.Parameter(torch.randn(channels, 1, 1))
        # Mean 0 and variance 1 per channel, for the backward pass of the
        # lambda term (see _LightAttention); not part of checkpoints.
        self.register_buffer(
            '_unit_stats',
            torch.stack((torch.zeros(channels), torch.ones(channels))),
            persistent=False)
        # Set by the backbone, whose stages advance the norms' batch
        # counters together (one kernel per stage instead of one per block).
        self.defer_batch_count = False

    def forward(self, x: Tensor, identity: Tensor,
                memory: Optional[list] = None) -> Tensor:
        """``x + drop_path(norm(o))``. ``memory`` (MRLA-B's keys and values)
        is not needed by the recurrence, which needs only this block's
        input; with ``defer_batch_count`` set, the norm's batch counter is
        appended to it for the stage to advance (:func:`advance_batch_counts`).
        """
        if not self._retrieval_on:
            return x
        norm = self.norm
        fused = self._fused()
        if not (fused and self._fused_norm()):
            if fused:
                retrieved, scores = _LightAttention.apply(
                    x, identity, self.qk.weight, self.value.weight,
                    self.lambda_, None, None, None, None, self._unit_stats,
                    False, False, 0., 0., self.num_heads, self.scale)
            else:
                retrieved, scores = self._retrieve(x, identity)
            out = x + self.drop_path(norm(retrieved))
        else:
            if norm.training:  # stock batch norm's check
                F._verify_batch_size(x.size())
            out, scores = _LightAttention.apply(
                x, identity, self.qk.weight, self.value.weight, self.lambda_,
                norm.weight, norm.bias, norm.running_mean, norm.running_var,
                self._unit_stats, True, norm.training, norm.momentum,
                norm.eps, self.num_heads, self.scale)
            if norm.training:
                if self.defer_batch_count and memory is not None:
                    memory.append(_BatchCount(norm.num_batches_tracked))
                else:
                    norm.num_batches_tracked.add_(1)
        if self.recording:
            self._record(scores.detach())
        return out

    def _fused_norm(self) -> bool:
        """Whether the norm and the residual can run inside
        :class:`_LightAttention`: a plain ``nn.BatchNorm2d`` with affine
        weights, running statistics and a momentum (the default
        ``norm_cfg``), no hooks, no DropPath. Other norms (SyncBN, GN, ...)
        run as their modules after it."""
        norm = self.norm
        return (type(norm) is nn.BatchNorm2d and norm.affine
                and norm.track_running_stats and norm.momentum is not None
                and isinstance(self.drop_path, nn.Identity)
                and not _hooked(norm))

    def _retrieve(self, x: Tensor, identity: Tensor) -> Tuple[Tensor, Tensor]:
        """The retrieval in plain autograd operators."""
        q, k = self.query_key(x)
        scores = (q * k).sum(-1) * self.scale  # (B, heads)
        gate = torch.sigmoid(scores).to(x.dtype)[:, :, None, None, None]
        lam = self.lambda_.to(identity.dtype)
        out = torch.addcmul(
            (identity * lam).unflatten(1, (self.num_heads, -1)),
            self.value(x).unflatten(1, (self.num_heads, -1)), gate)
        return out.flatten(1, 2), scores

    def _record(self, scores: Tensor) -> None:
        scores = scores.to(_score_dtype(scores.dtype))
        self.record = dict(
            gate=torch.sigmoid(scores).mean(0),
            log_gate=torch.logsumexp(F.logsigmoid(scores), dim=0) -
            math.log(scores.shape[0]),
            decay=self.lambda_.detach().float().abs().flatten())


class BaseLayerAttention(_LayerAttention):
    """MRLA-B: ``o^l = sum_i softmax(q^l . K^l / sqrt(d))_i v^i``, and the
    block returns ``x^l + drop_path(relu(BN(o^l)))``: the ReLU after the
    norm is the published MRLA-B's (``resnet_mrla_base.py`` of the official
    MRLA code), which MRLA-L does not have.

    ``memory`` is the stage's list with one entry per earlier retrieving
    block; this block appends its own. A pruned block appends nothing, so
    later blocks never see it (it is dropped, not zero-filled). The keys and
    values themselves live in one :class:`_StageMemory` per stage and
    forward pass, which the first retrieving block creates.
    """

    def forward(self, x: Tensor, identity: Tensor,
                memory: List) -> Tensor:
        if not self._retrieval_on:
            return x
        qk = self._qk(x)
        value = self.value(x)
        # The convs ran as modules above, so hooks do not matter here.
        if not torch.compiler.is_compiling():
            stage = memory[0] if memory else _StageMemory(
                self, qk[:, 1].unflatten(1, (self.num_heads, -1)), value)
            out, attention = _BaseRetrieval.apply(
                qk, value, stage, self.num_heads, self.scale)
            memory.append(stage)
        else:
            out, attention = self._retrieve(qk, value, memory)
        if self.recording:
            self.record = dict(distribution=base_attention_distribution(
                attention.detach().float()))
        out = self.norm(out)
        if isinstance(self.drop_path, nn.Identity) and \
                not torch.compiler.is_compiling():
            return _ReluResidual.apply(x, out)
        return x + self.drop_path(F.relu(out))

    def _retrieve(self, qk: Tensor, value: Tensor,
                  memory: List) -> Tuple[Tensor, Tensor]:
        """The retrieval in plain autograd operators; ``memory`` holds
        ``(key, value)`` pairs."""
        q, k = qk.unflatten(2, (self.num_heads, self.head_dim)).unbind(1)
        memory.append((k, value))
        keys = torch.stack([key for key, _ in memory], dim=2)  # (B,h,l,d)
        # A product and a sum rather than a matmul, which autocast would
        # run in half precision.
        attention = torch.softmax(
            (keys * q.unsqueeze(2)).sum(-1) * self.scale, dim=-1)
        weights = attention.to(value.dtype)[:, :, None, None, None]
        out = weighted_sum([v.unflatten(1, (self.num_heads, -1))
                            for _, v in memory], weights.unbind(-1))
        return out.flatten(1, 2), attention


def weighted_sum(values: List[Tensor], weights: List[Tensor]) -> Tensor:
    """``sum_i weights[i] * values[i]``, one fused multiply-add per term and
    without copying the values into one tensor."""
    out = values[0] * weights[0]
    for value, weight in zip(values[1:], weights[1:]):
        out = torch.addcmul(out, value, weight)
    return out


class _BatchCount(NamedTuple):
    """A batch norm's counter that a stage advances (see
    :func:`advance_batch_counts`)."""
    counter: Tensor


def advance_batch_counts(memory: list) -> None:
    """Advance, in one kernel, the batch counters that MRLA-L modules with
    ``defer_batch_count`` left in a stage's ``memory`` (what each
    ``nn.BatchNorm2d`` does for itself in training; with a momentum the
    counter does not enter the forward pass)."""
    counters = [entry.counter for entry in memory
                if isinstance(entry, _BatchCount)]
    if counters:
        torch._foreach_add_(counters, 1)


def check_layer_attention(kind: Optional[str]) -> None:
    if kind not in LAYER_ATTENTION_TYPES:
        raise ValueError(f'layer_attention must be one of '
                         f'{list(LAYER_ATTENTION_TYPES)}, got {kind!r}')


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
    cls = LightLayerAttention if kind == 'light' else BaseLayerAttention
    return cls(channels, head_dim=head_dim, norm_cfg=norm_cfg,
               drop_path_rate=drop_path_rate)
