"""A tiny mmengine training setup around a layer-attention backbone, shared
by the hook, resume and distributed tests (no mmdet/mmpretrain needed)."""
import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import mmela  # noqa: F401


@MODELS.register_module(force=True)
class ToyELAClassifier(BaseModel):
    """Backbone + global pooling + linear head, trained with cross-entropy."""

    def __init__(self, backbone, num_classes=4, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.backbone = MODELS.build(backbone)
        self.head = nn.Linear(self.backbone.feat_dim, num_classes)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.head(self.backbone(inputs)[-1].mean(dim=(2, 3)))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        return logits


@DATASETS.register_module(force=True)
class ToyImages(Dataset):
    """Random images whose label is which quadrant is brightest."""

    def __init__(self, num_samples=16, image_size=32, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(num_samples, 3, image_size, image_size,
                                 generator=gen)
        self.labels = torch.randint(0, 4, (num_samples, ), generator=gen)
        half = image_size // 2
        for img, label in zip(self.images, self.labels):
            row, col = divmod(int(label), 2)
            img[:, row * half:(row + 1) * half,
                col * half:(col + 1) * half] += 1.0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return dict(inputs=self.images[index], labels=self.labels[index])


def toy_cfg(work_dir, max_epochs=3, hooks=(), layer_attention='light',
            depth=20, num_samples=16, launcher='none', resume=False):
    return dict(
        model=dict(type='ToyELAClassifier',
                   backbone=dict(type='ELAResNetCIFAR', depth=depth,
                                 layer_attention=layer_attention)),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dict(type='ToyImages', num_samples=num_samples),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4, num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks),
        randomness=dict(seed=0, deterministic=False),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        model_wrapper_cfg=dict(type='AnyDeviceDistributedDataParallel',
                               broadcast_buffers=False,
                               find_unused_parameters=False),
        launcher=launcher,
        resume=resume,
        default_scope='mmengine')


def free_port():
    """A TCP port that is free now, for a torch.distributed rendezvous."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def build_runner(**kwargs):
    return Runner.from_cfg(mmela_config(**kwargs))


def mmela_config(**kwargs):
    from mmengine.config import Config
    return Config(toy_cfg(**kwargs))
