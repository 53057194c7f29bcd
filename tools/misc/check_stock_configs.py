"""Build every stock config of mmdet / mmpretrain whose backbone is a
``ResNet``, ``ResNetV1c``, ``ResNetV1d``, ``ResNeXt`` or (mmpretrain's CIFAR
configs) ``ResNet_CIFAR`` with that backbone switched to its ELA variant.

For each config shipped with the installed codebase (``<pkg>/.mim/configs``,
``_base_`` folders left out) whose model holds such a backbone (under any key
ending in ``backbone``, at any depth, and in a distillation teacher's
config), the whole model is built three times, in the config's default
scope and without loading any weights (``Pretrained`` init configs,
``pretrained`` paths and teacher checkpoints are stripped; nothing is
downloaded; mmcv's ``MMSyncBN`` becomes ``BN``, as it needs a process group
to be built):

- ``ELA<type>`` with ``layer_attention='light'``;
- ``ELA<type>`` with ``layer_attention=None``;
- the stock type, as the reference;

on the meta device by default (no weights allocated, no weight init; a
build that fails there is retried on the CPU). Every switched backbone must
come out as an ELA class and no stock one may remain (a config may build
one backbone twice: a momentum encoder, a semi-supervised teacher).

The ``None`` model's state_dict (keys and shapes) must equal the stock
model's, and the ``'light'`` model's, less its ``layer_attention`` entries,
too. One line per config, then a summary:

- ``built``: both ELA builds succeeded and the state_dicts match;
- ``FAILED``: an ELA build failed (the exception's one-line reason) or the
  state_dicts differ;
- ``STOCK-FAILS-TOO``: an ELA build failed and so does the stock model
  (a missing optional package, a config broken upstream): not ELA's doing;
- ``LOAD-FAILED``: mmengine cannot load the config at all.

Configs whose model is identical to one already built are not built again
(the line names the first one).

Examples::

    python tools/misc/check_stock_configs.py both
    python tools/misc/check_stock_configs.py mmdet --filter faster_rcnn
    python tools/misc/check_stock_configs.py mmpretrain --limit 20

Exit status: 1 when any config is ``FAILED``, else 0.
"""
import argparse
import copy
import gc
import importlib
import importlib.util
import json
import os
import os.path as osp
import sys
import time
import warnings
from collections import Counter

from torch import nn

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

STOCK_TYPES = ('ResNet', 'ResNetV1c', 'ResNetV1d', 'ResNeXt', 'ResNet_CIFAR')
CODEBASES = ('mmdet', 'mmpretrain')


def parse_args():
    parser = argparse.ArgumentParser(
        description='Build the stock ResNet-family configs with their ELA '
        'backbone variants')
    parser.add_argument('codebase', choices=CODEBASES + ('both', ))
    parser.add_argument(
        '--limit',
        type=int,
        default=None,
        help='check at most this many target configs per codebase')
    parser.add_argument(
        '--filter',
        default=None,
        help='only configs whose path (relative to the config folder) '
        'contains this substring')
    parser.add_argument(
        '--device',
        choices=('meta', 'cpu'),
        default='meta',
        help='where to build the models. "meta" allocates no weights and '
        'runs no weight init (about 3x faster; construction and state_dict '
        'shapes are checked all the same); a build that fails there is '
        'retried on the CPU, so only real failures are reported. '
        'Default: %(default)s')
    return parser.parse_args()


def config_root(codebase: str) -> str:
    spec = importlib.util.find_spec(codebase)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f'{codebase} is not installed')
    return osp.join(spec.submodule_search_locations[0], '.mim', 'configs')


def list_configs(root: str, substring=None):
    paths = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != '_base_')
        for name in sorted(files):
            if not name.endswith('.py'):
                continue
            rel = osp.relpath(osp.join(folder, name), root)
            if substring is None or substring in rel:
                paths.append(rel)
    return sorted(paths)


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = ' | '.join(' '.join(line.split()) for line in str(exc).splitlines()
                      if line.strip())
    text = f'{type(exc).__name__}: {text}'
    return text if len(text) <= limit else text[:limit - 3] + '...'


