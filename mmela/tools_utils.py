"""What ``tools/train.py`` and ``tools/test.py`` share.

One implementation for detection and classification configs: the config's
``default_scope`` (``'mmdet'`` or ``'mmpretrain'``, set by the stock
``_base_`` runtime every mmela config inherits) picks the few things that
differ between mmdet's and mmpretrain's own tools:

- mmpretrain's dataloaders default to ``default_collate`` (mmdet configs set
  their own collate function), with ``pin_memory`` and, when there are
  workers, ``persistent_workers`` on;
- ``--out``: mmdet dumps detections with ``DumpDetResults``, mmpretrain dumps
  predictions with ``DumpResults`` (or, ``--out-item metrics``, the metrics);
- ``--show-dir``: mmdet's ``DetVisualizationHook`` draws into
  ``test_out_dir``, mmpretrain's ``VisualizationHook`` into ``out_dir``.

Before the ``Runner`` exists (so before anything is written to the work
dir), :func:`preflight` checks what a user most often gets wrong: dataset
paths, ELAPruningHook windows against the schedule, the backbone config and
checkpoints (that they exist, are complete, and fit the model). Every problem
found is a :class:`ConfigError`, printed as one ``error: ...`` line each,
model first (exit status 2); anything else keeps its traceback.
"""
import argparse
import ast
import contextlib
import copy
import inspect
import os
import os.path as osp
import pickle
import re
import sys
import zipfile
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.registry import (DATASETS, HOOKS, LOOPS, MODELS, RUNNERS,
                               init_default_scope)
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop, Runner
from torch import Tensor, nn

from .hooks import ELAPruningError, ELAPruningHook, check_backbone

SCOPES = ('mmdet', 'mmpretrain')


class ConfigError(Exception):
    """Something the user has to fix in the config or on the command line;
    the message says what, in one line."""


