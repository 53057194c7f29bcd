"""Our MRLA-L and MRLA-B against the published MRLA code, in float64.

Our layer attention computes what the official MRLA repository
(github.com/joyfang1106/MRLA) computes (the ELA paper's Eqs. 4-7 build on
it). The classes below are our
own transcriptions of its forward passes, written from reading these files
(the modules at commit 9b8fcf0, the ResNets at f7db60f; no code copied), in
their structure and operation order: separate 1-to-1 channel ``Conv1d`` for
the query and the key, ``Q``/``K`` viewed as ``(b, heads, 1, c / heads)``,
an einsum for the score, the value viewed as ``(b, heads, c / heads, h, w)``
and scaled by the expanded gate, the lambda term added after the attention:

- MRLA-L: ``resnet/models/modules/mrla_light_module.py``
  (``mrla_light_layer.forward``), and ``resnet/models/resnet_mrla_light.py``
  (``mrla_module.forward``: ``lambda_t`` times ``ot_1``; and the end of
  ``MRLA_Bottleneck.forward``: ``out + drop_path(bn_mrla(mrla(out,
  identity)))``, where ``identity`` is the block's (downsampled) input, the
  ``o^{l-1}`` of the recurrence). ``mmdetection/mmdet/models/backbones/
  resnet_mrlal.py`` of the same repository computes the same.
- MRLA-B: ``resnet/models/modules/mrla_base_module.py``
  (``mrla_base_layer.forward``: keys and values concatenated along a layer
  axis, softmax over it) and ``resnet/models/resnet_mrla_base.py``
  (``mrla_module.forward``, ``init_cell`` for the first block of a stage;
  the end of ``MRLA_Bottleneck.forward``: BN, then ReLU, then added to the
  block output; ``ResNet_mrlab.forward_features`` passes ``k, v`` from block
  to block).

Parameter mapping (published -> ours): ``Wq.weight`` -> ``qk.weight[0]``
and ``Wk.weight`` -> ``qk.weight[1]`` (their two single-output convs are
our one two-output conv; same kernel size by the ECA rule, same padding, no
bias); ``Wv.weight`` -> ``value.weight`` (3x3 depthwise, no bias);
``lambda_t`` -> ``lambda_`` (``(C, 1, 1)``); ``bn_mrla`` -> ``norm`` (weight,
bias and running statistics). ``dim_perhead`` -> ``head_dim``; the scale is
``1 / sqrt(input_dim / heads)`` there, ``head_dim ** -0.5`` here.

Both of our implementations are checked, ``'fused'`` (the hand-written
autograd functions) and ``'reference'`` (stock operators, also what
``torch.compile`` traces), on the CPU and, where there is one, on a GPU.
Outputs, the gradients of the inputs and of every mapped parameter, and BN's
running statistics must agree to ``rtol=1e-12, atol=1e-13``.

No difference from the published code was found beyond what our docs state
(``o^{l-1}`` is the block's projected input, as published; MRLA-B's ReLU
after its BN, as published). Published MRLA-B uses 16 channels per head on
ImageNet, MRLA-L 32; ours takes ``head_dim`` as an argument, so both are
tested.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmela.models.layer_attention import (BaseLayerAttention,
                                          LightLayerAttention, StageMemory)
from mmela.models.ops import BaseRetrievalFunction, LightAttentionFunction

RTOL, ATOL = 1e-12, 1e-13
NOT_CLOSE = 'Tensor-likes are not close'
DTYPE = torch.float64


# ------------------------------------------ the published code, transcribed
def published_kernel_size(channels):
    """The published modules' ``k_size`` when none is given."""
    t = int(abs((math.log(channels, 2) + 1) / 2.))
    return t if t % 2 else t + 1


