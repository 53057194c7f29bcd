"""Reading a config: a syntax error names its file and line, the scope
must be mmdet's or mmpretrain's, and the work dir follows the stock tools'
rules."""
import argparse
import ast
import os.path as osp
from typing import Optional

from mmengine.config import Config
from mmengine.registry import init_default_scope

from .errors import ConfigError


SCOPES = ('mmdet', 'mmpretrain')


def read_config(path: str, cfg_options: Optional[dict] = None,
                flag: str = 'config file') -> Config:
    """The config at ``path`` with ``--cfg-options`` merged in; a missing
    file, or a syntax error (with its file and line), is a
    :class:`ConfigError`."""
    if not osp.isfile(path):
        raise ConfigError(f'{flag} {path} does not exist')
    try:
        cfg = Config.fromfile(path)
    except SyntaxError as e:
        raise _syntax_error(path, e) from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def load_config(args: argparse.Namespace) -> Config:
    """Read the config, merge ``--cfg-options``, set the work dir and the
    launcher, and make the config's scope the default one."""
    cfg = read_config(args.config, args.cfg_options)
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
    return ConfigError(f'{short_path(path)}:{e.lineno}: syntax error: {e.msg}'
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


def short_path(path: str) -> str:
    """``path`` relative to the working directory when it lies inside."""
    relative = osp.relpath(path)
    return path if relative.startswith('..') else relative


def is_remote(path: str) -> bool:
    return '://' in str(path)


def registered(registry, name):
    """The class registered as ``name`` in the default scope's registry
    (what ``registry.build`` would use), or None."""
    if not isinstance(name, str):
        return name
    with registry.switch_scope_and_registry(None) as scoped:
        return scoped.get(name)
