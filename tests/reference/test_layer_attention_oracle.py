"""Both implementations of layer attention against an oracle.

``reference_*`` below are the layer-attention forward passes written in the
plainest autograd operators (``repeat_interleave`` of the per-head weights,
MRLA-B's stack of keys and running sum of values), with the published
MRLA-B's ReLU after its norm. Each implementation of the modules,
``'reference'`` and ``'fused'`` (``mmela/models/implementation.py``), must
match them in outputs, in the gradients of inputs and parameters, and in the
norms' running statistics and batch counters; and the two must match each
other on whole backbones. The CUDA twins at the end run wherever a GPU is
present (``tools/device_check.sh``); CI has none.
"""
import copy
import logging
import math
import os

import pytest
import torch
import torch.nn.functional as F

from mmela.models import (ELAResNetCIFAR, layer_attention_impl,
                          set_layer_attention_impl)
from mmela.models import layer_attention as la
from mmela.models.layer_attention import (BaseLayerAttention,
                                          LightLayerAttention, StageMemory,
                                          build_layer_attention)
from mmela.models.ops import BaseRetrievalFunction, LightAttentionFunction


# ---------------------------------------------------------------- oracle
def _reference_query_key(m, x):
    pooled = x.mean(dim=(2, 3)).unsqueeze(1)
    qk = m.qk(pooled)
    qk = qk.to(torch.promote_types(qk.dtype, torch.float32))
    return qk.unflatten(2, (m.num_heads, m.head_dim)).unbind(1)


def reference_light(m, x, identity, memory=None):
    q, k = _reference_query_key(m, x)
    gate = torch.sigmoid((q * k).sum(-1) * m.scale)
    channel_gate = gate.to(x.dtype).repeat_interleave(
        m.head_dim, dim=1)[:, :, None, None]
    out = torch.addcmul(identity * m.lambda_.to(identity.dtype),
                        m.value(x), channel_gate)
    return x + m.norm(out)


def reference_base(m, x, identity, memory):
    q, k = _reference_query_key(m, x)
    memory.append((k, m.value(x)))
    keys = torch.stack([key for key, _ in memory], dim=2)
    attention = torch.softmax((keys * q.unsqueeze(2)).sum(-1) * m.scale,
                              dim=-1)
    weights = attention.to(x.dtype).repeat_interleave(m.head_dim, dim=1)
    values = [value for _, value in memory]
    per_value = weights[:, :, None, None].unbind(-1)
    out = values[0] * per_value[0]
    for value, weight in zip(values[1:], per_value[1:]):
        out = torch.addcmul(out, value, weight)
    return x + F.relu(m.norm(out))  # the published MRLA-B's ReLU


REFERENCE = {'light': reference_light, 'base': reference_base}


# ------------------------------------------------------ a toy stage
class ToyStage(torch.nn.Module):
    """Blocks ``x^l = relu(conv(x)) + x`` (identity = the block input), each
    followed by a layer attention, sharing one memory per forward (a
    :class:`StageMemory` for ours, a list of keys and values for the
    oracle)."""

    def __init__(self, kind, channels=64, blocks=4, head_dim=16, masks=None,
                 norm_cfg=None):
        super().__init__()
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv2d(channels, channels, 1) for _ in range(blocks))
        self.attention = torch.nn.ModuleList(
            build_layer_attention(kind, channels, head_dim=head_dim,
                                  norm_cfg=norm_cfg)
            for _ in range(blocks))
        for module in self.attention:
            torch.nn.init.normal_(module.norm.weight)  # not the zero init
            torch.nn.init.normal_(module.norm.bias)
        for module, on in zip(self.attention, masks or [1] * blocks):
            module.set_retrieval(bool(on))
        self.forward_attention = None  # None: the module's own forward

    def forward(self, x):
        memory = [] if self.forward_attention else StageMemory()
        for conv, attention in zip(self.convs, self.attention):
            out = F.relu(conv(x)) + x
            if not attention.retrieval_on:
                x = out
            elif self.forward_attention is None:
                x = attention(out, x, memory)
            else:
                x = self.forward_attention(attention, out, x, memory)
        return x