class _PublishedProjections(nn.Module):
    """What the published light and base layers both build: ``Wq``, ``Wk``
    (``Conv1d(1, 1, k)``), ``Wv`` (3x3 depthwise ``Conv2d``), none with a
    bias, and the scale ``1 / sqrt(c / heads)``."""

    def __init__(self, channels, dim_perhead):
        super().__init__()
        self.heads = int(channels / dim_perhead)
        k = published_kernel_size(channels)
        self.query_conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2,
                                    bias=False)
        self.key_conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.value_conv = nn.Conv2d(channels, channels, 3, stride=1,
                                    padding=1, groups=channels, bias=False)
        self.norm_fact = 1 / math.sqrt(channels / self.heads)

    def descriptor(self, x):
        """Global average pooling to ``(b, 1, c)``."""
        pooled = F.adaptive_avg_pool2d(x, 1)  # (b, c, 1, 1)
        return pooled.squeeze(-1).transpose(-1, -2)


class PublishedLight(nn.Module):
    """``mrla_light_layer`` + ``mrla_module`` + the tail of the published
    MRLA-L bottleneck: returns ``x + BN(attention(x) + lambda * identity)``
    (their ``drop_path`` is the identity at rate 0)."""

    def __init__(self, channels, dim_perhead, gate=torch.sigmoid):
        super().__init__()
        self.proj = _PublishedProjections(channels, dim_perhead)
        self.lambda_t = nn.Parameter(torch.randn(channels, 1, 1))
        self.bn_mrla = nn.BatchNorm2d(channels)
        self.gate = gate  # the published sigmoid; swapped in one check

    def attention(self, x):
        b, c, h, w = x.shape
        heads, per_head = self.proj.heads, int(c / self.proj.heads)
        y = self.proj.descriptor(x)
        query = self.proj.query_conv(y)  # (b, 1, c)
        key = self.proj.key_conv(y)
        value = self.proj.value_conv(x)
        query = query.view(b, heads, 1, per_head)
        key = key.view(b, heads, 1, per_head)
        value = value.view(b, heads, per_head, h, w)
        score = torch.einsum('bgqd,bgkd->bgqk', query, key) * \
            self.proj.norm_fact  # (b, heads, 1, 1)
        score = self.gate(score.view(b, heads, 1, 1, 1))
        return (value * score.expand_as(value)).view(b, c, h, w)

    def forward(self, x, identity):
        recurrent = self.attention(x) + \
            self.lambda_t.expand_as(identity) * identity
        return x + self.bn_mrla(recurrent)


class PublishedBase(nn.Module):
    """``mrla_base_layer`` + ``mrla_module`` + the tail of the published
    MRLA-B bottleneck: returns ``(x + relu(BN(attention)), keys, values)``
    with the keys ``(b, t, c)`` and values ``(b, t, c, h, w)`` of this and
    the earlier blocks of the stage."""

    def __init__(self, channels, dim_perhead, init_cell, relu=True):
        super().__init__()
        self.proj = _PublishedProjections(channels, dim_perhead)
        self.init_cell = init_cell
        self.bn_mrla = nn.BatchNorm2d(channels)
        self.relu = relu  # the published ReLU; dropped in one check

    def forward(self, x, prev_keys, prev_values):
        b, c, h, w = x.shape
        heads, per_head = self.proj.heads, int(c / self.proj.heads)
        y = self.proj.descriptor(x)
        query = self.proj.query_conv(y)
        key = self.proj.key_conv(y)
        value = self.proj.value_conv(x)
        if self.init_cell:
            keys, values = key, value.unsqueeze(1)
        else:
            keys = torch.cat((prev_keys, key), dim=1)
            values = torch.cat((prev_values, value.unsqueeze(1)), dim=1)
        t = keys.shape[1]
        query = query.view(b, heads, 1, per_head)
        # Their einops rearranges, as views and permutes.
        head_keys = keys.view(b, t, heads, per_head).permute(0, 2, 1, 3)
        head_values = values.view(b, t, heads, per_head, h, w).permute(
            0, 2, 1, 3, 4, 5)
        score = torch.einsum('bgqd,bgkd->bgqk', query, head_keys) * \
            self.proj.norm_fact  # (b, heads, 1, t)
        score = torch.softmax(score, dim=-1)
        head_values = head_values.reshape(b, heads, t, -1)
        out = torch.einsum('bgqt,bgtj->bgqj', score, head_values)
        out = out.unsqueeze(2).reshape(b, c, h, w)
        out = self.bn_mrla(out)
        if self.relu:
            out = F.relu(out)  # theirs is in place; the same numbers
        return x + out, keys, values


