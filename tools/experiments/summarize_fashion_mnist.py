"""Summarize the runs of tools/experiments/fashion_mnist.sh.

Reads everything it prints from the runs' work dirs: ``provenance.json``
(commit, torch, CPU, threads, device; written when a run starts), the
logs (SplitSizeHook's sample counts, files and sha256 per split; the
layer-attention implementation that ran), the resolved config mmengine
dumped (the hook's settings), mmengine's ``vis_data/scalars.json``, the
``test.json`` metrics of tools/test.py, ELAPruningHook's
``ela_pruning.json`` (every window's divergences and decisions) and the
wall-clock seconds the script recorded. It refuses runs of different
commits unless ``--allow-mixed-commits``. Writes into ``--out-dir``:

- ``fashion_mnist.md``: top-1 (validation and test) per method as mean,
  sample standard deviation (ddof 1) and a 95% t-interval; the differences
  that matter (ELA vs MRLA-L, paired by seed: same architecture, data order
  and initialisation until the first window; ELA vs plain and MRLA-L vs
  plain, Welch) with 95% intervals and whether they are within noise;
  retrievals kept and test top-1 per run; how close each run's first
  decision was (its margin to tau, and how often a relative perturbation of
  1e-6, float32 rounding, of its divergences changes it); training time per
  epoch as ratios; the paper's Table 4 mask-stability ablation with the
  Jaccard agreement random subsets of the same sizes reach by chance;
- ``fashion_mnist/<run>.json``: the figures and the provenance of each run;
- ``fashion_mnist.png``: test top-1 against training time, and against
  retrievals kept, one point per run.

The ablation applies, to the first window's divergences of every seed, the
run's EBQM setting, a fixed count and a raw KL threshold, with
:mod:`mmela.pruning`'s replay (the hook's own decision rule). The fixed count
is EBQM's mean number pruned, rounded, and the threshold is the KL value that
prunes that many on average over all seeds pooled: both are calibrated on
the very divergences they are judged on, which favours them, not EBQM.
"""
import argparse
import datetime
import glob
import itertools
import json
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional

import numpy as np

from mmela import pruning
from mmela.utils.atomic_write import write_atomic
from mmela.utils.statistics import (difference, mean_interval,
                                    pairwise_jaccard)

NAMES = dict(plain='ResNet (plain)', mrla_base='MRLA-B', mrla_light='MRLA-L',
             ela='ELA')
COLOURS = dict(plain='tab:gray', mrla_base='tab:blue', mrla_light='tab:orange',
               ela='tab:green')
# (a, b, paired): the differences the report gives. ELA and MRLA-L of one
# seed share architecture, data order and initialisation up to ELA's first
# window; plain builds other weights from the same seed.
COMPARISONS = (('ela', 'mrla_light', True), ('ela', 'plain', False),
               ('mrla_light', 'plain', False))
PERTURBATION, PERTURBATION_DRAWS = 1e-6, 200


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


SPLIT_LINE = re.compile(r'\b(train|val|test) split: (\w+), (\d+) samples'
                        r'(?: \(test_mode=(\w+)\))?(?:; files: ([^\n]*))?')
FILE_ENTRY = re.compile(r'([\w.-]+) sha256=([0-9a-f]{64})')
IMPL_LINE = re.compile(r"layer attention: (MRLA-[LB]) runs the '(\w+)' "
                       r'implementation on (\w+)')


def _logs(work_dir: str) -> str:
    text = ''
    for log in ('train.log', 'test.log'):
        path = osp.join(work_dir, log)
        if osp.isfile(path):
            with open(path, errors='replace') as f:
                text += f.read() + '\n'
    return text


def splits(work_dir: str) -> Dict[str, dict]:
    """Per split, as SplitSizeHook logged it in the run's train.log and
    test.log (the last line per split): the dataset, its sample count,
    test_mode, and the files it read with their sha256."""
    found = {}
    for match in SPLIT_LINE.finditer(_logs(work_dir)):
        split, dataset, count, mode, files = match.groups()
        found[split] = dict(
            dataset=dataset, samples=int(count),
            test_mode=None if mode is None else mode == 'True',
            files=dict(FILE_ENTRY.findall(files or '')))
    return found