def _run(stage, x, grad_seed=1):
    stage.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = stage(x)
    gen = torch.Generator().manual_seed(grad_seed)
    weights = torch.randn(out.shape, generator=gen,
                          dtype=torch.float64).to(out.device)
    (out.double() * weights.contiguous(
        memory_format=torch.channels_last if
        out.is_contiguous(memory_format=torch.channels_last) and
        not out.is_contiguous() else torch.contiguous_format)).sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in
             stage.named_parameters() if p.grad is not None}
    grads['input'] = x.grad.detach().clone()
    return out.detach(), grads


def _pair(kind, masks, dtype=torch.float64, blocks=4, seed=0, device='cpu',
          norm_cfg=None):
    torch.manual_seed(seed)
    stage = ToyStage(kind, blocks=blocks, masks=masks,
                     norm_cfg=norm_cfg).to(device, dtype)
    reference = copy.deepcopy(stage)
    reference.forward_attention = REFERENCE[kind]
    return stage, reference


def _assert_match(got, want, rtol, atol):
    out, grads = got
    ref_out, ref_grads = want
    torch.testing.assert_close(out, ref_out, rtol=rtol, atol=atol)
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=rtol,
                                   atol=atol, msg=name)


MASKS = [None, [1, 0, 1, 1], [0, 1, 0, 1]]


@pytest.mark.parametrize('kind', ['light', 'base'])
@pytest.mark.parametrize('masks', MASKS)
@pytest.mark.parametrize('train', [True, False])
def test_matches_the_oracle_in_float64(kind, masks, train, la_impl):
    _check_float64(kind, masks, train, 'cpu')


def _check_float64(kind, masks, train, device, channels_last=False):
    stage, reference = _pair(kind, masks, device=device)
    for module in stage.attention:
        _randomise_running_stats(module.norm)
    reference.load_state_dict(stage.state_dict())
    stage.train(train)
    reference.train(train)
    x = torch.randn(3, 64, 6, 5, dtype=torch.float64, device=device)
    if channels_last:
        stage = stage.to(memory_format=torch.channels_last)
        reference = reference.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    got, want = _run(stage, x), _run(reference, x)
    _assert_match(got, want, 1e-10, 1e-12)
    # A second pass (MRLA-B: buffers sized from the first) matches as well.
    _assert_match(_run(stage, x), _run(reference, x), 1e-10, 1e-12)
    _assert_same_buffers(stage, reference)
    if channels_last:
        # The output keeps the oracle's layout (on the CPU channels-last, so
        # later blocks pay no conversion; on CUDA float64 convs return
        # contiguous outputs, in the oracle too).
        assert got[0].stride() == want[0].stride()
        if device == 'cpu':
            assert got[0].is_contiguous(memory_format=torch.channels_last)


def _assert_same_buffers(stage, reference):
    """The norms' running statistics and batch counters."""
    buffers = dict(reference.named_buffers())
    for name, buffer in stage.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], rtol=1e-12,
                                   atol=1e-14, msg=name)


def _record_normalize(monkeypatch):
    """Patch ``LightAttentionFunction.apply`` to record its ``normalize``
    flag."""
    calls = []
    apply = LightAttentionFunction.apply

    def recording(*args):
        calls.append(args[10])
        return apply(*args)

    monkeypatch.setattr(LightAttentionFunction, 'apply', recording)
    return calls


OTHER_NORMS = [
    dict(norm_cfg=dict(type='GN', num_groups=8)),
    dict(norm_cfg=dict(type='BN', momentum=None)),
    dict(norm_cfg=dict(type='BN', track_running_stats=False)),
    dict(drop_path_rate=0.2),
]


@pytest.mark.parametrize('settings', OTHER_NORMS)
@pytest.mark.parametrize('train', [True, False])
def test_light_with_other_norms_matches_the_oracle(settings, train, la_impl,
                                                   monkeypatch):
    """Norms other than a plain BN with a momentum, and DropPath, run as
    their modules (after the fused retrieval), and still match."""
    calls = _record_normalize(monkeypatch)
    _check_other_norm(settings, train, 'cpu')
    assert calls == ([False] * 3 if la_impl == 'fused' else [])
    # With the default BN the fused function holds the norm (so the check
    # can fail).
    calls.clear()
    stage, _ = _pair('light', [1, 0, 1, 1])
    _run(stage, torch.randn(3, 64, 6, 5, dtype=torch.float64))
    assert calls == ([True] * 3 if la_impl == 'fused' else [])