# ------------------------------------------------------------ config edits
def _split_type(type_):
    """``'mmpretrain.ResNet'`` -> ``('mmpretrain.', 'ResNet')``."""
    if not isinstance(type_, str):
        return None, None
    scope, _, name = type_.rpartition('.')
    return (scope + '.' if scope else ''), name


def strip_pretrained(node):
    """Remove everything that would load weights (in place)."""
    if isinstance(node, dict):
        for key in list(node):
            value = node[key]
            if key == 'pretrained' and isinstance(value, str):
                node[key] = None
            elif key == 'teacher_ckpt':
                node[key] = None
            elif key == 'init_cfg':
                node[key] = _strip_init_cfg(value)
            else:
                strip_pretrained(value)
    elif isinstance(node, list):
        for item in node:
            strip_pretrained(item)


def syncbn_to_bn(node) -> int:
    """Make mmcv's ``MMSyncBN`` norm layers plain ``BN`` (in place): it needs
    a process group to be built, which a single CPU process has not (torch's
    ``SyncBN`` builds without one and is kept). Returns how many."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'MMSyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += syncbn_to_bn(value)
    elif isinstance(node, list):
        for item in node:
            count += syncbn_to_bn(item)
    return count


def _is_pretrained(init_cfg) -> bool:
    return isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'


def _strip_init_cfg(init_cfg):
    if _is_pretrained(init_cfg):
        return None
    if isinstance(init_cfg, list):
        kept = [c for c in init_cfg if not _is_pretrained(c)]
        return kept or None
    return init_cfg


def find_backbones(node, path='model'):
    """Paths of the dicts under a ``*backbone`` key with a stock type."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f'{path}.{key}'
            if (isinstance(key, str) and key.endswith('backbone')
                    and isinstance(value, dict)
                    and _split_type(value.get('type'))[1] in STOCK_TYPES):
                found.append((sub, value))
            found.extend(find_backbones(value, sub))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found.extend(find_backbones(item, f'{path}[{i}]'))
    return found


def switch_backbones(model_cfg, layer_attention):
    """A copy of ``model_cfg`` with every stock backbone made ELA."""
    model_cfg = copy.deepcopy(model_cfg)
    for _, backbone in find_backbones(model_cfg):
        prefix, name = _split_type(backbone['type'])
        backbone['type'] = f'{prefix}ELA{name}'
        backbone['layer_attention'] = layer_attention
    return model_cfg


def inline_teacher(model_cfg, root):
    """Replace a distillation ``teacher_config`` path by its model, so the
    teacher's backbone is switched and stripped too. Returns whether one
    was inlined."""
    from mmengine.config import Config
    path = model_cfg.get('teacher_config') if isinstance(model_cfg,
                                                         dict) else None
    if not isinstance(path, str):
        return False
    candidates = [
        path, osp.join(root, path),
        osp.join(osp.dirname(root), path)
    ]
    if path.startswith('configs/'):
        candidates.append(osp.join(root, path[len('configs/'):]))
    for candidate in candidates:
        if osp.isfile(candidate):
            teacher = Config.fromfile(candidate).to_dict()['model']
            strip_pretrained(teacher)
            model_cfg['teacher_config'] = dict(model=teacher)
            return True
    raise FileNotFoundError(f'teacher_config {path!r} not found')


# -------------------------------------------------------------- building
def state_shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def compare_shapes(got, want, what):
    """None if equal, else a one-line difference."""
    if got == want:
        return None
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    shape = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    parts = []
    for label, keys in (('missing', missing), ('extra', extra),
                        ('shape differs', shape)):
        if keys:
            parts.append(f'{len(keys)} {label} (e.g. {keys[0]})')
    return f'{what}: ' + ', '.join(parts)


