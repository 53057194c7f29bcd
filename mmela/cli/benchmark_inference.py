"""Inference latency and throughput of plain ResNet-50, MRLA-L and ELA on
the CPU, in PyTorch eager, ONNX Runtime and OpenVINO.

Methods (rows), each the ImageNet classifier of
``configs/imagenet/resnet50_ela_8xb32_in1k.py`` (images -> logits, the
graph ``tools/deployment/export.py`` exports, normalisation included):

- ``ResNet``: ``layer_attention=None``, the plain ResNet-50;
- ``MRLA-L``: every retrieval on (ELA with nothing pruned);
- ``ELA (hook masks)``: the masks of a real :class:`ELAPruningHook` run:
  by default one window of a few iterations on synthetic images with the
  config's alpha, beta and tau, or the last report of ``--masks
  ela_pruning.json``;
- ``ELA (all pruned)``: every retrieval pruned, which should cost what the
  plain ResNet costs.

Runtimes (columns): ``pytorch`` (eager, ``torch.inference_mode``, layer
attention's default implementation on the CPU), ``onnxruntime`` (CPU
execution provider) and ``openvino`` (CPU plugin; skipped when the package
is missing), the last two on the ONNX file of ``torch.onnx.export(
dynamo=True)``, from which the pruned retrievals' modules were removed
(``mmela/deployment/model.py``). Weights are random: times do not
depend on them.

Timing: per runtime and batch size, ``--warmup`` then ``--rounds`` rounds
of one call per method, the order of the methods rotating every round, so
background load hits every method alike. Latency is the median time of a
call, throughput the batch over it; each ratio against plain is the median
over rounds of the two methods' times in the same round.

Writes ``inference_<name>.json`` (with the commit and the machine) and
``inference_<name>.md`` to ``--out-dir``.

Example (the table in docs/user_guides/deployment.md)::

    OMP_NUM_THREADS=1 python tools/analysis/benchmark_inference.py \\
        --out-dir docs/benchmarks/cpu
"""
import argparse
import copy
import json
import logging
import os
import os.path as osp
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from ..benchmark import workloads
from ..deployment.model import (build_model, deployable,
                                drop_pruned_retrievals, export_onnx,
                                input_channels, load_config,
                                retrieval_counts)
from ..models import layer_attention_impl
from ..utils.atomic_write import write_atomic
from ..utils.provenance import environment


CONFIG = 'configs/imagenet/resnet50_ela_8xb32_in1k.py'
METHODS = ('resnet', 'mrla-l', 'ela', 'ela-pruned')
RUNTIMES = ('pytorch', 'onnxruntime', 'openvino')


# ------------------------------------------------------------ models
def build_classifier(cfg, method: str, masks) -> nn.Module:
    """The config's classifier for ``method`` (random weights, eval
    mode), as :func:`mmela.deployment.deployable` exports it."""
    cfg = copy.deepcopy(cfg)
    cfg.merge_from_dict({
        'model.backbone.layer_attention':
        None if method == 'resnet' else 'light',
        'model.backbone.init_cfg': None})
    torch.manual_seed(0)  # the same weights for the parts methods share
    model = build_model(cfg, 'mmpretrain')
    model.init_weights()
    if method == 'ela':
        model.backbone.set_masks(masks)
    elif method == 'ela-pruned':
        model.backbone.set_masks(
            [[0] * len(m) for m in model.backbone.get_masks()])
    return deployable(model, 'mmpretrain').eval()


def hook_masks(cfg, image_size: int, iterations: int,
               batch_size: int = 4) -> dict:
    """The last report of :class:`ELAPruningHook` after one one-epoch
    window on synthetic images, on a classifier around the config's
    backbone with the config's hook settings
    (:func:`mmela.benchmark.workloads.hook_masks`)."""
    hook = next(dict(h) for h in cfg.custom_hooks
                if h['type'] == 'ELAPruningHook')
    params = {k: v for k, v in hook.items() if k not in ('type', 'windows')}
    backbone = dict(cfg.model.backbone, type='mmpretrain.ELAResNet',
                    init_cfg=None)
    report = workloads.hook_masks(backbone, (image_size, image_size), params,
                                  batch_size=batch_size,
                                  iterations=iterations)
    report['source'] = (
        f'ELAPruningHook, one window of {iterations} iterations of batch '
        f'{batch_size} on synthetic {image_size}x{image_size} images, '
        f"alpha={params.get('alpha')}, beta={params.get('beta')}, "
        f"tau={params.get('tau')}")
    return report


def last_report(path: str) -> dict:
    """The last window's report of an ``ela_pruning.json``."""
    return dict(workloads.load_report(path), source=f'last report of {path}')


# ---------------------------------------------------------- runtimes
def pytorch_runner(module: nn.Module) -> Callable:
    def run(images: np.ndarray):
        with torch.inference_mode():
            return module(torch.from_numpy(images))
    return run


def onnxruntime_runner(path: str, threads: int) -> Callable:
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})


