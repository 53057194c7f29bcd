"""The checkpoints a run starts from: that they exist, are complete (a crash
while saving leaves a truncated or empty file, or an empty
``last_checkpoint`` pointer), and fit the model; with what to do instead
when they do not."""
import copy
import os
import os.path as osp
import pickle
import re
import zipfile
from typing import Dict, Iterator, List, Optional, Tuple

from mmengine.config import Config
from mmengine.registry import MODELS
from torch import Tensor, nn

from ..deployment.strip import stripped_prefixes
from ..models import is_layer_attention_key
from .config import is_remote
from .errors import ConfigError, ConfigErrors


def check_checkpoints(cfg: Config, mode: str, model_ok: bool) -> None:
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
        if load_from and not is_remote(load_from):
            if not osp.isfile(load_from):
                raise ConfigError(f'{flag}: checkpoint {load_from} does not '
                                  f'exist')
            state = read_state_dict(load_from, flag)
            if model_ok:
                check_fits(_build_model(cfg), state, load_from, flag,
                           strict=mode == 'test' or resume)
    except ConfigError as e:
        errors.append(e)
    if mode == 'test':  # testing does not initialise weights
        return _raise_all(errors)
    for key, init_cfg in _init_cfgs(cfg.get('model'), 'model'):
        path = init_cfg.get('checkpoint')
        if init_cfg.get('type') != 'Pretrained' or \
                not isinstance(path, str) or is_remote(path):
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


def layer_attention_keys(model: nn.Module) -> set:
    """The state-dict keys layer attention adds to ``model`` (those a
    plain ResNet checkpoint lacks)."""
    return {k for k in model.state_dict() if is_layer_attention_key(k)}


def check_fits(model: nn.Module, state: Dict[str, Tensor], path: str,
               flag: str, strict: bool = True) -> None:
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
    """
    own = {k: v.shape for k, v in model.state_dict().items()}
    # A deploy checkpoint (tools/deployment/strip_pruned.py) lacks the
    # weights of pruned retrievals, whose masks say so; the model loads it.
    stripped = tuple(stripped_prefixes(state))
    missing = sorted((k for k in set(own) - set(state)
                      if not k.startswith(stripped)), key=_natural)
    unexpected = sorted(set(state) - set(own), key=_natural)
    reshaped = sorted((k for k in set(own) & set(state)
                       if tuple(own[k]) != tuple(state[k].shape)),
                      key=_natural)
    if not strict:
        new = layer_attention_keys(model)
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
            set(missing) <= layer_attention_keys(model):
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
