"""Dtype rules and small helpers shared by the layer-attention modules and
their hand-written autograd functions."""
import torch
from torch import Tensor


def conv_dtype(x: Tensor) -> torch.dtype:
    """The dtype autocast would run a conv in (``x.dtype`` without it)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """Attention scores (query . key, sigmoid, softmax) are computed in
    float32 at least, whatever the autocast dtype."""
    return torch.promote_types(dtype, torch.float32)


def scratch(t: Tensor) -> Tensor:
    """A one-element view of ``t`` to stand as the ignored ``input`` of
    ``baddbmm(..., beta=0)`` (no allocation, no kernel)."""
    return t.as_strided((1, 1, 1), (0, 0, 0))
