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
depth per method, the layout of the paper's Fig. 4) to ``--out-dir``.

Examples::

    # GPU, the paper's settings
    python tools/analysis/benchmark_speed.py --suite all --device cuda \\
        --amp fp16 --out-dir work_dirs/benchmark
    # CPU, small
    python tools/analysis/benchmark_speed.py --suite cifar --batch-size 32 \\
        --steps 5 --warmup 2 --out-dir docs/benchmarks/cpu
"""
import argparse
import contextlib
import json
import logging
import os
import os.path as osp
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.runner import Runner
from torch import Tensor, nn

from mmela.hooks import ELAPruningHook
from mmela.hooks.ela_pruning_hook import REPORT_FILE
from mmela.models import (ELAResNetCIFAR, layer_attention_impl,
                          set_layer_attention_impl)
from mmela.testing import QuadrantImages, ToyELAClassifier
from mmela.utils.op_count import KernelOpCounter
from mmela.utils.provenance import environment as provenance

SUITES = ('cifar', 'r50-224', 'r50-800', 'faster-rcnn')
METHODS = ('resnet', 'mrla-b', 'mrla-l', 'ela', 'ela-pruned')
IMPLS = ('fused', 'reference')
# Methods whose layer attention runs (the others time no implementation).
WITH_RETRIEVALS = ('mrla-b', 'mrla-l', 'ela')

# Per suite: default batch and image size, classes of the head (None: a
# backbone or detector loss), and the paper's EBQM settings for the hook run
# that yields the ELA masks (SPEC section 4).
SUITE_SETTINGS = {
    'cifar': dict(batch_size=128, image_size=(32, 32), num_classes=100,
                  hook=dict(alpha=5.0, beta=1.0, tau=0.3)),
    'r50-224': dict(batch_size=32, image_size=(224, 224), num_classes=1000,
                    hook=dict(alpha=2.0, beta=5.0, tau=0.25)),
    'r50-800': dict(batch_size=2, image_size=(800, 1333), num_classes=None,
                    hook=dict(alpha=2.0, beta=5.0, tau=0.2)),
    'faster-rcnn': dict(batch_size=2, image_size=(800, 1333),
                        num_classes=None,
                        hook=dict(alpha=2.0, beta=5.0, tau=0.2)),
}
FASTER_RCNN_CONFIG = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'


# ------------------------------------------------------------- the models
class ClassifierLoss(nn.Module):
    """Backbone, global pooling, a linear head and cross-entropy."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feat_dim, num_classes)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        logits = self.head(self.backbone(images)[-1].mean(dim=(2, 3)))
        return F.cross_entropy(logits.float(), labels)


class BackboneLoss(nn.Module):
    """A detection backbone alone; the loss is the sum of its outputs'
    means, so every stage gets a gradient."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: Tensor) -> Tensor:
        return sum(out.float().mean() for out in self.backbone(images))


class DetectorLoss(nn.Module):
    """An mmdet detector trained on preprocessed inputs and data samples."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    @property
    def backbone(self) -> nn.Module:
        return self.detector.backbone

    @backbone.setter
    def backbone(self, module: nn.Module) -> None:
        self.detector.backbone = module

    def forward(self, inputs: Tensor, data_samples: list) -> Tensor:
        loss, _ = self.detector.parse_losses(
            self.detector.loss(inputs, data_samples))
        return loss


@dataclass
class Workload:
    """One model size of a suite: how to build it for a given layer
    attention, the batch every method trains on, and the backbone config of
    the classifier the hook runs on."""
    suite: str
    name: str
    build: Callable[[Optional[str]], nn.Module]
    batch: tuple
    backbone_cfg: dict


def random_images(batch_size: int, image_size: Sequence[int],
                  seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, *image_size, generator=gen)