def check_splits(work_dir: str, found: Dict[str, dict],
                 expected: Dict[str, int]) -> None:
    for split, want in expected.items():
        if split not in found:
            raise SummaryError(
                f'{work_dir}: no sample count of the {split} split in its '
                f'train.log / test.log: the run predates SplitSizeHook or '
                f'did not finish; delete {work_dir} and rerun '
                f'tools/experiments/fashion_mnist.sh')
        if found[split]['samples'] != want:
            raise SummaryError(
                f'{work_dir}: the {split} split read '
                f"{found[split]['samples']} samples, expected {want} "
                f"(SplitSizeHook lines in train.log / test.log); check the "
                f"config's {split}_dataloader, then delete {work_dir} and "
                f'rerun')
    test_files = found.get('test', {}).get('files', {})
    if 'test' in expected and not all(n.startswith('t10k') for n in
                                       test_files or ['-']):
        raise SummaryError(f'{work_dir}: the test split read '
                           f'{sorted(test_files) or "no logged files"}, not '
                           f'the t10k files; delete {work_dir} and rerun')


def read_seconds(path: str) -> float:
    if not osp.isfile(path):
        return 0.0
    with open(path) as f:
        return float(sum(float(x) for x in f.read().split()))


def implementations(work_dir: str) -> List[str]:
    """The layer-attention implementations the run's log says ran."""
    return sorted({f'{kind} {impl} on {device}' for kind, impl, device in
                   IMPL_LINE.findall(_logs(work_dir))})


def resolved_config(work_dir: str):
    """The resolved config mmengine dumped into the work dir."""
    from mmengine.config import Config
    dumped = sorted(glob.glob(osp.join(work_dir, '*.py')))
    if not dumped:
        raise SummaryError(f'{work_dir}: no resolved config (*.py) in the '
                           f'work dir; rerun the run')
    return Config.fromfile(dumped[0])


def hook_settings(cfg) -> Optional[dict]:
    """ELAPruningHook's settings in a resolved config (None without it)."""
    hooks = [dict(h) for h in cfg.get('custom_hooks') or []
             if h.get('type') == 'ELAPruningHook']
    return hooks[0] if hooks else None


def read_provenance(work_dir: str) -> dict:
    path = osp.join(work_dir, 'provenance.json')
    if not osp.isfile(path):
        raise SummaryError(f'{work_dir}: no provenance.json (written when '
                           f'fashion_mnist.sh starts a run); the run predates '
                           f'it: delete {work_dir} and rerun')
    with open(path) as f:
        return json.load(f)


def first_decision(report: dict) -> dict:
    """How close a window's decision was: the smallest distance of a
    candidate's mapped divergence to tau, and the share of draws in which
    multiplying every divergence by ``1 + N(0, 1e-6)`` changes a decision."""
    kl = np.array([p['kl'] for p in report['pairs']])
    kept = np.array([p['kept'] for p in report['pairs']])
    mapped = np.array([p['mapped'] for p in report['pairs']])
    margin = float(np.min(np.abs(mapped - report['tau']))) if len(kl) and \
        report['method'] != 'fixed' else None
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(PERTURBATION_DRAWS):
        noisy = kl * (1 + PERTURBATION * rng.standard_normal(kl.shape))
        keep = pruning.keep_mask(noisy, report['method'], report['tau'],
                                 **report['params'])
        flips += bool(np.any(np.asarray(keep) != kept))
    return dict(margin_to_tau=margin,
                flip_share=flips / PERTURBATION_DRAWS)


def summarize_run(root: str, method: str, seed: int,
                  expected_samples: Dict[str, int]) -> dict:
    name = f'{method}_seed{seed}'
    wd = osp.join(root, name)
    if not osp.isfile(osp.join(wd, 'train.done')):
        raise SummaryError(f'{wd} has not finished training; rerun '
                           f'tools/experiments/fashion_mnist.sh')
    found = splits(wd)
    check_splits(wd, found, expected_samples)
    scalars = read_scalars(wd)
    seconds = epoch_seconds(scalars)
    if not seconds:
        raise SummaryError(f'{wd}: no training iterations logged in '
                           f'*/vis_data/scalars.json')
    val = [e['accuracy/top1'] for e in scalars if 'accuracy/top1' in e]
    with open(osp.join(wd, 'test.json')) as f:
        test = json.load(f)
    cfg = resolved_config(wd)
    hook = hook_settings(cfg)
    run = dict(
        run=name, method=method, seed=seed,
        provenance=read_provenance(wd),
        lr=cfg.optim_wrapper.optimizer.lr,
        batch_size=cfg.train_dataloader.batch_size,
        splits=found,
        samples={s: v['samples'] for s, v in found.items()},
        layer_attention=implementations(wd),
        hook=hook,
        val_top1=val[-1] if val else None,
        test_top1=test['accuracy/top1'],
        epochs=len(seconds),
        epoch_seconds=[round(seconds[e], 3) for e in sorted(seconds)],
        mean_epoch_seconds=float(np.mean(list(seconds.values()))),
        train_seconds=float(sum(seconds.values())),
        train_wall_seconds=read_seconds(osp.join(wd, 'train_seconds')),
        test_wall_seconds=read_seconds(osp.join(wd, 'test_seconds')))
    if hook is not None:
        windows = pruning.parse_windows(hook['windows'])
        run['mean_epoch_seconds_after_pruning'] = float(np.mean(
            [s for e, s in seconds.items() if e > windows[-1][1]]
            or [np.nan]))
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
            rethreshold_reproduces_masks=ok,
            first_decision=first_decision(reports[0]),
            windows=reports)
    return run


