"""Timing training steps: variants of one workload trained on the same
batch, interleaved round-robin, with each layer-attention implementation;
memory, saved activations and kernel launches; and the cost of the pruning
hook inside a window."""
import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.hooks import Hook
from torch import Tensor, nn

from ..hooks import ELAPruningHook
from ..models import set_layer_attention_impl
from ..utils.op_count import KernelOpCounter
from .workloads import Workload, train_probe


@dataclass
class Variant:
    """One method of one workload, ready to train."""
    method: str
    impl: Optional[str]  # of layer attention; None where none runs
    label: str
    model: nn.Module  # eager; its backbone may be replaced by a compiled one
    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    retrievals: Optional[Tuple[int, int]]  # (on, total)
    times: List[float] = field(default_factory=list)
    peaks: List[int] = field(default_factory=list)
    saved_bytes: Optional[int] = None
    step_ops: Optional[int] = None


def method_label(method: str, retrievals: Optional[Tuple[int, int]],
                 impl: Optional[str] = None) -> str:
    suffix = f' [{impl}]' if impl else ''
    if method == 'resnet':
        return 'ResNet'
    if method == 'mrla-b':
        return 'MRLA-B' + suffix
    on, total = retrievals
    if method == 'mrla-l':
        return f'MRLA-L (= ELA, all {total}/{total} kept){suffix}'
    if method == 'ela':
        return f'ELA (hook masks, {on}/{total} kept){suffix}'
    return f'ELA (all pruned, 0/{total} kept)'


@contextlib.contextmanager
def implementation(impl: Optional[str]):
    """Run the body with layer attention's implementation set to ``impl``
    (unchanged for None)."""
    if impl is None:
        yield
        return
    previous = set_layer_attention_impl(impl)
    try:
        yield
    finally:
        set_layer_attention_impl(previous)


def build_variant(workload: Workload, method: str, masks, device: str,
                  amp: str, channels_last: bool, compile: bool,
                  compile_mode: Optional[str] = None,
                  impl: Optional[str] = None,
                  show_impl: bool = False) -> Variant:
    """Build ``method``'s model of ``workload`` on ``device``, with
    ``masks`` for 'ela', and its optimizer; its steps run layer attention's
    ``impl`` (compiled: the traced 'reference'), which its label names with
    ``show_impl``."""
    kind = {'resnet': None, 'mrla-b': 'base'}.get(method, 'light')
    torch.manual_seed(0)  # the same weights for the parts methods share
    model = workload.build(kind)
    backbone = model.backbone
    if method == 'ela':
        backbone.set_masks(masks)
    elif method == 'ela-pruned':
        backbone.set_masks([[0] * len(m) for m in backbone.get_masks()])
    counts = None if kind is None else backbone.num_retrievals()
    retrievals = None if counts is None else (counts['on'], counts['total'])
    model = model.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=1e-3, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device) if amp == 'fp16' else None
    label = method_label(method, retrievals, impl if show_impl else None)
    variant = Variant(method, impl, label, model, optimizer, scaler,
                      retrievals)
    if compile:
        model.backbone = torch.compile(backbone, mode=compile_mode)
    return variant


