"""A window in progress, in a checkpoint: every rank's sums so far, and how
a resumed run continues them.

mmengine writes checkpoints at the end of an epoch, and a resumed run starts
at the next one, so the sums at an epoch's end are all a window needs to go
on as if nothing had happened. Each rank keeps its own sums (its share of
the window's iterations); they are added up only at the window's end.
"""
from typing import List, NamedTuple, Optional, Sequence

import numpy as np

from .measurement import WindowMeasurement
from .windows import Window, format_windows


def progress_entry(window: Window, pairs: Sequence, rank_totals) -> dict:
    """The checkpoint's record of a window in progress;
    ``rank_totals`` holds every rank's :meth:`WindowMeasurement.totals`."""
    num = len(pairs)
    return dict(window=list(window), pairs=list(pairs),
                ranks=[dict(kl_sum=list(map(float, t[:num])),
                            used=list(map(float, t[num:2 * num])),
                            iterations=int(t[-1])) for t in rank_totals])


def legacy_progress(state: dict, window: Optional[Window]) -> Optional[dict]:
    """The progress of a checkpoint written before every rank's sums were
    saved (rank 0's only, in ``window``, the one that holds its epoch)."""
    if state.get('pairs') is None or window is None:
        return None
    iterations = state['iterations']
    return dict(window=list(window), pairs=state['pairs'],
                ranks=[dict(kl_sum=state['kl_sum'],
                            used=[iterations] * len(state['kl_sum']),
                            iterations=iterations)])


class Restored(NamedTuple):
    window: Optional[Window]  # None: nothing to continue
    measurement: Optional[WindowMeasurement]  # this rank's sums
    warnings: List[str]


def restore_progress(progress: dict, windows: Sequence[Window], epoch: int,
                     eps: float, world_size: int, rank: int) -> Restored:
    """Continue the checkpoint's window if ``windows`` still has it (the
    same first epoch, ending after ``epoch``), else discard its sums with a
    warning: they belong to a window this config does not measure."""
    old = tuple(progress['window'])
    window = next((w for w in windows if w[0] == old[0] and w[1] > epoch),
                  None)
    ranks = progress['ranks']
    if window is None:
        measured = sum(r['iterations'] for r in ranks)
        return Restored(None, None, [
            f'the checkpoint was written after epoch {epoch}, inside window '
            f'{format_windows([old])} ({measured} iterations measured), '
            f'which the configured windows {format_windows(windows)} do not '
            f'continue; those measurements are discarded'])
    measurement = WindowMeasurement(progress['pairs'], eps)
    totals = [np.concatenate([r['kl_sum'], r['used'], [r['iterations']]])
              for r in ranks]
    if len(ranks) == world_size:
        measurement.load_totals(totals[rank])
        return Restored(window, measurement, [])
    # Same sums, one rank holding them: the window mean is the same up to
    # float rounding (a different world size changes the data order anyway).
    measurement.load_totals(np.sum(totals, axis=0) * (rank == 0))
    return Restored(window, measurement, [
        f'the checkpoint holds the sums of {len(ranks)} ranks, this run has '
        f'{world_size}; rank 0 continues with all of them'])


def resume_warnings(windows: Sequence[Window], reports: Sequence[dict],
                    epoch: int, in_progress: Optional[Window]) -> List[str]:
    """What a run resumed after ``epoch`` will not measure as configured:
    windows that ended unmeasured, and windows that began without sums."""
    done = {tuple(r['window']) for r in reports}
    warnings = []
    for first, last in windows:
        window = format_windows([(first, last)])
        if last <= epoch and (first, last) not in done:
            warnings.append(
                f'window {window} ends at or before epoch {epoch}, where the '
                f'resumed checkpoint was written, and was not measured by the '
                f'run that wrote it; it is skipped')
        elif first <= epoch < last and in_progress != (first, last):
            warnings.append(
                f'window {window} began before epoch {epoch}, where the '
                f'resumed checkpoint was written, without measurements in '
                f'it; it averages epochs {epoch + 1}-{last} only')
    return warnings
