"""Re-threshold a run's measured divergences offline, without retraining.

``ELAPruningHook`` writes ``<work_dir>/ela_pruning.json``: per window, the
mean KL divergence of every adjacent pair of retrieving blocks and the masks
it left. This tool applies other pruning methods and taus to those
divergences and prints, for each, which retrievals would be pruned and how
many would stay on, exactly as the hook would have decided:
:func:`mmela.pruning.keep_mask` on each window's divergences, ANDed into the
masks of the windows before (a pruned retrieval never comes back).

The hook forms each window's pairs from the retrievals still on, so a later
window's divergences were measured only for the masks the run really had.
When a setting prunes differently in an earlier window, a later window's
pairs would differ and their divergences were never measured: the tool says
so and stops that setting there (``--windows 1`` looks at the first window
only).

Without ``--method`` it re-applies the run's own setting, and with
``--check`` exits with status 1 unless that reproduces the recorded masks.

Examples::

    python tools/analysis/rethreshold.py work_dirs/ela_r56 --check
    python tools/analysis/rethreshold.py work_dirs/ela_r56/ela_pruning.json \\
        --method ebqm threshold --tau 0.1 0.2 0.3 --param alpha=5 beta=1
    python tools/analysis/rethreshold.py RUN --method fixed --num-pruned 2 4 \\
        --windows 1 --json out.json
"""
import argparse
import json
import os
import os.path as osp
import re
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import warnings

import numpy as np

# setuptools >= 80 warns on every import of pkg_resources, which mmengine and
# mmcv do at import time; the warning is not actionable for users here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from mmela.pruning import PRUNING_METHODS, keep_mask  # noqa: E402
from mmela.pruning.functional import (EBQM_MAPPINGS,  # noqa: E402
                                      QUANTILE_MAPPINGS)

REPORT_FILE = 'ela_pruning.json'
Masks = List[List[bool]]


class ReportError(Exception):
    """The report cannot be read; the message says why and what to do."""


# ------------------------------------------------------------- reading
def load_reports(path: str) -> Tuple[str, List[dict]]:
    """The per-window reports of a run (a work dir or its JSON file)."""
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
        missing = [k for k in ('pairs', 'masks', 'method', 'tau', 'params')
                   if not isinstance(report, dict) or k not in report]
        bad_pair = not missing and any(
            not isinstance(p, dict) or not
            {'stage', 'previous_block', 'block', 'kl', 'kept'} <= set(p)
            for p in report['pairs'])
        if missing or bad_pair:
            what = f'key(s) {missing}' if missing else 'a well-formed pair'
            raise ReportError(f'{path}: window report {i + 1} lacks {what}; '
                              f'is it an {REPORT_FILE} of ELAPruningHook?')
    return path, reports


def stage_index(stage, num_stages: int,
                names: Optional[Sequence[str]] = None) -> int:
    """Index into the masks of a pair's ``stage``: an int, or the stage's
    name as newer reports write it (looked up in the report's ``stages``,
    else ``'layer<k>'`` is stage k - 1)."""
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


def stage_name(stage) -> str:
    return stage if isinstance(stage, str) else f'layer{stage + 1}'


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


def adjacent_pairs(masks: Masks) -> List[Tuple[int, int, int]]:
    """(stage, previous block, block) of consecutive retrievals that are on:
    the pairs the hook measures in a window that starts with ``masks``."""
    pairs = []
    for stage, mask in enumerate(masks):
        on = [block for block, kept in enumerate(mask) if kept]
        pairs += [(stage, a, b) for a, b in zip(on, on[1:])]
    return pairs


# ------------------------------------------------------------ applying
def method_parameters(method: str) -> Sequence[str]:
    """The parameters :func:`keep_mask` accepts for ``method``."""
    if method in EBQM_MAPPINGS:
        return ('gamma', *EBQM_MAPPINGS[method].defaults)
    if method in QUANTILE_MAPPINGS:
        return tuple(QUANTILE_MAPPINGS[method].defaults)
    return ('num_pruned', ) if method == 'fixed' else ()


def rethreshold(reports: List[dict], method: str, tau: float,
                params: Dict[str, float],
                windows: Optional[int] = None) -> dict:
    """Apply one setting to the recorded divergences, window by window.

    Returns a dict with ``method``, ``tau``, ``params`` and ``windows``: per
    window ``window`` (epochs), ``pruned`` (``[stage, block]`` pruned in it),
    ``retrievals_on``, ``retrievals_total`` and ``masks`` after it. It stops
    before the first window whose pairs differ from the recorded ones
    (``stopped_at`` gives that window's number, from 1), since their
    divergences were never measured.
    """
    masks = initial_masks(reports)
    total = sum(len(stage) for stage in masks)
    result = dict(method=method, tau=tau, params=dict(params), windows=[],
                  stopped_at=None)
    for number, report in enumerate(reports[:windows], start=1):
        pairs = report['pairs']
        names = report.get('stages')
        indexed = [(stage_index(p['stage'], len(masks), names),
                    p['previous_block'], p['block']) for p in pairs]
        if indexed != adjacent_pairs(masks):
            result['stopped_at'] = number
            break
        kl = np.array([p['kl'] for p in pairs], dtype=np.float64)
        keep = keep_mask(kl, method, tau, **params) if len(kl) else []
        pruned = []
        for pair, (stage, _, block), kept in zip(pairs, indexed, keep):
            if not kept:
                pruned.append([stage_name(pair['stage']), block])
                masks[stage][block] = False
        result['windows'].append(dict(
            window=report.get('window'), pruned=pruned,
            retrievals_on=sum(map(sum, masks)), retrievals_total=total,
            masks=[[int(on) for on in stage] for stage in masks]))
    return result


