"""mmela: Efficient Layer Attention (ELA) for MMDetection and MMPretrain.

``custom_imports = dict(imports=['mmela'])`` in a config registers the
layer-attention backbones (``ELAResNet``, ``ELAResNeXt``, ... in the
config codebase's registry, and ``ELAResNetCIFAR``) and the
``ELAPruningHook``.
"""
from .hooks import ELAPruningHook  # noqa: F401 (registers the hooks)
from .models import *  # noqa: F401,F403 (registers the backbones)

__version__ = '0.1.0'
