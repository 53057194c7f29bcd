from .ela_pruning_hook import (ELAPruningError, ELAPruningHook, check_backbone,
                               parse_windows)
from .exact_resume_hook import ExactResumeHook, SeededDataset
from .split_size_hook import SplitSizeHook

__all__ = [
    'ELAPruningError', 'ELAPruningHook', 'ExactResumeHook', 'SeededDataset',
    'SplitSizeHook', 'check_backbone', 'parse_windows'
]
