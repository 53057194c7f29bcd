"""The Fashion-MNIST experiment on tiny idx files written here (CI needs no
Debian package and no download): the data preparation script, the Fashion-MNIST configs and their
splits, the pre-flight error without data and, marked slow, the experiment
script's smoke version end to end (train, prune, test, re-threshold,
summarize), whose ELA run's ela_pruning.json the re-threshold tool must turn
back into the masks the checkpoint holds."""
import gzip
import json
import os
import os.path as osp
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmela.cli import (ConfigError, ConfigErrors, apply_test_args,
                       apply_train_args, load_config, parse_test_args,
                       parse_train_args, preflight)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PREPARE = osp.join(ROOT, 'tools', 'misc', 'prepare_fashion_mnist.sh')
EXPERIMENT = osp.join(ROOT, 'tools', 'experiments', 'fashion_mnist.sh')
CONFIG_DIR = osp.join(ROOT, 'configs', 'fashion_mnist')
METHODS = ('plain', 'mrla_base', 'mrla_light', 'ela')
FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
         't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')


def config_path(method):
    return osp.join(CONFIG_DIR, f'resnet38_{method}_fashion_mnist.py')


def idx_bytes(array: np.ndarray, labels: bool) -> bytes:
    """The idx format of the MNIST files: a big-endian magic (0x801 labels,
    0x803 images), the dimensions, then the uint8 data."""
    magic = 0x801 if labels else 0x803
    header = struct.pack('>I', magic) + b''.join(
        struct.pack('>I', d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(directory, num_train, num_test, size=28, compress=False,
              encode_index=False, seed=0):
    """Four idx files of random images (or, ``encode_index``, images whose
    first three pixels hold the sample's index, plus 1,000,000 in the test
    file) and labels ``i % 10``."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    contents = {}
    for prefix, n in (('train', num_train), ('t10k', num_test)):
        if encode_index:
            index = np.arange(n) + (1000000 if prefix == 't10k' else 0)
            images = np.zeros((n, size, size), dtype=np.uint8)
            images.reshape(n, -1)[:, :3] = np.stack(
                [index // 65536, index // 256 % 256, index % 256], axis=1)
        else:
            images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = np.arange(n) % 10
        contents[f'{prefix}-images-idx3-ubyte'] = idx_bytes(images, False)
        contents[f'{prefix}-labels-idx1-ubyte'] = idx_bytes(labels, True)
    for name, data in contents.items():
        if compress:
            with gzip.open(osp.join(directory, name + '.gz'), 'wb') as f:
                f.write(data)
        else:
            with open(osp.join(directory, name), 'wb') as f:
                f.write(data)
    return contents


def prepare(dest, src, *flags):
    env = dict(os.environ, FASHION_MNIST_SRC=str(src))
    return subprocess.run(['bash', PREPARE, '--no-apt', '--no-download',
                           *flags, str(dest)], capture_output=True,
                          text=True, env=env, cwd=ROOT)


# ------------------------------------------------------ data preparation
def test_prepare_from_gz_source_then_nothing_to_do(tmp_path):
    contents = write_idx(tmp_path / 'src', 30, 12, compress=True)
    dest = tmp_path / 'data' / 'fashion_mnist'
    proc = prepare(dest, tmp_path / 'src')
    assert proc.returncode == 0, proc.stderr
    assert '30 training and 12 test images' in proc.stdout
    assert sorted(os.listdir(dest)) == sorted(FILES)  # no temporary left
    for name in FILES:
        assert (dest / name).read_bytes() == contents[name]
    mtimes = [(dest / name).stat().st_mtime_ns for name in FILES]

    proc = prepare(dest, tmp_path / 'src')
    assert proc.returncode == 0 and 'already prepared' in proc.stdout
    assert [(dest / name).stat().st_mtime_ns for name in FILES] == mtimes


def test_prepare_from_uncompressed_source(tmp_path):
    contents = write_idx(tmp_path / 'src', 5, 3)
    proc = prepare(tmp_path / 'dest', tmp_path / 'src')
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / 'dest' / FILES[2]).read_bytes() == contents[FILES[2]]


def test_prepare_without_source_says_what_to_do(tmp_path):
    dest = tmp_path / 'dest'
    proc = prepare(dest, tmp_path / 'nowhere')
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ')
    assert 'dataset-fashion-mnist' in lines[0]
    assert 'train-images-idx3-ubyte.gz' in lines[0]
    assert 'FASHION_MNIST_SRC' in lines[0]
    assert not dest.exists()


@pytest.mark.parametrize('damage', ['truncate', 'not-gzip', 'count'])
def test_prepare_rejects_bad_files_and_writes_nothing(tmp_path, damage):
    src = tmp_path / 'src'
    write_idx(src, 20, 10, compress=True)
    bad = src / 't10k-images-idx3-ubyte.gz'
    if damage == 'truncate':  # a valid gzip of a short idx file
        data = gzip.decompress(bad.read_bytes())[:-5]
        bad.write_bytes(gzip.compress(data))
    elif damage == 'not-gzip':
        bad.write_bytes(b'not a gzip file')
    else:  # 9 labels for 10 images
        labels = src / 't10k-labels-idx1-ubyte.gz'
        labels.write_bytes(gzip.compress(idx_bytes(np.arange(9), True)))
    dest = tmp_path / 'dest'
    proc = prepare(dest, src)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
    assert not dest.exists()  # nothing half-written, no empty data_root


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize('method', METHODS)
def test_configs_build(method):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(config_path(method))
    assert cfg.train_dataloader.dataset.type == 'FashionMNIST'
    assert cfg.model.backbone.in_channels == 1
    model = MODELS.build(cfg.model)
    attention = dict(plain=None, mrla_base='base').get(method, 'light')
    assert model.backbone.layer_attention == attention
    out = model(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10)
    hooks = [h for h in cfg.get('custom_hooks', [])
             if h['type'] == 'ELAPruningHook']
    assert len(hooks) == (method == 'ela')
    if hooks:
        windows = [tuple(w) for w in hooks[0]['windows']]
        assert windows == [(1, 1), (4, 4), (7, 7)]
        assert windows[-1][1] <= cfg.train_cfg.max_epochs
        # The third window follows the first lr step, like the paper's 91.
        assert windows[2][0] == cfg.param_scheduler.milestones[0] + 1


def test_ablation_config_stops_after_the_first_window():
    cfg = Config.fromfile(config_path('ela_window1'))
    full = Config.fromfile(config_path('ela'))
    assert cfg.train_cfg.max_epochs == 1
    assert [tuple(w) for w in cfg.custom_hooks[0]['windows']] == [(1, 1)]
    hook, full_hook = dict(cfg.custom_hooks[0]), dict(full.custom_hooks[0])
    hook.pop('windows'), full_hook.pop('windows')
    assert hook == full_hook  # same pruning setting as the full ELA runs
    assert cfg.param_scheduler == full.param_scheduler


def test_splits_are_disjoint_and_test_is_separate(tmp_path):
    """The config's own ``indices`` on a full-size split (60,000 training
    images of 2x2 pixels that encode their index)."""
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    write_idx(tmp_path, 60000, 10000, size=2, encode_index=True)
    cfg = Config.fromfile(config_path('ela'))

    def indices(loader):
        dataset = dict(cfg[loader].dataset, data_root=str(tmp_path),
                       pipeline=[])
        dataset = DATASETS.build(dataset)
        images = np.stack([dataset.get_data_info(i)['img'].reshape(-1)[:3]
                           for i in range(len(dataset))]).astype(np.int64)
        return set(images[:, 0] * 65536 + images[:, 1] * 256 + images[:, 2])

    train = indices('train_dataloader')
    val = indices('val_dataloader')
    test = indices('test_dataloader')
    # The first 2,560 training images train, the last 10,000 validate.
    assert train == set(range(2560))
    assert val == set(range(50000, 60000))
    # The test split is the 10,000 t10k images, not the training file
    # (mmpretrain 1.2.0 reads the file named by test_mode, not by split).
    assert test == set(range(1000000, 1010000))
    assert cfg.test_dataloader.dataset.split == 'test'
    assert cfg.val_dataloader.dataset.split == 'train'


def test_training_without_data_is_one_error_line(tmp_path):
    missing = tmp_path / 'no_data'
    args = parse_train_args([
        config_path('ela'), '--work-dir', str(tmp_path / 'wd'),
        '--cfg-options', *[f'{loader}_dataloader.dataset.data_root={missing}'
                           for loader in ('train', 'val', 'test')]])
    cfg = load_config(args)
    apply_train_args(cfg, args)
    with pytest.raises(ConfigError, match=r'data_root: .*no_data does not '
                       r'exist') as error:
        preflight(cfg, mode='train')
    # ... and says how to get the data.
    assert f'run bash tools/misc/prepare_fashion_mnist.sh {missing}' in \
        str(error.value)
    assert not (tmp_path / 'wd').exists()


def _user_config(tmp_path, text):
    """A user's own config over ours (mmpretrain's FashionMNIST defaults:
    download=True)."""
    path = tmp_path / 'user_fashion_mnist.py'
    path.write_text(f'_base_ = {config_path("plain")!r}\n' + text)
    return path


@pytest.mark.slow
def test_a_wrong_data_root_offline_is_one_line_and_leaves_nothing(tmp_path):
    """With download=True (mmpretrain's default) and no internet, pre-flight
    says what to do instead of letting the dataset try a download: one
    error line, exit status 2, no work dir and no data folder."""
    data = tmp_path / 'data'
    write_idx(data, 16, 16)
    missing = tmp_path / 'typo'
    config = _user_config(tmp_path, f"""
train_dataloader = dict(dataset=dict(data_root={str(missing)!r},
                                     download=True))
val_dataloader = dict(dataset=dict(data_root={str(data)!r}))
test_dataloader = dict(dataset=dict(data_root={str(data)!r}))
""")
    result = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), str(config),
         '--work-dir', str(tmp_path / 'wd')], capture_output=True, text=True,
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        'error: train_dataloader.dataset.data_root: '), lines
    assert 'cannot download it here' in lines[0]
    assert f'prepare_fashion_mnist.sh {missing}' in lines[0]
    assert not missing.exists() and not (tmp_path / 'wd').exists()


@pytest.mark.parametrize('test_split', [dict(test_mode=False),
                                        dict(split='test', test_mode=False)])
def test_a_test_split_without_test_mode_is_refused(tmp_path, test_split):
    """FashionMNIST reads its test files only with test_mode=True; without
    it the test would silently run on the training images."""
    write_idx(tmp_path / 'data', 16, 16)
    config = _user_config(tmp_path, f'test_dataloader = dict(dataset=dict('
                          f'**{test_split!r}))\n')
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'')
    args = parse_test_args([str(config), str(ckpt), '--cfg-options',
                            f'test_dataloader.dataset.data_root='
                            f'{tmp_path / "data"}'])
    cfg = load_config(args)
    apply_test_args(cfg, args)
    with pytest.raises(ConfigErrors) as error:
        preflight(cfg, mode='test')
    messages = [str(e) for e in error.value.errors]
    assert any(m.startswith('test_dataloader.dataset: FashionMNIST reads its '
                            'test images only with test_mode=True') and
               'set test_dataloader.dataset.test_mode=True' in m
               for m in messages), messages


# ------------------------------------------------------------ end to end
@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    """The experiment's smoke version, ELA only: seed 0 trained (three
    windows), pruned and tested, seed 1 through the first window."""
    tmp = tmp_path_factory.mktemp('fashion_mnist')
    write_idx(tmp / 'data', 80, 64)
    env = dict(os.environ, FASHION_MNIST_SMOKE='1',
               FASHION_MNIST_DATA=str(tmp / 'data'), METHODS='ela',
               SEEDS='0', ABLATION_SEEDS='1', PYTHON=sys.executable)
    proc = subprocess.run(['bash', EXPERIMENT, str(tmp / 'runs')],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp / 'runs', proc, env


@pytest.mark.slow
def test_smoke_experiment_trains_prunes_tests_and_reports(smoke):
    runs, proc, env = smoke
    wd = runs / 'ela_seed0'
    assert (wd / 'train.done').exists()
    test = json.loads((wd / 'test.json').read_text())
    assert 0 <= test['accuracy/top1'] <= 100
    reports = json.loads((wd / 'ela_pruning.json').read_text())
    assert [r['window'] for r in reports] == [[1, 1], [4, 4], [7, 7]]
    assert reports[-1]['retrievals_total'] == 12  # 3 stages x 4 blocks
    assert reports[-1]['retrievals_on'] < 12  # EBQM pruned something
    assert 'reproduces the recorded masks: yes' in \
        (wd / 'rethreshold_check.txt').read_text()
    assert len(json.loads(
        (runs / 'ela_window1_seed1' / 'ela_pruning.json').read_text())) == 1

    results = runs / 'results'
    run = json.loads((results / 'fashion_mnist' / 'ela_seed0.json')
                     .read_text())
    assert run['test_top1'] == pytest.approx(test['accuracy/top1'])
    assert run['retrievals_on'] == reports[-1]['retrievals_on']
    assert run['epochs'] == 12 and run['mean_epoch_seconds'] > 0
    assert run['rethreshold_reproduces_masks'] is True
    ablation = json.loads((results / 'fashion_mnist' / 'ablation.json')
                          .read_text())
    assert ablation['runs'] == ['ela_seed0', 'ela_window1_seed1']
    assert [r['label'] for r in ablation['rows']] == [
        'EBQM', 'raw threshold', 'fixed count']
    assert all(0 <= r['mean_jaccard'] <= 1 for r in ablation['rows'])
    md = (results / 'fashion_mnist.md').read_text()
    assert 'SMOKE RUN' in md and '| ELA | 0.025 | 1 |' in md
    assert (results / 'fashion_mnist.png').read_bytes()[:4] == b'\x89PNG'

    # A rerun skips finished runs and resumes an unfinished one (here: one
    # whose last checkpoint is its final epoch, so resuming is quick).
    reports_before = (runs / 'ela_window1_seed1' / 'ela_pruning.json') \
        .read_text()
    (runs / 'ela_window1_seed1' / 'train.done').unlink()
    again = subprocess.run(['bash', EXPERIMENT, str(runs)], capture_output=True,
                           text=True, env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count('trained already') == 1
    assert '[ela_window1_seed1] training --resume' in again.stdout
    assert 'tested already' in again.stdout
    assert (runs / 'ela_window1_seed1' / 'train.done').exists()
    assert (runs / 'ela_window1_seed1' / 'ela_pruning.json').read_text() \
        == reports_before


@pytest.mark.slow
def test_rethreshold_reproduces_the_checkpoints_masks(smoke):
    """The masks the hook applied are those the checkpoint holds; the tool
    recomputes them from the divergences in ela_pruning.json."""
    runs, _, _ = smoke
    wd = runs / 'ela_seed0'
    out = wd / 'own_setting.json'
    from mmela.cli import rethreshold
    assert rethreshold.main([str(wd), '--check', '--json', str(out)]) == 0
    recomputed = json.loads(out.read_text())['results'][0]['windows'][-1]

    ckpt = (wd / 'last_checkpoint').read_text().strip()
    state = torch.load(ckpt, map_location='cpu',
                       weights_only=False)['state_dict']
    masks = [[0] * 4 for _ in range(3)]
    for key, value in state.items():
        match = re.fullmatch(r'backbone\.layer(\d)\.(\d+)\..*retrieval_mask',
                             key)
        if match:
            masks[int(match.group(1)) - 1][int(match.group(2))] = int(value)
    assert masks == recomputed['masks']
    assert sum(map(sum, masks)) == recomputed['retrievals_on'] < 12


@pytest.mark.slow
def test_full_data_experiment_smoke(tmp_path):
    """tools/experiments/fashion_mnist_full.sh --smoke: every method, seed
    0, at once, on tiny data it unpacks itself; a report with the runs'
    provenance, and an archive without checkpoints."""
    write_idx(tmp_path / 'src', 80, 64, compress=True)
    archive = tmp_path / 'full.tar.gz'
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'experiments',
                          'fashion_mnist_full.sh'), '--smoke', '--data',
         str(tmp_path / 'src'), '--archive', str(archive),
         str(tmp_path / 'runs')],
        capture_output=True, text=True, cwd=ROOT, timeout=1200,
        env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = tmp_path / 'runs' / 'results'
    md = (results / 'fashion_mnist_full.md').read_text()
    assert 'SMOKE RUN' in md and '| ELA | 0.1 | 1 |' in md
    run = json.loads((results / 'fashion_mnist_full' / 'ela_seed0.json')
                     .read_text())
    assert run['provenance']['commit']
    assert run['hook']['windows'] == [[1, 1], [2, 2], [4, 4]] or \
        run['hook']['windows'] == [(1, 1), (2, 2), (4, 4)]
    assert [w['window'] for w in run['windows']] == [[1, 1], [2, 2], [4, 4]]
    assert all(w['pairs'] and 'kl' in w['pairs'][0] for w in run['windows'])
    assert set(run['splits']['test']['files']) == {
        't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'}
    assert run['layer_attention'] == ['MRLA-L fused on cpu']
    import tarfile
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.endswith('fashion_mnist_full.md') for n in names)
    assert not any(n.endswith('.pth') for n in names)


@pytest.mark.slow
def test_tuning_smoke_grid_variants_and_windows(tmp_path):
    """tools/experiments/fashion_mnist_tune.sh --smoke on a small grid:
    validation only (no test split read), the lr each method keeps, MRLA-B's
    variants and the windows ablation with paired differences."""
    write_idx(tmp_path / 'data', 80, 64)
    env = dict(os.environ, FASHION_MNIST_SMOKE='1', PYTHON=sys.executable,
               FASHION_MNIST_DATA=str(tmp_path / 'data'), LRS='0.05 0.1',
               METHODS='plain mrla_base ela', WINDOW_SEEDS='0 1')
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'experiments',
                          'fashion_mnist_tune.sh'), str(tmp_path / 'runs')],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = tmp_path / 'runs' / 'results'
    summary = json.loads((results / 'fashion_mnist_tune.json').read_text())
    assert set(summary['grid']) == {'plain', 'mrla_base', 'ela'}
    assert all(set(row) == {'0.05', '0.1'} for row in summary['grid'].values())
    assert {c['lr'] for c in summary['chosen'].values()} <= {'0.05', '0.1'}
    assert {'norm0', 'norelu', 'default'} <= set(summary['mrla_base'])
    stats = summary['windows']['stats']
    assert set(stats) == {'1-4-7', '4-7', '7'}
    assert 'vs_default' in stats['7'] and stats['7']['vs_default']['test'] \
        == 'paired'
    # The one-window runs pruned once, the default ones three times.
    runs = tmp_path / 'runs'
    lr = summary['windows']['lr']
    reports = json.loads((runs / f'ela_windows7_lr{lr}_seed0' /
                          'ela_pruning.json').read_text())
    assert [r['window'] for r in reports] == [[7, 7]]
    # No run read the test split.
    logs = ''.join(p.read_text() for p in runs.glob('*/train.log'))
    assert 'test split:' not in logs and 'train split:' in logs
    # The variants ran as configured.
    norelu = next(runs.glob('mrla_base_norelu_lr*'))
    assert 'relu=False' in (norelu / 'train.log').read_text()
    md = (results / 'fashion_mnist_tune.md').read_text()
    assert '| ResNet (plain) |' in md and 'without the ReLU' in md