def _check_other_norm(settings, train, device):
    if 'drop_path_rate' in settings and train:
        pytest.skip('DropPath draws random masks in training')
    stage, reference = _pair('light', [1, 0, 1, 1], device=device,
                             norm_cfg=settings.get('norm_cfg'))
    for module in list(stage.attention) + list(reference.attention):
        if 'drop_path_rate' in settings:
            module.drop_path = la.DropPath(settings['drop_path_rate'])
    stage.train(train)
    reference.train(train)
    x = torch.randn(3, 64, 6, 5, dtype=torch.float64, device=device)
    _assert_match(_run(stage, x), _run(reference, x), 1e-10, 1e-12)
    _assert_same_buffers(stage, reference)


@pytest.mark.parametrize('frozen', ['identity', 'lambda', 'norm', 'map-1x1'])
@pytest.mark.parametrize('train', [True, False])
def test_light_partial_gradients_match_the_oracle(frozen, train, la_impl):
    """The backward computes only what is needed: an identity without a
    gradient (a frozen stem before the first block), a frozen lambda or
    norm, and 1x1 maps (mmdet's frozen_stages, small inputs)."""
    _check_partial_gradients(frozen, train, 'cpu')


def _check_partial_gradients(frozen, train, device):
    torch.manual_seed(0)
    module = LightLayerAttention(64, head_dim=16).to(device, torch.float64)
    torch.nn.init.normal_(module.norm.weight)
    _randomise_running_stats(module.norm)
    reference = copy.deepcopy(module)
    module.train(train)
    reference.train(train)
    shape = (3, 64, 1, 1) if frozen == 'map-1x1' else (3, 64, 5, 6)
    x = torch.randn(shape, dtype=torch.float64, device=device)
    identity = torch.randn(shape, dtype=torch.float64, device=device)
    grads = []
    for m, forward in ((module, module), (reference,
                                         lambda *a: reference_light(m, *a))):
        if frozen == 'lambda':
            m.lambda_.requires_grad_(False)
        if frozen == 'norm':
            m.norm.requires_grad_(False)
        xg = x.clone().requires_grad_()
        idg = identity.clone().requires_grad_(frozen != 'identity')
        out = forward(xg, idg)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype,
                              device=device).view_as(out)).sum().backward()
        grads.append([out.detach(), xg.grad, idg.grad] + [
            p.grad for p in m.parameters()])
    for got, want in zip(*grads):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    _assert_same_buffers(module, reference)


def _randomise_running_stats(norm):
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)


def test_light_rejects_one_value_per_channel_in_training_as_bn_does(
        la_impl):
    module = LightLayerAttention(64, head_dim=16)
    x = torch.randn(1, 64, 1, 1)
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        module(x, x)
    module.eval()
    assert module(x, x).shape == x.shape


@pytest.mark.parametrize('with_cp', [False, True])
def test_batch_counters_advance_as_stock_batch_norm_does(with_cp, la_impl):
    """Each retrieving block's norm counts every training forward pass, as
    a stock BN does, and pruned or eval-mode ones do not (also with the
    blocks checkpointed, whose recomputation runs no layer attention). With
    'fused', the backbone's stages advance their MRLA-L norms' counters
    together."""
    model = ELAResNetCIFAR(20, layer_attention='light', with_cp=with_cp)
    model.set_masks([[1, 0], [1, 1], [0, 1]])
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    for _ in range(2):
        model(x)[-1].sum().backward()
    model.eval()
    model(x)
    counts = [[int(block.layer_attention.norm.num_batches_tracked)
               for block in stage] for stage in model.stages()]
    assert counts == [[2, 0], [2, 2], [0, 2]]
    # A module outside a backbone advances its own counter.
    module = LightLayerAttention(64, head_dim=16)
    module(torch.randn(2, 64, 4, 4), torch.randn(2, 64, 4, 4))
    assert int(module.norm.num_batches_tracked) == 1


