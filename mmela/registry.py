"""Where mmela registers its modules.

mmela registers into mmengine's root registries. mmdet's and mmpretrain's
registries are children of these and look up their parents, so
``type='ELAResNet'`` and ``type='ELAPruningHook'`` resolve in mmdet and
mmpretrain configs alike, and importing mmela needs neither package.
"""
from mmengine.registry import DATASETS, HOOKS, MODELS

__all__ = ['DATASETS', 'HOOKS', 'MODELS']
