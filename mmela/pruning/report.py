"""``ela_pruning.json``: the report ``ELAPruningHook`` writes after every
window, and reads back.

The file is a JSON list, one entry per window, each with:

- ``window`` (``[first, last]`` epochs), ``epoch`` (the decision's),
  ``method``, ``tau``, ``params``: the decision's setting;
- ``iterations`` measured and ``skipped`` pair measurements (not finite);
- ``stages``: the stage names (``layer1``, ...);
- ``pairs``: per adjacent pair ``stage`` (a name), ``previous_block``,
  ``block``, ``kl`` (the window's mean divergence, Eq. 11), ``mapped`` (the
  method's score), ``kept`` and ``skipped``;
- ``retrievals_on``, ``retrievals_total`` and ``masks`` (per stage, 0/1 per
  block) after the decision;
- ``layer_attention_impl``: the implementation that ran in the window.
"""
import json
import os.path as osp
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..utils.atomic_write import write_json_atomic
from .decision import Decision, Pair
from .measurement import WindowMeasurement
from .windows import Window

REPORT_FILE = 'ela_pruning.json'
_PAIR_KEYS = {'stage', 'previous_block', 'block', 'kl', 'kept'}
_REPORT_KEYS = ('pairs', 'masks', 'method', 'tau', 'params')


class ReportError(ValueError):
    """A report cannot be read; the message says why and what to do."""


def window_report(window: Window, method: str, tau: float, params: dict,
                  measurement: WindowMeasurement, decision: Decision,
                  stages: Sequence[str], impl: str) -> dict:
    """One window's entry of the report."""
    skipped = measurement.skipped()
    on = sum(map(sum, decision.masks))
    return dict(
        window=list(window), epoch=window[1], method=method, tau=tau,
        params=dict(params), iterations=measurement.iterations,
        skipped=sum(skipped), stages=list(stages),
        pairs=[dict(stage=stages[s], previous_block=a, block=b,
                    kl=float(kl), mapped=float(m), kept=bool(k), skipped=n)
               for (s, a, b), kl, m, k, n in zip(
                   measurement.pairs, measurement.mean(), decision.mapped,
                   decision.keep, skipped)],
        retrievals_on=int(on),
        retrievals_total=sum(len(m) for m in decision.masks),
        masks=[[int(b) for b in m] for m in decision.masks],
        layer_attention_impl=impl)


def format_report(report: dict) -> str:
    """A readable table of one window's pruning decisions."""
    lines = [
        f"ELA pruning, window epochs {report['window'][0]}-"
        f"{report['window'][1]} ({report['iterations']} iterations, "
        f"{report.get('skipped', 0)} pair measurements skipped as not "
        f"finite, method={report['method']}, tau={report['tau']}):",
        f"{'stage':>8} {'block':>5} {'mean KL':>10} {'mapped':>8} "
        f"{'skipped':>7}  decision"
    ]
    for pair in report['pairs']:
        lines.append(f"{pair['stage']:>8} {pair['block']:>5} "
                     f"{pair['kl']:>10.4g} {pair['mapped']:>8.4f} "
                     f"{pair.get('skipped', 0):>7}  "
                     f"{'kept' if pair['kept'] else 'pruned'}")
    lines.append(f"retrievals on: {report['retrievals_on']} of "
                 f"{report['retrievals_total']}")
    return '\n'.join(lines)


def write_reports(path: str, reports: List[dict]) -> None:
    """Write the report (every window so far) atomically."""
    write_json_atomic(path, reports)


def load_reports(path: str) -> Tuple[str, List[dict]]:
    """The per-window reports of a run (its work dir or its JSON file),
    checked for the keys a replay needs.

    Raises:
        ReportError: In one line, naming the file and what to do.
    """
    if osp.isdir(path):
        path = osp.join(path, REPORT_FILE)
    if not osp.isfile(path):
        raise ReportError(f'{path} does not exist; give a work dir of a run '
                          f'with ELAPruningHook or its {REPORT_FILE}')
    try:
        with open(path) as f:
            reports = json.load(f)
    except (OSError, ValueError) as e:
        raise ReportError(f'{path} is not readable JSON ({e}); rerun the '
                          f'window or restore the file') from None
    if not isinstance(reports, list) or not reports:
        raise ReportError(f'{path} holds no window reports (expected a '
                          f'non-empty list as ELAPruningHook writes)')
    for i, report in enumerate(reports):
        missing = [k for k in _REPORT_KEYS
                   if not isinstance(report, dict) or k not in report]
        bad_pair = not missing and any(
            not isinstance(p, dict) or not _PAIR_KEYS <= set(p)
            for p in report['pairs'])
        if missing or bad_pair:
            what = f'key(s) {missing}' if missing else 'a well-formed pair'
            raise ReportError(f'{path}: window report {i + 1} lacks {what}; '
                              f'is it an {REPORT_FILE} of ELAPruningHook?')
    return path, reports


def stage_index(stage, num_stages: int,
                names: Optional[Sequence[str]] = None) -> int:
    """Index into the masks of a pair's ``stage``: an int, or the stage's
    name (looked up in the report's ``stages``, else ``'layer<k>'`` is
    stage k - 1)."""
    index = None
    if isinstance(stage, int) and not isinstance(stage, bool):
        index = stage
    elif isinstance(stage, str) and names and stage in names:
        index = list(names).index(stage)
    elif isinstance(stage, str):
        match = re.fullmatch(r'layer(\d+)', stage)
        index = int(match.group(1)) - 1 if match else None
    if index is None or not 0 <= index < num_stages:
        raise ReportError(f'pair stage {stage!r} is neither a stage index '
                          f'nor one of the {num_stages} stage names')
    return index


def format_params(params: dict) -> str:
    """``alpha=5,beta=1,gamma=0.5``: a method's parameters, sorted."""
    return ','.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}'
                    for k, v in sorted(params.items())) or '-'


def stage_name(stage) -> str:
    return stage if isinstance(stage, str) else f'layer{stage + 1}'


def report_pairs(report: dict, num_stages: int) -> List[Pair]:
    """A report's pairs as ``(stage index, previous block, block)``."""
    names = report.get('stages')
    return [(stage_index(p['stage'], num_stages, names), p['previous_block'],
             p['block']) for p in report['pairs']]


def report_divergences(report: dict) -> np.ndarray:
    return np.array([p['kl'] for p in report['pairs']], dtype=np.float64)