def check_commits(runs: List[dict], allow_mixed: bool) -> List[str]:
    commits = sorted({str(r['provenance'].get('commit')) for r in runs})
    if len(commits) > 1 and not allow_mixed:
        raise SummaryError(
            f'the runs come from {len(commits)} commits ({", ".join(c[:10] for c in commits)}); '
            f'rerun them from one commit, or pass --allow-mixed-commits')
    return commits


# ------------------------------------------------------------ ablation
def ablation(root: str, runs: List[str],
             train_samples: Optional[int] = None) -> Optional[dict]:
    """EBQM, fixed count and raw threshold on each run's first window."""
    if len(runs) < 2:
        return None
    first = {}
    for name in runs:
        wd = osp.join(root, name)
        if train_samples is not None:
            check_splits(wd, splits(wd), dict(train=train_samples))
        _, reports = pruning.load_reports(wd)
        first[name] = reports[:1]
    method, tau, params = pruning.recorded_setting(first[runs[0]])
    num_pairs = len(first[runs[0]][0]['pairs'])

    def pruned(name, method, tau, params):
        result = pruning.replay(first[name], method, tau, params, windows=1)
        return {tuple(p) for p in result['windows'][0]['pruned']}

    ebqm_sets = [pruned(n, method, tau, params) for n in runs]
    num_pruned = int(round(float(np.mean([len(s) for s in ebqm_sets]))))
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
        counts = [len(s) for s in sets]
        agreement = pairwise_jaccard(sets, num_pairs)
        rows.append(dict(
            label=label, method=m, tau=t, params=p, description=description,
            pruned={n: sorted(f'{s}.{b}' for s, b in sets[i])
                    for i, n in enumerate(runs)},
            counts=counts, count_min=min(counts), count_max=max(counts),
            count_sd=float(np.std(counts, ddof=1)),
            mean_jaccard=agreement['mean'], min_jaccard=agreement['min'],
            max_jaccard=agreement['max'],
            chance_jaccard=agreement['chance']))
    seeds = {}
    for name in runs:
        with open(osp.join(root, name, 'seed')) as f:
            seeds[name] = int(f.read())
    return dict(runs=runs, seeds=seeds, num_pairs=num_pairs, rows=rows,
                kl=[[p['kl'] for p in first[n][0]['pairs']] for n in runs])


# -------------------------------------------------------------- output
def _estimate(values) -> Optional[dict]:
    values = [v for v in values if v is not None]
    return mean_interval(values)._asdict() if values else None


def fmt_estimate(e: Optional[dict]) -> str:
    if e is None:
        return '-'
    if e['n'] < 2:
        return f"{e['mean']:.2f} (1 run)"
    return (f"{e['mean']:.2f} ± {e['sd']:.2f} "
            f"[{e['low']:.2f}, {e['high']:.2f}]")


