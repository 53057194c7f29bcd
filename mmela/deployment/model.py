"""Deploying a trained (ELA) model: a config's model with its checkpoint's
masks, the part of it that is exported, the exporters (ONNX and
torch.export), and writing a file whole or not at all.

The exported part is

- for an mmpretrain classifier, the whole network: images in, logits out;
- for an mmdet detector, the backbone and the neck (the part layer attention
  changes): images in, one feature map per level out.

Both start with the config's data preprocessor's channel flip and
mean / std normalisation, so the graph takes images as the test pipeline
produces them (float pixel values, the channel order they were loaded in).
Resizing, cropping and (mmdet) padding to a multiple of 32 stay outside.

Layer attention runs its ``'reference'`` implementation (stock operators)
here, whatever ``MMELA_LA_IMPL`` says, and :func:`drop_pruned_retrievals`
removes the modules of pruned retrievals, so neither their operators nor
their weights reach an exported graph.
"""
import contextlib
import os.path as osp
import re
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils._sympy.numbers import int_oo  # torch.export's "no limit"

from ..compat import allow_mmengine_checkpoint_types
from ..models import (BaseLayerAttention, LightLayerAttention,
                      set_layer_attention_impl)
from ..utils.atomic_write import atomic_path

CODEBASES = ('mmpretrain', 'mmdet')
INPUT_NAME = 'images'


class DeployError(ValueError):
    """A problem with the user's input, said in one line."""


# ------------------------------------------------------------ files
@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """:func:`~mmela.utils.atomic_write.atomic_path`, with the temporary
    file keeping the extension of ``path``, and a missing folder said in
    one line."""
    folder = osp.dirname(osp.abspath(path))
    if not osp.isdir(folder):
        raise DeployError(f'{path}: the folder {folder} does not exist')
    with atomic_path(path, suffix='.partial' + osp.splitext(path)[1]) as tmp:
        yield tmp


def require_file(path: str, what: str) -> None:
    if not osp.exists(path):
        raise DeployError(f'{what} {path} does not exist')
    if not osp.isfile(path):
        raise DeployError(f'{what} {path} is not a file')
    if osp.getsize(path) == 0:
        raise DeployError(f'{what} {path} is empty (0 bytes)')


def load_checkpoint_file(path: str) -> dict:
    """A checkpoint read on the CPU with mmengine's loader (as training
    wrote it: ``state_dict``, ``meta``, ...; a bare state dict becomes
    ``{'state_dict': ...}``)."""
    from mmengine.runner.checkpoint import _load_checkpoint
    require_file(path, 'checkpoint')
    # A Runner's checkpoint holds mmengine's log buffers and numpy values
    # beside the weights; the safe loader reads them once allowed.
    allow_mmengine_checkpoint_types()
    try:
        checkpoint = _load_checkpoint(path, map_location='cpu',
                                      logger='silent')
    except Exception as e:  # any reader error means a broken file
        reason = ' '.join(str(e).split()).split('. ')[0][:160] or \
            type(e).__name__
        raise DeployError(f'checkpoint {path} cannot be read (not a PyTorch '
                          f'checkpoint, or truncated: {reason})') from None
    if not isinstance(checkpoint, dict):
        raise DeployError(f'checkpoint {path} holds a '
                          f'{type(checkpoint).__name__}, not a checkpoint')
    if 'state_dict' not in checkpoint:
        checkpoint = dict(state_dict=checkpoint)
    state = checkpoint['state_dict']
    if not isinstance(state, dict) or \
            not any(isinstance(v, Tensor) for v in state.values()):
        raise DeployError(f'checkpoint {path} holds no model weights (no '
                          f'state_dict of tensors)')
    return checkpoint


# ----------------------------------------------------------- model
def load_config(path: str, cfg_options: Optional[dict] = None):
    """The config with ``--cfg-options`` merged, and its codebase
    (``'mmpretrain'`` or ``'mmdet'``, from ``default_scope``)."""
    from mmengine.config import Config
    require_file(path, 'config')
    try:
        cfg = Config.fromfile(path)
    except Exception as e:
        raise DeployError(f'config {path} cannot be loaded: '
                          f'{type(e).__name__}: {e}') from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    codebase = cfg.get('default_scope')
    if codebase not in CODEBASES or 'model' not in cfg:
        raise DeployError(f'config {path}: expected an mmpretrain or mmdet '
                          f'model config (default_scope {codebase!r})')
    return cfg, codebase


