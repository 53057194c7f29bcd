"""A classifier whose loss becomes NaN on one rank only, for the test that a
diverging rank stops every rank (imported through ``custom_imports``)."""
from mmengine.dist import get_rank
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS


@MODELS.register_module()
class NaNOnRankClassifier(ImageClassifier):
    """``ImageClassifier`` whose training loss is NaN on ``nan_rank``."""

    def __init__(self, nan_rank: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.nan_rank = nan_rank

    def loss(self, inputs, data_samples):
        losses = super().loss(inputs, data_samples)
        if get_rank() == self.nan_rank:
            losses['loss'] = losses['loss'] * float('nan')
        return losses
