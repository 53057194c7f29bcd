"""Training-step time and memory of plain ResNet, MRLA-B, MRLA-L and ELA.

One run times a full training step (forward, backward, optimizer step) of
every method on the same inputs, interleaved round-robin step by step
(ResNet, MRLA-B, MRLA-L, ELA, ResNet, ...; the order rotates every round) so
that background load hits all methods alike. It reports the median step time
and its interquartile range (IQR), and the ratios against plain ResNet and
MRLA-B: each ratio is the median, over rounds, of the two methods' times in
the same round. Ratios are what we compare with the paper (Fig. 4: ELA about
30-35% faster than MRLA-B, MRLA-L 10-15%); absolute times only compare runs
on one machine.

Methods (rows of the table):

- ``ResNet``: the plain backbone (``layer_attention=None``).
- ``MRLA-B`` and ``MRLA-L``: every retrieval on. MRLA-L is also ELA with
  every retrieval kept, the upper end of ELA's cost.
- ``ELA (hook masks, k/n kept)``: MRLA-L with the masks of a real
  :class:`ELAPruningHook` run: by default a short one (one epoch window of a
  few iterations, on synthetic images, with the suite's alpha, beta, tau from
  the paper) on a classifier around the suite's backbone, or the last report
  of ``--masks ela_pruning.json``.
- ``ELA (all pruned, 0/n kept)``: every retrieval pruned, the lower end of
  ELA's cost, which should be that of the plain ResNet.

Suites:

- ``cifar``: the bottleneck CIFAR ResNets (``--depths``, default 20 56 110),
  batch 128 at 32x32, a 100-class linear head.
- ``r50-224``: the ImageNet ResNet-50, batch 32 at 224x224, 1000 classes.
- ``r50-800``: the same backbone as in COCO training (all four stages out,
  ``frozen_stages=1``, ``norm_eval=True`` as in mmdet's 1x configs), batch 2
  at 800x1333; the loss is the sum of the outputs' means.
- ``faster-rcnn``: mmdet's Faster R-CNN R50 FPN 1x with the backbone swapped
  for ``ELAResNet``, batch 2 at 800x1333 with random boxes. Meant for a GPU:
  ``--suite all`` skips it on the CPU; ``--suite faster-rcnn`` runs it there
  anyway (pass small ``--image-size`` and ``--batch-size``).

A config instead of a suite (``--config CONFIG``, with ``--cfg-options
KEY=VALUE ...`` merged in as ``tools/train.py`` does): the backbone of the
config's model (an ELA backbone, e.g. ``ELAResNet``, ``ELAResNet_CIFAR``,
``ELAResNetCIFAR``), with a linear head and cross-entropy when the model has
a classification head, else the sum of its outputs' means, on random images
of the config's input shape (the backbone's ``in_channels``, and the size
its test pipeline gives, e.g. 1x28x28 for Fashion-MNIST) at the batch size
of its ``train_dataloader``, unless ``--image-size`` and ``--batch-size``
say otherwise. ELA's short hook run takes the settings of the config's
``ELAPruningHook``. ``--masks`` must come from a run of the same network:
masks with other blocks per stage are refused with one ``error:`` line.

Kernel launches: ``ops / step`` is the number of kernel-launching aten
operators of one training step (forward, backward, SGD step with momentum and
``foreach=True``, as on CUDA), counted on the eager model with a
``TorchDispatchMode`` (:mod:`mmela.utils.op_count`: views and metadata
queries excluded) on the first two samples of the batch (the count does not
depend on the batch size) after one uncounted step. It does not depend on
the machine's load, but it does on the device's kernels: a plain ResNet-110
step is 977 operators on the CPU and 865 on CUDA (cuDNN's batch norm is one
operator forward and one backward), so compare counts from one device.
How much a step's time follows the count depends on the GPU and the batch:
on an H200 at batch 128 in float32 the GPU waited for the host about half of
each eager step (``docs/benchmarks/README.md``).

Memory: ``peak step memory`` is ``torch.cuda.max_memory_allocated`` during a
step minus what was allocated before it (activations, gradients, workspace),
the largest over the measured steps; on the CPU it is n/a. ``saved
activations`` is what autograd keeps for the backward pass in one forward pass
(unique storages seen by ``saved_tensors_hooks``, parameters excluded),
counted in eager mode on any device, in the second forward pass (MRLA-B
sizes its stage buffers from the previous pass; the first one grows them).

``--hook-cost`` trains the suite's ELA classifier (deepest CIFAR depth) for
``2 * --hook-cost-epochs + 1`` short epochs with the hook measuring in every
other one (tau = 0, so it prunes nothing and every epoch computes the same)
and compares the time per iteration inside and outside the windows; the first
epoch is a warm-up.

Writes ``benchmark_<suite>.md``, ``.json`` and ``.png`` (step time against
depth per method, the layout of the paper's Fig. 4; ``benchmark_<config
name>.*`` for a config) to ``--out-dir``.

Examples::

    # GPU, the paper's settings
    python tools/analysis/benchmark_speed.py --suite all --device cuda \\
        --amp fp16 --out-dir work_dirs/benchmark
    # CPU, small
    python tools/analysis/benchmark_speed.py --suite cifar --batch-size 32 \\
        --steps 5 --warmup 2 --out-dir docs/benchmarks/cpu
    # CPU, a config's model, with the masks of its run
    python tools/analysis/benchmark_speed.py \\
        --config configs/fashion_mnist/resnet38_ela_fashion_mnist.py \\
        --masks work_dirs/resnet38_ela_fashion_mnist/ela_pruning.json
"""
import argparse
import json
import logging
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.registry import MODELS, init_default_scope
from torch import Tensor

