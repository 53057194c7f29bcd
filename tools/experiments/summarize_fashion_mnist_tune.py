"""Summarize tools/experiments/fashion_mnist_tune.sh (validation only).

    python tools/experiments/summarize_fashion_mnist_tune.py WORK_ROOT \\
        --out-dir docs/results
    python tools/experiments/summarize_fashion_mnist_tune.py WORK_ROOT \\
        --best-lr ela          # prints the grid's best lr of one method

Writes ``OUT_DIR/fashion_mnist_tune.md`` and ``.json``: the lr grid's
validation top-1 per method and the lr each method keeps (the rule, fixed
before the grid ran: plain's 0.05 unless a method's best beats it by more
than twice the seed-to-seed standard deviation of validation top-1 measured
in the windows phase); MRLA-B with its norm starting at 0 and without its
ReLU, against MRLA-B and plain; the windows ablation per seed with the mean,
the sample SD, a 95% t-interval and the difference to the default windows,
paired by seed. Every figure comes from the runs' work dirs (their logged
validation accuracy, ela_pruning.json and provenance.json).
"""
import argparse
import glob
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

import numpy as np

from mmela.utils.atomic_write import write_atomic
from mmela.utils.statistics import difference, mean_interval

DEFAULT_LR = '0.05'  # plain ResNet's, chosen on validation at batch 32
WINDOW_SETTINGS = ('1-4-7', '4-7', '7')  # the configs', then the ablation
NAMES = dict(plain='ResNet (plain)', mrla_base='MRLA-B', mrla_light='MRLA-L',
             ela='ELA')


class SummaryError(Exception):
    pass


def val_top1(work_dir: str) -> float:
    """The last validation top-1 a run logged (every (re)start's
    scalars.json)."""
    if not osp.isfile(osp.join(work_dir, 'train.done')):
        raise SummaryError(f'{work_dir} has not finished; rerun '
                           f'tools/experiments/fashion_mnist_tune.sh')
    last = None
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                          'scalars.json'))):
        with open(path) as f:
            for line in f:
                if '"accuracy/top1"' in line:
                    last = json.loads(line)['accuracy/top1']
    if last is None:
        raise SummaryError(f'{work_dir}: no validation accuracy logged')
    return float(last)


