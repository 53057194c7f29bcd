"""Measurement windows: the epochs over which ELA averages the divergences
before each pruning decision (paper Section 4: e.g. epochs 1-3, 45-48 and
91-93 on CIFAR)."""
from typing import List, Optional, Sequence, Tuple, Union

Window = Tuple[int, int]  # (first_epoch, last_epoch), 1-based, inclusive


def parse_windows(windows: Sequence[Union[int, Sequence[int]]]) -> List[Window]:
    """``[1, (3, 5)]`` -> ``[(1, 1), (3, 5)]``, checked: 1-based, each
    ``first <= last``, in order and not overlapping.

    Raises:
        ValueError: Naming the window that is wrong.
    """
    if isinstance(windows, (int, str)) or not windows:
        raise ValueError(f'windows must be a non-empty list of epochs or '
                         f'(first_epoch, last_epoch) pairs, got {windows!r}')
    parsed = []
    for window in windows:
        if isinstance(window, int):
            window = (window, window)
        if len(window) != 2 or not all(isinstance(e, int) for e in window):
            raise ValueError(f'each window must be an epoch or a '
                             f'(first_epoch, last_epoch) pair, got {window!r}')
        first, last = window
        if not 1 <= first <= last:
            raise ValueError(f'window {tuple(window)}: epochs are 1-based and '
                             f'first_epoch <= last_epoch')
        if parsed and first <= parsed[-1][1]:
            raise ValueError(f'windows must be in order and must not '
                             f'overlap: {parsed[-1]} then {tuple(window)}')
        parsed.append((first, last))
    return parsed


def format_windows(windows: Sequence[Window]) -> str:
    """``[(1, 3), (7, 7)]`` -> ``'1-3, 7'``."""
    return ', '.join(f'{a}' if a == b else f'{a}-{b}' for a, b in windows)


def window_of(windows: Sequence[Window], epoch: int) -> Optional[Window]:
    """The window that holds ``epoch`` (1-based), or None."""
    for window in windows:
        if window[0] <= epoch <= window[1]:
            return window
    return None