# ------------------------------------------------------ parameter mapping
def _randomise(module, seed, qk_std=1.):
    """Non-default values everywhere (our norm starts at weight 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        module.qk.weight.mul_(qk_std)
        norm = module.norm
        norm.running_mean.copy_(torch.randn(norm.running_mean.shape,
                                            generator=gen, dtype=DTYPE))
        norm.running_var.copy_(torch.rand(norm.running_var.shape,
                                          generator=gen, dtype=DTYPE) + 0.5)
    return module


def _copy_projections(proj, ours):
    assert proj.heads == ours.num_heads
    assert proj.query_conv.weight.shape[-1] == ours.qk.weight.shape[-1]
    assert proj.query_conv.padding == ours.qk.padding
    assert proj.norm_fact == pytest.approx(ours.scale, rel=1e-15)
    with torch.no_grad():
        proj.query_conv.weight.copy_(ours.qk.weight[0:1])
        proj.key_conv.weight.copy_(ours.qk.weight[1:2])
        proj.value_conv.weight.copy_(ours.value.weight)


def _copy_norm(bn, ours):
    bn.load_state_dict(ours.norm.state_dict())


def published_light_from(ours, **kwargs):
    published = PublishedLight(ours.channels, ours.head_dim,
                               **kwargs).to(ours.lambda_.device, DTYPE)
    _copy_projections(published.proj, ours)
    with torch.no_grad():
        published.lambda_t.copy_(ours.lambda_)
    _copy_norm(published.bn_mrla, ours)
    return published.train(ours.training)


def _projection_grads(proj):
    return {
        'qk.weight': torch.cat(
            [proj.query_conv.weight.grad, proj.key_conv.weight.grad]),
        'value.weight': proj.value_conv.weight.grad,
    }


def _norm_state(bn, prefix):
    """BN's gradients and running statistics under our names."""
    state = {f'{prefix}norm.weight.grad': bn.weight.grad,
             f'{prefix}norm.bias.grad': bn.bias.grad}
    for name in ('running_mean', 'running_var'):
        state[f'{prefix}norm.{name}'] = getattr(bn, name).detach()
    return state


def published_light_grads(published):
    """The published gradients (and BN statistics) under our names."""
    grads = {f'{name}.grad': g
             for name, g in _projection_grads(published.proj).items()}
    grads['lambda_.grad'] = published.lambda_t.grad
    grads.update(_norm_state(published.bn_mrla, ''))
    return grads


def our_grads(module, prefix=''):
    grads = {f'{prefix}{name}.grad': p.grad
             for name, p in module.named_parameters()}
    for name in ('running_mean', 'running_var'):
        grads[f'{prefix}norm.{name}'] = getattr(module.norm, name).detach()
    return grads


# ------------------------------------------------------------ comparing
def _backward(out, inputs, seed=1):
    gen = torch.Generator().manual_seed(seed)
    (out * torch.randn(out.shape, generator=gen, dtype=DTYPE).to(
        out.device)).sum().backward()
    return {name: t.grad for name, t in inputs.items()}


def _assert_all_close(got, want):
    """Every entry of ``want`` equals ``got``'s. Returns the largest
    absolute difference, and the largest relative to its tensor's size."""
    assert got.keys() == want.keys()
    largest = relative = 0.
    for name in want:
        assert got[name] is not None and want[name] is not None, name
        torch.testing.assert_close(
            got[name], want[name], rtol=RTOL, atol=ATOL,
            msg=lambda message, name=name: f'{name}: {message}')
        diff = (got[name] - want[name]).abs().max().item()
        largest = max(largest, diff)
        relative = max(relative, diff / want[name].abs().max().item())
    return largest, relative