class ConfigErrors(ConfigError):
    """Several :class:`ConfigError` found in one pass, in the order found."""

    def __init__(self, errors: List[ConfigError]):
        self.errors = list(errors)
        super().__init__('\n'.join(map(str, self.errors)))


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`ConfigError` into ``error:`` lines on stderr (one per
    problem) and exit status 2 (argparse's status for bad usage), and an
    :class:`ELAPruningError` raised while training (a diverged loss, a window
    with nothing to measure) into one ``error:`` line and exit status 1."""
    try:
        yield
    except ConfigError as e:
        _print_errors(getattr(e, 'errors', [e]))
        sys.exit(2)
    except ELAPruningError as e:
        # Every rank stops with this line (the hook decides on all ranks
        # together); each rank's log says why it stopped.
        _print_errors([e], every_rank=True)
        sys.exit(1)


def _print_errors(errors, every_rank: bool = False) -> None:
    # Under torchrun every rank fails the same way: say it once.
    if every_rank or os.environ.get('RANK', '0') == '0':
        for error in errors:
            message = ' '.join(str(error).split())
            print(f'error: {message}', file=sys.stderr)


# ------------------------------------------------------------ arguments
def _parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file path')
    return parser


def _add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, xxx=yyy pairs merged into it, '
        'e.g. train_cfg.max_epochs=24 or key="[a,b]"; no white space.')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher (dist_train.sh: pytorch)')
    parser.add_argument(
        '--no-pin-memory', action='store_true',
        help='disable pin_memory in the dataloaders')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help='set by torch.distributed.launch; not needed '
                        'with dist_train.sh / dist_test.sh (torchrun)')


def _finish(parser: argparse.ArgumentParser,
            argv: Optional[List[str]]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def train_parser() -> argparse.ArgumentParser:
    parser = _parser('Train a detector or classifier (mmdet / mmpretrain '
                     'config) with mmela')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or without a path from the '
        'latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual batch '
                        'size over auto_scale_lr.base_batch_size')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate during training')
    parser.add_argument('--no-persistent-workers', action='store_true',
                        help='disable persistent_workers in the dataloaders')
    _add_common_args(parser)
    return parser


def parse_train_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return _finish(train_parser(), argv)


def test_parser() -> argparse.ArgumentParser:
    parser = _parser('Test (and evaluate) a detector or classifier with '
                     'mmela')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the metrics file goes '
                        '(default: work_dirs/<config name>)')
    parser.add_argument(
        '--out', help='dump predictions to this .pkl file (classification '
        'with --out-item metrics: the metrics, .json/.yaml/.pkl)')
    parser.add_argument(
        '--out-item', choices=['pred', 'metrics'],
        help='classification only: what --out holds (default: pred)')
    parser.add_argument('--show-dir', help='draw predictions into this '
                        'directory (inside the run\'s timestamped dir)')
    parser.add_argument('--show', action='store_true',
                        help='show predictions in a window')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each shown image stays (--show)')
    parser.add_argument('--interval', type=int, default=1,
                        help='classification: draw every n-th sample')
    parser.add_argument('--amp', action='store_true',
                        help='test in mixed precision (test_cfg.fp16)')
    _add_common_args(parser)
    return parser


def parse_test_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return _finish(test_parser(), argv)


# --------------------------------------------------------------- config
def load_config(args: argparse.Namespace) -> Config:
    """Read the config, merge ``--cfg-options``, set the work dir and the
    launcher, and make the config's scope the default one."""
    if not osp.isfile(args.config):
        raise ConfigError(f'config file {args.config} does not exist')
    try:
        cfg = Config.fromfile(args.config)
    except SyntaxError as e:
        raise _syntax_error(args.config, e) from None
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ConfigError(
            f'{args.config}: default_scope must be one of {list(SCOPES)} '
            f'(inherit a stock mmdet or mmpretrain config), got {scope!r}')
    init_default_scope(scope)
    cfg.launcher = args.launcher
    # CLI > config > config file name, as in mmdet's and mmpretrain's tools.
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def _syntax_error(config: str, error: SyntaxError) -> ConfigError:
    """``file:line: message`` of a syntax error in ``config`` or in one of
    its ``_base_`` files (mmengine re-raises the parser's error, which names
    neither)."""
    found = _find_syntax_error(config)
    path, e = found if found else (config, error)
    text = (e.text or '').strip()
    near = f' in: {text}' if text else ''
    return ConfigError(f'{_short(path)}:{e.lineno}: syntax error: {e.msg}'
                       f'{near} (configs are Python files)')


def _find_syntax_error(path: str, depth: int = 0):
    """``(file, SyntaxError)`` of the first file, ``path`` or its local
    ``_base_`` files, that does not parse; None if all do."""
    try:
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), filename=path)
    except SyntaxError as e:
        return path, e
    except OSError:
        return None
    for node in tree.body if depth < 10 else []:
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', None) == '_base_' for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                continue
            for base in [bases] if isinstance(bases, str) else bases:
                if isinstance(base, str) and '::' not in base:
                    found = _find_syntax_error(
                        osp.normpath(osp.join(osp.dirname(path), base)),
                        depth + 1)
                    if found:
                        return found
    return None


def _short(path: str) -> str:
    """``path`` relative to the working directory when it lies inside."""
    relative = osp.relpath(path)
    return path if relative.startswith('..') else relative


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
    if not _is_remote(args.checkpoint) and not osp.isfile(args.checkpoint):
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


# ------------------------------------------------------------ pre-flight
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
    collect(_check_checkpoints, cfg, mode, bool(model_ok))

    if mode == 'train':
        loaders = ['train_dataloader']
        if cfg.get('val_cfg') is not None:
            loaders.append('val_dataloader')
    else:
        loaders = ['test_dataloader']
    for name in loaders:
        collect(_check_dataset, (cfg.get(name) or {}).get('dataset'),
                f'{name}.dataset')
        evaluator = name.replace('dataloader', 'evaluator')
        collect(_check_evaluator, cfg.get(evaluator), evaluator)
    if errors:
        raise ConfigErrors(errors)