def build_model(cfg, codebase: str) -> nn.Module:
    """The config's model on the CPU, in eval mode, weights not
    initialised."""
    from mmengine.registry import init_default_scope
    init_default_scope(codebase)
    if codebase == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    model_cfg = cfg.model.copy()
    # As mmengine's Runner does: mmpretrain configs keep the preprocessor
    # at the top level.
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    return MODELS.build(model_cfg).eval()


_SIZE_MISMATCH = re.compile(
    r'size mismatch for (\S+): copying a param with shape '
    r'torch.Size\(\[(.*?)\]\) from checkpoint, the shape in current model '
    r'is torch.Size\(\[(.*?)\]\)')


def load_weights(model: nn.Module, state: Dict[str, Tensor],
                 path: str) -> None:
    """Load a state dict strictly (the retrieval masks with it), as one
    ``error:`` line when it does not fit."""
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that differ
        reshaped = _SIZE_MISMATCH.findall(str(e))
        if not reshaped:
            raise
        key, theirs, ours = reshaped[0]
        raise DeployError(
            f'checkpoint {path} does not fit the config\'s model: '
            f'{len(reshaped)} weights of another shape ({key}: checkpoint '
            f'({theirs}), model ({ours})); is it a checkpoint of this '
            f'config?') from None
    problems = [f'{len(keys)} {kind} ({", ".join(keys[:3])}'
                f'{", ..." if len(keys) > 3 else ""})'
                for kind, keys in (('missing', result.missing_keys),
                                   ('unexpected', result.unexpected_keys))
                if keys]
    if problems:
        raise DeployError(f'checkpoint {path} does not fit the config\'s '
                          f'model: weights {"; ".join(problems)}')


def load_model(config: str, checkpoint: str,
               cfg_options: Optional[dict] = None
               ) -> Tuple[nn.Module, str]:
    """The config's model with the checkpoint's weights and masks, in eval
    mode, running layer attention's ``'reference'`` implementation; and
    its codebase."""
    cfg, codebase = load_config(config, cfg_options)
    state = load_checkpoint_file(checkpoint)['state_dict']
    set_layer_attention_impl('reference')
    model = build_model(cfg, codebase)
    load_weights(model, state, checkpoint)
    return model.eval(), codebase


class Normalize(nn.Module):
    """The data preprocessor's channel flip (BGR to RGB) and mean / std
    normalisation, as mmengine's and mmpretrain's preprocessors apply them
    to a batch tensor (they flip 3-channel images only)."""

    def __init__(self, preprocessor: Optional[nn.Module], channels: int):
        super().__init__()
        self.flip = channels == 3 and bool(
            getattr(preprocessor, 'to_rgb', False)
            or getattr(preprocessor, '_channel_conversion', False))
        normalize = getattr(preprocessor, '_enable_normalize', False)
        self.register_buffer(
            'mean', preprocessor.mean.clone() if normalize else None)
        self.register_buffer(
            'std', preprocessor.std.clone() if normalize else None)

    def forward(self, images: Tensor) -> Tensor:
        if self.flip:
            images = images.flip(1)
        if self.mean is not None:
            images = (images - self.mean) / self.std
        return images

    def extra_repr(self) -> str:
        return f'flip_channels={self.flip}, ' \
            f'normalize={self.mean is not None}'


class BackboneNeckGraph(nn.Module):
    """An mmdet detector's backbone and neck: images in, a tuple of feature
    maps out (the input of its heads)."""
    kind = 'detector backbone + neck (images -> feature maps)'

    def __init__(self, model: nn.Module):
        super().__init__()
        self.normalize = Normalize(
            getattr(model, 'data_preprocessor', None),
            input_channels(model.backbone))
        self.backbone = model.backbone
        self.neck = model.neck if getattr(model, 'with_neck', False) \
            else None

    def features(self, images: Tensor):
        feats = self.backbone(self.normalize(images))
        return feats if self.neck is None else self.neck(feats)

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        return tuple(self.features(images))