def workloads(suite: str, depths: Sequence[int], batch_size: int,
              image_size: Sequence[int]) -> List[Workload]:
    """The models of a suite, built on the CPU."""
    settings = SUITE_SETTINGS[suite]
    images = random_images(batch_size, image_size)
    if suite == 'cifar':
        labels = torch.randint(0, settings['num_classes'], (batch_size, ),
                               generator=torch.Generator().manual_seed(1))
        return [
            Workload(suite, f'ResNet-{depth}',
                     _classifier_builder(ELAResNetCIFAR, depth,
                                         settings['num_classes']),
                     (images, labels),
                     dict(type='ELAResNetCIFAR', depth=depth))
            for depth in depths
        ]
    # The ResNet-50 suites need mmpretrain; the CIFAR one needs only mmengine.
    from mmela.models.mmpretrain_backbones import ELAResNet
    if suite == 'r50-224':
        labels = torch.randint(0, settings['num_classes'], (batch_size, ),
                               generator=torch.Generator().manual_seed(1))
        return [Workload(suite, 'ResNet-50',
                         _classifier_builder(ELAResNet, 50,
                                             settings['num_classes']),
                         (images, labels),
                         dict(type='mmpretrain.ELAResNet', depth=50))]
    if suite == 'r50-800':
        detection_backbone = dict(depth=50, out_indices=(0, 1, 2, 3),
                                  frozen_stages=1, norm_eval=True)
        return [Workload(
            suite, 'ResNet-50',
            lambda kind: BackboneLoss(
                ELAResNet(layer_attention=kind, **detection_backbone)),
            (images, ), dict(type='mmpretrain.ELAResNet', depth=50))]
    if suite == 'faster-rcnn':
        return [Workload(suite, 'Faster R-CNN R50 FPN',
                         _build_faster_rcnn,
                         _detection_batch(images),
                         dict(type='mmdet.ELAResNet', depth=50))]
    raise ValueError(f'suite must be one of {list(SUITES)}, got {suite!r}')


def _classifier_builder(backbone_cls, depth: int, num_classes: int):
    return lambda kind: ClassifierLoss(
        backbone_cls(depth, layer_attention=kind), num_classes)


def _build_faster_rcnn(kind: Optional[str]) -> nn.Module:
    """mmdet's stock Faster R-CNN R50 FPN 1x with ``ELAResNet`` (the plain
    one for ``kind=None``), frozen stem and first stage and ``norm_eval``
    as in the config; weights are left random (no download)."""
    from mmengine.hub import get_config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = get_config(FASTER_RCNN_CONFIG)
    cfg.model.backbone.update(type='ELAResNet', layer_attention=kind,
                              init_cfg=None)
    return DetectorLoss(MODELS.build(cfg.model))


def _detection_batch(images: Tensor, boxes_per_image: int = 5) -> tuple:
    """Inputs padded to a multiple of 32 and data samples with random boxes,
    what mmdet's data preprocessor would hand the detector."""
    from mmengine.structures import InstanceData
    from mmdet.structures import DetDataSample
    gen = torch.Generator().manual_seed(2)
    batch_size, _, height, width = images.shape
    padded = (-(-height // 32) * 32, -(-width // 32) * 32)
    inputs = images.new_zeros(batch_size, 3, *padded)
    inputs[:, :, :height, :width] = images
    samples = []
    for _ in range(batch_size):
        corners = torch.rand(boxes_per_image, 2, 2, generator=gen) * \
            torch.tensor([width, height])
        low, high = corners.min(1).values, corners.max(1).values
        sample = DetDataSample(metainfo=dict(
            img_shape=(height, width), ori_shape=(height, width),
            pad_shape=padded, batch_input_shape=padded,
            scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([low, high + 8], dim=1),
            labels=torch.randint(0, 80, (boxes_per_image, ), generator=gen))
        samples.append(sample)
    return inputs, samples


# ------------------------------------------------------- the ELA masks
def _train_probe(backbone_cfg: dict, image_size: Sequence[int],
                 batch_size: int, iterations: int, max_epochs: int,
                 hooks: list, work_dir: str, device: str) -> None:
    """Train the probe classifier on ``device`` with mmengine's Runner and
    ``hooks``."""
    runner = Runner(
        model=ToyELAClassifier(backbone_cfg),
        work_dir=work_dir,
        experiment_name=f'benchmark-{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(
            dataset=QuadrantImages(batch_size * iterations, image_size),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=batch_size, num_workers=0,
            collate_fn=dict(type='default_collate')),
        # Clipped: a few steps at this rate can diverge on ResNet-50.
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.05, momentum=0.9),
            clip_grad=dict(max_norm=10.0)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=None,
                           logger=dict(type='LoggerHook', interval=10**9)),
        custom_hooks=hooks,
        randomness=dict(seed=0),
        default_scope='mmengine',
        log_level='WARNING')
    runner.model.to(device)  # the Runner picks CUDA whenever it is there
    runner.train()


def hook_masks(backbone_cfg: dict, image_size: Sequence[int],
               hook_params: dict, batch_size: int = 4, iterations: int = 4,
               device: str = 'cpu') -> dict:
    """Run :class:`ELAPruningHook` for one one-epoch window on synthetic
    images and return its report (``masks``, ``retrievals_on``, ...)."""
    cfg = dict(backbone_cfg, layer_attention='light')
    with tempfile.TemporaryDirectory(prefix='ela-masks-') as work_dir:
        _train_probe(cfg, image_size, batch_size, iterations, 1,
                     [dict(type='ELAPruningHook', windows=[1],
                           **hook_params)], work_dir, device)
        return load_report(osp.join(work_dir, REPORT_FILE))