def _is_remote(path: str) -> bool:
    return '://' in str(path)


# Datasets that a script of ours prepares.
PREPARE_SCRIPTS = {
    'FashionMNIST': 'tools/misc/prepare_fashion_mnist.sh',
}


def _missing(path: str, key: str, dataset_type=None) -> ConfigError:
    where = '' if osp.isabs(path) else f' (relative to {os.getcwd()})'
    script = PREPARE_SCRIPTS.get(dataset_type)
    if script:  # as the user can type it from where they are
        script = osp.relpath(osp.join(osp.dirname(osp.dirname(
            osp.abspath(__file__))), script))
    how = f'run bash {script} {path}, or ' if script else ''
    return ConfigError(f'{key}: {path} does not exist{where}; {how}put the '
                       f'data there or point the config at it, e.g. '
                       f'--cfg-options {key}=PATH')


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
    if backend != 'local' or _is_remote(data_root):
        return
    if data_root and not osp.isdir(data_root):
        if _downloads(dataset):  # e.g. mmpretrain's CIFAR (download=True)
            return
        raise _missing(data_root, f'{key}.data_root', dataset.get('type'))
    paths = [('ann_file', dataset.get('ann_file'))]
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, dict):
        paths += [(f'data_prefix.{k}', v) for k, v in prefix.items()]
    else:
        paths.append(('data_prefix', prefix))
    for name, path in paths:
        if not isinstance(path, str) or not path or _is_remote(path):
            continue
        full = osp.join(data_root, path)
        if not osp.exists(full):
            raise _missing(full, f'{key}.{name}')


def _downloads(dataset: dict) -> bool:
    """Whether the dataset fetches its files itself when they are missing
    (its ``download`` argument, given or by default)."""
    if 'download' in dataset:
        return bool(dataset['download'])
    dataset_cls = _registered(DATASETS, dataset.get('type'))
    param = inspect.signature(dataset_cls).parameters.get('download') \
        if dataset_cls else None
    return bool(param is not None and param.default is True)


def _registered(registry, name):
    """The class registered as ``name`` in the default scope's registry
    (what ``registry.build`` would use), or None."""
    if not isinstance(name, str):
        return name
    with registry.switch_scope_and_registry(None) as scoped:
        return scoped.get(name)


def _check_evaluator(evaluator, key: str) -> None:
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else \
        [evaluator]
    for i, metric in enumerate(metrics):
        path = (metric or {}).get('ann_file')
        if isinstance(path, str) and not _is_remote(path) and \
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
    loop = _registered(LOOPS, train_cfg['type'])
    return isinstance(loop, type) and issubclass(loop, EpochBasedTrainLoop)


def _check_checkpoints(cfg: Config, mode: str, model_ok: bool) -> None:
    """The checkpoint a run starts from: that it exists, is complete (a
    crash while saving leaves a truncated or empty file, or an empty
    ``last_checkpoint`` pointer), and fits the model (see
    :func:`check_fits`); and every local ``Pretrained`` checkpoint in the
    model's ``init_cfg`` (remote ones, such as ``torchvision://resnet50``,
    are fetched by mmengine)."""
    errors = []
    resume = mode == 'train' and bool(cfg.get('resume'))
    load_from = cfg.get('load_from')
    flag = 'checkpoint' if mode == 'test' else \
        '--resume' if resume else 'load_from'
    try:
        if resume and not load_from:
            load_from = _last_checkpoint(cfg.work_dir)
        if load_from and not _is_remote(load_from):
            if not osp.isfile(load_from):
                raise ConfigError(f'{flag}: checkpoint {load_from} does not '
                                  f'exist')
            state = read_state_dict(load_from, flag)
            if model_ok:
                check_fits(_build_model(cfg), state, load_from, flag,
                           strict=mode == 'test' or resume,
                           backbone_cfg=cfg.model.get('backbone'))
    except ConfigError as e:
        errors.append(e)
    if mode == 'test':  # testing does not initialise weights
        return _raise_all(errors)
    for key, init_cfg in _init_cfgs(cfg.get('model'), 'model'):
        path = init_cfg.get('checkpoint')
        if init_cfg.get('type') != 'Pretrained' or \
                not isinstance(path, str) or _is_remote(path):
            continue
        if not osp.isfile(path):
            errors.append(ConfigError(
                f'{key}.checkpoint: {path} does not exist; give a checkpoint '
                f'file or torchvision://resnet50-style name'))
            continue
        try:
            read_state_dict(path, f'{key}.checkpoint')
        except ConfigError as e:
            errors.append(e)
    _raise_all(errors)