class ClassifierGraph(BackboneNeckGraph):
    """An mmpretrain classifier: images in, logits out."""
    kind = 'classifier (images -> logits)'

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.head = model.head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def deployable(model: nn.Module, codebase: str) -> nn.Module:
    """The part of ``model`` that is exported (see the module docstring)."""
    if getattr(model, 'backbone', None) is None:
        raise DeployError(f'{type(model).__name__} has no backbone: only '
                          f'classifiers and detectors can be exported')
    if codebase == 'mmpretrain':
        if getattr(model, 'head', None) is None:
            raise DeployError(f'{type(model).__name__} has no head: only '
                              f'mmpretrain classifiers can be exported')
        return ClassifierGraph(model).eval()
    return BackboneNeckGraph(model).eval()


def input_channels(module: nn.Module) -> int:
    """Channels of the images ``module`` takes: its first conv's input."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise DeployError(f'{type(module).__name__} has no Conv2d')


# ------------------------------------------------- layer attention
def layer_attention_blocks(module: nn.Module
                           ) -> List[Tuple[str, nn.Module]]:
    """``(name, layer attention)`` of every block that has one."""
    return [(name, m) for name, m in module.named_modules()
            if isinstance(m, (LightLayerAttention, BaseLayerAttention))]


def retrieval_counts(module: nn.Module) -> Dict[str, int]:
    """How many blocks have layer attention, and how many of those
    retrievals are on and pruned."""
    blocks = layer_attention_blocks(module)
    on = sum(m.retrieval_on for _, m in blocks)
    return dict(blocks=len(blocks), on=on, pruned=len(blocks) - on)


def drop_pruned_retrievals(module: nn.Module) -> List[str]:
    """Remove the layer attention of every pruned block (a block without
    one runs as the stock block, exactly as a pruned one does); returns
    the removed modules' names."""
    dropped = []
    for name, attention in layer_attention_blocks(module):
        if not attention.retrieval_on:
            parent, _, child = name.rpartition('.')
            delattr(module.get_submodule(parent), child)
            dropped.append(name)
    return dropped


# ---------------------------------------------------------- export
def dynamic_shapes() -> dict:
    dynamic = torch.export.Dim.DYNAMIC
    return {INPUT_NAME: {0: dynamic, 2: dynamic, 3: dynamic}}


def output_names(module: nn.Module, example: Tensor) -> List[str]:
    with torch.no_grad():
        out = module(example)
    if isinstance(out, Tensor):
        return ['logits']
    return [f'feat{i}' for i in range(len(out))]


def export_onnx(module: nn.Module, example: Tensor,
                path: str) -> torch.export.ExportedProgram:
    """``torch.onnx.export(dynamo=True)`` with dynamic batch, height and
    width, into one file (weights inside); returns the program it
    exported."""
    program = torch.onnx.export(
        module, (example, ), dynamo=True, dynamic_shapes=dynamic_shapes(),
        input_names=[INPUT_NAME],
        output_names=output_names(module, example), verbose=False)
    program.save(path, external_data=False)
    return program.exported_program


def export_program(module: nn.Module, example: Tensor,
                   path: str) -> torch.export.ExportedProgram:
    """``torch.export.export`` with dynamic batch, height and width, saved
    with ``torch.export.save``."""
    program = torch.export.export(module, (example, ),
                                  dynamic_shapes=dynamic_shapes())
    torch.export.save(program, path)
    return program


def input_ranges(program: torch.export.ExportedProgram
                 ) -> Dict[str, Tuple[int, Optional[int]]]:
    """The sizes of the input's batch, height and width the exported graph
    accepts, ``(min, max)`` with None for no limit, as torch.export
    derived them from the example (a feature map of size 1 in the example
    fixes the size; a dimension it fixed has min = max)."""
    [node] = [n for n in program.graph.nodes
              if n.op == 'placeholder' and n.name == INPUT_NAME]
    ranges = {}
    for name, dim in zip(('batch', 'height', 'width'),
                         (node.meta['val'].shape[i] for i in (0, 2, 3))):
        if not isinstance(dim, torch.SymInt):
            ranges[name] = (int(dim), int(dim))
            continue
        bounds = program.range_constraints[dim.node.expr]
        upper = None if bounds.upper == int_oo else int(bounds.upper)
        ranges[name] = (int(bounds.lower), upper)
    return ranges