def openvino_runner(path: str, threads: int) -> Callable:
    import openvino
    compiled = openvino.Core().compile_model(
        path, 'CPU', {'INFERENCE_NUM_THREADS': threads,
                      'PERFORMANCE_HINT': 'LATENCY'})
    request = compiled.create_infer_request()
    return lambda images: request.infer([images])


def runtime_versions(runtimes: Sequence[str]) -> Dict[str, str]:
    import importlib.metadata as metadata
    versions = {'pytorch': torch.__version__}
    for runtime in runtimes:
        if runtime != 'pytorch':
            versions[runtime] = metadata.version(runtime)
    return versions


def available(runtime: str) -> bool:
    try:
        __import__(runtime)
    except ImportError:
        return False
    return True


# ------------------------------------------------------------ timing
@dataclass
class Variant:
    method: str
    label: str
    runtime: str
    batch_size: int
    run: Callable
    channels: int
    times: List[float] = field(default_factory=list)


def method_label(method: str, counts: Dict[str, int]) -> str:
    total = counts['blocks']
    return {'resnet': 'ResNet',
            'mrla-l': f'MRLA-L (all {total}/{total} kept)',
            'ela': f"ELA (hook masks, {counts['on']}/{total} kept)",
            'ela-pruned': f'ELA (all pruned, 0/{total} kept)'}[method]


def measure(variants: List[Variant], images: np.ndarray, rounds: int,
            warmup: int) -> None:
    """``warmup + rounds`` rounds of one call per variant; the order
    rotates every round."""
    for round_idx in range(warmup + rounds):
        shift = round_idx % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            start = time.perf_counter()
            variant.run(images)
            elapsed = time.perf_counter() - start
            if round_idx >= warmup:
                variant.times.append(elapsed)


def summarize(variants: List[Variant]) -> List[dict]:
    plain = next(v for v in variants if v.method == 'resnet')
    rows = []
    for variant in variants:
        times = np.array(variant.times)
        q25, q50, q75 = np.percentile(times, [25, 50, 75])
        rows.append(dict(
            method=variant.method, label=variant.label,
            runtime=variant.runtime, batch_size=variant.batch_size,
            latency_ms=q50 * 1e3, iqr_ms=(q75 - q25) * 1e3,
            throughput=variant.batch_size / q50,
            vs_resnet=float(np.median(times / np.array(plain.times))),
            times_ms=(times * 1e3).tolist()))
    return rows


# ------------------------------------------------------------ output
def format_markdown(result: dict) -> str:
    env, settings = result['environment'], result['settings']
    versions = ', '.join(f'{k} {v}' for k, v in result['versions'].items())
    lines = [
        f"# Inference benchmark: ResNet-{settings['depth']}, MRLA-L and ELA "
        'on the CPU', '',
        f"`{settings['command']}`", '',
        f"CPU: {env['cpu_model']}; {settings['threads']} thread(s) per "
        f"runtime ({os.cpu_count()} cores); {versions}; layer attention "
        f"in PyTorch eager: {settings['pytorch_impl']}; commit "
        f"{env.get('commit') or 'unknown'}"
        f"{' (with uncommitted changes)' if env.get('dirty') else ''}; "
        f"load average {settings['load_before']} before, "
        f"{settings['load_after']} after.", '',
        f"Classifier of `{settings['config']}` (normalisation, "
        f"ResNet-{settings['depth']}, head; random weights) at {settings['image_size']}x"
        f"{settings['image_size']}, float32. {settings['rounds']} rounds "
        f"after {settings['warmup']} warm-up, methods interleaved. Latency: "
        'median time of one call; x ResNet: median over rounds of the '
        'paired times (< 1 is faster). ELA masks: '
        f"{result['masks']['source']}.",
    ]
    for runtime in settings['runtimes']:
        lines += ['', f'## {runtime}', '',
                  '| Method | Batch | Latency (ms) | IQR (ms) | '
                  'Images / s | x ResNet |',
                  '|---|---:|---:|---:|---:|---:|']
        for row in result['rows']:
            if row['runtime'] == runtime:
                lines.append(
                    f"| {row['label']} | {row['batch_size']} | "
                    f"{row['latency_ms']:.1f} | {row['iqr_ms']:.1f} | "
                    f"{row['throughput']:.1f} | {row['vs_resnet']:.3f} |")
    for runtime, reason in result['skipped'].items():
        lines += ['', f'{runtime}: skipped ({reason}).']
    return '\n'.join(lines) + '\n'


def random_images(batch_size: int, channels: int,
                  image_size: int) -> np.ndarray:
    """Pixel-like values (0-255), as the graph's normalisation expects."""
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(batch_size, channels, image_size, image_size,
                       generator=gen) * 255).numpy()