def _raise_all(errors: List[ConfigError]) -> None:
    if errors:
        raise ConfigErrors(errors)


def _last_checkpoint(work_dir: str) -> Optional[str]:
    """What ``--resume`` without a path resumes from: the checkpoint named
    in ``WORK_DIR/last_checkpoint`` (mmengine's pointer file), None
    without one (mmengine then starts afresh). An empty pointer, or one
    naming a file that is not there, is an error."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer, encoding='utf-8', errors='replace') as f:
        target = f.read().strip()
    if target and osp.isfile(target):
        return target
    what = 'is empty' if not target else f'names {target}, which does not ' \
        f'exist'
    raise ConfigError(
        f'--resume: {pointer} {what} (a crash while saving a checkpoint?); '
        f'{_resume_advice(work_dir, exclude=target)}')


def _earlier_checkpoints(folder: str, exclude: str = '') -> List[str]:
    """The complete ``epoch_N.pth`` / ``iter_N.pth`` files of ``folder``,
    newest (highest N) first, ``exclude`` left out. Complete: a zip archive
    with its central directory (a truncated file has none)."""
    found = []
    if osp.isdir(folder):
        for name in os.listdir(folder):
            match = re.fullmatch(r'(?:epoch|iter)_(\d+)\.pth', name)
            path = osp.join(folder, name)
            if match and osp.abspath(path) != osp.abspath(exclude or '') \
                    and zipfile.is_zipfile(path):
                found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def _resume_advice(folder: str, exclude: str = '',
                   remove: str = '') -> str:
    """What to do when the checkpoint to resume from is broken: resume from
    the newest other one in ``folder``, or start afresh without one
    (``remove``: a broken file to remove first)."""
    earlier = _earlier_checkpoints(folder, exclude)
    first = f'remove {remove} and ' if remove else ''
    if earlier:
        return f'{first}resume from an earlier checkpoint: --resume ' \
            f'{earlier[0]}'
    also = f'{remove} and ' if remove else ''
    return (f'there is no earlier checkpoint: remove {also}'
            f"{osp.join(folder, 'last_checkpoint')} to train from the start")


def read_state_dict(path: str,
                    flag: str = 'checkpoint') -> Dict[str, Tensor]:
    """The tensors of a local checkpoint's ``state_dict`` (or of a bare
    state dict), read on the CPU with mmengine's loader, i.e. through
    ``torch.load(weights_only=True)`` and the types
    :mod:`mmela.compat` allows; ``module.`` prefixes are stripped, as
    mmengine does when it loads. A file that cannot be read is a
    :class:`ConfigError` naming it and what to do."""
    from mmengine.runner.checkpoint import _load_checkpoint
    try:
        checkpoint = _load_checkpoint(path, map_location='cpu',
                                      logger='silent')
    except Exception as e:  # every reader error names a broken file
        raise ConfigError(f'{flag}: {path} {_unreadable(path, e)}; '
                          f'{_unreadable_advice(path, flag)}') from None
    state = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, dict) else None
    tensors = {re.sub(r'^module\.', '', k): v
               for k, v in (state or {}).items() if isinstance(v, Tensor)}
    if not tensors:
        raise ConfigError(f'{flag}: {path} holds no model weights (no '
                          f'state_dict of tensors); is it a checkpoint?')
    return tensors


def _unreadable(path: str, error: Exception) -> str:
    """Why ``path`` could not be loaded, in words."""
    size = osp.getsize(path)
    if size == 0:
        return 'is empty (0 bytes)'
    with open(path, 'rb') as f:
        head = f.read(64).lstrip()
    if head[:1] in (b'{', b'['):
        return 'is a JSON file, not a checkpoint'
    if isinstance(error, pickle.UnpicklingError) and zipfile.is_zipfile(path):
        lines = [line for line in str(error).splitlines()
                 if 'GLOBAL' in line or 'Unsupported' in line]
        detail = f': {lines[0].strip()}' if lines else ''
        return (f'holds objects other than weights, which the safe loader '
                f'refuses (torch.load weights_only=True{detail})')
    reason = ' '.join(str(error).split()).split('. ')[0] or \
        type(error).__name__
    if len(reason) > 120:
        reason = reason[:117] + '...'
    return (f'cannot be read ({size} bytes, truncated or not a PyTorch '
            f'checkpoint: {reason})')


def _unreadable_advice(path: str, flag: str) -> str:
    if flag == '--resume':
        return _resume_advice(osp.dirname(path) or '.', exclude=path,
                              remove='it')
    earlier = _earlier_checkpoints(osp.dirname(path) or '.', exclude=path)
    other = f', e.g. {earlier[0]}' if earlier else ''
    return f'copy it again or use another checkpoint{other}'


def _build_model(cfg: Config) -> nn.Module:
    """The config's model on the CPU, weights not initialised (only its
    parameter names and shapes are used)."""
    return MODELS.build(copy.deepcopy(cfg.model))


def layer_attention_keys(model: nn.Module,
                         backbone_cfg: Optional[dict] = None) -> set:
    """The state-dict keys layer attention adds to ``model``: what its
    backbone has beyond the same backbone (``backbone_cfg``) built with
    ``layer_attention=None``."""
    backbone = getattr(model, 'backbone', None)
    if not getattr(backbone, 'layer_attention', None):
        return set()
    keys = {f'backbone.{k}' for k in backbone.state_dict()}
    try:
        plain = MODELS.build(dict(copy.deepcopy(backbone_cfg),
                                  layer_attention=None, init_cfg=None))
        return keys - {f'backbone.{k}' for k in plain.state_dict()}
    except Exception:  # a backbone that cannot go plain: go by the names
        return {k for k in keys if 'layer_attention' in k}


def check_fits(model: nn.Module, state: Dict[str, Tensor], path: str,
               flag: str, strict: bool = True,
               backbone_cfg: Optional[dict] = None) -> None:
    """Raise a :class:`ConfigError` when ``state`` does not fit ``model``.

    mmengine loads checkpoints non-strictly and only warns, so a checkpoint
    of another architecture (ResNet-56 weights on a ResNet-20 config, an
    ELA config with a checkpoint without layer attention) would be
    evaluated, or trained on, as if nothing were wrong.

    Args:
        model (nn.Module): The model the checkpoint is meant for.
        state (dict): The checkpoint's tensors (:func:`read_state_dict`).
        path (str): The checkpoint, for the message.
        flag (str): The setting that named it, for the message.
        strict (bool): For testing and resuming every key must match in
            name and shape. Otherwise (``load_from`` when training) only the
            backbone must fit, except its layer attention, which a plain
            ResNet checkpoint lacks (the documented fine-tuning path); heads
            may differ (fine-tuning to another number of classes).
        backbone_cfg (dict, optional): The backbone's config, to tell its
            layer-attention keys (:func:`layer_attention_keys`).
    """
    own = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(own) - set(state), key=_natural)
    unexpected = sorted(set(state) - set(own), key=_natural)
    reshaped = sorted((k for k in set(own) & set(state)
                       if tuple(own[k]) != tuple(state[k].shape)),
                      key=_natural)
    if not strict:
        new = layer_attention_keys(model, backbone_cfg)
        in_backbone = [k for k in own if k.startswith('backbone.')]
        matched = set(own) & set(state)
        if not matched:
            raise ConfigError(
                f'{flag}: no weight of {path} matches the model (keys such '
                f'as {_few(unexpected)}); a backbone-only checkpoint goes '
                f"into model.backbone.init_cfg=dict(type='Pretrained', "
                f"checkpoint=..., prefix=...)")
        missing = [k for k in missing if k in in_backbone and k not in new]
        unexpected = [k for k in unexpected if k.startswith('backbone.')]
        reshaped = [k for k in reshaped if k.startswith('backbone.')]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing ({_few(missing)})')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected '
                        f'({_few(unexpected)})')
    if reshaped:
        k = reshaped[0]
        problems.append(
            f'{len(reshaped)} of another shape ({k}: checkpoint '
            f'{tuple(state[k].shape)}, model {tuple(own[k])})')
    if not problems:
        return
    hint = 'is it a checkpoint of this config?'
    if missing and not unexpected and not reshaped and \
            set(missing) <= layer_attention_keys(model, backbone_cfg):
        hint = ('the checkpoint has no layer attention: test it with the '
                'plain ResNet config')
    raise ConfigError(f'{flag}: {path} does not fit the model: weights '
                      f"{'; '.join(problems)}; {hint}")


def _natural(key: str) -> list:
    """Sort ``layer1.3`` before ``layer1.10``."""
    return [int(part) if part.isdigit() else part
            for part in re.split(r'(\d+)', key)]


def _few(keys: List[str], count: int = 3) -> str:
    more = ', ...' if len(keys) > count else ''
    return ', '.join(keys[:count]) + more


def _init_cfgs(node, key: str) -> Iterator[Tuple[str, dict]]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == 'init_cfg':
                values = value if isinstance(value, list) else [value]
                for init_cfg in values:
                    if isinstance(init_cfg, dict):
                        yield f'{key}.init_cfg', init_cfg
            else:
                yield from _init_cfgs(value, f'{key}.{name}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _init_cfgs(value, f'{key}.{i}')


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
        depths = getattr(_registered(MODELS, model_cfg.backbone.get('type')),
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


# ---------------------------------------------------------------- runner
def build_runner(cfg: Config) -> Runner:
    if cfg.default_scope == 'mmdet':
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def release_distributed() -> None:
    """Tear the process group down before the interpreter exits. Without
    it, gloo's threads are destroyed at exit and a rank can abort (SIGABRT,
    'terminate called without an active exception') after a run that
    succeeded; mmengine never destroys the group itself."""
    if torch.distributed.is_available() and \
            torch.distributed.is_initialized():
        # A rank that leaves while another still talks to it (rank 0 saving
        # the last checkpoint, say) can break the other's connections.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


class LogRetrievals(Hook):
    """Log, once the checkpoint is loaded, how many retrievals of the
    model's layer-attention backbone are on (a pruned checkpoint evaluates
    pruned), e.g. ``ELA: 13 of 18 retrievals on``."""

    priority = 'LOWEST'

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        backbone = getattr(model, 'backbone', None)
        if not getattr(backbone, 'layer_attention', None):
            return
        counts = backbone.num_retrievals()
        source = runner.cfg.get('load_from') or 'no checkpoint'
        runner.logger.info(f"ELA: {counts['on']} of {counts['total']} "
                           f'retrievals on ({source})')


def add_prediction_dump(runner: Runner, args: argparse.Namespace) -> None:
    """``--out``: append the scope's dump metric to the test evaluator."""
    if args.out is None or args.out_item == 'metrics':
        return
    if runner.cfg.default_scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults as Dump
    else:
        from mmengine.evaluator import DumpResults as Dump
    runner.test_evaluator.metrics.append(Dump(out_file_path=args.out))
