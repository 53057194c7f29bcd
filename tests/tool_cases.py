"""What several test folders share about the tools: the repository's paths
and configs, running a tool as a user does, and a tiny classification run."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np

TESTS = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(TESTS)
DET = osp.join(ROOT, 'configs', 'faster_rcnn_ela_r50_fpn_1x_coco.py')
CLS = osp.join(ROOT, 'configs', 'cifar', 'resnet20_ela_cifar10.py')
PLAIN = osp.join(ROOT, 'configs', 'cifar', 'resnet20_plain_cifar10.py')


def run_tool(tool, *args, env=None):
    return subprocess.run([sys.executable, osp.join(ROOT, 'tools', tool),
                           *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS='1',
                                   **(env or {})),
                          timeout=300)


def tiny_classification(tmp_path):
    """Eight 32x32 PNGs in two class folders and a config that trains the
    CIFAR ELA ResNet-20 on them for two epochs (one pruning window)."""
    import mmcv
    rng = np.random.default_rng(0)
    for label in ('dark', 'bright'):
        for i in range(4):
            base = 40 if label == 'dark' else 200
            image = rng.integers(base - 30, base + 30, (32, 32, 3))
            mmcv.imwrite(image.astype(np.uint8),
                         str(tmp_path / 'data' / label / f'{i}.png'))
    config = tmp_path / 'tiny_ela_cls.py'
    config.write_text(f"""
_base_ = {CLS!r}
dataset = dict(_delete_=True, type='CustomDataset',
               data_root={str(tmp_path / 'data')!r},
               pipeline=[dict(type='LoadImageFromFile'),
                         dict(type='PackInputs')])
train_dataloader = dict(batch_size=4, num_workers=0, dataset=dataset)
val_dataloader = dict(batch_size=4, num_workers=0, dataset=dataset)
test_dataloader = val_dataloader
model = dict(head=dict(num_classes=2))
data_preprocessor = dict(num_classes=2)
train_cfg = dict(max_epochs=2)
custom_hooks = [dict(type='ELAPruningHook', windows=[1], method='fixed',
                     num_pruned=1)]
default_hooks = dict(logger=dict(interval=1))
""")
    return config
