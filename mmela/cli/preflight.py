"""Pre-flight: what a user most often gets wrong, checked before the Runner
exists (so before anything is written to the work dir): the backbone,
ELAPruningHook's settings against the schedule, checkpoints (see
:mod:`.checkpoints`) and dataset paths. Every problem found is a
:class:`~.errors.ConfigError`, model first."""
import copy
import inspect
import os
import os.path as osp
import socket
import urllib.parse
from typing import List, Optional, Tuple

from mmengine.config import Config
from mmengine.registry import DATASETS, HOOKS, LOOPS, MODELS
from mmengine.runner import EpochBasedTrainLoop

from ..hooks import ELAPruningHook, check_backbone
from .checkpoints import check_checkpoints
from .config import is_remote, registered
from .errors import ConfigError, ConfigErrors

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def preflight(cfg: Config, mode: str) -> None:
    """Check, before anything is written, what would otherwise fail later
    (often after hours): the backbone, ELAPruningHook windows, checkpoints,
    dataset paths. Raises :class:`ConfigErrors` with every problem found,
    model first.

    Args:
        cfg (Config): The merged config, its scope the default scope.
        mode (str): 'train' (train and, unless disabled, val data; hooks;
            ``load_from`` / ``--resume`` and ``init_cfg`` checkpoints) or
            'test' (test data; the checkpoint to evaluate).
    """
    errors: List[ConfigError] = []

    def collect(check, *args):
        try:
            return check(*args)
        except ConfigErrors as e:
            errors.extend(e.errors)
        except ConfigError as e:
            errors.append(e)

    has_ela_hook = mode == 'train' and bool(_ela_hook_cfgs(cfg))
    model_ok = collect(_check_backbone, cfg, has_ela_hook)
    if has_ela_hook:
        collect(_check_ela_hooks, cfg)
    collect(check_checkpoints, cfg, mode, bool(model_ok))

    if mode == 'train':
        loaders = ['train_dataloader']
        if cfg.get('val_cfg') is not None:
            loaders.append('val_dataloader')
    else:
        loaders = ['test_dataloader']
    for name in loaders:
        dataset = (cfg.get(name) or {}).get('dataset')
        collect(_check_dataset, dataset, f'{name}.dataset')
        collect(_check_split, dataset, f'{name}.dataset', name)
        evaluator = name.replace('dataloader', 'evaluator')
        collect(_check_evaluator, cfg.get(evaluator), evaluator)
    if errors:
        raise ConfigErrors(errors)


# Datasets that a script of ours prepares.
PREPARE_SCRIPTS = {
    'FashionMNIST': 'tools/misc/prepare_fashion_mnist.sh',
}


def _missing(path: str, key: str, dataset_type=None, offline: str = '',
             root: Optional[str] = None) -> ConfigError:
    """``path`` does not exist: what to do. ``root``: the folder our
    prepare script fills (default ``path``)."""
    where = '' if osp.isabs(path) else f' (relative to {os.getcwd()})'
    script = PREPARE_SCRIPTS.get(dataset_type)
    if script:  # as the user can type it from where they are
        script = osp.relpath(osp.join(ROOT, script))
    how = f'run bash {script} {root or path}, or ' if script else ''
    return ConfigError(f'{key}: {path} does not exist{where}{offline}; '
                       f'{how}put the data there or point the config at it, '
                       f'e.g. --cfg-options {key}=PATH')


def _mnist_style(dataset_cls) -> bool:
    """mmpretrain's MNIST and its subclasses (FashionMNIST): their files lie
    in data_root itself, and test_mode, not split, picks them."""
    try:
        from mmpretrain.datasets import MNIST
    except ImportError:
        return False
    return isinstance(dataset_cls, type) and issubclass(dataset_cls, MNIST)


def _file_names(dataset_type) -> List[str]:
    """The files an MNIST-style dataset reads from its data_root, unpacked;
    [] for other datasets."""
    dataset_cls = registered(DATASETS, dataset_type)
    if not _mnist_style(dataset_cls):
        return []
    lists = [getattr(dataset_cls, name, None)
             for name in ('train_list', 'test_list')]
    return [osp.splitext(name)[0] if name.endswith('.gz') else name
            for files in lists for name, *_ in files]


