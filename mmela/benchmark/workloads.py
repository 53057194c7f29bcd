"""The models the speed benchmark trains, per suite or from a user's
config, the input a config's model takes, and the ELA masks the benchmark
times them with (see ``tools/analysis/benchmark_speed.py`` for the suites).
"""
import copy
import json
import os.path as osp
import tempfile
import uuid
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.runner import Runner
from torch import Tensor, nn

from ..models import ELAResNetCIFAR
from ..pruning import REPORT_FILE
from ..testing import QuadrantImages, ToyELAClassifier


SUITES = ('cifar', 'r50-224', 'r50-800', 'faster-rcnn')


METHODS = ('resnet', 'mrla-b', 'mrla-l', 'ela', 'ela-pruned')


IMPLS = ('fused', 'reference')


# Methods whose layer attention runs (the others time no implementation).
WITH_RETRIEVALS = ('mrla-b', 'mrla-l', 'ela')


# Per suite: default batch and image size, classes of the head (None: a
# backbone or detector loss), and the paper's EBQM settings for the hook run
# that yields the ELA masks (paper Section 4).
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
                  seed: int = 0, channels: int = 3) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, channels, *image_size, generator=gen)


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


def config_workload(backbone_cfg: dict, name: str, num_classes: Optional[int],
                    batch_size: int, input_shape: Sequence[int]) -> Workload:
    """The backbone of a user's config: with a linear head and cross-entropy
    (:class:`ClassifierLoss`) given ``num_classes`` (a classifier's head),
    else the sum of its outputs' means (:class:`BackboneLoss`, as for a
    detector's backbone), on random ``(C, H, W) = input_shape`` images.

    Args:
        backbone_cfg (dict): The config's ``model.backbone`` with the class
            as ``type``, so it builds in any default scope; a ``Pretrained``
            ``init_cfg`` is dropped (the weights stay random: no download).
    """
    backbone_cfg = copy.deepcopy(dict(backbone_cfg))
    init_cfg = backbone_cfg.get('init_cfg')
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        del backbone_cfg['init_cfg']
    channels, *image_size = input_shape
    images = random_images(batch_size, image_size, channels=channels)
    batch = (images, )
    if num_classes:
        batch += (torch.randint(0, num_classes, (batch_size, ),
                                generator=torch.Generator().manual_seed(1)), )

    def build(kind: Optional[str]) -> nn.Module:
        from mmengine.registry import MODELS
        backbone = MODELS.build(dict(backbone_cfg, layer_attention=kind))
        return ClassifierLoss(backbone, num_classes) if num_classes \
            else BackboneLoss(backbone)

    return Workload('config', name, build, batch, backbone_cfg)


def mask_lengths(workload: Workload) -> List[int]:
    """Blocks per stage of the workload's backbone: the length of each
    stage's mask."""
    return [len(m) for m in workload.build('light').backbone.get_masks()]


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


def train_probe(backbone_cfg: dict, image_size: Sequence[int],
                 batch_size: int, iterations: int, max_epochs: int,
                 hooks: list, work_dir: str, device: str,
                 channels: int = 3) -> None:
    """Train the probe classifier on ``device`` with mmengine's Runner and
    ``hooks``, on ``channels``-channel images."""
    dataset = QuadrantImages(batch_size * iterations, image_size)
    if channels != 3:
        # Their grey value keeps the bright quadrant the label names.
        dataset.images = dataset.images.mean(1, keepdim=True).repeat(
            1, channels, 1, 1)
    runner = Runner(
        model=ToyELAClassifier(backbone_cfg),
        work_dir=work_dir,
        experiment_name=f'benchmark-{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(
            dataset=dataset,
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
               device: str = 'cpu', channels: int = 3) -> dict:
    """Run :class:`ELAPruningHook` for one one-epoch window on synthetic
    images and return its report (``masks``, ``retrievals_on``, ...)."""
    cfg = dict(backbone_cfg, layer_attention='light')
    with tempfile.TemporaryDirectory(prefix='ela-masks-') as work_dir:
        train_probe(cfg, image_size, batch_size, iterations, 1,
                     [dict(type='ELAPruningHook', windows=[1],
                           **hook_params)], work_dir, device, channels)
        return load_report(osp.join(work_dir, REPORT_FILE))


def load_report(path: str) -> dict:
    """The last window's report of an ``ela_pruning.json``."""
    with open(path) as f:
        reports = json.load(f)
    if not reports or 'masks' not in reports[-1]:
        raise ValueError(f'{path} holds no pruning report with masks')
    return reports[-1]


# The analysis tools run a config's model on random images of the shape its
# data would have: the channels of the backbone's stem, and the height and
# width the config's pipeline hands the model.
