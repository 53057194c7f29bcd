"""Re-threshold a run's measured divergences offline, without retraining.

``ELAPruningHook`` writes ``<work_dir>/ela_pruning.json``: per window, the
mean KL divergence of every adjacent pair of retrieving blocks and the masks
it left. This tool applies other pruning methods and taus to those
divergences and prints, for each, which retrievals would be pruned and how
many would stay on, exactly as the hook would have decided:
:func:`mmela.pruning.decide` on each window's divergences, ANDed into the
masks of the windows before (a pruned retrieval never comes back); see
:mod:`mmela.pruning.replay`.

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
import sys
from typing import List, Tuple

from ..pruning import (PRUNING_METHODS, REPORT_FILE, ReportError,
                       format_params, load_reports, method_parameters,
                       recorded_setting, replay, reproduces)
from ..utils.atomic_write import write_json_atomic


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
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
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
        results = [replay(reports, method, tau, params, args.windows)
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
