"""Deploying a trained (ELA) model: the exported graph, the exporters and
deploy checkpoints without pruned retrievals (``tools/deployment/``)."""
from .model import (DeployError, deployable, drop_pruned_retrievals,
                    export_onnx, export_program, load_model,
                    retrieval_counts)
from .strip import strip_checkpoint, strip_state_dict

__all__ = [
    'DeployError', 'deployable', 'drop_pruned_retrievals', 'export_onnx',
    'export_program', 'load_model', 'retrieval_counts', 'strip_checkpoint',
    'strip_state_dict'
]