# ------------------------------------------- the two implementations
@pytest.mark.parametrize('kind', ['light', 'base'])
def test_implementations_equal_each_other_on_a_backbone(kind):
    """'fused' and 'reference' on a whole backbone, float64: outputs, every
    gradient, running statistics and batch counters, over two training steps
    and an eval pass; with a frozen stage, pruned blocks, channels-last
    features and, in the last stage, 1x1 maps."""
    _check_implementations_equal(kind, 'cpu')


def _check_implementations_equal(kind, device):
    torch.manual_seed(0)
    models = {}
    for impl in ('fused', 'reference'):
        torch.manual_seed(0)
        model = ELAResNetCIFAR(20, layer_attention=kind, frozen_stages=1)
        model.init_weights()
        model.set_masks([[1, 1], [1, 0], [1, 1]])
        models[impl] = model.to(device, torch.float64).to(
            memory_format=torch.channels_last)
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64, device=device).contiguous(
        memory_format=torch.channels_last)  # the last stage sees 1x1 maps
    results = {}
    for impl, model in models.items():
        previous = set_layer_attention_impl(impl)
        try:
            steps = []
            for train in (True, True, False):
                model.train(train)
                model.zero_grad(set_to_none=True)
                xg = x.clone().requires_grad_()
                out = model(xg)[-1]
                state = dict(out=out.detach())
                if train:
                    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype,
                                          device=device).view_as(out)
                     ).sum().backward()
                    state['input.grad'] = xg.grad
                    state.update({f'{n}.grad': p.grad for n, p in
                                  model.named_parameters()
                                  if p.grad is not None})
                state.update(dict(model.named_buffers()))
                steps.append({k: v.detach().clone() for k, v in state.items()})
        finally:
            set_layer_attention_impl(previous)
        results[impl] = steps
    for got, want in zip(results['fused'], results['reference']):
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-10,
                                       atol=1e-12, msg=name)
    # The frozen stage's layer attention trains (a gradient is there).
    assert 'layer1.0.layer_attention.qk.weight.grad' in results['fused'][0]
    assert 'layer1.0.conv1.weight.grad' not in results['fused'][0]


def test_auto_picks_fused_only_where_it_is_verified():
    previous = set_layer_attention_impl('auto')
    try:
        assert layer_attention_impl('cpu') == 'fused'
        assert layer_attention_impl('cuda') == 'reference'
        assert layer_attention_impl('mps') == 'reference'
        for name in ('fused', 'reference'):
            set_layer_attention_impl(name)
            assert layer_attention_impl('cpu') == layer_attention_impl(
                'cuda') == name
        with pytest.raises(ValueError, match='auto, fused, reference'):
            set_layer_attention_impl('fast')
    finally:
        set_layer_attention_impl(previous)


@pytest.mark.parametrize('value,cpu,cuda', [
    ('reference', 'reference', 'reference'), ('fused', 'fused', 'fused'),
    ('auto', 'fused', 'reference'), ('', 'fused', 'reference')])
