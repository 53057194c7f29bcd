"""A tiny training setup around any layer-attention backbone, for the tests
and for the benchmark's short hook runs (no mmdet or mmpretrain needed)."""
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset

from .registry import DATASETS, MODELS


@MODELS.register_module()
class ToyELAClassifier(BaseModel):
    """Backbone + global pooling + linear head, trained with cross-entropy."""

    def __init__(self, backbone: dict, num_classes: int = 4,
                 data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.backbone = MODELS.build(backbone)
        self.head = nn.Linear(self.backbone.feat_dim, num_classes)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.head(self.backbone(inputs)[-1].mean(dim=(2, 3)))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        return logits


@DATASETS.register_module()
class QuadrantImages(Dataset):
    """Random images whose label (0-3) is the quadrant made brightest, so a
    network has something to learn."""
    metainfo = dict(classes=('top left', 'top right', 'bottom left',
                             'bottom right'))

    def __init__(self, num_samples: int = 16,
                 image_size: Union[int, Sequence[int]] = 32, seed: int = 0):
        height, width = (image_size, image_size) \
            if isinstance(image_size, int) else image_size
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(num_samples, 3, height, width, generator=gen)
        self.labels = torch.randint(0, 4, (num_samples, ), generator=gen)
        half_h, half_w = height // 2, width // 2
        for image, label in zip(self.images, self.labels):
            row, col = divmod(int(label), 2)
            image[:, row * half_h:(row + 1) * half_h,
                  col * half_w:(col + 1) * half_w] += 1.0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return dict(inputs=self.images[index], labels=self.labels[index])
