"""MRLA-L's retrieval, batch norm and residual as one autograd function.

The ``'fused'`` implementation of :class:`~mmela.models.LightLayerAttention`
(see :mod:`mmela.models.implementation`); its twin in stock operators is
``LightLayerAttention.forward_reference``. Both compute, for a block with
output ``x`` and (projected) input ``identity``, the paper's MRLA-L
recurrence (the ELA paper's Eq. 7, from MRLA)::

    o = lambda * identity + sigmoid(q . k / sqrt(d)) * dwconv(x)
    out = x + BN(o)

with ``q, k = conv1d(GAP(x))`` and the gate per sample and head.

Kernel launches: the per-head reductions of the backward pass are batched
matrix products with the scale folded in; both gradients of the lambda term
come from one kernel; the residual's and the pooling's gradients are added
to the input gradient in place.
"""
import torch
import torch.nn.functional as F

from .common import conv_dtype, score_dtype, scratch

aten = torch.ops.aten


class LightAttentionFunction(torch.autograd.Function):
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
        cdtype = torch.promote_types(conv_dtype(x), x.dtype)
        sdtype = score_dtype(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            pooled = x.mean((2, 3), dtype=sdtype).unsqueeze(1)  # (B, 1, C)
            wqk = qk_weight.to(sdtype)
            qk = F.conv1d(pooled, wqk, padding=wqk.shape[-1] // 2).view(
                batch, 2, num_heads, -1)
            q, k = qk.unbind(1)
            scores = torch.baddbmm(scratch(qk), q, k.transpose(1, 2),
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
                    scratch(grad_gated), grad_gated,
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