def test_the_environment_variable_chooses(value, cpu, cuda):
    import subprocess
    import sys
    code = ('from mmela.models import layer_attention_impl as f; '
            'print(f("cpu"), f("cuda"))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, env=dict(os.environ, MMELA_LA_IMPL=value))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [cpu, cuda]


def test_a_bad_environment_variable_is_one_clear_error():
    import subprocess
    import sys
    code = ('from mmela.models import layer_attention_impl as f; '
            'f("cpu")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, env=dict(os.environ, MMELA_LA_IMPL='fast'))
    assert out.returncode != 0
    assert ("ValueError: the environment variable MMELA_LA_IMPL must be one "
            "of auto, fused, reference, got 'fast'") in out.stderr


@pytest.mark.parametrize('kind', ['light', 'base'])
def test_tracing_runs_the_reference_implementation(kind, monkeypatch):
    """Under torch.compile or export (and torch.jit.trace) the modules trace
    stock operators, whatever the setting."""
    fused = {'light': LightAttentionFunction,
             'base': BaseRetrievalFunction}[kind]
    calls = []
    apply = fused.apply
    monkeypatch.setattr(fused, 'apply',
                        lambda *a: calls.append(1) or apply(*a))
    previous = set_layer_attention_impl('fused')
    try:
        stage, reference = _pair(kind, [1, 1, 0, 1])
        x = torch.randn(2, 64, 4, 4, dtype=torch.float64)
        _run(stage, x)
        assert calls == [1] * 3
        calls.clear()
        monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
        _assert_match(_run(stage, x), _run(reference, x), 1e-10, 1e-12)
        assert calls == []
    finally:
        set_layer_attention_impl(previous)


class _Lines(logging.Handler):
    """Collects the messages of mmengine's current logger (which does not
    propagate to pytest's caplog)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_a_hook_on_a_conv_switches_to_reference_and_says_so_once():
    """A module hook on MRLA-L's value conv would never fire under
    'fused' (the function uses the conv's weight): that module runs
    'reference', and the log says so in one line."""
    from mmengine.logging import MMLogger
    previous = set_layer_attention_impl('fused')
    la._said.clear()
    logger = MMLogger.get_current_instance()
    collected = _Lines()
    logger.addHandler(collected)
    try:
        stage, reference = _pair('light', None)
        calls = []
        stage.attention[1].value.register_forward_hook(
            lambda *_: calls.append(1))
        x = torch.randn(2, 64, 4, 4, dtype=torch.float64)
        for _ in range(2):
            _assert_match(_run(stage, x), _run(reference, x), 1e-10, 1e-12)
        assert calls == [1, 1]
        assert stage.attention[1].implementation('cpu') == 'reference'
        assert stage.attention[0].implementation('cpu') == 'fused'
        lines = [line for line in collected.lines if 'module hook' in line]
        assert len(lines) == 1, collected.lines
        assert "run 'reference'" in lines[0]
    finally:
        logger.removeHandler(collected)
        set_layer_attention_impl(previous)


@pytest.mark.parametrize('kind', ['light', 'base'])
def test_channels_last_matches_the_oracle(kind, la_impl):
    _check_float64(kind, [1, 0, 1, 1], True, 'cpu', channels_last=True)


def _cpu_autocast_dtypes():
    dtypes = [torch.bfloat16]
    try:
        with torch.autocast('cpu', dtype=torch.float16):
            torch.nn.functional.conv2d(torch.randn(1, 1, 3, 3),
                                       torch.randn(1, 1, 1, 1))
        dtypes.append(torch.float16)
    except RuntimeError:
        pass
    return dtypes


def _assert_as_accurate(got, want, truth):
    """``got`` is about as close to ``truth`` as ``want`` is: overall (the
    sum of relative errors over output and gradients) and tensor by tensor
    within a factor of 3 (a few gradients cancel so much that half-precision
    rounding alone changes them by tens of percent, in either path)."""
    pairs = [(got[0], want[0], truth[0], 'output')] + [
        (got[1][n], want[1][n], truth[1][n], n) for n in truth[1]]
    total = reference_total = 0
    for mine, theirs, exact, name in pairs:
        exact = exact.double()
        error = (mine.double() - exact).norm() / exact.norm()
        reference_error = (theirs.double() - exact).norm() / exact.norm()
        assert error <= 3 * reference_error + 2e-2, name
        total, reference_total = total + error, reference_total + \
            reference_error
    assert total <= 1.25 * reference_total


def _check_autocast(kind, dtype, device, features='autocast'):
    stage, reference = _pair(kind, [1, 0, 1, 1], dtype=torch.float32,
                             device=device)
    # In a network under autocast the features reaching the layer
    # attention are in the autocast dtype (conv and norm outputs); with
    # float32 ones (a float32 residual) the convs still run in ``dtype``.
    x = torch.randn(4, 64, 6, 6, device=device)
    x = x.to(dtype) if features == 'autocast' else x
    with torch.autocast(device, dtype=dtype):
        got = _run(stage, x)
        want = _run(reference, x)
    assert got[0].dtype == want[0].dtype
    truth = _run(copy.deepcopy(reference).double(), x.double())
    # Sums run in other orders, so half precision rounds differently:
    # compare errors against the float64 result.
    _assert_as_accurate(got, want, truth)
    return got, want, truth


# MRLA-L also with float32 features (its mixed-dtype branches); MRLA-B's
# retrieval rounds its output to the autocast dtype there, which the oracle
# does not, and is less accurate than it in that case.
AUTOCAST_CASES = [('light', 'autocast'), ('base', 'autocast'),
                  ('light', 'float32')]


@pytest.mark.parametrize('kind,features', AUTOCAST_CASES)
@pytest.mark.parametrize('dtype', _cpu_autocast_dtypes())
def test_autocast_is_as_accurate_as_the_oracle(kind, dtype, features,
                                               la_impl):
    got, want, truth = _check_autocast(kind, dtype, 'cpu', features)
    # The check can fail: a gradient 50% off is caught.
    wrong = dict(got[1], input=got[1]['input'] * 1.5)
    with pytest.raises(AssertionError, match='input'):
        _assert_as_accurate((got[0], wrong), want, truth)


def test_base_keeps_one_memory_entry_per_retrieving_block(la_impl):
    stage, _ = _pair('base', [1, 0, 1, 1])
    seen = []
    stage.attention[3].register_forward_pre_hook(
        lambda module, args: seen.append(args[2].retrievals))
    stage(torch.randn(1, 64, 3, 3, dtype=torch.float64))
    assert seen == [2]


def test_base_backward_twice_with_retained_graph_gives_the_same_grads(
        la_impl):
    stage, _ = _pair('base', None)
    x = torch.randn(2, 64, 4, 4, dtype=torch.float64, requires_grad=True)
    out = stage(x).square().sum()
    first = torch.autograd.grad(out, [x], retain_graph=True)[0]
    second = torch.autograd.grad(out, [x])[0]
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_base_buffers_grow_when_the_stage_gets_more_retrievals():
    previous = set_layer_attention_impl('fused')
    try:
        _check_buffers_grow()
    finally:
        set_layer_attention_impl(previous)


def _check_buffers_grow():
    stage, reference = _pair('base', [1, 0, 0, 1])
    x = torch.randn(2, 64, 4, 4, dtype=torch.float64)
    _assert_match(_run(stage, x), _run(reference, x), 1e-10, 1e-12)
    assert stage.attention[0]._stage_capacity == 2
    for s in (stage, reference):
        for module in s.attention:
            module.set_retrieval(True)
    _assert_match(_run(stage, x), _run(reference, x), 1e-10, 1e-12)
    assert stage.attention[0]._stage_capacity == 4


# ------------------------------------------------------ recording
def test_light_records_gate_log_gate_and_decay(la_impl):
    torch.manual_seed(0)
    module = LightLayerAttention(64, head_dim=16).double()
    module.recording = True
    x = torch.randn(5, 64, 4, 4, dtype=torch.float64)
    module(x, x)
    q, k = _reference_query_key(module, x)
    scores = (q * k).sum(-1) * module.scale
    torch.testing.assert_close(module.record['gate'],
                               torch.sigmoid(scores).mean(0))
    torch.testing.assert_close(module.record['log_gate'],
                               torch.sigmoid(scores).mean(0).log())
    assert module.record['gate'].shape == module.record['log_gate'].shape \
        == (4, )
    assert module.record['decay'].shape == (64, )


def test_log_gate_stays_finite_when_the_gate_underflows(la_impl):
    torch.manual_seed(0)
    module = LightLayerAttention(64, head_dim=16)
    with torch.no_grad():
        module.qk.weight[0].fill_(60.0)
        module.qk.weight[1].fill_(-60.0)
    module.recording = True
    x = torch.rand(3, 64, 4, 4) + 1  # positive: every score far below 0
    module(x, x)
    assert torch.all(module.record['gate'] == 0)  # sigmoid underflowed
    log_gate = module.record['log_gate']
    assert log_gate.dtype == torch.float32
    assert torch.all(torch.isfinite(log_gate)) and torch.all(log_gate < -100)
    # log(mean(sigmoid(s))) = logsumexp(logsigmoid(s)) - log(B), exactly
    # what float64 gives where it does not underflow.
    q, k = _reference_query_key(module, x)
    scores = ((q * k).sum(-1) * module.scale).double()
    torch.testing.assert_close(
        log_gate.double(),
        torch.logsumexp(F.logsigmoid(scores), 0) - math.log(3),
        rtol=1e-6, atol=0)


# ------------------------------------------------ drop path and ReLU
def test_drop_path_is_off_by_default_and_drops_whole_samples(la_impl):
    for cls in (LightLayerAttention, BaseLayerAttention):
        assert isinstance(cls(64).drop_path, torch.nn.Identity)
    torch.manual_seed(0)
    module = build_layer_attention('light', 64, head_dim=16,
                                   drop_path_rate=0.5).double()
    torch.nn.init.ones_(module.norm.weight)
    x = torch.randn(16, 64, 3, 3, dtype=torch.float64)
    kept = copy.deepcopy(module).eval()
    out = module(x, x)
    branch = reference_light(copy.deepcopy(module), x, x) - x  # train BN
    per_sample = [(o - x[i]).abs().max().item() for i, o in enumerate(out)]
    dropped = [i for i, v in enumerate(per_sample) if v == 0]
    assert 0 < len(dropped) < 16
    for i in range(16):
        want = torch.zeros_like(x[i]) if i in dropped else 2 * branch[i]
        torch.testing.assert_close(out[i] - x[i], want)
    # Not in eval mode.
    torch.testing.assert_close(kept(x, x), reference_light(kept, x, x))
    with pytest.raises(ValueError, match='drop_path_rate'):
        build_layer_attention('base', 64, drop_path_rate=1.0)


def test_base_ends_with_a_relu_and_light_does_not(la_impl):
    torch.manual_seed(0)
    x = torch.randn(2, 64, 3, 3)
    for kind, clipped in (('base', True), ('light', False)):
        module = build_layer_attention(kind, 64)
        torch.nn.init.ones_(module.norm.weight)
        branch = module(x, x) - x
        assert bool((branch >= 0).all()) == clipped
    # MRLA-B without it (an ablation): a single block's softmax over one key
    # is 1, so its branch is the norm of its value, negative entries too.
    module = BaseLayerAttention(64, relu=False)
    torch.nn.init.ones_(module.norm.weight)
    branch = module(x, x) - x
    torch.testing.assert_close(branch, module.norm(module.value(x)))
    assert bool((branch < 0).any())


# ------------------------------------------------------------------ CUDA
# The same operators run on every device, but the kernels behind them differ
# on a GPU (cuDNN's batch norm and depthwise convs, the batch-norm
# backward's checks and branches, half precision). These run wherever a GPU
# is present (tools/device_check.sh); CI has none.
cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason='needs a CUDA device')


@cuda
@pytest.mark.parametrize('kind', ['light', 'base'])
@pytest.mark.parametrize('masks', MASKS)
@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('channels_last', [False, True])
def test_cuda_matches_the_oracle_in_float64(kind, masks, train,
                                            channels_last, la_impl):
    _check_float64(kind, masks, train, 'cuda', channels_last)


@cuda
@pytest.mark.parametrize('kind,features', AUTOCAST_CASES)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_autocast_is_as_accurate_as_the_oracle(kind, dtype, features,
                                                    la_impl):
    _check_autocast(kind, dtype, 'cuda', features)


@cuda
@pytest.mark.parametrize('frozen', ['identity', 'lambda', 'norm', 'map-1x1'])
@pytest.mark.parametrize('train', [True, False])
def test_cuda_partial_gradients_match_the_oracle(frozen, train, la_impl):
    _check_partial_gradients(frozen, train, 'cuda')


@cuda
@pytest.mark.parametrize('settings', OTHER_NORMS)
@pytest.mark.parametrize('train', [True, False])
def test_cuda_light_with_other_norms_matches_the_oracle(settings, train,
                                                        la_impl):
    _check_other_norm(settings, train, 'cuda')


@cuda
@pytest.mark.parametrize('kind', ['light', 'base'])
def test_cuda_implementations_equal_each_other_on_a_backbone(kind):
    _check_implementations_equal(kind, 'cuda')
