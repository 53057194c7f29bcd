"""A tiny mmengine training setup around a layer-attention backbone, shared
by the hook, resume and distributed tests (no mmdet/mmpretrain needed).

Also a script, for tests that need a real process to kill::

    python toy_runner.py '{"work_dir": ..., "max_epochs": 3, ...}'

runs :func:`toy_cfg` with those arguments (``"kill_at": [epoch, iteration,
rank]`` sends SIGKILL to that rank's own process after that 1-based training
iteration, as ``kill -9`` would) and writes ``result_rank<r>.json`` (masks
and a weight checksum) into the work dir.
"""
import json
import os
import random
import signal
import sys
import uuid

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmela.testing  # noqa: F401 (registers ToyELAClassifier, QuadrantImages)
from mmela.registry import DATASETS, HOOKS
from mmela.testing import QuadrantImages


@DATASETS.register_module()
class AugmentedQuadrants(QuadrantImages):
    """QuadrantImages with random augmentation drawn, as real pipelines do,
    from numpy (a horizontal flip, as mmcv's RandomFlip), Python's ``random``
    (brightness) and torch (noise, as torchvision's transforms)."""

    def __getitem__(self, index):
        image, label = self.images[index], int(self.labels[index])
        if np.random.rand() < 0.5:
            image = image.flip(-1)
            label ^= 1  # left <-> right quadrant
        image = image * random.uniform(0.8, 1.2)
        image = image + 0.1 * torch.randn(image.shape)
        return dict(inputs=image, labels=torch.tensor(label))


@HOOKS.register_module()
class KillAt(Hook):
    """SIGKILL this process after 1-based training iteration ``iteration`` of
    epoch ``epoch`` on rank ``rank``: a crash with no cleanup at all."""
    priority = 'LOWEST'

    def __init__(self, epoch, iteration, rank=0):
        self.at = (epoch, iteration, rank)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if (runner.epoch + 1, batch_idx + 1, runner.rank) == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def toy_cfg(work_dir, max_epochs=3, hooks=(), layer_attention='light',
            depth=20, num_samples=16, launcher='none', resume=False,
            dataset='QuadrantImages', num_workers=0, persistent_workers=False,
            seed=0, lr=0.05):
    return dict(
        model=dict(type='ToyELAClassifier',
                   backbone=dict(type='ELAResNetCIFAR', depth=depth,
                                 layer_attention=layer_attention)),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dict(type=dataset, num_samples=num_samples),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4, num_workers=num_workers,
            persistent_workers=persistent_workers and num_workers > 0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks),
        randomness=dict(seed=seed, deterministic=False),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        model_wrapper_cfg=dict(type='AnyDeviceDistributedDataParallel',
                               broadcast_buffers=False,
                               find_unused_parameters=False),
        launcher=launcher,
        resume=resume,
        # mmengine names a run's logger by its start second and reuses a
        # logger of that name, so a second run within the same second would
        # log into the first one's file: every toy run gets its own name.
        experiment_name=f'toy_{uuid.uuid4().hex}',
        default_scope='mmengine')


def free_port():
    """A TCP port that is free now, for a torch.distributed rendezvous."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def read_logs(work_dir) -> str:
    """Every mmengine log file of the runs in ``work_dir``, concatenated."""
    import pathlib
    return '\n'.join(p.read_text()
                     for p in sorted(pathlib.Path(work_dir).rglob('*.log')))


def build_runner(**kwargs):
    from mmela.cli import prepare_stack
    prepare_stack()  # as tools/train.py does
    return Runner.from_cfg(mmela_config(**kwargs))


def mmela_config(**kwargs):
    from mmengine.config import Config
    return Config(toy_cfg(**kwargs))


def main(kwargs: dict) -> None:
    kill_at = kwargs.pop('kill_at', None)
    if kill_at is not None:
        kwargs['hooks'] = [*kwargs.get('hooks', ()),
                           dict(type='KillAt', epoch=kill_at[0],
                                iteration=kill_at[1], rank=kill_at[2])]
    runner = build_runner(**kwargs)
    runner.train()
    model = runner.model.module if hasattr(runner.model, 'module') \
        else runner.model
    result = dict(
        masks=[m.int().tolist() for m in model.backbone.get_masks()],
        epochs_done=runner.epoch,
        weight_checksum=float(sum(p.double().sum()
                                  for p in model.parameters())))
    with open(os.path.join(kwargs['work_dir'],
                           f'result_rank{runner.rank}.json'), 'w') as f:
        json.dump(result, f)
    if kwargs.get('launcher', 'none') != 'none':
        from mmela.cli import release_distributed
        release_distributed()


if __name__ == '__main__':
    main(json.loads(sys.argv[1]))
