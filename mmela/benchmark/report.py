"""The benchmark's markdown table and its plot (step time against depth,
the layout of the paper's Fig. 4)."""
import os

import numpy as np

from .workloads import METHODS


def format_markdown(result: dict) -> str:
    env, settings = result['environment'], result['settings']
    mode = settings.get('compile_mode')
    compiled = f"{settings['compile']}" + (f' (mode {mode})' if mode else '')
    lines = [
        '# Training-step benchmark: ResNet, MRLA-B, MRLA-L, ELA', '',
        f"`{settings['command']}`", '',
        f"Device: {env['device_name']} ({env['device']}); torch "
        f"{env['torch']}"
        f"{'; CUDA ' + str(env['cuda']) if env.get('cuda') else ''}; "
        f"commit {env.get('commit') or 'unknown'}"
        f"{' (with uncommitted changes)' if env.get('dirty') else ''}; "
        f"layer attention: {', '.join(result['suites'][0].get('impls', []))}"
        f"; {env['cpu_threads']} of {os.cpu_count()} CPU "
        f"threads; load average "
        f"{env['load_before']} before, {env['load_after']} after. "
        f"AMP: {settings['amp']}; channels-last: "
        f"{settings['channels_last']}; compile: {compiled}. "
        f"{settings['steps']} measured steps after {settings['warmup']} "
        f"warm-up, methods interleaved round-robin.", '',
        'Step = forward + backward + SGD step. Ratios are medians over rounds '
        'of the paired step times (same round); < 1 is faster. Peak step '
        'memory: CUDA max allocated above the resident state (n/a on CPU); '
        'saved activations: what autograd keeps for backward in one forward. '
        'Ops / step: kernel-launching aten operators of one eager training '
        'step (forward, backward, SGD with foreach=True; views excluded); '
        'it depends on the device, not on its load.',
    ]
    if env['device'] == 'cpu':
        lines += [
            '', 'CPU numbers: the machine may be shared with other jobs (see '
            'the load average). Compare ratios, not absolute times; on a GPU '
            '(the paper\'s Fig. 4) the ratios differ.'
        ]
    for suite in result['suites']:
        lines += ['', f"## {suite['suite']}: batch {suite['batch_size']}, "
                  f"{suite['image_size'][0]}x{suite['image_size'][1]}", '']
        if suite.get('skipped'):
            lines.append(suite['skipped'])
            continue
        lines += [
            '| Model | Method | Step median (ms) | IQR (ms) | x ResNet | '
            'x MRLA-B | Ops / step | Ops x ResNet | '
            'Peak step memory (MiB) | Saved activations (MiB) |',
            '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|'
        ]
        for workload in suite['workloads']:
            for row in workload['rows']:
                lines.append(
                    f"| {workload['name']} | {row['label']} | "
                    f"{row['median_ms']:.1f} | {row['iqr_ms']:.1f} | "
                    f"{_fmt(row['vs_resnet'], '.2f')} | "
                    f"{_fmt(row['vs_mrla-b'], '.2f')} | "
                    f"{_fmt(row.get('step_ops'), 'd')} | "
                    f"{_fmt(row.get('step_ops_vs_resnet'), '.2f')} | "
                    f"{_fmt(row['peak_step_mib'], '.0f')} | "
                    f"{_fmt(row['saved_activations_mib'], '.0f')} |")
        sources = {}
        for workload in suite['workloads']:
            sources.setdefault(workload['mask_source'], []).append(
                workload['name'])
        lines += ['', 'ELA masks: ' + '; '.join(
            f"{source} ({', '.join(names)})"
            for source, names in sources.items()) + '.']
        cost = suite.get('hook_cost')
        if cost:
            lines += [
                '', f"Hook cost ({cost['model']}, ELA, batch "
                f"{cost['batch_size']}, {cost['iterations']} iterations per "
                f"epoch, windows at epochs {cost['windows']}, tau = 0):", '',
                '| | Inside a window | Outside | Inside / outside |',
                '|---|---:|---:|---:|',
                f"| Iteration, median (ms) | {cost['iter_inside_ms']:.1f} | "
                f"{cost['iter_outside_ms']:.1f} | {cost['iter_ratio']:.3f} |",
                f"| Epoch, mean (ms) | {cost['epoch_inside_ms']:.0f} | "
                f"{cost['epoch_outside_ms']:.0f} | "
                f"{cost['epoch_ratio']:.3f} |",
            ]
    return '\n'.join(lines) + '\n'


def _fmt(value, spec: str) -> str:
    return 'n/a' if value is None else format(value, spec)


# (colour, marker, line) per method: one colour each, so that every line
# can be told apart in print.
PLOT_STYLES = {'resnet': ('tab:gray', 'o', '-'),
               'mrla-b': ('tab:red', 's', '-'),
               'mrla-l': ('tab:orange', '^', '-'),
               'ela': ('tab:blue', 'D', '-'),
               'ela-pruned': ('tab:green', 'v', ':')}


def plot(result: dict, path: str) -> None:
    """Step time per method against depth (the paper's Fig. 4), and the
    same relative to MRLA-B; one row of panels per suite."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    suites = [s for s in result['suites'] if not s.get('skipped')]
    fig, axes = plt.subplots(len(suites), 2, squeeze=False,
                             figsize=(11, 3.8 * len(suites)))
    for (ax_time, ax_ratio), suite in zip(axes, suites):
        names = [w['name'] for w in suite['workloads']]
        x = np.arange(len(names))
        keys = dict.fromkeys((r['method'], r.get('impl'))
                             for w in suite['workloads'] for r in w['rows'])
        for method, impl in sorted(keys, key=lambda k: (
                METHODS.index(k[0]), k[1] or '')):
            rows = [r for w in suite['workloads'] for r in w['rows']
                    if (r['method'], r.get('impl')) == (method, impl)]
            if len(rows) != len(names):
                continue
            color, marker, line = PLOT_STYLES[method]
            if impl == 'reference':
                line = '--'
            label = rows[-1]['label'] if method in ('resnet', 'mrla-b') \
                else rows[-1]['label'].split(' (')[0] + {
                    'mrla-l': '', 'ela': ' (hook masks)',
                    'ela-pruned': ' (all pruned)'}[method] + (
                        f' [{impl}]' if impl else '')
            medians = np.array([r['median_ms'] for r in rows])
            quartiles = np.array([[r['median_ms'] - r['q25_ms'],
                                   r['q75_ms'] - r['median_ms']]
                                  for r in rows]).T
            ax_time.errorbar(x, medians, yerr=quartiles, color=color,
                             marker=marker, linestyle=line, capsize=3,
                             label=label)
            ratios = [r['vs_mrla-b'] for r in rows]
            if None not in ratios:
                ax_ratio.plot(x, np.array(ratios) * 100, color=color,
                              marker=marker, linestyle=line, label=label)
        title = f"{suite['suite']}, batch {suite['batch_size']}, " \
            f"{result['environment']['device']}"
        ax_time.set(title=f'{title}: step time', ylabel='ms per step '
                    '(median, bars: quartiles)', xticks=x, xticklabels=names)
        ax_ratio.set(title=f'{title}: relative to MRLA-B',
                     ylabel='% of MRLA-B step time', xticks=x,
                     xticklabels=names)
        ax_ratio.axhline(100, color='tab:red', linewidth=0.8)
        for ax in (ax_time, ax_ratio):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            ax.set_xlim(-0.5, len(names) - 0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