class Builder:

    def __init__(self, codebase, device):
        self.codebase = codebase
        self.device = device
        module = importlib.import_module(f'{codebase}.utils')
        module.register_all_modules(init_default_scope=False)
        importlib.import_module('mmela')  # registers the ELA variants
        self.registry = importlib.import_module(f'{codebase}.registry').MODELS
        self.cache = {}  # model config -> (first config, result)

    def build(self, model_cfg, scope):
        import torch
        from mmengine.config import ConfigDict
        from mmengine.registry import init_default_scope
        init_default_scope(scope)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            with torch.device(self.device):
                # ConfigDict, as the runner passes it: models read their
                # train_cfg / test_cfg by attribute.
                return self.registry.build(ConfigDict(
                    copy.deepcopy(model_cfg)))

    def build_checked(self, model_cfg, scope):
        """Build on ``self.device``; a failure on the meta device is
        retried on the CPU, so only real failures are reported."""
        try:
            return self.build(model_cfg, scope)
        except Exception:  # noqa: BLE001
            if self.device == 'cpu':
                raise
        device, self.device = self.device, 'cpu'
        try:
            return self.build(model_cfg, scope)
        finally:
            self.device = device


def named_modules(model):
    """``model.named_modules()``, plus a distillation teacher that the
    detector keeps out of its submodules (mmdet's LD and LAD)."""
    yield from model.named_modules()
    teacher = getattr(model, 'teacher_model', None)
    if isinstance(teacher, nn.Module) and 'teacher_model' not in dict(
            model.named_children()):
        for name, module in teacher.named_modules():
            yield ('teacher_model.' + name).rstrip('.'), module


def ela_backbone_names(model):
    """Module names of the ELA backbones in ``model``."""
    return [
        name for name, m in named_modules(model)
        if type(m).__name__.startswith('ELA')
    ]


def stock_backbones(model):
    """How many modules of a stock target type ``model`` holds."""
    return sum(1 for _, m in named_modules(model)
               if type(m).__name__ in STOCK_TYPES)


def is_ela_attention_key(key, backbones):
    """Whether a state_dict key belongs to the layer attention of one of the
    ELA backbones (other modules may have a ``layer_attention`` of their
    own, e.g. TOOD's head)."""
    return '.layer_attention.' in key and any(
        key.startswith(f'{b}.' if b else '') for b in backbones)


def attention_blocks(model, backbones):
    return sum(1 for name, _ in named_modules(model)
               if name.endswith('.layer_attention') and any(
                   name.startswith(f'{b}.' if b else '') for b in backbones))


def check_config(builder, root, rel):
    """Returns ``(status, message)``; status is 'skip' (not a target),
    'load-failed', 'ok' or 'failed'."""
    from mmengine.config import Config
    try:
        cfg = Config.fromfile(osp.join(root, rel))
    except Exception as e:  # noqa: BLE001 (report any load error)
        return 'load-failed', f'config does not load: {one_line(e)}'
    if 'model' not in cfg or not isinstance(cfg.model, dict):
        return 'skip', None
    model_cfg = cfg.to_dict()['model']
    try:
        teacher = inline_teacher(model_cfg, root)
    except Exception as e:  # noqa: BLE001
        return 'failed', f'teacher: {one_line(e)}'
    found = find_backbones(model_cfg)
    if not found:
        return 'skip', None
    strip_pretrained(model_cfg)
    n_syncbn = syncbn_to_bn(model_cfg)
    scope = cfg.get('default_scope', builder.codebase)
    if cfg.get('custom_imports'):
        try:
            from mmengine.utils import import_modules_from_strings
            import_modules_from_strings(**cfg.custom_imports)
        except Exception as e:  # noqa: BLE001
            return 'failed', f'custom_imports: {one_line(e)}'

    key = json.dumps([scope, model_cfg], sort_keys=True, default=repr)
    if key in builder.cache:
        first, (status, message) = builder.cache[key]
        return status, f'{message} [same model as {first}]'

    types = ','.join(sorted({b['type'] for _, b in found}))
    where = ','.join(p for p, _ in found)
    detail = f'{types} at {where}' + (' (teacher inlined)' if teacher else
                                      '') + (' (MMSyncBN->BN)'
                                             if n_syncbn else '')
    result = _build_and_compare(builder, model_cfg, scope, len(found), detail)
    builder.cache[key] = (rel, result)
    return result