def statistics(runs: List[dict], methods: List[str]) -> dict:
    """Per method the estimates of val and test top-1; per comparison the
    difference of test top-1 (and of val top-1)."""
    by_method = {m: sorted((r for r in runs if r['method'] == m),
                           key=lambda r: r['seed']) for m in methods}
    per_method = {m: dict(val=_estimate([r['val_top1'] for r in rs]),
                          test=_estimate([r['test_top1'] for r in rs]))
                  for m, rs in by_method.items() if rs}
    comparisons = []
    for a, b, paired in COMPARISONS:
        ra, rb = by_method.get(a, []), by_method.get(b, [])
        if paired:
            seeds = sorted({r['seed'] for r in ra} & {r['seed'] for r in rb})
            ra = [r for r in ra if r['seed'] in seeds]
            rb = [r for r in rb if r['seed'] in seeds]
        if min(len(ra), len(rb)) < 2:
            continue
        row = dict(a=a, b=b)
        for split in ('test', 'val'):
            key = f'{split}_top1'
            if any(r[key] is None for r in ra + rb):
                continue
            row[split] = difference([r[key] for r in ra],
                                    [r[key] for r in rb], paired)._asdict()
            row[split]['within_noise'] = not (row[split]['low'] > 0 or
                                              row[split]['high'] < 0)
        comparisons.append(row)
    return dict(per_method=per_method, comparisons=comparisons)


