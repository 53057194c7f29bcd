from .ela_pruning_hook import ELAPruningHook, check_backbone, parse_windows

__all__ = ['ELAPruningHook', 'check_backbone', 'parse_windows']