from ..benchmark.measure import (build_variant, hook_cost,
                                 measure_round_robin, saved_activation_bytes,
                                 step_op_count, summarize)
from ..benchmark.report import format_markdown, plot
from ..benchmark.workloads import (IMPLS, METHODS, SUITE_SETTINGS, SUITES,
                                   WITH_RETRIEVALS, Workload, config_workload,
                                   hook_masks, load_report, mask_lengths,
                                   workloads)
from ..models import LayerAttentionResNetBase, layer_attention_impl
from ..utils.input_shape import input_shape
from ..utils.provenance import environment as provenance
from .config import read_config
from .errors import ConfigError, user_errors


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--suite', choices=[*SUITES, 'all'],
                        help='built-in models to time (default: cifar, '
                        'unless --config)')
    parser.add_argument('--config', help='time the backbone of this '
                        'mmpretrain or mmdet config instead of a suite, at '
                        "the config's input shape")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of --config, KEY=VALUE '
                        'pairs as for tools/train.py')
    parser.add_argument('--depths', type=int, nargs='+',
                        default=[20, 56, 110],
                        help='CIFAR depths (9n + 2)')
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=METHODS)
    parser.add_argument('--batch-size', type=int,
                        help='default: 128 (cifar), 32 (r50-224), '
                        '2 (r50-800, faster-rcnn); the batch size of the '
                        "config's train_dataloader")
    parser.add_argument('--image-size', type=int, nargs=2,
                        metavar=('H', 'W'), help="default: the suite's; "
                        "the size the config's test pipeline gives")
    parser.add_argument('--steps', type=int, default=20,
                        help='measured steps per method')
    parser.add_argument('--warmup', type=int, default=5,
                        help='warm-up steps per method (compilation too)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--impls', nargs='+', choices=IMPLS,
                        help='implementations of layer attention to time, '
                        'one row each (default: the one MMELA_LA_IMPL '
                        'picks on the device; compiled: reference)')
    parser.add_argument('--amp', default='none',
                        choices=['none', 'fp16', 'bf16'])
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile each backbone')
    parser.add_argument('--compile-mode',
                        choices=['default', 'reduce-overhead',
                                 'max-autotune', 'max-autotune-no-cudagraphs'],
                        help='torch.compile mode (with --compile); on a '
                        'GPU, reduce-overhead and max-autotune replay CUDA '
                        'graphs, which removes the launch cost per kernel')
    parser.add_argument('--threads', type=int,
                        help='CPU threads (torch.set_num_threads); on a '
                        'machine shared with other jobs 1 avoids OpenMP '
                        'threads waiting on each other')
    parser.add_argument('--masks', help='ela_pruning.json whose last '
                        'report gives the ELA masks (default: a short hook '
                        'run on synthetic images)')
    parser.add_argument('--mask-iters', type=int, default=4,
                        help='iterations of the hook run for the masks')
    parser.add_argument('--no-op-count', dest='op_count',
                        action='store_false',
                        help='skip counting kernel launches (one step per '
                        'method under a dispatch mode; slow on big models)')
    parser.add_argument('--hook-cost', action='store_true',
                        help='also time epochs inside vs outside a window')
    parser.add_argument('--hook-cost-iters', type=int, default=8)
    parser.add_argument('--hook-cost-pairs', type=int, default=3,
                        help='window epochs (and as many outside)')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    args = parser.parse_args(argv)
    if args.config and args.suite:
        parser.error('--config times the config\'s model instead of a '
                     '--suite: give one of them')
    if args.cfg_options and not args.config:
        parser.error('--cfg-options changes --config; give one')
    if not args.config:
        args.suite = args.suite or 'cifar'
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available')
    if args.compile_mode and not args.compile:
        parser.error('--compile-mode needs --compile')
    if args.steps < 1 or args.warmup < 0:
        parser.error('--steps must be >= 1 and --warmup >= 0')
    return args


