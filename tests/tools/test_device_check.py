"""``tools/device_check.sh --smoke``: the GPU check's every stage on the
CPU, so the script cannot rot between GPU leases."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.slow
def test_device_check_smoke_runs_every_stage(tmp_path):
    out = tmp_path / 'out'
    archive = tmp_path / 'results.tar.gz'
    result = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'device_check.sh'), '--smoke',
         '--out', str(out), '--archive', str(archive)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
        env=dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert 'fused PASSED the tests on cpu' in last, last
    assert 'fused / reference step time' in last, last
    assert archive.exists()

    summary = json.loads((out / 'summary.json').read_text())
    assert summary['fused_passed']
    assert summary['environment']['commit']
    stages = {s['stage']: s['status'] for s in summary['stages']}
    assert stages.pop('train-amp') == 'skipped (CPU)'
    assert stages.pop('compile-r50') == 'skipped (smoke)'
    assert set(stages.values()) == {'ok'}, stages
    assert summary['tests']['fused']['passed'] > 0
    assert summary['tests']['reference']['passed'] > 0
    # The training run pruned in both windows and names the implementation.
    (run, ) = summary['training'].values()
    assert run['exit_status'] == 0
    assert [w['window'] for w in run['windows']] == [[1, 1], [2, 2]]
    assert {w['layer_attention_impl'] for w in run['windows']} == {'fused'}
    # Every benchmark JSON has the commit and a row per implementation.
    files = glob.glob(str(out / '*' / 'benchmark_*.json'))
    assert len(files) == 5, files  # compile-r50 is not in --smoke
    for path in files:
        with open(path) as f:
            bench = json.load(f)
        assert bench['environment']['commit'] == \
            summary['environment']['commit']
        impls = {row.get('impl') for suite in bench['suites']
                 for workload in suite['workloads'] for row in workload['rows']}
        compiled = bench['settings']['compile']
        assert impls == ({None, 'reference'} if compiled
                         else {None, 'fused', 'reference'}), path
