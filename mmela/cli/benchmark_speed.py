"""The command line of ``tools/analysis/benchmark_speed.py``."""
import argparse
import json
import logging
import os
import os.path as osp
import sys

import torch
from mmengine.logging import MMLogger
from torch import Tensor

from ..benchmark.measure import (build_variant, hook_cost,
                                 measure_round_robin, saved_activation_bytes,
                                 step_op_count, summarize)
from ..benchmark.report import format_markdown, plot
from ..benchmark.workloads import (IMPLS, METHODS, SUITE_SETTINGS, SUITES,
                                   WITH_RETRIEVALS, hook_masks, load_report,
                                   workloads)
from ..models import layer_attention_impl
from ..utils.provenance import environment as provenance


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Time training steps of ResNet, MRLA-B, MRLA-L and ELA.')
    parser.add_argument('--suite', default='cifar',
                        choices=[*SUITES, 'all'])
    parser.add_argument('--depths', type=int, nargs='+',
                        default=[20, 56, 110],
                        help='CIFAR depths (9n + 2)')
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=METHODS)
    parser.add_argument('--batch-size', type=int,
                        help='default: 128 (cifar), 32 (r50-224), '
                        '2 (r50-800, faster-rcnn)')
    parser.add_argument('--image-size', type=int, nargs=2,
                        metavar=('H', 'W'), help='default: the suite\'s')
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
    methods = [m for m in METHODS if m in args.methods]
    # Compiled, layer attention traces its reference implementation.
    impls = ['reference'] if args.compile else \
        args.impls or [layer_attention_impl(args.device)]
    record['impls'] = impls
    record['workloads'] = []
    for workload in workloads(suite, args.depths, batch_size, image_size):
        print(f'[{suite}] {workload.name}: ', end='', flush=True)
        masks, mask_source = None, None
        if 'ela' in methods:
            if args.masks:
                report = load_report(args.masks)
                mask_source = f'last report of {args.masks}'
            else:
                probe_size = image_size if suite == 'cifar' else (224, 224)
                report = hook_masks(workload.backbone_cfg, probe_size,
                                    settings['hook'],
                                    iterations=args.mask_iters,
                                    device=args.device)
                mask_source = (
                    f"ELAPruningHook, one window of "
                    f"{report['iterations']} iterations on synthetic "
                    f"{probe_size[0]}x{probe_size[1]} images, "
                    f"alpha={settings['hook']['alpha']}, "
                    f"beta={settings['hook']['beta']}, "
                    f"tau={settings['hook']['tau']}")
            masks = report['masks']
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
        record['workloads'].append(dict(
            name=workload.name, rows=rows, mask_source=mask_source
            or 'none (ELA not measured)', masks=masks))
        del variants
    if args.hook_cost:
        workload = workloads(suite, args.depths[-1:], batch_size,
                             image_size)[0]
        cost = hook_cost(workload.backbone_cfg, image_size, batch_size,
                         args.hook_cost_iters, args.hook_cost_pairs,
                         args.device)
        record['hook_cost'] = dict(cost, model=workload.name)
        print(f"[{suite}] hook cost: inside / outside a window = "
              f"{cost['iter_ratio']:.3f} per iteration, "
              f"{cost['epoch_ratio']:.3f} per epoch")
    return record


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
    result = dict(
        settings=dict(vars(args), command=' '.join(
            ['python tools/analysis/benchmark_speed.py'] +
            list(sys.argv[1:] if argv is None else argv))),
        environment=env,
        suites=[run_suite(suite, args) for suite in suites])
    env['load_after'] = _load_average()
    os.makedirs(args.out_dir, exist_ok=True)
    stem = osp.join(args.out_dir, f'benchmark_{args.suite}')
    with open(f'{stem}.json', 'w') as f:
        json.dump(result, f, indent=2)
    with open(f'{stem}.md', 'w') as f:
        f.write(format_markdown(result))
    plot(result, f'{stem}.png')
    print(f'wrote {stem}.md, .json and .png')
    return result