def run_suite(suite: str, args) -> dict:
    settings = SUITE_SETTINGS[suite]
    batch_size = args.batch_size or settings['batch_size']
    image_size = tuple(args.image_size or settings['image_size'])
    record = dict(suite=suite, batch_size=batch_size, image_size=image_size)
    if suite == 'faster-rcnn' and args.device == 'cpu' and \
            args.suite == 'all':
        record['skipped'] = (
            'Skipped on the CPU: the Faster R-CNN suite is meant for a GPU. '
            'Run `--suite faster-rcnn` to time it on the CPU anyway, with '
            'e.g. `--batch-size 1 --image-size 320 320`.')
        print(record['skipped'])
        return record
    suite_workloads = workloads(suite, args.depths, batch_size, image_size)
    probe_size = image_size if suite == 'cifar' else (224, 224)
    record.update(_time_workloads(suite, suite_workloads, args, probe_size,
                                  settings['hook']))
    if args.hook_cost:
        workload = workloads(suite, args.depths[-1:], batch_size,
                             image_size)[0]
        record['hook_cost'] = _hook_cost(suite, workload, image_size,
                                         batch_size, args)
    return record


def run_config(args) -> dict:
    """Time the backbone of ``args.config``'s model (with a linear head and
    cross-entropy for a classifier, else the sum of its outputs' means) at
    the config's input shape, with every method's layer attention."""
    cfg = read_config(args.config, args.cfg_options, flag='--config: config file')
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    try:
        model = MODELS.build(cfg.model)
    except (KeyError, TypeError, ValueError, AssertionError) as e:
        raise ConfigError(f'--config: {args.config}: its model does not '
                          f'build: {e}') from None
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, LayerAttentionResNetBase):
        raise ConfigError(
            f'--config: {args.config}: the backbone '
            f'{type(backbone).__name__} has no layer attention to time; use '
            f"its ELA variant (e.g. type='ELAResNet', 'ELAResNet_CIFAR', "
            f"'ELAResNetCIFAR')")
    try:
        channels, *size = input_shape(cfg, model)
    except ValueError as e:
        raise ConfigError(f'--config: {args.config}: {e}') from None
    image_size = tuple(args.image_size or size)
    loader = cfg.get('train_dataloader')
    batch_size = args.batch_size or (loader or {}).get('batch_size') or 32
    name = osp.splitext(osp.basename(args.config))[0]
    depth = getattr(backbone, 'depth', None)
    model_name = type(backbone).__name__ + (f'-{depth}' if depth else '')
    # The class itself, so the probe classifier (in mmengine's scope) and
    # the timed models build the config's backbone.
    backbone_cfg = dict(cfg.model.backbone, type=type(backbone))
    head = cfg.model.get('head')
    num_classes = head.get('num_classes') if isinstance(head, dict) and \
        hasattr(backbone, 'feat_dim') else None
    workload = config_workload(backbone_cfg, model_name, num_classes,
                               batch_size, (channels, *image_size))
    del model
    record = dict(suite=name, config=args.config, batch_size=batch_size,
                  image_size=image_size, channels=channels)
    probe_size = image_size if max(image_size) <= 224 else (224, 224)
    record.update(_time_workloads(name, [workload], args, probe_size,
                                  _hook_params(cfg, image_size), channels))
    if args.hook_cost:
        record['hook_cost'] = _hook_cost(name, workload, image_size,
                                         batch_size, args, channels)
    return record


