"""Replay a run's pruning decisions offline, with its setting or another.

``ela_pruning.json`` holds every window's mean divergences. Applying
:func:`~mmela.pruning.decide` to them window by window gives the masks the
hook would have left with another method, tau or parameters, without
retraining, as long as each window's pairs are the ones the run measured:
the hook forms a window's pairs from the retrievals still on, so a setting
that prunes differently in an earlier window would have measured other
pairs later, whose divergences were never recorded. The replay stops
there.
"""
from typing import Dict, List, Optional, Tuple

from .decision import Masks, adjacent_pairs, decide
from .report import (ReportError, report_divergences, report_pairs,
                     stage_index, stage_name)


def initial_masks(reports: List[dict]) -> Masks:
    """The masks before the first window: the first report's masks with
    every block of the first window's pairs on (they were, to be paired)."""
    masks = [[bool(on) for on in stage] for stage in reports[0]['masks']]
    names = reports[0].get('stages')
    for pair in reports[0]['pairs']:
        stage = masks[stage_index(pair['stage'], len(masks), names)]
        for block in (pair['previous_block'], pair['block']):
            if not 0 <= block < len(stage):
                raise ReportError(f'pair {pair} names a block outside its '
                                  f'stage ({len(stage)} blocks)')
            stage[block] = True
    return masks


def replay(reports: List[dict], method: str, tau: float,
           params: Dict[str, float], windows: Optional[int] = None) -> dict:
    """Apply one setting to the recorded divergences, window by window.

    Returns a dict with ``method``, ``tau``, ``params`` and ``windows``: per
    window ``window`` (epochs), ``pruned`` (``[stage, block]`` pruned in it),
    ``retrievals_on``, ``retrievals_total`` and ``masks`` after it; and
    ``stopped_at``: the first window (from 1) whose pairs differ from the
    recorded ones, or None.
    """
    masks = initial_masks(reports)
    total = sum(len(stage) for stage in masks)
    result = dict(method=method, tau=tau, params=dict(params), windows=[],
                  stopped_at=None)
    for number, report in enumerate(reports[:windows], start=1):
        pairs = report_pairs(report, len(masks))
        if pairs != adjacent_pairs(masks):
            result['stopped_at'] = number
            break
        decision = decide(masks, pairs, report_divergences(report), method,
                          tau, **params)
        pruned = [[stage_name(p['stage']), block]
                  for p, (_, _, block), kept in zip(report['pairs'], pairs,
                                                    decision.keep)
                  if not kept]
        masks = decision.masks
        result['windows'].append(dict(
            window=report.get('window'), pruned=pruned,
            retrievals_on=sum(map(sum, masks)), retrievals_total=total,
            masks=[[int(on) for on in stage] for stage in masks]))
    return result


def recorded_setting(reports: List[dict]) -> Tuple[str, float, dict]:
    """The method, tau and parameters the run decided with."""
    first = reports[0]
    return first['method'], first['tau'], dict(first['params'])


def reproduces(reports: List[dict]) -> Tuple[bool, Optional[int]]:
    """Whether the run's own setting gives the masks the hook recorded;
    also the first window (from 1) where it does not."""
    method, tau, params = recorded_setting(reports)
    result = replay(reports, method, tau, params)
    for number, (report, mine) in enumerate(
            zip(reports, result['windows']), start=1):
        if [[int(bool(on)) for on in stage]
                for stage in report['masks']] != mine['masks']:
            return False, number
    if len(result['windows']) < len(reports):
        return False, len(result['windows']) + 1
    return True, None
