"""Summarize the runs of tools/experiments/fashion_mnist.sh.

Reads each run's work dir (mmengine's ``vis_data/scalars.json``, the
``test.json`` metrics of tools/test.py, ELAPruningHook's ``ela_pruning.json``
and the wall-clock seconds the script recorded) and writes into ``--out-dir``:

- ``fashion_mnist.md``: top-1 (validation and test) mean +- std per method,
  retrievals kept, training time per epoch as ratios to plain and to MRLA-B,
  ELA's time after pruning against what its pruned fraction predicts, and the
  Table 4 mask-stability ablation;
- ``fashion_mnist/<run>.json``: the figures of each run;
- ``fashion_mnist.png``: test top-1 against training time, one point per run.

The ablation applies, to the first window's divergences of every seed, the
run's EBQM setting, a fixed count and a raw KL threshold, with
:mod:`mmela.pruning`'s replay (the hook's own decision rule).
The fixed count is EBQM's mean number pruned, rounded, and the threshold is
the KL value that prunes that many on average over all seeds pooled: both
are calibrated on the very divergences they are judged on, which favours
them, not EBQM.
"""
import argparse
import datetime
import glob
import itertools
import json
import os
import os.path as osp
import platform
import re
import subprocess
import sys
from typing import Dict, List, Optional

import numpy as np

from mmela import pruning
from mmela.utils.atomic_write import write_atomic

NAMES = dict(plain='ResNet (plain)', mrla_base='MRLA-B', mrla_light='MRLA-L',
             ela='ELA')
COLOURS = dict(plain='tab:gray', mrla_base='tab:blue', mrla_light='tab:orange',
               ela='tab:green')


class SummaryError(Exception):
    pass