def _hook_params(cfg: Config, image_size: Sequence[int]) -> dict:
    """The settings of the config's ELAPruningHook (but its windows), or
    the paper's for CIFAR-sized images and for ImageNet-sized ones."""
    for hook in cfg.get('custom_hooks') or []:
        if isinstance(hook, dict) and str(hook.get('type', '')).rsplit(
                '.', 1)[-1] == 'ELAPruningHook':
            return {key: value for key, value in hook.items()
                    if key not in ('type', 'windows')}
    suite = 'cifar' if max(image_size) <= 64 else 'r50-224'
    return dict(SUITE_SETTINGS[suite]['hook'])


def _time_workloads(name: str, timed: List[Workload], args,
                    probe_size: Sequence[int], hook_params: dict,
                    channels: int = 3) -> dict:
    """``impls`` and, per workload, the rows of every method and the ELA
    masks they were timed with."""
    methods = [m for m in METHODS if m in args.methods]
    # Compiled, layer attention traces its reference implementation.
    impls = ['reference'] if args.compile else \
        args.impls or [layer_attention_impl(args.device)]
    report = None
    if 'ela' in methods and args.masks:
        # Checked for every model before any is timed.
        report = _read_report(args.masks)
        for workload in timed:
            _check_masks(report['masks'], workload, args.masks)
    records = []
    for workload in timed:
        print(f'[{name}] {workload.name}: ', end='', flush=True)
        masks, mask_source = None, None
        if 'ela' in methods:
            masks, mask_source = _ela_masks(workload, args, report,
                                            probe_size, hook_params,
                                            channels)
        rows = _time_methods(workload, methods, impls, masks, args)
        records.append(dict(
            name=workload.name, rows=rows, mask_source=mask_source
            or 'none (ELA not measured)', masks=masks))
    return dict(impls=impls, workloads=records)


def _read_report(path: str) -> dict:
    try:
        return load_report(path)
    except (OSError, ValueError, LookupError, TypeError) as e:
        raise ConfigError(f'--masks: {path} is not a readable '
                          f'ela_pruning.json ({e})') from None


def _check_masks(masks, workload: Workload, path: str) -> None:
    expected = mask_lengths(workload)
    try:
        given = [len(mask) for mask in masks]
    except TypeError:
        given = None
    if given != expected:
        raise ConfigError(
            f'--masks: {path} has masks of {given} blocks per stage, but '
            f'{workload.name} has {expected}: give the ela_pruning.json of '
            f'a run of this network')