def machines(runs: List[dict]) -> str:
    """The machines, software and settings the runs recorded."""
    seen = sorted({(p['device_name'] if p['device'] != 'cpu'
                    else p['cpu_model'], p['device'], p['torch'],
                    p['cpu_threads']) for p in
                   (r['provenance'] for r in runs)})
    return '; '.join(f'{name} ({device}), torch {torch}, {threads} '
                     f'thread(s)' for name, device, torch, threads in seen)


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
    fig, (ax, ax_kept) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    # MRLA-B and MRLA-L keep every retrieval ELA's runs count.
    total = max((r.get('retrievals_total') or 0 for r in runs), default=0)
    for method in NAMES:
        mine = [r for r in runs if r['method'] == method]
        if not mine:
            continue
        top1 = [r['test_top1'] for r in mine]
        ax.scatter([r['train_seconds'] / 60 for r in mine], top1,
                   color=COLOURS[method], label=NAMES[method])
        kept = [0 if method == 'plain' else r.get('retrievals_on', total)
                for r in mine]
        ax_kept.scatter(kept, top1, color=COLOURS[method],
                        label=NAMES[method])
    ax.set(xlabel='training time (min, sum of logged iteration times)',
           ylabel='test top-1 (%)', title='test top-1 against training time')
    ax_kept.set(xlabel='retrievals on at the end (plain: 0)',
                ylabel='test top-1 (%)',
                title='test top-1 against retrievals kept')
    for a in (ax, ax_kept):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle('Fashion-MNIST, one point per run')
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def markdown(runs: List[dict], abl: Optional[dict], stats: dict, args,
             total_seconds: float, commits: List[str], windows) -> str:
    by_method = {m: [r for r in runs if r['method'] == m]
                 for m in args.methods}
    mean_epoch = {m: np.mean([r['mean_epoch_seconds'] for r in rs])
                  for m, rs in by_method.items() if rs}

    def ratio(m, ref):
        return f'{mean_epoch[m] / mean_epoch[ref]:.2f}' \
            if ref in mean_epoch else '-'

    dirty = any(r['provenance'].get('dirty') for r in runs)
    files = sorted({f'{split}: {", ".join(sorted(v["files"]))}'
                    for r in runs for split, v in r['splits'].items()
                    if v['files']})
    samples = args.samples
    title = 'Fashion-MNIST' if args.name == 'fashion_mnist' else \
        f'Fashion-MNIST ({args.name})'
    lines = [
        f'# {title}: ELA against plain, MRLA-B and MRLA-L',
        '',
        ('**SMOKE RUN (tiny data, a few iterations): these numbers only show '
         'that the pipeline works.**\n' if args.smoke else '') +
        f'Produced by `bash tools/experiments/{args.name}.sh`, summarized '
        f'on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d} (UTC), '
        f'from runs of commit {", ".join(c[:10] for c in commits)}'
        f'{" (with uncommitted changes)" if dirty else ""}. '
        f'Runs recorded: {machines(runs)}. Total run time (all trainings and '
        f'tests, wall clock): {total_seconds / 60:.1f} min. The command was '
        f'started {len(starts(args.root))} time(s): ' +
        '; '.join(f'`{line}`' for line in starts(args.root)) + '.',
        '',
        f'ResNet-{args.depth} (`configs/fashion_mnist/`), seeds '
        f'{" ".join(map(str, args.seeds))}; ELA windows (epochs) '
        f'{pruning.format_windows(windows) if windows else "-"}. ' + (
            f"Training: the first {samples['train']:,} training images; "
            f"validation: the last {samples['val']:,}; test: "
            f"{samples['test']:,} test images, evaluated once per run by "
            'tools/test.py.') +
        ' Samples read, as logged by every run (SplitSizeHook) and checked: ' +
        ', '.join(f'{split} {n}' for split, n in samples.items()) +
        f' ({len(runs)} runs); files read (their sha256 are in each run\'s '
        f'JSON): ' + '; '.join(files) + '.',
        '',
        '| method | lr | runs | val top-1 | test top-1 | retrievals on (mean; '
        'per seed) | s / epoch | vs plain | vs MRLA-B |',
        '|---|---|---|---|---|---|---|---|---|',
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
        est = stats['per_method'][m]
        lrs = '/'.join(sorted({f"{r['lr']:g}" for r in rs}))
        lines.append(
            f"| {NAMES[m]} | {lrs} | {len(rs)} | {fmt_estimate(est['val'])} | "
            f"{fmt_estimate(est['test'])} | {kept} | "
            f"{mean_epoch[m]:.1f} | {ratio(m, 'plain')} | "
            f"{ratio(m, 'mrla_base')} |")
    batches = '/'.join(sorted({str(r['batch_size']) for r in runs}))
    lines += ['', f'lr: each method\'s, from its config (batch {batches}'
              + ('; chosen on the validation split, '
                 'docs/results/fashion_mnist_tune.md' if
                 args.name == 'fashion_mnist' else '') + '). '
              'Top-1 in %: mean ± sample standard deviation (ddof 1) '
              '[95% t-interval of the mean]. s / epoch: training time per '
              'epoch (logged iteration times), mean over all epochs and '
              'seeds; ratios are of these means, measured in this experiment '
              'on this machine.', '']
    if stats['comparisons']:
        lines += ['Differences of top-1 (percentage points, 95% t-interval; '
                  'paired by seed where the runs share data order and '
                  "initialisation, Welch's otherwise):", '',
                  '| difference | test | val | test: within noise? |',
                  '|---|---|---|---|']
        for row in stats['comparisons']:
            cells = []
            for split in ('test', 'val'):
                d = row.get(split)
                cells.append('-' if d is None else
                             f"{d['diff']:+.2f} [{d['low']:+.2f}, "
                             f"{d['high']:+.2f}] ({d['test']})")
            noise = row.get('test', {}).get('within_noise')
            lines.append(
                f"| {NAMES[row['a']]} - {NAMES[row['b']]} | {cells[0]} | "
                f"{cells[1]} | "
                f"{'-' if noise is None else 'yes' if noise else 'no'} |")
        lines += ['', '"Within noise": the interval includes 0.', '']
    per_seed = ['| run | val top-1 | test top-1 | retrievals on | s / epoch '
                '| first decision: margin to tau; flipped by 1e-6 noise |',
                '|---|---|---|---|---|---|']
    for r in runs:
        on = f"{r['retrievals_on']}/{r['retrievals_total']}" \
            if 'retrievals_on' in r else '-'
        val = '-' if r['val_top1'] is None else f"{r['val_top1']:.2f}"
        first = r.get('first_decision')
        decision = '-' if not first else (
            f"{'-' if first['margin_to_tau'] is None else format(first['margin_to_tau'], '.2g')}; "
            f"{first['flip_share']:.0%} of {PERTURBATION_DRAWS} draws")
        per_seed.append(f"| {r['run']} | {val} | {r['test_top1']:.2f} | "
                        f"{on} | {r['mean_epoch_seconds']:.1f} | "
                        f"{decision} |")
    lines += ['Per run (retrievals on: at the end; the first decision: the '
              "smallest distance of a pair's mapped divergence to tau, and "
              'how often multiplying every divergence of the first window '
              'by 1 + N(0, 1e-6) changed a decision):', ''] + per_seed + ['']

    if windows and all(by_method.get(m) for m in
                       ('plain', 'mrla_light', 'ela')) \
            and 'retrievals_on' in by_method['ela'][0]:
        ela = by_method['ela']
        ela_after = np.mean([r['mean_epoch_seconds_after_pruning']
                             for r in ela])
        kept = np.mean([r['retrievals_on'] / r['retrievals_total']
                        for r in ela])
        plain_after = np.mean([np.mean(r['epoch_seconds'][windows[-1][1]:])
                               for r in by_method['plain']])
        light_after = np.mean([np.mean(r['epoch_seconds'][windows[-1][1]:])
                               for r in by_method['mrla_light']])
        predicted = plain_after + (light_after - plain_after) * kept
        lines += [
            f'Speed after the last window (epochs > {windows[-1][1]}): plain '
            f"{plain_after:.1f} s/epoch, MRLA-L {light_after:.1f}, "
            f"ELA {ela_after:.1f} with {kept:.0%} of the retrievals on. "
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
            'offline (tools/analysis/rethreshold.py) to the same measured '
            'divergences. The fixed count and the raw threshold are '
            "calibrated to EBQM's mean number pruned on these very "
            'divergences, which favours them. Chance: the mean Jaccard index '
            'of random subsets of the same sizes (hypergeometric overlap), '
            'over the same seed pairs.',
            '',
            '| rule | setting | number pruned per seed | spread (max - min) '
            '| Jaccard of pruned sets: mean [min, max over seed pairs] '
            '| chance |',
            '|---|---|---|---|---|---|',
        ]
        for row in abl['rows']:
            lines.append(
                f"| {row['label']} | {row['description']} | "
                f"{' '.join(map(str, row['counts']))} | "
                f"{row['count_max'] - row['count_min']} | "
                f"{row['mean_jaccard']:.2f} [{row['min_jaccard']:.2f}, "
                f"{row['max_jaccard']:.2f}] | {row['chance_jaccard']:.2f} |")
        lines.append('')
        lines.append('Pruned retrievals (stage.block) per seed:')
        lines.append('')
        for row in abl['rows']:
            lines.append(f"- {row['label']}: " + '; '.join(
                f"{n}: {' '.join(p) or '-'}"
                for n, p in row['pruned'].items()))
        lines.append('')
    lines += ['![test top-1 against training time and retrievals kept]'
              f'({args.name}.png)', '']
    return '\n'.join(lines)


def split_count(text: str):
    split, _, count = text.partition('=')
    if split not in ('train', 'val', 'test') or not count.isdigit():
        raise argparse.ArgumentTypeError(f'expected SPLIT=N with SPLIT one '
                                         f'of train, val, test; got {text!r}')
    return split, int(count)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='WORK_ROOT of fashion_mnist.sh')
    parser.add_argument('--methods', nargs='+', required=True,
                        choices=list(NAMES))
    parser.add_argument('--seeds', nargs='+', type=int, required=True)
    parser.add_argument('--ablation-runs', nargs='*', default=[])
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--name', default='fashion_mnist',
                        help='the report: OUT_DIR/NAME.md, OUT_DIR/NAME/ '
                        '(the runs\' JSON) and OUT_DIR/NAME.png')
    parser.add_argument('--samples', nargs='+', type=split_count,
                        default=[('train', 2560), ('val', 10000),
                                 ('test', 10000)],
                        help='SPLIT=N: the samples each split must hold')
    parser.add_argument('--depth', type=int, default=38)
    parser.add_argument('--smoke', action='store_true')
    parser.add_argument('--allow-mixed-commits', action='store_true',
                        help='summarize runs of different commits together')
    args = parser.parse_args(argv)
    args.samples = dict(args.samples)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        expected = args.samples
        runs = [summarize_run(args.root, m, s, expected)
                for s in args.seeds for m in args.methods]
        runs.sort(key=lambda r: (list(NAMES).index(r['method']), r['seed']))
        commits = check_commits(runs, args.allow_mixed_commits)
        abl = ablation(args.root, args.ablation_runs, expected['train'])
        hooks = [r['hook'] for r in runs if r['hook']]
        windows = pruning.parse_windows(hooks[0]['windows']) if hooks else []
        stats = statistics(runs, args.methods)
    except (SummaryError, pruning.ReportError, OSError,
            ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    total = sum(read_seconds(p) for p in glob.glob(
        osp.join(args.root, '*', '*_seconds')))
    run_dir = osp.join(args.out_dir, args.name)
    for run in runs:
        write_atomic(osp.join(run_dir, f"{run['run']}.json"),
                     json.dumps(run, indent=2) + '\n')
    write_atomic(osp.join(run_dir, 'statistics.json'),
                 json.dumps(stats, indent=2) + '\n')
    if abl:
        write_atomic(osp.join(run_dir, 'ablation.json'),
                     json.dumps(abl, indent=2) + '\n')
    plot(runs, osp.join(args.out_dir, f'{args.name}.png'))
    write_atomic(osp.join(args.out_dir, f'{args.name}.md'),
                 markdown(runs, abl, stats, args, total, commits, windows))
    print(f"wrote {osp.join(args.out_dir, args.name + '.md')} "
          f'({len(runs)} runs, total run time {total / 60:.1f} min)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