def method_variants(cfg, method: str, masks, runtimes: Sequence[str],
                    args, tmp: str) -> List[Variant]:
    """``method``'s model ready to run in each runtime, at each batch
    size: eager in PyTorch, and exported to ONNX (in ``tmp``), without
    its pruned retrievals, for the others."""
    module = build_classifier(cfg, method, masks)
    channels = input_channels(module)
    label = method_label(method, retrieval_counts(module))
    print(f'{label}: ', end='', flush=True)
    runners = {}
    if 'pytorch' in runtimes:
        runners['pytorch'] = pytorch_runner(module)
    if any(runtime != 'pytorch' for runtime in runtimes):
        exported = copy.deepcopy(module)
        drop_pruned_retrievals(exported)
        path = osp.join(tmp, f'{method}.onnx')
        example = torch.from_numpy(random_images(2, channels,
                                                 args.image_size))
        export_onnx(exported, example, path)
        print('exported to ONNX; ', end='', flush=True)
        for runtime in runtimes:
            if runtime == 'onnxruntime':
                runners[runtime] = onnxruntime_runner(path, args.threads)
            elif runtime == 'openvino':
                runners[runtime] = openvino_runner(path, args.threads)
    print('ready')
    return [Variant(method, label, runtime, batch_size, run, channels)
            for runtime, run in runners.items()
            for batch_size in args.batch_sizes]


# -------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=CONFIG,
                        help='an mmpretrain ELA classifier config')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, e.g. '
        'model.backbone.depth=18 model.head.in_channels=512')
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=METHODS)
    parser.add_argument('--runtimes', nargs='+', default=list(RUNTIMES),
                        choices=RUNTIMES)
    parser.add_argument('--batch-sizes', type=int, nargs='+',
                        default=[1, 16])
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--rounds', type=int, default=10,
                        help='measured rounds per runtime and batch size')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1,
                        help='threads of every runtime (default: 1)')
    parser.add_argument('--masks', help='ela_pruning.json whose last '
                        'report gives the ELA masks (default: a short hook '
                        'run on synthetic images)')
    parser.add_argument('--mask-iters', type=int, default=4,
                        help='iterations of the hook run for the masks')
    parser.add_argument('--name', default='r50-224',
                        help='output files: inference_<name>.json / .md')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    args = parser.parse_args(argv)
    if 'resnet' not in args.methods:
        parser.error('--methods must include resnet (the ratios are to it)')
    if args.rounds < 1 or args.warmup < 0 or args.threads < 1:
        parser.error('--rounds and --threads must be >= 1, --warmup >= 0')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    load_before = round(os.getloadavg()[0], 2)

    runtimes = [r for r in args.runtimes
                if r == 'pytorch' or available(r)]
    skipped = {r: 'package not installed' for r in args.runtimes
               if r not in runtimes}
    cfg, codebase = load_config(args.config, args.cfg_options)
    if codebase != 'mmpretrain':
        raise SystemExit(f'error: {args.config} is not an mmpretrain config')
    masks = dict(source='not used')
    if 'ela' in args.methods:
        masks = last_report(args.masks) if args.masks else \
            hook_masks(cfg, args.image_size, args.mask_iters)
        print(f"ELA masks: {masks['masks']} ({masks['source']})")

    variants = []
    with tempfile.TemporaryDirectory(prefix='inference-') as tmp:
        for method in args.methods:
            variants += method_variants(cfg, method, masks.get('masks'),
                                        runtimes, args, tmp)
        rows = []
        channels = variants[0].channels
        for runtime in runtimes:
            for batch_size in args.batch_sizes:
                group = [v for v in variants if v.runtime == runtime
                         and v.batch_size == batch_size]
                images = random_images(batch_size, channels,
                                       args.image_size)
                measure(group, images, args.rounds, args.warmup)
                rows += summarize(group)
                print(f'[{runtime}] batch {batch_size}: ' + ', '.join(
                    f"{r['method']} {r['latency_ms']:.0f} ms "
                    f"(x{r['vs_resnet']:.2f})" for r in rows[-len(group):]))

    result = dict(
        environment=environment('cpu'),
        versions=runtime_versions(runtimes),
        settings=dict(
            command=' '.join(['python tools/analysis/benchmark_inference.py']
                             + (sys.argv[1:] if argv is None else argv)),
            config=args.config, cfg_options=args.cfg_options,
            depth=cfg.model.backbone.depth,
            image_size=args.image_size,
            batch_sizes=args.batch_sizes, rounds=args.rounds,
            warmup=args.warmup, threads=args.threads, runtimes=runtimes,
            pytorch_impl=layer_attention_impl('cpu'),
            load_before=load_before,
            load_after=round(os.getloadavg()[0], 2)),
        masks=masks, skipped=skipped, rows=rows)
    os.makedirs(args.out_dir, exist_ok=True)
    stem = osp.join(args.out_dir, f'inference_{args.name}')
    write_atomic(f'{stem}.json', json.dumps(result, indent=1) + '\n')
    write_atomic(f'{stem}.md', format_markdown(result))
    print(f'wrote {stem}.json and {stem}.md')
