"""Every config under configs/ builds (no data on disk needed), ELA configs
carry the paper's ELAPruningHook settings (Section 4), and the detection
configs take standard ResNet checkpoints for their backbone."""
import copy
import glob
import importlib
import logging
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import HOOKS, MODELS, init_default_scope

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(ROOT, 'configs')
CONFIGS = sorted(
    osp.relpath(path, CONFIG_DIR)
    for path in glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    if '_base_' not in path.split(osp.sep))

DETECTION = [
    f'{det}_rcnn_{kind}_r{depth}_fpn_1x_coco.py' for det in ('faster', 'mask')
    for kind in ('ela', 'mrla_light') for depth in (50, 101)
]
IMAGENET = [
    f'imagenet/resnet{depth}_{kind}_8xb32_in1k.py' for depth in (50, 101)
    for kind in ('ela', 'mrla_light')
]
CIFAR = [
    f'cifar/resnet{depth}_{kind}_cifar{classes}.py' for classes in (10, 100)
    for depth in (20, 56, 110)
    for kind in ('ela', 'mrla_light', 'mrla_base', 'plain')
]
# Paper Section 4: (windows as the hook parses them, alpha, beta, tau, epochs)
PAPER_SCHEDULES = {
    'coco': ([(1, 1), (7, 7)], 2.0, 5.0, 0.2, 12),
    'in1k': ([(1, 3), (51, 53)], 2.0, 5.0, 0.25, 100),
    'cifar': ([(1, 3), (45, 48), (91, 93)], 5.0, 1.0, 0.3, 180),
}
LAYER_ATTENTION = {'ela': 'light', 'mrla_light': 'light', 'mrla_base': 'base',
                   'plain': None}


def _load(name):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    init_default_scope(cfg.default_scope)
    return cfg


def _task(name):
    return next(task for task in PAPER_SCHEDULES if task in name)


def _ela_hooks(cfg):
    return [h for h in cfg.get('custom_hooks', [])
            if h['type'] == 'ELAPruningHook']


def test_the_papers_configs_are_all_there():
    missing = set(DETECTION + IMAGENET + CIFAR) - set(CONFIGS)
    assert not missing


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds(name):
    cfg = _load(name)
    assert cfg.custom_imports == dict(imports=['mmela'],
                                      allow_failed_imports=False)
    assert cfg.default_scope == ('mmdet' if 'coco' in name or 'demo' in name
                                 else 'mmpretrain')
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor'):  # what the Runner does
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    backbone = model.backbone
    assert type(backbone).__name__ == (
        'ELAResNetCIFAR' if name.startswith(
            ('cifar/', 'fashion_mnist/', 'fashion_mnist_full/'))
        else 'ELAResNet')
    # The config's codebase's own ResNet (or the paper's CIFAR ResNet).
    if type(backbone).__name__ == 'ELAResNet':
        stock = importlib.import_module(
            f'{cfg.default_scope}.models.backbones').ResNet
        assert isinstance(backbone, stock)

    kind = re.search(r'_(ela|mrla_light|mrla_base|plain)_', name)
    if kind:
        assert backbone.layer_attention == LAYER_ATTENTION[kind.group(1)]
        depth = re.search(r'(?:_r|resnet)(\d+)_', osp.basename(name))
        assert backbone.depth == int(depth.group(1))


@pytest.mark.parametrize('name', [n for n in CONFIGS if '_ela_' in n])
def test_ela_configs_prune_with_the_paper_settings(name):
    cfg = _load(name)
    hooks = _ela_hooks(cfg)
    assert len(hooks) == 1
    # ... and resume replays the augmentation (exact masks after a crash).
    assert [h['type'] for h in cfg.custom_hooks].count('ExactResumeHook') == 1
    if name.startswith(('demo/', 'fashion_mnist/', 'fashion_mnist_full/')):
        return  # own short schedules (tests/e2e/test_fashion_mnist.py)
    windows, alpha, beta, tau, epochs = PAPER_SCHEDULES[_task(name)]
    hook = HOOKS.build(hooks[0])
    assert type(hook).__name__ == 'ELAPruningHook'
    assert hook.windows == windows
    assert hook.method == 'ebqm'
    assert (hook.params['alpha'], hook.params['beta'], hook.tau) == \
        (alpha, beta, tau)
    assert cfg.train_cfg.max_epochs == epochs


@pytest.mark.parametrize('name', [n for n in CONFIGS if '_ela_' not in n
                                  and not n.startswith('demo/')])
def test_baselines_do_not_prune(name):
    assert _ela_hooks(_load(name)) == []


@pytest.mark.parametrize('name', ['cifar/resnet56_ela_cifar10.py',
                                  'cifar/resnet110_plain_cifar100.py'])
def test_cifar_recipe(name):
    """The standard CIFAR ResNet recipe (MRLA's and ELA's): batch 128,
    SGD 0.1 / 0.9 / 1e-4, 180 epochs, lr x0.1 at 90 and 135."""
    cfg = _load(name)
    classes = 100 if name.endswith('cifar100.py') else 10
    assert cfg.model.head.num_classes == classes
    assert cfg.model.head.in_channels == 256
    assert cfg.data_preprocessor.num_classes == classes
    assert cfg.train_dataloader.dataset.type == f'CIFAR{classes}'
    assert cfg.train_dataloader.batch_size == 128
    assert cfg.optim_wrapper.optimizer == dict(
        type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4,
        _scope_='mmpretrain')
    assert cfg.param_scheduler.type == 'MultiStepLR'
    assert (cfg.param_scheduler.milestones, cfg.param_scheduler.gamma) == \
        ([90, 135], 0.1)
    assert cfg.train_cfg.max_epochs == 180