def synchronize(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def autocast(device: str, amp: str):
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(amp)
    return torch.autocast(device, dtype=dtype, enabled=dtype is not None)


def train_step(variant: Variant, batch: tuple, device: str, amp: str) -> None:
    """One training step: forward, backward and optimizer step."""
    variant.optimizer.zero_grad(set_to_none=True)
    with implementation(variant.impl), autocast(device, amp):
        loss = variant.model(*batch)
    if variant.scaler is None:
        loss.backward()
        variant.optimizer.step()
    else:
        variant.scaler.scale(loss).backward()
        variant.scaler.step(variant.optimizer)
        variant.scaler.update()


def timed_step(variant: Variant, batch: tuple, device: str,
               amp: str) -> Tuple[float, Optional[int]]:
    """Seconds of one training step and, on CUDA, its peak memory above
    what was allocated before it (bytes)."""
    synchronize(device)
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
    start = time.perf_counter()
    train_step(variant, batch, device, amp)
    synchronize(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - resident \
        if device == 'cuda' else None
    return elapsed, peak


def measure_round_robin(variants: List[Variant], batch: tuple, device: str,
                        amp: str, steps: int, warmup: int) -> None:
    """``warmup + steps`` rounds of one step per variant; the order rotates
    each round so no method always follows the same one."""
    for round_idx in range(warmup + steps):
        shift = round_idx % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            elapsed, peak = timed_step(variant, batch, device, amp)
            if round_idx >= warmup:
                variant.times.append(elapsed)
                if peak is not None:
                    variant.peaks.append(peak)


def saved_activation_bytes(variant: Variant, batch: tuple, device: str,
                           amp: str) -> int:
    """Bytes autograd saves for the backward pass in one eager forward pass
    (unique storages, parameters excluded), after one forward pass without
    gradients."""
    model = variant.model
    backbone = model.backbone
    eager = getattr(backbone, '_orig_mod', backbone)
    model.backbone = eager
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    try:
        # One forward first: MRLA-B sizes its stage buffers from the
        # previous forward pass (the first one grows them).
        with torch.no_grad(), implementation(variant.impl), \
                autocast(device, amp):
            model(*batch)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with implementation(variant.impl), autocast(device, amp):
                model(*batch)
    finally:
        model.backbone = backbone
    return sum(storages.values())


def step_op_count(variant: Variant, batch: tuple, device: str,
                  amp: str, samples: int = 2) -> int:
    """Kernel-launching aten operators in one training step of the eager
    model on the first ``samples`` samples (see the module docstring), with
    an SGD with ``foreach=True``; one uncounted step first creates the
    momentum buffers. Changes the model's weights (run it after timing)."""
    model = variant.model
    backbone = model.backbone
    model.backbone = getattr(backbone, '_orig_mod', backbone)
    small = tuple(item[:samples] if isinstance(item, (Tensor, list))
                  else item for item in batch)
    group = variant.optimizer.param_groups[0]
    counted = Variant(variant.method, variant.impl, variant.label, model,
                      torch.optim.SGD(
                          [p for p in model.parameters() if p.requires_grad],
                          lr=group['lr'], momentum=group['momentum'],
                          weight_decay=group['weight_decay'], foreach=True),
                      variant.scaler, variant.retrievals)
    try:
        train_step(counted, small, device, amp)
        with KernelOpCounter() as counter:
            train_step(counted, small, device, amp)
    finally:
        model.backbone = backbone
    return counter.total


def summarize(variants: List[Variant]) -> List[dict]:
    """Median, IQR and paired ratios of every variant; a layer-attention
    row is compared with MRLA-B of its own implementation."""
    by_method = {}
    for variant in variants:
        by_method.setdefault(variant.method, variant)
        by_method[variant.method, variant.impl] = variant
    rows = []
    for variant in variants:
        times = np.array(variant.times)
        q25, q50, q75 = np.percentile(times, [25, 50, 75])
        row = dict(method=variant.method, impl=variant.impl,
                   label=variant.label,
                   retrievals_on=None, retrievals_total=None,
                   median_ms=q50 * 1e3, iqr_ms=(q75 - q25) * 1e3,
                   q25_ms=q25 * 1e3, q75_ms=q75 * 1e3,
                   times_ms=(times * 1e3).tolist(),
                   peak_step_mib=max(variant.peaks) / 2**20
                   if variant.peaks else None,
                   saved_activations_mib=None if variant.saved_bytes is None
                   else variant.saved_bytes / 2**20,
                   step_ops=variant.step_ops)
        if variant.retrievals is not None:
            row['retrievals_on'], row['retrievals_total'] = \
                variant.retrievals
        for ref in ('resnet', 'mrla-b'):
            other = by_method.get((ref, variant.impl), by_method.get(ref))
            row[f'vs_{ref}'] = None if other is None else float(np.median(
                times / np.array(other.times)))
        reference = by_method.get('resnet')
        row['step_ops_vs_resnet'] = variant.step_ops / reference.step_ops \
            if reference and reference.step_ops and variant.step_ops \
            else None
        rows.append(row)
    return rows


class TrainingTimer(Hook):
    """Times every training iteration and every epoch; an epoch's time
    includes the other hooks' epoch-end work (the pruning decision)."""
    priority = 'LOWEST'

    def __init__(self, device: str):
        self.device = device
        self.epoch_seconds: Dict[int, float] = {}
        self.iter_seconds: Dict[int, List[float]] = {}
        self._epoch_start = self._iter_start = 0.0

    def before_train_epoch(self, runner) -> None:
        synchronize(self.device)
        self._epoch_start = time.perf_counter()
        self.iter_seconds[runner.epoch + 1] = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        synchronize(self.device)
        self._iter_start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        synchronize(self.device)
        self.iter_seconds[runner.epoch + 1].append(
            time.perf_counter() - self._iter_start)

    def after_train_epoch(self, runner) -> None:
        synchronize(self.device)
        self.epoch_seconds[runner.epoch + 1] = \
            time.perf_counter() - self._epoch_start


def hook_cost(backbone_cfg: dict, image_size: Sequence[int], batch_size: int,
              iterations: int, pairs: int, device: str,
              channels: int = 3) -> dict:
    """Time of epochs inside and outside a window.

    Epoch 1 warms up; then epochs 2, 4, ... are windows and 3, 5, ... are
    not. ``tau = 0`` keeps every retrieval, so all epochs train the same
    network and differ only in what the hook does. Returns the median time
    per iteration inside and outside (robust to load spikes) and the mean
    epoch times (which include the pruning decision at a window's end).
    """
    timer = TrainingTimer(device)
    windows = [2 * i for i in range(1, pairs + 1)]
    with tempfile.TemporaryDirectory(prefix='ela-hook-cost-') as work_dir:
        train_probe(dict(backbone_cfg, layer_attention='light'), image_size,
                     batch_size, iterations, 2 * pairs + 1,
                     [ELAPruningHook(windows=windows, tau=0.0), timer],
                     work_dir, device, channels)

    def iteration_ms(epochs):
        return float(np.median([t for e in epochs
                                for t in timer.iter_seconds[e]])) * 1e3

    def epoch_ms(epochs):
        return float(np.mean([timer.epoch_seconds[e] for e in epochs])) * 1e3

    outside = [e + 1 for e in windows]
    return dict(
        iter_inside_ms=iteration_ms(windows),
        iter_outside_ms=iteration_ms(outside),
        iter_ratio=iteration_ms(windows) / iteration_ms(outside),
        epoch_inside_ms=epoch_ms(windows),
        epoch_outside_ms=epoch_ms(outside),
        epoch_ratio=epoch_ms(windows) / epoch_ms(outside),
        iter_ms={e: [t * 1e3 for t in ts]
                 for e, ts in timer.iter_seconds.items()},
        iterations=iterations, batch_size=batch_size, windows=windows)
