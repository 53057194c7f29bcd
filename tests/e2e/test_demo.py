"""The demo end to end, shortened: tools/train.py on the demo config with a
pruning window, then tools/test.py with the COCO bbox metric."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmela.datasets import CLASSES, generate_shapes_coco

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs/demo/faster_rcnn_ela_r18_fpn_shapes_demo.py')


def _run(args, cwd):
    # One thread per process, as tools/demo.sh: the suite shares 2 cores.
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, \
        result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_demo_config_matches_the_dataset():
    from mmengine.config import Config
    cfg = Config.fromfile(CONFIG)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert tuple(cfg[loader].dataset.metainfo.classes) == CLASSES
    assert cfg.model.roi_head.bbox_head.num_classes == len(CLASSES)
    assert cfg.model.backbone.type == 'ELAResNet'
    assert cfg.model.backbone.init_cfg is None  # no weights offline
    [hook] = [h for h in cfg.custom_hooks if h.type == 'ELAPruningHook']
    assert hook.windows[-1] <= cfg.train_cfg.max_epochs


@pytest.mark.slow
def test_shortened_demo_trains_prunes_and_evaluates(tmp_path):
    # The config's data_root is relative, like mmdet's: run from tmp_path.
    generate_shapes_coco(tmp_path / 'data/shapes_coco', num_train=16,
                         num_val=8)
    work_dir = tmp_path / 'work_dir'
    # 2 epochs of 4 iterations, the pruning window on epoch 1, no validation
    # while training (tools/test.py evaluates below).
    _run([osp.join(ROOT, 'tools/train.py'), CONFIG, '--work-dir',
          str(work_dir), '--cfg-options', 'train_cfg.max_epochs=2',
          'train_cfg.val_interval=3', 'train_dataloader.batch_size=4',
          'custom_hooks.0.windows=[1]', 'randomness.seed=0'], cwd=tmp_path)

    [report] = json.loads((work_dir / 'ela_pruning.json').read_text())
    assert report['window'] == [1, 1] and report['iterations'] == 4
    assert report['retrievals_total'] == 8  # ResNet-18: 4 stages x 2 blocks

    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    assert checkpoint.endswith('epoch_2.pth')
    state = torch.load(checkpoint, map_location='cpu',
                       weights_only=False)['state_dict']
    masks = [[bool(state[f'backbone.layer{stage + 1}.{block}.layer_attention'
                         '.retrieval_mask'])
              for block in range(len(stage_masks))]
             for stage, stage_masks in enumerate(report['masks'])]
    assert masks == [[bool(m) for m in stage] for stage in report['masks']]

    # 8 iterations leave every score near chance, possibly below the
    # config's 0.05: keep all boxes, so that COCO evaluation has some to rank.
    out = _run([osp.join(ROOT, 'tools/test.py'), CONFIG, checkpoint,
                '--work-dir', str(tmp_path / 'test'), '--cfg-options',
                'model.test_cfg.rcnn.score_thr=0.0'], cwd=tmp_path)
    assert 'coco/bbox_mAP:' in out
