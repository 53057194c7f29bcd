"""Which implementation of layer attention runs: ``'reference'`` or
``'fused'``.

Every layer-attention module (:mod:`.layer_attention`) has two
implementations of the same maths, side by side:

- ``'reference'``: stock PyTorch operators and modules, in the published
  MRLA formulation (a shared-weight depthwise value conv with the gate
  applied afterwards, the norm module, the residual). This is also what
  ``torch.compile``, ``torch.export`` and ``torch.jit.trace`` (and so both
  ONNX exporters) trace: a graph of stock operators.
- ``'fused'``: the hand-written autograd functions of :mod:`.ops`, which
  launch fewer kernels and keep less memory for the backward pass.

One setting chooses between them, for the whole process:

- the environment variable ``MMELA_LA_IMPL`` (``auto``, ``fused`` or
  ``reference``; read on first use), or
- :func:`set_layer_attention_impl`, which overrides it.

``auto`` (the default) picks ``'fused'`` only on the device types where the
fused code has passed the oracle and published-MRLA tests on that device
(:data:`FUSED_VERIFIED_DEVICES`) and ``'reference'`` everywhere else: the
default on a device is only code that has run there. ``tools/device_check.sh``
runs those tests on a GPU and says whether ``'fused'`` passed there and was
faster.

Two cases run ``'reference'`` whatever the setting, each said once in the
log: tracing (compile, export), and a module hook on a layer attention's
query/key conv, value conv or norm (the fused function uses those modules'
weights without calling them, so the hook would never fire). Global module
hooks (``register_module_forward_hook``) do not change the implementation.
"""
import os
from typing import Optional

IMPLEMENTATIONS = ('auto', 'fused', 'reference')
ENV_VAR = 'MMELA_LA_IMPL'
# Device types on which the fused code, as it is now, has passed the oracle
# tests (tests/reference/test_layer_attention_oracle.py, tests/reference/test_published_mrla.py)
# on that device.
FUSED_VERIFIED_DEVICES = frozenset({'cpu'})

_setting: Optional[str] = None  # None: not read from the environment yet


def _check(name, source: str) -> str:
    if name not in IMPLEMENTATIONS:
        raise ValueError(f'{source} must be one of '
                         f'{", ".join(IMPLEMENTATIONS)}, got {name!r}')
    return name


def layer_attention_setting() -> str:
    """The current setting: ``'auto'``, ``'fused'`` or ``'reference'``.

    Raises:
        ValueError: If ``MMELA_LA_IMPL`` holds anything else.
    """
    global _setting
    if _setting is None:
        _setting = _check(os.environ.get(ENV_VAR, 'auto').strip().lower()
                          or 'auto', f'the environment variable {ENV_VAR}')
    return _setting


def set_layer_attention_impl(name: str) -> str:
    """Choose the implementation of layer attention for this process
    (``'auto'``, ``'fused'`` or ``'reference'``), overriding
    ``MMELA_LA_IMPL``. Returns the previous setting, so a caller can put it
    back."""
    previous = layer_attention_setting()
    global _setting
    _setting = _check(name, 'the layer-attention implementation')
    return previous


def layer_attention_impl(device_type: str) -> str:
    """The implementation that runs on ``device_type`` (``'cpu'``,
    ``'cuda'``, ...) under the current setting: the setting itself, or for
    ``'auto'``, ``'fused'`` where it is verified and ``'reference'``
    elsewhere."""
    setting = layer_attention_setting()
    if setting != 'auto':
        return setting
    return 'fused' if device_type in FUSED_VERIFIED_DEVICES else 'reference'