def recorded_setting(reports: List[dict]) -> Tuple[str, float, dict]:
    first = reports[0]
    return first['method'], first['tau'], dict(first['params'])


def reproduces(reports: List[dict]) -> Tuple[bool, Optional[int]]:
    """Whether the run's own setting gives the masks the hook recorded;
    also the first window (from 1) where it does not."""
    method, tau, params = recorded_setting(reports)
    result = rethreshold(reports, method, tau, params)
    for number, (report, mine) in enumerate(
            zip(reports, result['windows']), start=1):
        if [[int(bool(on)) for on in stage]
                for stage in report['masks']] != mine['masks']:
            return False, number
    if len(result['windows']) < len(reports):
        return False, len(result['windows']) + 1
    return True, None


def settings(args, reports: List[dict]) -> List[Tuple[str, float, dict]]:
    """(method, tau, params) of every setting the command line asks for."""
    run_method, run_tau, run_params = recorded_setting(reports)
    if not args.method:
        return [(run_method, run_tau, run_params)]
    overrides = dict(args.param or [])
    result = []
    for method in args.method:
        accepted = method_parameters(method)
        base = dict(run_params) if method == run_method else {}
        base.update({k: v for k, v in overrides.items() if k in accepted})
        base = {k: v for k, v in base.items() if k in accepted}
        if method == 'fixed':
            if not args.num_pruned:
                raise ReportError("method 'fixed' needs --num-pruned N [N ...]")
            result += [(method, 0.0, dict(base, num_pruned=n))
                       for n in args.num_pruned]
            continue
        for tau in args.tau or [run_tau]:
            result.append((method, tau, base))
    return result


# ------------------------------------------------------------- output
def format_params(params: dict) -> str:
    return ','.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}'
                    for k, v in sorted(params.items())) or '-'


def format_result(result: dict) -> List[str]:
    tau = '-' if result['method'] == 'fixed' else f"{result['tau']:g}"
    head = f"{result['method']:<12} {tau:>6} {format_params(result['params']):<28}"
    lines = []
    for number, window in enumerate(result['windows'], start=1):
        epochs = window['window']
        epochs = f'{epochs[0]}-{epochs[1]}' if epochs else str(number)
        pruned = ' '.join(f'{s}.{b}' for s, b in window['pruned']) or '-'
        lines.append(f"{head} {epochs:>7} {window['retrievals_on']:>3}/"
                     f"{window['retrievals_total']:<3}  {pruned}")
        head = ' ' * len(head)
    if result['stopped_at']:
        lines.append(f"{head} window {result['stopped_at']} on: not measured "
                     f'(this setting pruned differently before it)')
    return lines


def write_json_atomic(path: str, data) -> None:
    directory = osp.dirname(osp.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.rethreshold.',
                               suffix='.tmp')
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f, indent=2)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def key_value(text: str) -> Tuple[str, float]:
    key, sep, value = text.partition('=')
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not key or number is None:
        raise argparse.ArgumentTypeError(
            f'expected NAME=NUMBER (e.g. alpha=5), got {text!r}')
    return key, int(number) if number.is_integer() and '.' not in value \
        else number


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Print which retrievals other pruning methods and taus '
        "would prune, from a run's ela_pruning.json, without retraining")
    parser.add_argument('run', help=f'work dir of the run, or its '
                        f'{REPORT_FILE}')
    parser.add_argument('--method', nargs='+', choices=PRUNING_METHODS,
                        help="methods to apply (default: the run's own)")
    parser.add_argument('--tau', nargs='+', type=float,
                        help="taus to apply to each method but 'fixed' "
                        "(default: the run's); KL units for 'threshold'")
    parser.add_argument('--num-pruned', nargs='+', type=int,
                        help="counts for method 'fixed'")
    parser.add_argument('--param', nargs='+', type=key_value,
                        help='method parameters NAME=NUMBER (e.g. alpha=5 '
                        'beta=1 gamma=0.5), given to each method that takes '
                        "them; the run's own method keeps the run's values "
                        'unless overridden')
    parser.add_argument('--windows', type=int,
                        help='only the first N windows')
    parser.add_argument('--check', action='store_true',
                        help="exit with status 1 unless the run's own "
                        'setting reproduces the masks the hook recorded')
    parser.add_argument('--json', help='also write the results to this file')
    args = parser.parse_args(argv)
    if args.windows is not None and args.windows < 1:
        parser.error('--windows must be >= 1')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        path, reports = load_reports(args.run)
        ok, first_bad = reproduces(reports)
        results = [rethreshold(reports, method, tau, params, args.windows)
                   for method, tau, params in settings(args, reports)]
    except (ReportError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    method, tau, params = recorded_setting(reports)
    print(f'{path}: {len(reports)} window(s), recorded with {method} '
          f'tau={tau:g} {format_params(params)}')
    print("the run's own setting reproduces the recorded masks: " +
          ('yes' if ok else f'NO (window {first_bad} differs)'))
    print(f"{'method':<12} {'tau':>6} {'params':<28} {'epochs':>7} "
          f"{'on':>7}  pruned (stage.block)")
    for result in results:
        print('\n'.join(format_result(result)))
    if args.json:
        write_json_atomic(args.json, dict(run=path, reproduces=ok,
                                          results=results))
    return 1 if args.check and not ok else 0


if __name__ == '__main__':
    sys.exit(main())