def _ela_masks(workload: Workload, args, report: Optional[dict],
               probe_size: Sequence[int], hook_params: dict,
               channels: int) -> Tuple[list, str]:
    """The ELA masks and where they come from: ``report`` (of
    ``--masks``), or a short hook run on a classifier around the
    workload's backbone."""
    if report is not None:
        return report['masks'], f'last report of {args.masks}'
    report = hook_masks(workload.backbone_cfg, probe_size, hook_params,
                        iterations=args.mask_iters, device=args.device,
                        channels=channels)
    settings = ', '.join(f'{key}={value}'
                         for key, value in hook_params.items())
    return report['masks'], (
        f"ELAPruningHook, one window of {report['iterations']} iterations "
        f'on synthetic {probe_size[0]}x{probe_size[1]} images, {settings}')


def _time_methods(workload: Workload, methods: Sequence[str],
                  impls: Sequence[str], masks, args) -> List[dict]:
    """Train every method's model on the workload's batch, interleaved;
    one row each (see :func:`mmela.benchmark.measure.summarize`)."""
    if args.compile:
        # Every model's backbone shares one forward; start each workload
        # with an empty cache so no recompilation limit is reached.
        torch._dynamo.reset()
    variants = [
        build_variant(workload, method, masks, args.device, args.amp,
                      args.channels_last, args.compile,
                      args.compile_mode, impl, len(impls) > 1)
        for method in methods
        for impl in (impls if method in WITH_RETRIEVALS else [None])
    ]
    batch = _to_device(workload.batch, args.device, args.channels_last)
    for variant in variants:
        variant.saved_bytes = saved_activation_bytes(
            variant, batch, args.device, args.amp)
    measure_round_robin(variants, batch, args.device, args.amp,
                        args.steps, args.warmup)
    for variant in variants if args.op_count else ():
        variant.step_ops = step_op_count(variant, batch, args.device,
                                         args.amp)
    rows = summarize(variants)
    print(', '.join(
        f"{r['method']}{'/' + r['impl'] if r['impl'] else ''} "
        f"{r['median_ms']:.0f} ms {r['step_ops']} ops" for r in rows))
    return rows


def _hook_cost(name: str, workload: Workload, image_size: Sequence[int],
               batch_size: int, args, channels: int = 3) -> dict:
    cost = hook_cost(workload.backbone_cfg, image_size, batch_size,
                     args.hook_cost_iters, args.hook_cost_pairs,
                     args.device, channels)
    print(f"[{name}] hook cost: inside / outside a window = "
          f"{cost['iter_ratio']:.3f} per iteration, "
          f"{cost['epoch_ratio']:.3f} per epoch")
    return dict(cost, model=workload.name)


def _to_device(batch: tuple, device: str, channels_last: bool) -> tuple:
    moved = []
    for item in batch:
        if isinstance(item, Tensor):
            item = item.to(device)
            if channels_last and item.dim() == 4:
                item = item.contiguous(memory_format=torch.channels_last)
        elif isinstance(item, list):  # mmdet data samples
            item = [sample.to(device) for sample in item]
        moved.append(item)
    return tuple(moved)


def environment(device: str) -> dict:
    return dict(provenance(device), load_before=_load_average())


def _load_average() -> str:
    try:
        return ' / '.join(f'{x:.2f}' for x in os.getloadavg())
    except OSError:
        return 'n/a'


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    env = environment(args.device)
    suites = SUITES if args.suite == 'all' else (args.suite, )
    with user_errors():
        records = [run_config(args)] if args.config else \
            [run_suite(suite, args) for suite in suites]
    result = dict(
        settings=dict(vars(args), command=' '.join(
            ['python tools/analysis/benchmark_speed.py'] +
            list(sys.argv[1:] if argv is None else argv))),
        environment=env,
        suites=records)
    env['load_after'] = _load_average()
    os.makedirs(args.out_dir, exist_ok=True)
    name = records[0]['suite'] if args.config else args.suite
    stem = osp.join(args.out_dir, f'benchmark_{name}')
    with open(f'{stem}.json', 'w') as f:
        json.dump(result, f, indent=2)
    with open(f'{stem}.md', 'w') as f:
        f.write(format_markdown(result))
    plot(result, f'{stem}.png')
    print(f'wrote {stem}.md, .json and .png')
    return result
