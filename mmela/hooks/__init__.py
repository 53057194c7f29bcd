from ..models import check_backbone
from ..pruning import parse_windows
from .ela_pruning_hook import ELAPruningError, ELAPruningHook
from .exact_resume_hook import ExactResumeHook, SeededDataset
from .split_size_hook import SplitSizeHook

__all__ = [
    'ELAPruningError', 'ELAPruningHook', 'ExactResumeHook', 'SeededDataset',
    'SplitSizeHook', 'check_backbone', 'parse_windows'
]
