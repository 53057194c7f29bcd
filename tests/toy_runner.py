"""A tiny mmengine training setup around a layer-attention backbone, shared
by the hook, resume and distributed tests (no mmdet/mmpretrain needed)."""
from mmengine.runner import Runner

import mmela.testing  # noqa: F401 (registers ToyELAClassifier, QuadrantImages)


def toy_cfg(work_dir, max_epochs=3, hooks=(), layer_attention='light',
            depth=20, num_samples=16, launcher='none', resume=False):
    return dict(
        model=dict(type='ToyELAClassifier',
                   backbone=dict(type='ELAResNetCIFAR', depth=depth,
                                 layer_attention=layer_attention)),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dict(type='QuadrantImages', num_samples=num_samples),
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
