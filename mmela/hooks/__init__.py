from .ela_pruning_hook import (ELAPruningError, ELAPruningHook, check_backbone,
                               parse_windows)
from .exact_resume_hook import ExactResumeHook, SeededDataset

__all__ = [
    'ELAPruningError', 'ELAPruningHook', 'ExactResumeHook', 'SeededDataset',
    'check_backbone', 'parse_windows'
]
