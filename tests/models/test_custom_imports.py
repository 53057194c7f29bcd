"""What a user does: add ``custom_imports`` to a config they already have."""
import importlib
import subprocess
import sys

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

DET_CONFIG = """
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmela'], allow_failed_imports=False)
model = dict(backbone=dict(type='ELAResNet', layer_attention='light'))
custom_hooks = [dict(type='ELAPruningHook', windows=[1, 7], tau=0.2)]
"""

CLS_CONFIG = """
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
custom_imports = dict(imports=['mmela'], allow_failed_imports=False)
model = dict(backbone=dict(type='ELAResNet', layer_attention='base'))
custom_hooks = [dict(type='ELAPruningHook', windows=[(1, 3), (51, 53)],
                     tau=0.25)]
"""


@pytest.mark.parametrize('text,package', [(DET_CONFIG, 'mmdet'),
                                          (CLS_CONFIG, 'mmpretrain')])
def test_existing_config_with_custom_imports_builds_ela(tmp_path, text,
                                                        package):
    pytest.importorskip(package)
    path = tmp_path / 'user_config.py'
    path.write_text(text)
    cfg = Config.fromfile(str(path))  # imports mmela via custom_imports
    assert cfg.default_scope == package
    init_default_scope(cfg.default_scope)
    from mmengine.registry import HOOKS, MODELS
    model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == 'ELAResNet'
    # The config's codebase decides which ELAResNet: its own ResNet's.
    stock = importlib.import_module(f'{package}.models.backbones').ResNet
    assert isinstance(model.backbone, stock)
    assert model.backbone.layer_attention == cfg.model.backbone.layer_attention
    # Untouched stock settings are still there.
    assert model.backbone.depth == 50
    hook = HOOKS.build(cfg.custom_hooks[0])
    assert type(hook).__name__ == 'ELAPruningHook'


@pytest.mark.parametrize('missing,present', [
    (['mmdet'], 'mmpretrain'), (['mmpretrain'], 'mmdet'),
    (['mmdet', 'mmpretrain'], None)])
def test_mmela_imports_with_one_codebase_or_none(missing, present):
    code = ''.join(f'sys.modules[{name!r}] = None; ' for name in missing)
    code = (f'import sys; {code}import mmela; '
            f'from mmela.models import ELAResNetCIFAR; ELAResNetCIFAR(20); '
            f'from mmela.pruning import keep_mask; ')
    if present:
        code += (f'from {present}.registry import MODELS; '
                 f"MODELS.build(dict(type='ELAResNet', depth=18))")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_importing_mmela_patches_nothing():
    """``import mmela`` registers classes and leaves mmengine's and torch's
    functions as they were (the compatibility fixes are installed by the
    tools and the hook that need them)."""
    # The codebases first: importing them registers torch's own types.
    code = '''
import mmengine.runner, mmdet.models, mmpretrain.models
import mmengine.dist.utils as utils, torch.serialization as ser
init, safe = utils._init_dist_pytorch, list(ser.get_safe_globals())
import mmela, mmela.models, mmela.hooks, mmela.pruning, mmela.cli
assert utils._init_dist_pytorch is init, 'init_dist patched'
assert list(ser.get_safe_globals()) == safe, 'safe globals changed'
from mmela.cli import prepare_stack
prepare_stack()  # what the tools do: now both change
assert utils._init_dist_pytorch is not init
assert len(ser.get_safe_globals()) > len(safe)
'''
    result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