def _missing_files(dataset: dict, data_root: str) -> List[str]:
    if not data_root:
        return []
    return [name for name in _file_names(dataset.get('type'))
            if not osp.exists(osp.join(data_root, name))]


_reachable_hosts = {}


def _reachable(dataset: dict) -> bool:
    """For an MNIST-style dataset: whether the host it downloads from
    answers (a TCP connect, a few seconds at most); offline, a download
    would end in a long ``URLError`` traceback and leave an empty folder
    behind. Other datasets are let try."""
    dataset_cls = registered(DATASETS, dataset.get('type'))
    url = getattr(dataset_cls, 'url_prefix', None)
    if not _mnist_style(dataset_cls) or not isinstance(url, str):
        return True
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname
    port = parsed.port or (443 if parsed.scheme == 'https' else 80)
    if (host, port) not in _reachable_hosts:
        try:
            socket.create_connection((host, port), timeout=3).close()
            _reachable_hosts[host, port] = True
        except OSError:
            _reachable_hosts[host, port] = False
    return _reachable_hosts[host, port]


def _offline(dataset: dict) -> str:
    if not _downloads(dataset) or _reachable(dataset):
        return ''
    return (f' and {dataset.get("type")} cannot download it here (its '
            f'server does not answer)')


def _check_split(dataset: Optional[dict], key: str, loader: str) -> None:
    """MNIST-style datasets read their test files only with
    ``test_mode=True`` and ignore ``split``: ``split='test'`` alone, or a
    test loader without ``test_mode``, evaluates on the training images."""
    if not dataset or not _file_names(dataset.get('type')):
        return
    test_mode = bool(dataset.get('test_mode', False))
    if test_mode:
        return
    if dataset.get('split') == 'test' or loader == 'test_dataloader':
        raise ConfigError(
            f'{key}: {dataset.get("type")} reads its test images only with '
            f"test_mode=True (it ignores split='test'), so this split would "
            f'be the training images; set {key}.test_mode=True')


def _check_dataset(dataset: Optional[dict], key: str) -> None:
    """``data_root``, ``ann_file`` and ``data_prefix`` of a dataset and of
    the datasets a wrapper (Repeat-, ClassBalanced-, ConcatDataset) holds."""
    if not dataset:
        return
    if dataset.get('dataset'):
        _check_dataset(dataset['dataset'], f'{key}.dataset')
    for i, inner in enumerate(dataset.get('datasets') or []):
        _check_dataset(inner, f'{key}.datasets.{i}')
    backend = (dataset.get('backend_args') or {}).get('backend', 'local')
    data_root = dataset.get('data_root') or ''
    if backend != 'local' or is_remote(data_root):
        return
    if data_root and not osp.isdir(data_root):
        if _downloads(dataset) and _reachable(dataset):
            return  # e.g. mmpretrain's CIFAR fetches itself (download=True)
        raise _missing(data_root, f'{key}.data_root', dataset.get('type'),
                       _offline(dataset))
    missing = _missing_files(dataset, data_root)
    if missing and not (_downloads(dataset) and _reachable(dataset)):
        raise _missing(osp.join(data_root, missing[0]), f'{key}.data_root',
                       dataset.get('type'), _offline(dataset), data_root)
    paths = [('ann_file', dataset.get('ann_file'))]
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, dict):
        paths += [(f'data_prefix.{k}', v) for k, v in prefix.items()]
    else:
        paths.append(('data_prefix', prefix))
    for name, path in paths:
        if not isinstance(path, str) or not path or is_remote(path):
            continue
        full = osp.join(data_root, path)
        if not osp.exists(full):
            raise _missing(full, f'{key}.{name}')


