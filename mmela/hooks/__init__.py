from .ela_pruning_hook import ELAPruningHook, parse_windows

__all__ = ['ELAPruningHook', 'parse_windows']
