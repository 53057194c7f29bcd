"""MRLA-B's retrieval over a stage's keys and values, as autograd functions.

The ``'fused'`` implementation of :class:`~mmela.models.BaseLayerAttention`
(see :mod:`mmela.models.implementation`); its twin in stock operators is
``BaseLayerAttention.forward_reference``. Block ``l`` of a stage computes
MRLA-B's retrieval (the ELA paper's Eqs. 4-5, from MRLA, with a softmax)::

    o = sum_i softmax_i(q^l . k^i / sqrt(d)) v^i     (i <= l)

The stage's keys and values live in one :class:`KeyValueBuffer` per forward
pass, and a block retrieves with one batched matrix product, so it launches
the same kernels however many blocks precede it; the backward pass
accumulates every earlier value's gradient into one buffer in one kernel.
"""
from typing import Optional

import torch
from torch import Tensor, nn

aten = torch.ops.aten


class KeyValueBuffer:
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


class BaseRetrievalFunction(torch.autograd.Function):
    """MRLA-B's retrieval of one block: appends its key and value to the
    stage's :class:`KeyValueBuffer` and returns ``o = sum_i softmax_i v^i``
    (one batched matrix product) and the (non-differentiable) softmax.

    Backward: later blocks run their backward first (their inputs depend on
    this block's output), and each adds its gradients for every earlier key
    and value into the stage's gradient buffers in one kernel; when this
    block's turn comes its slot holds the full gradient of its key and value.
    """

    @staticmethod
    def forward(ctx, qk, value, memory: KeyValueBuffer, num_heads: int,
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


class ReluResidualFunction(torch.autograd.Function):
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