# ----------------------------------------------------- pretrained weights
class _Records(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _init_backbone(name, checkpoint, prefix=None):
    """The detection config's backbone, initialised through its init_cfg
    with ``checkpoint`` in place of the torchvision one; returns it and the
    keys mmengine reported missing / unexpected."""
    cfg = _load(name)
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    assert backbone_cfg.init_cfg.type == 'Pretrained'
    backbone_cfg.init_cfg.checkpoint = str(checkpoint)
    if prefix:
        backbone_cfg.init_cfg.prefix = prefix
    backbone = MODELS.build(backbone_cfg)
    handler = _Records()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        backbone.init_weights()
    finally:
        logger.removeHandler(handler)
    reported = {'missing': set(), 'unexpected': set()}
    for message in handler.messages:
        for kind, pattern in [('missing', r'missing keys in source '
                               r'state_dict: (.*)'),
                              ('unexpected', r'unexpected key in source '
                               r'state_dict: (.*)')]:
            for match in re.finditer(pattern, message):
                reported[kind] |= set(match.group(1).split(', '))
    return backbone, reported


def _without_bn_counters(keys):
    """mmengine does not report BN's ``num_batches_tracked`` as missing."""
    return {k for k in keys if not k.endswith('num_batches_tracked')}


def _assert_resnet_weights_loaded(backbone, resnet_state):
    state = backbone.state_dict()
    for key, value in resnet_state.items():
        if key in state:
            assert torch.equal(state[key], value), key


@pytest.mark.parametrize('name', ['faster_rcnn_ela_r50_fpn_1x_coco.py',
                                  'mask_rcnn_mrla_light_r50_fpn_1x_coco.py'])
def test_torchvision_checkpoint_loads_with_only_layer_attention_missing(
        tmp_path, name):
    torchvision = pytest.importorskip('torchvision')
    resnet_state = torchvision.models.resnet50().state_dict()
    checkpoint = tmp_path / 'resnet50_torchvision.pth'
    torch.save(resnet_state, checkpoint)

    backbone, reported = _init_backbone(name, checkpoint)
    expected_missing = set(backbone.state_dict()) - set(resnet_state)
    assert expected_missing and all('layer_attention' in key
                                    for key in expected_missing)
    assert reported['missing'] == _without_bn_counters(expected_missing)
    assert reported['unexpected'] == {'fc.weight', 'fc.bias'}
    _assert_resnet_weights_loaded(backbone, resnet_state)


def test_mmpretrain_checkpoint_loads_with_prefix(tmp_path):
    pytest.importorskip('mmpretrain')
    init_default_scope('mmpretrain')
    classifier = MODELS.build(
        _load('imagenet/resnet50_mrla_light_8xb32_in1k.py').model)
    init_default_scope('mmpretrain')
    stock = MODELS.build(dict(type='ResNet', depth=50))
    state = {f'backbone.{k}': v for k, v in stock.state_dict().items()}
    state['head.fc.weight'] = classifier.head.fc.weight.detach()
    checkpoint = tmp_path / 'resnet50_mmpretrain.pth'
    torch.save(dict(state_dict=state, meta=dict()), checkpoint)

    backbone, reported = _init_backbone('faster_rcnn_ela_r50_fpn_1x_coco.py',
                                        checkpoint, prefix='backbone.')
    assert reported['missing'] and all('layer_attention' in key
                                       for key in reported['missing'])
    assert reported['missing'] == _without_bn_counters(
        set(backbone.state_dict()) - {k[len('backbone.'):] for k in state})
    assert not reported['unexpected']
    _assert_resnet_weights_loaded(
        backbone, {k[len('backbone.'):]: v for k, v in state.items()
                   if k.startswith('backbone.')})


def test_our_imagenet_ela_checkpoint_loads_completely(tmp_path):
    """An ImageNet ELA classifier (trained with our ImageNet config) gives
    the detector every backbone weight, layer attention and masks
    included: retrievals pruned on ImageNet stay pruned."""
    pytest.importorskip('mmpretrain')
    classifier = MODELS.build(
        _load('imagenet/resnet50_ela_8xb32_in1k.py').model)
    masks = classifier.backbone.get_masks()
    masks[1][2] = False  # as if ImageNet's windows had pruned layer2.2
    classifier.backbone.set_masks(masks)
    checkpoint = tmp_path / 'resnet50_ela_in1k.pth'
    torch.save(dict(state_dict=classifier.state_dict(), meta=dict()),
               checkpoint)

    backbone, reported = _init_backbone('faster_rcnn_ela_r50_fpn_1x_coco.py',
                                        checkpoint, prefix='backbone.')
    assert not reported['missing'] and not reported['unexpected']
    _assert_resnet_weights_loaded(
        backbone, {k[len('backbone.'):]: v
                   for k, v in classifier.state_dict().items()
                   if k.startswith('backbone.')})
    assert not backbone.get_masks()[1][2]
    assert backbone.num_retrievals()['on'] == \
        backbone.num_retrievals()['total'] - 1
