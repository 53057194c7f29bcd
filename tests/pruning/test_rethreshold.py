"""The offline replay of pruning decisions (mmela.pruning.replay) and
tools/analysis/rethreshold.py (mmela/cli/rethreshold.py), on hand-written
ELAPruningHook reports.

The reproduction of a real run's masks (reports written by the hook during
training) is tested in tests/e2e/test_fashion_mnist.py.
"""
import json
import os
import stat

import numpy as np
import pytest

from mmela.cli import rethreshold
from mmela.pruning import adjacent_pairs, decide, replay, reproduces
from mmela.pruning.report import write_reports

SETTING = dict(method='ebqm', tau=0.3,
               params=dict(gamma=0.5, alpha=5.0, beta=1.0))


def hook_reports(kls, stage_as_name=False, blocks=(4, 4),
                 names=('layer1', 'layer2')):
    """Reports as ELAPruningHook writes them, decided with the hook's rule
    (:func:`mmela.pruning.decide` on each window's adjacent pairs). ``kls``
    maps a window to a function from a pair (stage, previous, block) to its
    divergence."""
    masks = [[True] * n for n in blocks]
    reports = []
    for number, kl_of in enumerate(kls):
        pairs = adjacent_pairs(masks)
        kl = np.array([kl_of(p) for p in pairs])
        decision = decide(masks, pairs, kl, SETTING['method'],
                          SETTING['tau'], **SETTING['params'])
        keep, masks = decision.keep, decision.masks
        reports.append(dict(
            window=[number * 2 + 1, number * 2 + 1], epoch=number * 2 + 1,
            **SETTING, iterations=10, skipped=0,
            pairs=[dict(stage=names[s] if stage_as_name else s,
                        previous_block=a, block=b, kl=float(k),
                        mapped=0.0, kept=bool(kp))
                   for (s, a, b), k, kp in zip(pairs, kl, keep)],
            retrievals_on=sum(map(sum, masks)),
            retrievals_total=sum(blocks),
            masks=[[int(m) for m in mask] for mask in masks]))
        if stage_as_name:
            reports[-1]['stages'] = list(names)
    return reports


KLS = [lambda p: 0.1 * (p[0] * 4 + p[2]) + 0.05 * (p[2] % 2),
       lambda p: 1.0 / (1 + p[0] + p[2])]


@pytest.mark.parametrize('stage_as_name, names', [
    (False, ('layer1', 'layer2')), (True, ('layer1', 'layer2')),
    (True, ('stem_stage', 'deep_stage'))])
def test_reproduces_the_hooks_masks(stage_as_name, names):
    reports = hook_reports(KLS, stage_as_name, names=names)
    # The setting prunes something in each window, so the check has teeth.
    assert reports[0]['retrievals_on'] < 8
    assert reports[1]['retrievals_on'] < reports[0]['retrievals_on']
    assert reproduces(reports) == (True, None)
    result = replay(reports, SETTING['method'], SETTING['tau'],
                    SETTING['params'])
    assert [w['masks'] for w in result['windows']] == \
        [r['masks'] for r in reports]
    assert [w['retrievals_on'] for w in result['windows']] == \
        [r['retrievals_on'] for r in reports]
    pruned = [[p['stage'] if stage_as_name else f"layer{p['stage'] + 1}",
               p['block']]
              for p in reports[0]['pairs'] if not p['kept']]
    assert result['windows'][0]['pruned'] == pruned


def test_tampered_masks_are_detected():
    reports = hook_reports(KLS)
    on = [i for i, m in enumerate(reports[1]['masks'][1]) if m]
    reports[1]['masks'][1][on[-1]] = 0
    assert reproduces(reports) == (False, 2)


def test_other_settings_and_stopping():
    reports = hook_reports(KLS)
    kl = np.array([p['kl'] for p in reports[0]['pairs']])
    # A fixed count prunes exactly the lowest divergences of window 1.
    result = replay(reports, 'fixed', 0.0, dict(num_pruned=3), windows=1)
    lowest = np.argsort(kl, kind='stable')[:3]
    assert sorted(map(tuple, result['windows'][0]['pruned'])) == sorted(
        (f"layer{reports[0]['pairs'][i]['stage'] + 1}",
         reports[0]['pairs'][i]['block']) for i in lowest)
    assert result['windows'][0]['retrievals_on'] == 8 - 3
    # Nothing pruned in window 1 -> window 2's pairs were never measured.
    result = replay(reports, 'threshold', 0.0, {})
    assert result['windows'][0]['pruned'] == []
    assert result['windows'][0]['retrievals_on'] == 8
    assert result['stopped_at'] == 2 and len(result['windows']) == 1


def run_tool(capsys, *args):
    """The tool's main() as the command line calls it (in-process: a python
    start-up per case would cost seconds; the experiment script runs it as
    a command)."""
    code = rethreshold.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_command_line(tmp_path, capsys):
    reports = hook_reports(KLS, stage_as_name=True)
    (tmp_path / 'ela_pruning.json').write_text(json.dumps(reports))
    out = tmp_path / 'out.json'
    code, stdout, stderr = run_tool(
        capsys, tmp_path, '--check', '--method', 'ebqm', 'threshold',
        '--tau', '0.3', '0.9', '--param', 'alpha=5', 'beta=1', '--json', out)
    assert code == 0, stderr
    assert 'reproduces the recorded masks: yes' in stdout
    data = json.loads(out.read_text())
    assert data['reproduces'] is True
    assert [(r['method'], r['tau']) for r in data['results']] == [
        ('ebqm', 0.3), ('ebqm', 0.9), ('threshold', 0.3), ('threshold', 0.9)]
    # ebqm at the run's tau keeps the run's gamma and gives its masks.
    assert data['results'][0]['params'] == SETTING['params']
    assert data['results'][0]['windows'][-1]['masks'] == reports[-1]['masks']
    # A threshold above every divergence prunes all of window 1's pairs.
    n_pairs = len(reports[0]['pairs'])
    assert data['results'][3]['windows'][0]['retrievals_on'] == 8 - n_pairs

    reports[0]['masks'][0][3] = 0  # kept by window 1, yet off
    (tmp_path / 'ela_pruning.json').write_text(json.dumps(reports))
    code, stdout, _ = run_tool(capsys, tmp_path, '--check')
    assert code == 1
    assert 'NO (window 1 differs)' in stdout


@pytest.mark.parametrize('content, message', [
    (None, 'does not exist'),
    ('{not json', 'not readable JSON'),
    ('[]', 'no window reports'),
    ('[{"pairs": []}]', 'lacks key(s)'),
])
def test_bad_reports(tmp_path, capsys, content, message):
    path = tmp_path / 'ela_pruning.json'
    if content is not None:
        path.write_text(content)
    code, _, stderr = run_tool(capsys, path)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ')
    assert message in lines[0]


def test_the_report_is_written_whole_with_a_new_files_permissions(tmp_path):
    """write_reports goes through a temporary file renamed into place; the
    result is readable as any file the user creates is (not private to
    its owner, as a temporary file is), and no temporary file is left."""
    path = tmp_path / 'ela_pruning.json'
    reports = [dict(window=[1, 1], masks=[[True, False]])]
    write_reports(str(path), reports)
    plain = tmp_path / 'plain_file'
    plain.write_text('')
    assert json.loads(path.read_text()) == reports
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(
        os.stat(plain).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'ela_pruning.json', 'plain_file']