def retrievals(work_dir: str) -> Optional[int]:
    path = osp.join(work_dir, 'ela_pruning.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)[-1]['retrievals_on']


def commit(work_dir: str) -> str:
    path = osp.join(work_dir, 'provenance.json')
    if not osp.isfile(path):
        return 'unknown'
    with open(path) as f:
        info = json.load(f)
    return str(info.get('commit'))[:10] + ('+' if info.get('dirty') else '')


def grid(root: str, methods: List[str], lrs: List[str]) -> Dict[str, dict]:
    return {m: {lr: val_top1(osp.join(root, f'{m}_lr{lr}')) for lr in lrs}
            for m in methods}


def best(row: Dict[str, float]) -> str:
    """The lr with the highest validation top-1 (the smaller lr on a tie)."""
    return max(sorted(row, key=float), key=lambda lr: row[lr])


def windows(root: str, lr: str, seeds: List[int]) -> Dict[str, list]:
    result = {}
    for setting in WINDOW_SETTINGS:
        runs = []
        for seed in seeds:
            wd = osp.join(root, f'ela_windows{setting}_lr{lr}_seed{seed}')
            runs.append(dict(seed=seed, val_top1=val_top1(wd),
                             retrievals_on=retrievals(wd)))
        result[setting] = runs
    return result


def summarize(root: str, methods: List[str], lrs: List[str],
              seeds: List[int]) -> dict:
    table = grid(root, methods, lrs)
    summary = dict(grid=table, commits=sorted({
        commit(d) for d in glob.glob(osp.join(root, '*_lr*'))}))
    ela_lr = DEFAULT_LR  # the windows ablation's, fixed in advance
    win = windows(root, ela_lr, seeds)
    default = [r['val_top1'] for r in win['1-4-7']]
    seed_sd = float(np.std(default, ddof=1)) if len(default) > 1 else None
    summary['seed_sd'] = seed_sd
    chosen = {}
    for m, row in table.items():
        top = best(row)
        gain = row[top] - row.get(DEFAULT_LR, row[top])
        keep_default = DEFAULT_LR in row and (
            seed_sd is None or gain <= 2 * seed_sd)
        chosen[m] = dict(best=top, gain_over_default=gain,
                         lr=DEFAULT_LR if keep_default else top)
    summary['chosen'] = chosen
    base_lr = best(table['mrla_base']) if 'mrla_base' in table else None
    if base_lr is not None:
        summary['mrla_base'] = dict(
            lr=base_lr, default=table['mrla_base'][base_lr],
            plain=table['plain'][best(table['plain'])] if 'plain' in table
            else None,
            norm0=val_top1(osp.join(root, f'mrla_base_norm0_lr{base_lr}')),
            norelu=val_top1(osp.join(root, f'mrla_base_norelu_lr{base_lr}')))
    stats = {}
    for setting, runs in win.items():
        values = [r['val_top1'] for r in runs]
        stats[setting] = dict(
            estimate=mean_interval(values)._asdict(),
            retrievals_on=[r['retrievals_on'] for r in runs])
        if setting != '1-4-7' and len(values) > 1:
            stats[setting]['vs_default'] = difference(
                values, default, paired=True)._asdict()
    summary['windows'] = dict(lr=ela_lr, runs=win, stats=stats)
    return summary


def markdown(s: dict, smoke: bool) -> str:
    lrs = list(next(iter(s['grid'].values())))
    lines = ['# Fashion-MNIST: the choices, made on the validation split', '',
             ('**SMOKE RUN: these numbers only show that the pipeline '
              'works.**\n' if smoke else '') +
             'Produced by `bash tools/experiments/fashion_mnist_tune.sh` '
             f"from runs of commit {', '.join(s['commits'])}. Validation: "
             'the last 10,000 training images; the test split is never read '
             'here. ResNet-38, batch 32, 12 epochs, seed 0 for the grid.',
             '', '## Learning rate', '',
             '| method | ' + ' | '.join(f'lr {lr}' for lr in lrs) +
             ' | best | kept |', '|---|' + '---|' * (len(lrs) + 2)]
    for m, row in s['grid'].items():
        c = s['chosen'][m]
        lines.append(f'| {NAMES[m]} | ' + ' | '.join(
            f'{row[lr]:.2f}' for lr in lrs) + f" | {c['best']} | {c['lr']} |")
    sd = s['seed_sd']
    lines += ['', 'Validation top-1 (%), one run each. The rule, fixed '
              f'before the grid ran: keep plain\'s lr {DEFAULT_LR} unless a '
              "method's best beats it by more than twice the seed-to-seed "
              'SD of validation top-1 (ELA, default windows, '
              f"{len(s['windows']['runs']['1-4-7'])} seeds: SD "
              f"{'-' if sd is None else f'{sd:.2f}'} points).", '']
    if 'mrla_base' in s:
        b = s['mrla_base']
        lines += ['## MRLA-B', '',
                  f"At MRLA-B's best lr ({b['lr']}), seed 0:", '',
                  '| model | val top-1 |', '|---|---|',
                  f"| MRLA-B as published (norm starts at 1, ReLU) | "
                  f"{b['default']:.2f} |",
                  f"| norm starts at 0 | {b['norm0']:.2f} |",
                  f"| without the ReLU after the norm | {b['norelu']:.2f} |"]
        if b['plain'] is not None:
            lines.append(f"| plain ResNet, its best lr | {b['plain']:.2f} |")
        lines.append('')
    w = s['windows']
    lines += ['## Windows', '', f"ELA at lr {w['lr']}, seeds "
              f"{', '.join(str(r['seed']) for r in w['runs']['1-4-7'])}; "
              'windows fixed before any ran (the configs\' 1, 4, 7; the '
              'first window moved to a quarter of the way, 4 and 7; one '
              'window, 7):', '',
              '| windows (epochs) | val top-1 per seed | mean ± SD (ddof 1) '
              '[95% CI] | retrievals on per seed | - default, paired '
              '[95% CI] |', '|---|---|---|---|---|']
    for setting, st in w['stats'].items():
        e = st['estimate']
        est = f"{e['mean']:.2f}" if e['n'] < 2 else \
            f"{e['mean']:.2f} ± {e['sd']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"
        d = st.get('vs_default')
        diff = '-' if d is None else \
            f"{d['diff']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
        per_seed = ' '.join(format(r['val_top1'], '.2f')
                            for r in w['runs'][setting])
        kept = ' '.join(str(r) for r in st['retrievals_on'])
        lines.append(f"| {setting.replace('-', ', ')} | {per_seed} | {est} "
                     f'| {kept} | {diff} |')
    return '\n'.join(lines) + '\n'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root')
    parser.add_argument('--lrs', nargs='+', default=['0.025', '0.05', '0.1'])
    parser.add_argument('--methods', nargs='+', default=list(NAMES),
                        choices=list(NAMES))
    parser.add_argument('--window-seeds', nargs='+', type=int,
                        default=[0, 1, 2])
    parser.add_argument('--best-lr', choices=list(NAMES),
                        help='print the best lr of this method and stop')
    parser.add_argument('--out-dir')
    parser.add_argument('--smoke', action='store_true')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.best_lr:
            print(best(grid(args.root, [args.best_lr], args.lrs)[
                args.best_lr]))
            return 0
        summary = summarize(args.root, args.methods, args.lrs,
                            args.window_seeds)
    except (SummaryError, OSError, ValueError, KeyError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    write_atomic(osp.join(args.out_dir, 'fashion_mnist_tune.json'),
                 json.dumps(summary, indent=2) + '\n')
    write_atomic(osp.join(args.out_dir, 'fashion_mnist_tune.md'),
                 markdown(summary, args.smoke))
    print(f"wrote {osp.join(args.out_dir, 'fashion_mnist_tune.md')}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