def _build_and_compare(builder, model_cfg, scope, n_backbones, detail):
    variants = (('light', switch_backbones(model_cfg, 'light')),
                ('none', switch_backbones(model_cfg,
                                          None)), ('stock', model_cfg))
    shapes = {}
    n_attention = 0
    for label, cfg_variant in variants:
        try:
            model = builder.build_checked(cfg_variant, scope)
        except Exception as e:  # noqa: BLE001
            reason = f'{label} build: {one_line(e)}'
            if label != 'stock':
                try:  # does the stock model build? (missing extras etc.)
                    builder.build_checked(model_cfg, scope)
                except Exception as stock_e:  # noqa: BLE001
                    return ('stock-failed', f'{detail}: the stock model '
                            f'fails too: {one_line(stock_e)}')
            return ('failed', f'{detail}: {reason}')
        # (a config's backbone may be built more than once, e.g. a
        # semi-supervised student and teacher from one detector config)
        if label != 'stock' and (len(ela_backbone_names(model)) < n_backbones
                                 or stock_backbones(model)):
            return ('failed', f'{detail}: {label}: '
                    f'{len(ela_backbone_names(model))} ELA backbones and '
                    f'{stock_backbones(model)} stock ones built')
        shapes[label] = state_shapes(model)
        if label == 'light':
            backbones = ela_backbone_names(model)
            n_attention = attention_blocks(model, backbones)
        del model
        gc.collect()
    light_plain = {
        k: v
        for k, v in shapes['light'].items()
        if not is_ela_attention_key(k, backbones)
    }
    problems = [
        p for p in (compare_shapes(shapes['none'], shapes['stock'],
                                   'None vs stock state_dict'),
                    compare_shapes(light_plain, shapes['stock'],
                                   'light (less layer_attention) vs stock'))
        if p is not None
    ]
    if n_attention == 0:
        problems.append('light: no layer_attention module')
    if problems:
        return ('failed', f'{detail}: ' + '; '.join(problems))
    return ('ok', f'{detail}: built light ({n_attention} attention '
            f'blocks) and None (state_dict == stock)')


def run_codebase(codebase, args):
    root = config_root(codebase)
    builder = Builder(codebase, args.device)
    configs = list_configs(root, args.filter)
    print(f'== {codebase}: {len(configs)} configs under {root}', flush=True)
    counts = Counter()
    failures = []
    targets = 0
    for rel in configs:
        if args.limit is not None and targets >= args.limit:
            break
        start = time.time()
        status, message = check_config(builder, root, rel)
        counts[status] += 1
        if status == 'skip':
            continue
        if status in ('ok', 'failed', 'stock-failed'):
            targets += 1
        tag = {
            'ok': 'built',
            'failed': 'FAILED',
            'stock-failed': 'STOCK-FAILS-TOO',
            'load-failed': 'LOAD-FAILED'
        }[status]
        print(
            f'{codebase} {rel}: {tag}: {message} '
            f'({time.time() - start:.1f}s)',
            flush=True)
        if status != 'ok':
            failures.append(f'{codebase} {rel}: {tag}: {message}')
    print(
        f'== {codebase} summary: {targets} target configs: '
        f'{counts["ok"]} built, {counts["failed"]} failed, '
        f'{counts["stock-failed"]} fail with the stock backbone too; '
        f'{counts["skip"]} configs with other backbones, '
        f'{counts["load-failed"]} did not load',
        flush=True)
    return counts, failures


def main():
    args = parse_args()
    codebases = CODEBASES if args.codebase == 'both' else (args.codebase, )
    total = Counter()
    all_failures = []
    for codebase in codebases:
        counts, failures = run_codebase(codebase, args)
        total.update(counts)
        all_failures.extend(failures)
    n_targets = total['ok'] + total['failed'] + total['stock-failed']
    print(f'== total: {n_targets} target configs: {total["ok"]} built, '
          f'{total["failed"]} failed, {total["stock-failed"]} fail with the '
          f'stock backbone too; {total["load-failed"]} did not load')
    for line in all_failures:
        print('  ' + line)
    return 0 if not total['failed'] else 1


if __name__ == '__main__':
    sys.exit(main())
