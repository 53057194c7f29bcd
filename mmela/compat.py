"""Narrow fixes that let the 2024 OpenMMLab releases run on current torch.

Importing mmela installs none of them. ``tools/train.py`` and
``tools/test.py`` install both (:func:`mmela.cli.prepare_stack`), and
``ELAPruningHook`` installs the first when a run starts, so that a config
of one's own resumes too. Each says why it exists and when it can go.

``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and
mmengine's checkpoints hold more than tensors: the message hub's
``HistoryBuffer`` logs and the numpy arrays, scalars and dtypes inside them.
mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, so ``--resume``
and ``tools/test.py`` fail. Rather than turning the safe loader off, we
allow-list exactly what mmengine writes. It can go once mmengine registers
its own types or passes ``weights_only`` itself.
"""
import codecs
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


def _numpy_globals() -> list:
    """Arrays are rebuilt through ``_reconstruct`` (their bytes through
    ``codecs.encode``) and scalars through ``scalar``; both need dtypes."""
    try:  # numpy >= 2 moved the private module
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = {type(np.dtype(t)) for t in (np.float16, np.float32, np.float64,
                                          np.int32, np.int64, np.uint8,
                                          np.bool_)}
    return [_reconstruct, scalar, codecs.encode, np.ndarray, np.dtype, *dtypes]


def _history_buffer_method(owner, name: str):
    """Stands in for ``builtins.getattr`` while loading safely.

    ``HistoryBuffer`` keeps its statistics methods (``min``, ``mean``, ...) in
    a dict, which pickle writes as ``getattr(HistoryBuffer, 'min')``. Allowing
    ``getattr`` itself would allow any attribute of any allowed object; this
    allows only public methods of ``HistoryBuffer`` (where registered
    statistics live too).
    """
    if owner is not HistoryBuffer or name.startswith('_') or \
            not callable(getattr(HistoryBuffer, name, None)):
        raise pickle.UnpicklingError(
            f'refusing getattr({owner!r}, {name!r}) in a weights-only load')
    return getattr(owner, name)


def allow_mmengine_checkpoint_types() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine checkpoints."""
    torch.serialization.add_safe_globals([
        HistoryBuffer, *_numpy_globals(),
        (_history_buffer_method, 'builtins.getattr')
    ])


# --------------------------------------------------- distributed on CPUs
# mmengine 0.10.7 assumes a GPU per process when launched with
# ``--launcher pytorch``: it calls ``torch.cuda.set_device`` and gives DDP
# ``device_ids=[LOCAL_RANK]``. Both fail on a machine without CUDA, where
# gloo runs fine. The two pieces below change only that case; they can go
# once mmengine's ``init_dist`` and its DDP wrapper handle CPU-only runs.


def _init_dist_pytorch_any_device(backend, init_backend='torch', **kwargs):
    if torch.cuda.is_available() or init_backend != 'torch':
        return _original_init_dist_pytorch(backend, init_backend, **kwargs)
    import torch.distributed as torch_dist
    torch_dist.init_process_group(backend=backend, **kwargs)


def allow_cpu_distributed() -> None:
    """Let ``init_dist('pytorch')`` work without CUDA (use gloo there)."""
    from mmengine.dist import utils
    global _original_init_dist_pytorch
    if utils._init_dist_pytorch is not _init_dist_pytorch_any_device:
        _original_init_dist_pytorch = utils._init_dist_pytorch
        utils._init_dist_pytorch = _init_dist_pytorch_any_device


@MODEL_WRAPPERS.register_module()
class AnyDeviceDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that drops ``device_ids`` for a module on
    the CPU (DDP accepts device ids for GPU modules only). Select it with
    ``model_wrapper_cfg=dict(type='AnyDeviceDistributedDataParallel')``;
    ``tools/train.py`` does so on machines without CUDA."""

    def __init__(self, module, device_ids=None, **kwargs):
        if next(module.parameters()).device.type == 'cpu':
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)
