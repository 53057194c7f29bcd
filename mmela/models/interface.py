"""What ``ELAPruningHook`` and the tools need from a backbone with layer
attention, written once. :class:`~mmela.models.LayerAttentionResNetBase`
provides it; a backbone of another family can too."""
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, \
    runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class LayerAttentionBackbone(Protocol):
    """A backbone whose stages carry layer attention.

    Stages are in order and named by ``res_layers``; within a stage, blocks
    are in order; a mask is True where a block's retrieval is on.
    """
    res_layers: Sequence[str]

    def stages(self) -> List[nn.Module]:
        """The stage modules, in order."""

    def layer_attention_modules(self) -> List[nn.Module]:
        """Every block's layer attention (empty without layer attention)."""

    def set_attention_recording(self, enabled: bool) -> None:
        """Record attention in the following forward passes (or stop)."""

    def get_attention_distributions(self) -> List[List[Tuple[int, Tensor]]]:
        """Per stage, ``(block, distribution)`` of every retrieving block
        from the last recorded forward pass."""

    def get_masks(self) -> List[Tensor]:
        """Per stage, a bool tensor: True where the retrieval is on."""

    def set_masks(self, masks: Sequence) -> None:
        """Set every retrieval mask (as :meth:`get_masks` returns them)."""

    def num_retrievals(self) -> Dict[str, int]:
        """``on`` and ``total`` retrievals."""

    def layer_attention_impl(self, device_type: Optional[str] = None) -> str:
        """The implementation its retrieving blocks run."""


def is_layer_attention_backbone(backbone) -> bool:
    """Whether ``backbone`` provides :class:`LayerAttentionBackbone` and
    has layer attention to prune."""
    return isinstance(backbone, LayerAttentionBackbone) and \
        bool(backbone.layer_attention_modules())


def check_backbone(backbone, owner: str = 'the model',
                   user: str = 'ELAPruningHook') -> None:
    """Raise ValueError, naming what to use instead, unless ``backbone``
    has layer attention to prune."""
    if is_layer_attention_backbone(backbone):
        return
    if backbone is None:
        name = f'{owner} without a backbone'
    elif isinstance(backbone, LayerAttentionBackbone):
        name = f'{type(backbone).__name__} with layer_attention=None'
    else:
        name = type(backbone).__name__
    raise ValueError(
        f'{user} needs a backbone with layer attention, got {name}: use '
        f"ELAResNet or ELAResNetCIFAR with layer_attention='light' or "
        f"'base'")