# ------------------------------------------------------------- one run
def read_scalars(work_dir: str) -> List[dict]:
    """mmengine's logged scalars of every (re)start of a training run, in
    order; a resumed run repeats no step, a later start wins if it did."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    by_key = {}
    for path in files:
        with open(path) as f:
            for line in f:
                if line.strip():
                    entry = json.loads(line)
                    kind = 'train' if 'loss' in entry else 'val'
                    by_key[kind, entry.get('step')] = entry
    return [by_key[k] for k in sorted(by_key, key=lambda k: (k[1], k[0]))]


def epoch_seconds(scalars: List[dict]) -> Dict[int, float]:
    """Training seconds of each epoch: the mean logged iteration time (data
    loading, forward, backward, update and the hooks, e.g. ELA's KL) times
    the epoch's iterations."""
    train = [e for e in scalars if 'loss' in e and 'time' in e]
    result, last_iter = {}, 0
    for epoch, entries in itertools.groupby(train, key=lambda e: e['epoch']):
        entries = list(entries)
        end = max(e['iter'] for e in entries)
        result[epoch] = float(np.mean([e['time'] for e in entries])) * (
            end - last_iter)
        last_iter = end
    return result


SPLIT_LINE = re.compile(r'\b(train|val|test) split: (\w+), (\d+) samples')
# What each split must hold (the config's indices; the smoke version's
# overrides in fashion_mnist.sh).
EXPECTED_SAMPLES = dict(train=2560, val=10000, test=10000)
SMOKE_SAMPLES = dict(train=64, val=16, test=64)


def split_sizes(work_dir: str) -> Dict[str, int]:
    """The sample count of each split, as SplitSizeHook logged it in the
    run's train.log and test.log (the last line per split)."""
    sizes = {}
    for log in ('train.log', 'test.log'):
        path = osp.join(work_dir, log)
        if osp.isfile(path):
            with open(path, errors='replace') as f:
                for match in SPLIT_LINE.finditer(f.read()):
                    sizes[match.group(1)] = int(match.group(3))
    return sizes


def check_split_sizes(work_dir: str, sizes: Dict[str, int],
                      expected: Dict[str, int]) -> None:
    for split, want in expected.items():
        if split not in sizes:
            raise SummaryError(
                f'{work_dir}: no sample count of the {split} split in its '
                f'train.log / test.log: the run predates SplitSizeHook or '
                f'did not finish; delete {work_dir} and rerun '
                f'tools/experiments/fashion_mnist.sh')
        if sizes[split] != want:
            raise SummaryError(
                f'{work_dir}: the {split} split read {sizes[split]} samples, '
                f'expected {want} (SplitSizeHook lines in train.log / '
                f'test.log); check the config\'s {split}_dataloader, then '
                f'delete {work_dir} and rerun')


def read_seconds(path: str) -> float:
    if not osp.isfile(path):
        return 0.0
    with open(path) as f:
        return float(sum(float(x) for x in f.read().split()))


def summarize_run(root: str, method: str, seed: int, after_epoch: int,
                  expected_samples: Dict[str, int]) -> dict:
    name = f'{method}_seed{seed}'
    wd = osp.join(root, name)
    if not osp.isfile(osp.join(wd, 'train.done')):
        raise SummaryError(f'{wd} has not finished training; rerun '
                           f'tools/experiments/fashion_mnist.sh')
    samples = split_sizes(wd)
    check_split_sizes(wd, samples, expected_samples)
    scalars = read_scalars(wd)
    seconds = epoch_seconds(scalars)
    if not seconds:
        raise SummaryError(f'{wd}: no training iterations logged in '
                           f'*/vis_data/scalars.json')
    val = [e['accuracy/top1'] for e in scalars if 'accuracy/top1' in e]
    with open(osp.join(wd, 'test.json')) as f:
        test = json.load(f)
    run = dict(
        run=name, method=method, seed=seed, samples=samples,
        val_top1=val[-1] if val else None,
        test_top1=test['accuracy/top1'],
        epochs=len(seconds),
        epoch_seconds=[round(seconds[e], 3) for e in sorted(seconds)],
        mean_epoch_seconds=float(np.mean(list(seconds.values()))),
        train_seconds=float(sum(seconds.values())),
        mean_epoch_seconds_after_pruning=float(np.mean(
            [s for e, s in seconds.items() if e > after_epoch]
            or [np.nan])),
        train_wall_seconds=read_seconds(osp.join(wd, 'train_seconds')),
        test_wall_seconds=read_seconds(osp.join(wd, 'test_seconds')))
    report_file = osp.join(wd, 'ela_pruning.json')
    if osp.isfile(report_file):
        _, reports = pruning.load_reports(report_file)
        ok, _ = pruning.reproduces(reports)
        run.update(
            retrievals_on=reports[-1]['retrievals_on'],
            retrievals_total=reports[-1]['retrievals_total'],
            pruned=[[pruning.stage_name(p['stage']), p['block']]
                    for r in reports for p in r['pairs'] if not p['kept']],
            masks=reports[-1]['masks'],
            rethreshold_reproduces_masks=ok)
    return run


# ------------------------------------------------------------ ablation
def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; two empty sets agree completely (1.0)."""
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def stability(pruned_sets: List[set]) -> dict:
    counts = [len(s) for s in pruned_sets]
    pairs = list(itertools.combinations(pruned_sets, 2))
    return dict(
        counts=counts, count_min=min(counts), count_max=max(counts),
        count_std=float(np.std(counts)),
        mean_jaccard=float(np.mean([jaccard(a, b) for a, b in pairs]))
        if pairs else None)


def ablation(root: str, runs: List[str],
             train_samples: Optional[int] = None) -> Optional[dict]:
    """EBQM, fixed count and raw threshold on each run's first window."""
    if len(runs) < 2:
        return None
    first = {}
    for name in runs:
        if train_samples is not None:
            wd = osp.join(root, name)
            check_split_sizes(wd, split_sizes(wd), dict(train=train_samples))
        _, reports = pruning.load_reports(osp.join(root, name))
        first[name] = reports[:1]
    method, tau, params = pruning.recorded_setting(first[runs[0]])

    def pruned(name, method, tau, params):
        result = pruning.replay(first[name], method, tau, params,
                                         windows=1)
        return {tuple(p) for p in result['windows'][0]['pruned']}

    ebqm_sets = [pruned(n, method, tau, params) for n in runs]
    mean_count = float(np.mean([len(s) for s in ebqm_sets]))
    num_pruned = int(round(mean_count))
    pooled = np.sort(np.concatenate(
        [[p['kl'] for p in first[n][0]['pairs']] for n in runs]))
    # The threshold that prunes num_pruned per seed on average: halfway
    # between the pooled divergences ranked k and k+1, k = num_pruned * seeds.
    k = num_pruned * len(runs)
    if k == 0:
        kl_tau = float(pooled[0]) / 2 if pooled[0] > 0 else 0.0
    elif k >= len(pooled):
        kl_tau = float(pooled[-1]) * 2 + 1e-12
    else:
        kl_tau = float(pooled[k - 1] + pooled[k]) / 2
    settings = [
        ('EBQM', method, tau, params, f'{method} tau={tau:g} '
         f'{pruning.format_params(params)} (the ELA runs\' setting)'),
        ('raw threshold', 'threshold', kl_tau, {},
         f'keep KL >= {kl_tau:.4g}'),
        ('fixed count', 'fixed', 0.0, dict(num_pruned=num_pruned),
         f'prune the {num_pruned} lowest KL'),
    ]
    rows = []
    for label, m, t, p, description in settings:
        sets = [pruned(n, m, t, p) for n in runs]
        row = dict(label=label, method=m, tau=t, params=p,
                   description=description,
                   pruned={n: sorted(f'{s}.{b}' for s, b in sets[i])
                           for i, n in enumerate(runs)})
        row.update(stability(sets))
        rows.append(row)
    seeds = {}
    for name in runs:
        with open(osp.join(root, name, 'seed')) as f:
            seeds[name] = int(f.read())
    return dict(runs=runs, seeds=seeds,
                num_pairs=len(first[runs[0]][0]['pairs']), rows=rows)


# -------------------------------------------------------------- output
def mean_std(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    return f'{np.mean(values):.2f} ± {np.std(values):.2f}'


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True,
                             check=False).stdout
        for line in out.splitlines():
            if line.startswith('Model name:'):
                cpu = line.split(':', 1)[1].strip()
    except OSError:
        pass
    import torch
    threads = os.environ.get('OMP_NUM_THREADS', 'default')
    return (f'{cpu}, {os.cpu_count()} CPU cores, no GPU, torch '
            f'{torch.__version__} (OMP_NUM_THREADS={threads}), '
            f'{platform.system()} {platform.release()}')


def starts(root: str) -> List[str]:
    """The script's start lines (time, threads, load average) so far."""
    path = osp.join(root, 'progress.log')
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return [line.strip() for line in f if ' start (' in line]


def plot(runs: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method in NAMES:
        mine = [r for r in runs if r['method'] == method]
        if mine:
            ax.scatter([r['train_seconds'] / 60 for r in mine],
                       [r['test_top1'] for r in mine],
                       color=COLOURS[method], label=NAMES[method])
    ax.set_xlabel('training time (min, sum of logged iteration times)')
    ax.set_ylabel('test top-1 (%)')
    ax.set_title('Fashion-MNIST, ResNet-38, one point per run')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def markdown(runs: List[dict], abl: Optional[dict], args,
             total_seconds: float, windows) -> str:
    by_method = {m: [r for r in runs if r['method'] == m]
                 for m in args.methods}
    mean_epoch = {m: np.mean([r['mean_epoch_seconds'] for r in rs])
                  for m, rs in by_method.items() if rs}

    def ratio(m, ref):
        return f'{mean_epoch[m] / mean_epoch[ref]:.2f}' \
            if ref in mean_epoch else '-'

    lines = [
        '# Fashion-MNIST: ELA against plain, MRLA-B and MRLA-L',
        '',
        ('**SMOKE RUN (tiny data, a few iterations): these numbers only show '
         'that the pipeline works.**\n' if args.smoke else '') +
        f'Produced by `bash tools/experiments/fashion_mnist.sh` on '
        f'{datetime.datetime.utcnow():%Y-%m-%d} (UTC). '
        f'Machine: {machine()}. '
        f'Total run time of the experiment (all trainings and tests, '
        f'wall clock): {total_seconds / 60:.1f} min. The command was '
        f'started {len(starts(args.root))} time(s): ' +
        '; '.join(f'`{line}`' for line in starts(args.root)) + '.',
        '',
        f'ResNet-{args.depth} (`configs/fashion_mnist/`), seeds '
        f'{" ".join(map(str, args.seeds))}; ELA windows (epochs) '
        f'{windows}. ' + (
            'Smoke splits: the first 64 training images train, the last 16 '
            'validate, 64 test images test.' if args.smoke else
            'Training: the first 2,560 training images; validation: the last '
            '10,000; test: the 10,000 test images, evaluated once per run by '
            'tools/test.py.') +
        ' Samples read, as logged by every run (SplitSizeHook) and checked: ' +
        ', '.join(f'{split} {n}' for split, n in (
            SMOKE_SAMPLES if args.smoke else EXPECTED_SAMPLES).items()) +
        f' ({len(runs)} runs).',
        '',
        '| method | runs | val top-1 | test top-1 | retrievals on (mean; '
        'per seed) | s / epoch | vs plain | vs MRLA-B |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for m, rs in by_method.items():
        if not rs:
            continue
        if 'retrievals_on' in rs[0]:
            kept = (f"{np.mean([r['retrievals_on'] for r in rs]):.1f} of "
                    f"{rs[0]['retrievals_total']}; " +
                    ' '.join(str(r['retrievals_on']) for r in rs))
        else:
            kept = 'all' if m != 'plain' else '-'
        lines.append(
            f"| {NAMES[m]} | {len(rs)} | "
            f"{mean_std([r['val_top1'] for r in rs])} | "
            f"{mean_std([r['test_top1'] for r in rs])} | {kept} | "
            f"{mean_epoch[m]:.1f} | {ratio(m, 'plain')} | "
            f"{ratio(m, 'mrla_base')} |")
    lines += ['', 'Top-1 in %, mean ± std over seeds. s / epoch: training '
              'time per epoch (logged iteration times), mean over all epochs '
              'and seeds; ratios are of these means, measured in this '
              'experiment on this machine.', '']
    per_seed = ['| run | val top-1 | test top-1 | s / epoch | retrievals on |',
                '|---|---|---|---|---|']
    for r in runs:
        on = f"{r['retrievals_on']}/{r['retrievals_total']}" \
            if 'retrievals_on' in r else '-'
        val = '-' if r['val_top1'] is None else f"{r['val_top1']:.2f}"
        per_seed.append(f"| {r['run']} | {val} | {r['test_top1']:.2f} | "
                        f"{r['mean_epoch_seconds']:.1f} | {on} |")
    lines += ['Per run:', ''] + per_seed + ['']

    after = {m: np.nanmean([r['mean_epoch_seconds_after_pruning']
                            for r in rs]) for m, rs in by_method.items() if rs}
    if all(m in after for m in ('plain', 'mrla_light', 'ela')) and \
            by_method['ela'] and 'retrievals_on' in by_method['ela'][0]:
        ela = by_method['ela']
        kept = np.mean([r['retrievals_on'] / r['retrievals_total']
                        for r in ela])
        predicted = after['plain'] + (after['mrla_light'] - after['plain']) \
            * kept
        lines += [
            f'Speed after the last window (epochs > {windows[-1][1]}): plain '
            f"{after['plain']:.1f} s/epoch, MRLA-L {after['mrla_light']:.1f}, "
            f"ELA {after['ela']:.1f} with {kept:.0%} of the retrievals on. "
            f'If a retrieval costs the same wherever it is, ELA would take '
            f"plain + {kept:.0%} of (MRLA-L - plain) = {predicted:.1f} s/epoch.",
            '']
    if abl:
        lines += [
            '## Mask stability across seeds (paper Table 4, first window)',
            '',
            f"{len(abl['runs'])} seeds "
            f"({', '.join(f'{n} (seed {s})' for n, s in abl['seeds'].items())}"
            f"), {abl['num_pairs']} adjacent pairs each. Each rule is applied "
            'offline (tools/analysis/pruning.py) to the same measured '
            'divergences. The fixed count and the raw threshold are '
            "calibrated to EBQM's mean number pruned on these very "
            'divergences, which favours them.',
            '',
            '| rule | setting | number pruned per seed | spread (max - min) '
            '| mean Jaccard of pruned sets |',
            '|---|---|---|---|---|',
        ]
        for row in abl['rows']:
            jac = '-' if row['mean_jaccard'] is None else \
                f"{row['mean_jaccard']:.2f}"
            lines.append(
                f"| {row['label']} | {row['description']} | "
                f"{' '.join(map(str, row['counts']))} | "
                f"{row['count_max'] - row['count_min']} | {jac} |")
        lines.append('')
        lines.append('Pruned retrievals (stage.block) per seed:')
        lines.append('')
        for row in abl['rows']:
            lines.append(f"- {row['label']}: " + '; '.join(
                f"{n}: {' '.join(p) or '-'}"
                for n, p in row['pruned'].items()))
        lines.append('')
    lines += ['![test top-1 against training time](fashion_mnist.png)', '']
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='WORK_ROOT of fashion_mnist.sh')
    parser.add_argument('--methods', nargs='+', required=True,
                        choices=list(NAMES))
    parser.add_argument('--seeds', nargs='+', type=int, required=True)
    parser.add_argument('--ablation-runs', nargs='*', default=[])
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--config-dir', default='configs/fashion_mnist')
    parser.add_argument('--depth', type=int, default=38)
    parser.add_argument('--smoke', action='store_true')
    return parser.parse_args(argv)


def ela_windows(args) -> list:
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(
        args.config_dir, f'resnet{args.depth}_ela_fashion_mnist.py'))
    hook = [h for h in cfg.custom_hooks if h['type'] == 'ELAPruningHook'][0]
    return [tuple(w) if not isinstance(w, int) else (w, w)
            for w in hook['windows']]


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        windows = ela_windows(args)
        expected = SMOKE_SAMPLES if args.smoke else EXPECTED_SAMPLES
        runs = [summarize_run(args.root, m, s, windows[-1][1], expected)
                for s in args.seeds for m in args.methods]
        runs.sort(key=lambda r: (list(NAMES).index(r['method']), r['seed']))
        abl = ablation(args.root, args.ablation_runs, expected['train'])
    except (SummaryError, pruning.ReportError, OSError,
            ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    total = sum(read_seconds(p) for p in glob.glob(
        osp.join(args.root, '*', '*_seconds')))
    run_dir = osp.join(args.out_dir, 'fashion_mnist')
    for run in runs:
        write_atomic(osp.join(run_dir, f"{run['run']}.json"),
                     json.dumps(run, indent=2) + '\n')
    if abl:
        write_atomic(osp.join(run_dir, 'ablation.json'),
                     json.dumps(abl, indent=2) + '\n')
    plot(runs, osp.join(args.out_dir, 'fashion_mnist.png'))
    write_atomic(osp.join(args.out_dir, 'fashion_mnist.md'),
                 markdown(runs, abl, args, total, windows))
    print(f"wrote {osp.join(args.out_dir, 'fashion_mnist.md')} "
          f'({len(runs)} runs, total run time {total / 60:.1f} min)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
