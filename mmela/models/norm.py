"""Norm layers from OpenMMLab-style ``norm_cfg`` dicts, with torch only.

mmcv's ``build_norm_layer`` would do, but the modules of mmela depend on torch
and mmengine alone; these are the norm types ResNet configs use.
"""
from torch import nn

_NORM_LAYERS = {
    'BN': nn.BatchNorm2d,
    'BN2d': nn.BatchNorm2d,
    'SyncBN': nn.SyncBatchNorm,
    'GN': nn.GroupNorm,
}


def build_norm(cfg: dict, channels: int) -> nn.Module:
    """Build a norm layer.

    Args:
        cfg (dict): ``type`` (one of 'BN', 'BN2d', 'SyncBN', 'GN'),
            ``requires_grad`` (default True) and the layer's own keyword
            arguments (``num_groups`` for GN, ``eps``, ``momentum``, ...).
        channels (int): Number of channels to normalise.
    """
    cfg = dict(cfg)
    norm_type = cfg.pop('type', None)
    if norm_type not in _NORM_LAYERS:
        raise ValueError(f"norm_cfg['type'] must be one of "
                         f'{sorted(_NORM_LAYERS)}, got {norm_type!r}')
    requires_grad = cfg.pop('requires_grad', True)
    if norm_type == 'GN':
        layer = nn.GroupNorm(num_channels=channels, **cfg)
    else:
        layer = _NORM_LAYERS[norm_type](channels, **cfg)
    for param in layer.parameters():
        param.requires_grad = requires_grad
    return layer