def _inputs(shape, seed, device='cpu'):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=DTYPE).to(
        device).requires_grad_() for _ in range(2)]


def _run_light(module, shape, train):
    x, identity = _inputs(shape, seed=2,
                          device=next(module.parameters()).device)
    module.zero_grad(set_to_none=True)
    module.train(train)
    out = module(x, identity)
    grads = _backward(out, {'x.grad': x, 'identity.grad': identity})
    grads['out'] = out.detach()
    return grads


def compare_light(ours, published, shape, train):
    """Run both on the same inputs; assert everything matches."""
    got = _run_light(ours, shape, train)
    got.update(our_grads(ours))
    want = _run_light(published, shape, train)
    want.update(published_light_grads(published))
    return _assert_all_close(got, want)


LIGHT_CASES = [  # (B, C, head_dim, H, W)
    (2, 64, 32, 5, 7),
    (3, 128, 32, 4, 4),
    (2, 64, 16, 3, 1),
]


def _light_pair(channels, head_dim, seed=0, device='cpu'):
    ours = _randomise(LightLayerAttention(channels, head_dim=head_dim)
                      .to(device, DTYPE), seed)
    return ours, published_light_from(ours)


class _CountCalls:
    """Wraps ``fn`` and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize('case', LIGHT_CASES)
@pytest.mark.parametrize('train', [True, False])
def test_light_equals_the_published_mrla_light(case, train, la_impl,
                                               monkeypatch):
    _check_light(case, train, la_impl, monkeypatch, 'cpu')


def _check_light(case, train, impl, monkeypatch, device):
    batch, channels, head_dim, height, width = case
    ours, published = _light_pair(channels, head_dim, device=device)
    fused = _CountCalls(LightAttentionFunction.apply)
    monkeypatch.setattr(LightAttentionFunction, 'apply', fused)
    shape = (batch, channels, height, width)
    diff = compare_light(ours, published, shape, train)
    assert fused.calls == (impl == 'fused')
    print(f'MRLA-L {case} train={train} {impl} {device}: max |diff| '
          f'{diff[0]:.1e}, relative to the tensor {diff[1]:.1e}')


def test_light_comparison_can_fail():
    ours, published = _light_pair(64, 32)
    shape, wrong_lambda = (2, 64, 5, 7), copy.deepcopy(published)
    with torch.no_grad():
        wrong_lambda.lambda_t[3] += 1e-9
    with pytest.raises(AssertionError, match=NOT_CLOSE):
        compare_light(ours, wrong_lambda, shape, train=False)
    softmax = published_light_from(
        ours, gate=lambda score: torch.softmax(score, dim=1))
    with pytest.raises(AssertionError, match=NOT_CLOSE):
        compare_light(ours, softmax, shape, train=True)
    # The unchanged transcription still matches (a fresh copy of ours: the
    # train-mode run above moved its running statistics).
    compare_light(_light_pair(64, 32)[0], published, shape, train=False)


# -------------------------------------------------- MRLA-B over a stage
class ToyStage(nn.Module):
    """Blocks ending as the published bottleneck does,
    ``x^l = relu(conv(x) + x)``, each followed by a layer attention; keys
    and values are shared along the stage (our ``memory`` list, their
    ``k, v``)."""

    def __init__(self, channels, attention):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, 1) for _ in attention)
        self.attention = nn.ModuleList(attention)

    def forward(self, x):
        memory, keys, values = StageMemory(), None, None
        for conv, attention in zip(self.convs, self.attention):
            out = F.relu(conv(x) + x)
            if isinstance(attention, PublishedBase):
                x, keys, values = attention(out, keys, values)
            else:
                x = attention(out, x, memory)
        return x


def _base_pair(channels, head_dim, blocks, seed=0, relu=True,
               device='cpu'):
    torch.manual_seed(seed)
    # Query and key weights of std 0.1 keep the softmax away from one-hot
    # (with std 1 later blocks attend to one key, and the keys' gradients
    # vanish).
    ours = ToyStage(channels, [
        _randomise(BaseLayerAttention(channels, head_dim=head_dim).to(DTYPE),
                   seed + i, qk_std=0.1) for i in range(blocks)]).to(DTYPE)
    published = []
    for i, module in enumerate(ours.attention):
        theirs = PublishedBase(channels, head_dim, init_cell=i == 0,
                               relu=relu).to(DTYPE)
        _copy_projections(theirs.proj, module)
        _copy_norm(theirs.bn_mrla, module)
        published.append(theirs)
    published = ToyStage(channels, published).to(DTYPE)
    published.convs.load_state_dict(ours.convs.state_dict())
    return ours.to(device), published.to(device)


def _run_stage(stage, shape, train):
    x, _ = _inputs(shape, seed=3, device=next(stage.parameters()).device)
    stage.zero_grad(set_to_none=True)
    stage.train(train)
    out = stage(x)
    grads = _backward(out, {'x.grad': x})
    grads['out'] = out.detach()
    for name, p in stage.convs.named_parameters():
        grads[f'convs.{name}.grad'] = p.grad
    return grads


def compare_base(ours, published, shape, train):
    got = _run_stage(ours, shape, train)
    want = _run_stage(published, shape, train)
    for i, (mine, theirs) in enumerate(zip(ours.attention,
                                           published.attention)):
        got.update(our_grads(mine, prefix=f'{i}.'))
        want.update({f'{i}.{name}.grad': g for name, g in
                     _projection_grads(theirs.proj).items()})
        want.update(_norm_state(theirs.bn_mrla, f'{i}.'))
    return _assert_all_close(got, want)


BASE_CASES = [  # (B, C, head_dim, H, W, blocks)
    (2, 64, 16, 5, 7, 4),
    (3, 128, 32, 3, 3, 3),
]


@pytest.mark.parametrize('case', BASE_CASES)
@pytest.mark.parametrize('train', [True, False])
def test_base_equals_the_published_mrla_base(case, train, la_impl,
                                             monkeypatch):
    _check_base(case, train, la_impl, monkeypatch, 'cpu')


def _check_base(case, train, impl, monkeypatch, device):
    batch, channels, head_dim, height, width, blocks = case
    ours, published = _base_pair(channels, head_dim, blocks, device=device)
    fused = _CountCalls(BaseRetrievalFunction.apply)
    monkeypatch.setattr(BaseRetrievalFunction, 'apply', fused)
    for module in ours.attention:
        module.recording = True
    shape = (batch, channels, height, width)
    diff = compare_base(ours, published, shape, train)
    assert fused.calls == (blocks if impl == 'fused' else 0)
    # Every key carries weight, so every key's gradient is tested.
    for module in ours.attention:
        assert module.record['distribution'].min() > 1e-3
    print(f'MRLA-B {case} train={train} {impl} {device}: max |diff| '
          f'{diff[0]:.1e}, relative to the tensor {diff[1]:.1e}')


def test_base_comparison_can_fail():
    shape = (2, 64, 5, 7)
    ours, no_relu = _base_pair(64, 16, 3, relu=False)
    with pytest.raises(AssertionError, match=NOT_CLOSE):
        compare_base(ours, no_relu, shape, train=True)
    ours, published = _base_pair(64, 16, 3)
    compare_base(ours, published, shape, train=True)


# ------------------------------------------------------------------ CUDA
# The CUDA twins run wherever a GPU is present (tools/device_check.sh).
cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason='needs a CUDA device')


@cuda
@pytest.mark.parametrize('case', LIGHT_CASES)
@pytest.mark.parametrize('train', [True, False])
def test_cuda_light_equals_the_published_mrla_light(case, train, la_impl,
                                                    monkeypatch):
    _check_light(case, train, la_impl, monkeypatch, 'cuda')


@cuda
@pytest.mark.parametrize('case', BASE_CASES)
@pytest.mark.parametrize('train', [True, False])
def test_cuda_base_equals_the_published_mrla_base(case, train, la_impl,
                                                  monkeypatch):
    _check_base(case, train, la_impl, monkeypatch, 'cuda')