def load_report(path: str) -> dict:
    """The last window's report of an ``ela_pruning.json``."""
    with open(path) as f:
        reports = json.load(f)
    if not reports or 'masks' not in reports[-1]:
        raise ValueError(f'{path} holds no pruning report with masks')
    return reports[-1]


# -------------------------------------------------------------- timing
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
                  impl: Optional[str] = None) -> Variant:
    """Build ``method``'s model of ``workload`` on ``device``, with
    ``masks`` for 'ela', and its optimizer; its steps run layer attention's
    ``impl`` (compiled: the traced 'reference')."""
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
    variant = Variant(method, impl, method_label(method, retrievals, impl),
                      model, optimizer, scaler, retrievals)
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


# ----------------------------------------------------------- statistics
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


# ------------------------------------------------------------ hook cost
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
              iterations: int, pairs: int, device: str) -> dict:
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
        _train_probe(dict(backbone_cfg, layer_attention='light'), image_size,
                     batch_size, iterations, 2 * pairs + 1,
                     [ELAPruningHook(windows=windows, tau=0.0), timer],
                     work_dir, device)

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


# --------------------------------------------------------------- output
def format_markdown(result: dict) -> str:
    env, settings = result['environment'], result['settings']
    mode = settings.get('compile_mode')
    compiled = f"{settings['compile']}" + (f' (mode {mode})' if mode else '')
    lines = [
        '# Training-step benchmark: ResNet, MRLA-B, MRLA-L, ELA', '',
        f"`{settings['command']}`", '',
        f"Device: {env['device_name']} ({env['device']}); torch "
        f"{env['torch']}"
        f"{'; CUDA ' + str(env['cuda']) if env.get('cuda') else ''}; "
        f"commit {env.get('commit') or 'unknown'}"
        f"{' (with uncommitted changes)' if env.get('dirty') else ''}; "
        f"layer attention: {', '.join(result['suites'][0].get('impls', []))}"
        f"; {env['cpu_threads']} of {os.cpu_count()} CPU "
        f"threads; load average "
        f"{env['load_before']} before, {env['load_after']} after. "
        f"AMP: {settings['amp']}; channels-last: "
        f"{settings['channels_last']}; compile: {compiled}. "
        f"{settings['steps']} measured steps after {settings['warmup']} "
        f"warm-up, methods interleaved round-robin.", '',
        'Step = forward + backward + SGD step. Ratios are medians over rounds '
        'of the paired step times (same round); < 1 is faster. Peak step '
        'memory: CUDA max allocated above the resident state (n/a on CPU); '
        'saved activations: what autograd keeps for backward in one forward. '
        'Ops / step: kernel-launching aten operators of one eager training '
        'step (forward, backward, SGD with foreach=True; views excluded); '
        'it depends on the device, not on its load.',
    ]
    if env['device'] == 'cpu':
        lines += [
            '', 'CPU numbers: the machine may be shared with other jobs (see '
            'the load average). Compare ratios, not absolute times; on a GPU '
            '(the paper\'s Fig. 4) the ratios differ.'
        ]
    for suite in result['suites']:
        lines += ['', f"## {suite['suite']}: batch {suite['batch_size']}, "
                  f"{suite['image_size'][0]}x{suite['image_size'][1]}", '']
        if suite.get('skipped'):
            lines.append(suite['skipped'])
            continue
        lines += [
            '| Model | Method | Step median (ms) | IQR (ms) | x ResNet | '
            'x MRLA-B | Ops / step | Ops x ResNet | '
            'Peak step memory (MiB) | Saved activations (MiB) |',
            '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|'
        ]
        for workload in suite['workloads']:
            for row in workload['rows']:
                lines.append(
                    f"| {workload['name']} | {row['label']} | "
                    f"{row['median_ms']:.1f} | {row['iqr_ms']:.1f} | "
                    f"{_fmt(row['vs_resnet'], '.2f')} | "
                    f"{_fmt(row['vs_mrla-b'], '.2f')} | "
                    f"{_fmt(row.get('step_ops'), 'd')} | "
                    f"{_fmt(row.get('step_ops_vs_resnet'), '.2f')} | "
                    f"{_fmt(row['peak_step_mib'], '.0f')} | "
                    f"{_fmt(row['saved_activations_mib'], '.0f')} |")
        sources = {}
        for workload in suite['workloads']:
            sources.setdefault(workload['mask_source'], []).append(
                workload['name'])
        lines += ['', 'ELA masks: ' + '; '.join(
            f"{source} ({', '.join(names)})"
            for source, names in sources.items()) + '.']
        cost = suite.get('hook_cost')
        if cost:
            lines += [
                '', f"Hook cost ({cost['model']}, ELA, batch "
                f"{cost['batch_size']}, {cost['iterations']} iterations per "
                f"epoch, windows at epochs {cost['windows']}, tau = 0):", '',
                '| | Inside a window | Outside | Inside / outside |',
                '|---|---:|---:|---:|',
                f"| Iteration, median (ms) | {cost['iter_inside_ms']:.1f} | "
                f"{cost['iter_outside_ms']:.1f} | {cost['iter_ratio']:.3f} |",
                f"| Epoch, mean (ms) | {cost['epoch_inside_ms']:.0f} | "
                f"{cost['epoch_outside_ms']:.0f} | "
                f"{cost['epoch_ratio']:.3f} |",
            ]
    return '\n'.join(lines) + '\n'


