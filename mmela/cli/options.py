"""Command-line flags applied to the config, as mmdet's and mmpretrain's
tools apply them. The config's ``default_scope`` picks the few things that
differ between the two codebases:

- mmpretrain's dataloaders default to ``default_collate`` (mmdet configs set
  their own collate function), with ``pin_memory`` and, when there are
  workers, ``persistent_workers`` on;
- ``--show-dir``: mmdet's ``DetVisualizationHook`` draws into
  ``test_out_dir``, mmpretrain's ``VisualizationHook`` into ``out_dir``.
"""
import argparse
import os.path as osp
from typing import Tuple

import torch
from mmengine.config import Config, ConfigDict

from .config import is_remote
from .errors import ConfigError


def apply_train_args(cfg: Config, args: argparse.Namespace) -> None:
    if args.amp:
        if not torch.cuda.is_available():
            raise ConfigError('--amp needs a GPU (mmengine\'s AmpOptimWrapper '
                              'is CUDA/NPU/MLU only): drop --amp on this '
                              'machine')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ConfigError('--auto-scale-lr needs auto_scale_lr = '
                              'dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    _set_dataloader_defaults(cfg, args,
                             ('train_dataloader', 'val_dataloader'))
    use_available_devices(cfg)


def apply_test_args(cfg: Config, args: argparse.Namespace) -> None:
    if not is_remote(args.checkpoint) and not osp.isfile(args.checkpoint):
        raise ConfigError(f'checkpoint {args.checkpoint} does not exist')
    cfg.load_from = args.checkpoint
    if args.out_item is not None:
        if cfg.default_scope != 'mmpretrain':
            raise ConfigError('--out-item is for classification configs; '
                              'detection --out always holds the detections')
        if args.out is None:
            raise ConfigError('--out-item needs --out FILE')
    if args.out is not None and args.out_item != 'metrics' and \
            not args.out.endswith(('.pkl', '.pickle')):
        raise ConfigError(f'--out {args.out}: predictions are dumped as '
                          f'pickle, name the file *.pkl')
    if args.amp:
        cfg.test_cfg.fp16 = True
    if args.show or args.show_dir:
        _enable_visualization(cfg, args)
    _set_dataloader_defaults(cfg, args, ('test_dataloader', ))
    use_available_devices(cfg)


def _set_dataloader_defaults(cfg: Config, args: argparse.Namespace,
                             fields: Tuple[str, ...]) -> None:
    for field in fields:
        loader = cfg.get(field)
        if loader is None:
            continue
        if cfg.default_scope == 'mmpretrain':
            # mmpretrain's tools add these; its dataset configs rely on them.
            loader.setdefault('collate_fn', dict(type='default_collate'))
            loader.setdefault('pin_memory', True)
            if loader.get('num_workers', 0) > 0 and \
                    not getattr(args, 'no_persistent_workers', False):
                loader.setdefault('persistent_workers', True)
        if args.no_pin_memory:
            loader.pin_memory = False
        if getattr(args, 'no_persistent_workers', False):
            loader.persistent_workers = False


def _enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise ConfigError('--show/--show-dir need default_hooks.visualization '
                          '(the stock runtime config has it)')
    if cfg.default_scope == 'mmdet':
        hook.draw = True
        hook.show = args.show
        hook.wait_time = args.wait_time
        if args.show_dir:
            hook.test_out_dir = args.show_dir
    else:
        hook.enable = True
        hook.show = args.show
        hook.wait_time = args.wait_time
        hook.out_dir = args.show_dir
        hook.interval = args.interval


def use_available_devices(cfg: Config) -> None:
    """On a machine without CUDA, distributed runs use gloo (NCCL needs
    GPUs) and DDP gets no ``device_ids`` (see :mod:`mmela.compat`). With
    CUDA the config is left as it is (NCCL, mmengine's default wrapper)."""
    if torch.cuda.is_available():
        return
    cfg.setdefault('env_cfg', ConfigDict())
    cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
        broadcast_buffers=False,  # mmengine's default wrapper settings
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    if wrapper.get('type', 'MMDistributedDataParallel') == \
            'MMDistributedDataParallel':
        wrapper.type = 'AnyDeviceDistributedDataParallel'
    cfg.model_wrapper_cfg = wrapper
