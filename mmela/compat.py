"""Narrow fixes that let the 2024 OpenMMLab releases run on current torch.

``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and
mmengine's checkpoints hold more than tensors: the message hub's
``HistoryBuffer`` logs and the numpy arrays, scalars and dtypes inside them.
mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, so ``--resume``
fails. Rather than turning the safe loader off, we allow-list exactly the
types mmengine writes.
"""
import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_globals() -> list:
    """The numpy objects pickled inside an mmengine checkpoint: arrays are
    rebuilt through ``_reconstruct`` and scalars through ``scalar``; both need
    their dtype classes."""
    try:  # numpy >= 2 moved the private module
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = {type(np.dtype(t)) for t in (np.float16, np.float32, np.float64,
                                          np.int32, np.int64, np.uint8,
                                          np.bool_)}
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes]


def allow_mmengine_checkpoint_types() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine checkpoints."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:  # torch < 2.4 has no safe loader
        add_safe_globals([HistoryBuffer, *_numpy_globals()])