def _fmt(value, spec: str) -> str:
    return 'n/a' if value is None else format(value, spec)


# (colour, marker, line) per method: one colour each, so that every line
# can be told apart in print.
PLOT_STYLES = {'resnet': ('tab:gray', 'o', '-'),
               'mrla-b': ('tab:red', 's', '-'),
               'mrla-l': ('tab:orange', '^', '-'),
               'ela': ('tab:blue', 'D', '-'),
               'ela-pruned': ('tab:green', 'v', ':')}


def plot(result: dict, path: str) -> None:
    """Step time per method against depth (the paper's Fig. 4), and the
    same relative to MRLA-B; one row of panels per suite."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    suites = [s for s in result['suites'] if not s.get('skipped')]
    fig, axes = plt.subplots(len(suites), 2, squeeze=False,
                             figsize=(11, 3.8 * len(suites)))
    for (ax_time, ax_ratio), suite in zip(axes, suites):
        names = [w['name'] for w in suite['workloads']]
        x = np.arange(len(names))
        keys = dict.fromkeys((r['method'], r.get('impl'))
                             for w in suite['workloads'] for r in w['rows'])
        for method, impl in sorted(keys, key=lambda k: (
                METHODS.index(k[0]), k[1] or '')):
            rows = [r for w in suite['workloads'] for r in w['rows']
                    if (r['method'], r.get('impl')) == (method, impl)]
            if len(rows) != len(names):
                continue
            color, marker, line = PLOT_STYLES[method]
            if impl == 'reference':
                line = '--'
            label = rows[-1]['label'] if method in ('resnet', 'mrla-b') \
                else rows[-1]['label'].split(' (')[0] + {
                    'mrla-l': '', 'ela': ' (hook masks)',
                    'ela-pruned': ' (all pruned)'}[method] + (
                        f' [{impl}]' if impl else '')
            medians = np.array([r['median_ms'] for r in rows])
            quartiles = np.array([[r['median_ms'] - r['q25_ms'],
                                   r['q75_ms'] - r['median_ms']]
                                  for r in rows]).T
            ax_time.errorbar(x, medians, yerr=quartiles, color=color,
                             marker=marker, linestyle=line, capsize=3,
                             label=label)
            ratios = [r['vs_mrla-b'] for r in rows]
            if None not in ratios:
                ax_ratio.plot(x, np.array(ratios) * 100, color=color,
                              marker=marker, linestyle=line, label=label)
        title = f"{suite['suite']}, batch {suite['batch_size']}, " \
            f"{result['environment']['device']}"
        ax_time.set(title=f'{title}: step time', ylabel='ms per step '
                    '(median, bars: quartiles)', xticks=x, xticklabels=names)
        ax_ratio.set(title=f'{title}: relative to MRLA-B',
                     ylabel='% of MRLA-B step time', xticks=x,
                     xticklabels=names)
        ax_ratio.axhline(100, color='tab:red', linewidth=0.8)
        for ax in (ax_time, ax_ratio):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            ax.set_xlim(-0.5, len(names) - 0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------- main
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
                          args.compile_mode, impl)
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
        settings=dict(vars(args), command='python ' + ' '.join(
            [osp.relpath(__file__)] + list(sys.argv[1:] if argv is None
                                            else argv))),
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


if __name__ == '__main__':
    main()