def _downloads(dataset: dict) -> bool:
    """Whether the dataset fetches its files itself when they are missing
    (its ``download`` argument, given or by default)."""
    if 'download' in dataset:
        return bool(dataset['download'])
    dataset_cls = registered(DATASETS, dataset.get('type'))
    param = inspect.signature(dataset_cls).parameters.get('download') \
        if dataset_cls else None
    return bool(param is not None and param.default is True)


def _check_evaluator(evaluator, key: str) -> None:
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else \
        [evaluator]
    for i, metric in enumerate(metrics):
        path = (metric or {}).get('ann_file')
        if isinstance(path, str) and not is_remote(path) and \
                not osp.isfile(path):
            suffix = f'.{i}' if len(metrics) > 1 else ''
            raise _missing(path, f'{key}{suffix}.ann_file')


def _ela_hook_cfgs(cfg: Config) -> List[Tuple[int, dict]]:
    """``(index, config)`` of each ELAPruningHook in ``custom_hooks``."""
    found = []
    for i, hook_cfg in enumerate(cfg.get('custom_hooks') or []):
        hook_type = hook_cfg.get('type')
        name = hook_type if isinstance(hook_type, str) else \
            getattr(hook_type, '__name__', '')
        if name.split('.')[-1] == ELAPruningHook.__name__:
            found.append((i, hook_cfg))
    return found


def _check_ela_hooks(cfg: Config) -> None:
    """Build each ELAPruningHook of ``custom_hooks`` (its constructor checks
    the windows) and check the windows against the schedule, as the hook's
    ``before_train`` would, but before the work dir exists."""
    train_cfg = cfg.get('train_cfg') or {}
    if not _epoch_based(train_cfg):
        raise ConfigError(
            'ELAPruningHook needs epoch-based training: set train_cfg = '
            'dict(by_epoch=True, max_epochs=...)')
    errors = []
    for i, hook_cfg in _ela_hook_cfgs(cfg):
        try:
            hook = HOOKS.build(copy.deepcopy(hook_cfg))
        except (ValueError, TypeError) as e:
            errors.append(ConfigError(f'custom_hooks.{i} (ELAPruningHook): '
                                      f'{e}'))
            continue
        max_epochs = train_cfg.get('max_epochs')
        if max_epochs is not None:
            try:
                hook.check_schedule(max_epochs)
            except ValueError as e:
                errors.append(ConfigError(
                    f'custom_hooks.{i} (ELAPruningHook): {e}'))
    if errors:
        raise ConfigErrors(errors)


def _epoch_based(train_cfg: dict) -> bool:
    if 'type' not in train_cfg:
        return bool(train_cfg.get('by_epoch', False))
    loop = registered(LOOPS, train_cfg['type'])
    return isinstance(loop, type) and issubclass(loop, EpochBasedTrainLoop)


def _check_backbone(cfg: Config, needs_layer_attention: bool) -> bool:
    """Build the backbone once (weights are not loaded; the Runner builds
    the model again). Constructor errors of a backbone (an unknown type, a
    depth that does not exist, a misspelt argument) are config errors.
    Returns whether the model's checkpoint keys can be compared."""
    model_cfg = cfg.get('model')
    if not model_cfg:
        raise ConfigError('the config has no model')
    if 'backbone' not in model_cfg:
        return True  # not a backbone-based model: nothing of ours to check
    try:
        backbone = MODELS.build(copy.deepcopy(model_cfg.backbone))
    except KeyError as e:
        depths = getattr(registered(MODELS, model_cfg.backbone.get('type')),
                         'arch_settings', None)
        depth = model_cfg.backbone.get('depth')
        if isinstance(depths, dict) and depth not in depths:
            # The stock ResNets say only 'invalid depth 42 for resnet'.
            raise ConfigError(f'model.backbone: depth must be one of '
                              f'{sorted(depths)}, got {depth}')
        raise ConfigError(f'model.backbone: {e.args[0] if e.args else e}')
    except (ValueError, TypeError, AssertionError) as e:
        raise ConfigError(f'model.backbone: {e}')
    if needs_layer_attention:
        try:
            check_backbone(backbone)
        except ValueError as e:
            raise ConfigError(f'model.backbone: {e}')
    return True
