"""Tests for the synthetic shapes dataset behind ``make demo``."""
import json
import os.path as osp
import runpy
import sys

import numpy as np
import pytest
from PIL import Image

from mmela.datasets import CLASSES, generate_shapes_coco, is_complete
from mmela.datasets import shapes_coco

SMALL = dict(num_train=6, num_val=3, image_size=64, seed=0)
SPLITS = ('train', 'val')
SCRIPT = osp.join(
    osp.dirname(__file__), '..', '..', 'tools', 'misc', 'make_demo_data.py')


def ann_path(root, split):
    return osp.join(root, 'annotations', f'instances_{split}.json')


def load(root, split):
    with open(ann_path(root, split)) as f:
        return json.load(f)


def read_bytes(root):
    """Every file of a dataset, keyed by its path relative to ``root``."""
    files = {}
    for split in SPLITS:
        files[ann_path('', split)] = open(ann_path(root, split), 'rb').read()
        for image in load(root, split)['images']:
            name = osp.join(split, image['file_name'])
            files[name] = open(osp.join(root, name), 'rb').read()
    return files


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes') / 'data')
    return root, generate_shapes_coco(root, **SMALL)


def test_counts_and_categories(dataset):
    root, stats = dataset
    assert is_complete(root)
    assert stats['out_dir'] == root
    for split, num in zip(SPLITS, (SMALL['num_train'], SMALL['num_val'])):
        coco = load(root, split)
        assert len(coco['images']) == stats[split]['images'] == num
        assert len(coco['annotations']) == stats[split]['objects'] >= num
        assert coco['categories'] == [
            dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)
        ]
        assert coco['info']['settings'] == SMALL
        for image in coco['images']:
            path = osp.join(root, split, image['file_name'])
            assert Image.open(path).size == (SMALL['image_size'], ) * 2


def test_pycocotools_loads_and_masks_match_pixels(dataset):
    """Each polygon, rasterised by pycocotools, covers its drawn shape."""
    coco_api = pytest.importorskip('pycocotools.coco')
    root, _ = dataset
    for split in SPLITS:
        coco = coco_api.COCO(ann_path(root, split))
        assert coco.getCatIds() == [1, 2, 3]
        for ann in coco.loadAnns(coco.getAnnIds()):
            image = coco.loadImgs(ann['image_id'])[0]
            pixels = np.asarray(
                Image.open(osp.join(root, split, image['file_name'])))
            mask = coco.annToMask(ann).astype(bool)
            assert abs(int(mask.sum()) - ann['area']) <= 0.05 * ann['area']
            # Colour families: red, green, blue dominate, in class order.
            dominant = pixels[mask].argmax(axis=1)
            assert np.mean(dominant == ann['category_id'] - 1) > 0.95


def test_mmdet_coco_dataset_loads(dataset):
    """The demo's loading path: CocoDataset plus image and mask loading."""
    pytest.importorskip('mmdet')
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations
    root, stats = dataset
    for split in SPLITS:
        data = CocoDataset(
            data_root=root,
            ann_file=f'annotations/instances_{split}.json',
            data_prefix=dict(img=f'{split}/'),
            metainfo=dict(classes=CLASSES),
            pipeline=[
                LoadImageFromFile(),
                LoadAnnotations(with_bbox=True, with_mask=True)
            ])
        assert len(data) == stats[split]['images']
        assert data.metainfo['classes'] == CLASSES
        coco = load(root, split)
        sample = data[0]
        anns = [a for a in coco['annotations'] if a['image_id'] == 1]
        assert sample['img'].shape == (SMALL['image_size'], ) * 2 + (3, )
        assert sample['gt_bboxes_labels'].tolist() == [
            a['category_id'] - 1 for a in anns
        ]
        mask_areas = sample['gt_masks'].to_ndarray().sum(axis=(1, 2))
        np.testing.assert_allclose(
            mask_areas, [a['area'] for a in anns], rtol=0.05)


def test_boxes_inside_image_and_fit_polygons(dataset):
    root, _ = dataset
    size = SMALL['image_size']
    for split in SPLITS:
        for ann in load(root, split)['annotations']:
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= size and y + h <= size
            assert 0.2 * size - 0.1 <= max(w, h) <= 0.6 * size + 0.1
            (polygon, ) = ann['segmentation']
            xs, ys = polygon[0::2], polygon[1::2]
            np.testing.assert_allclose(
                [x, y, x + w, y + h],
                [min(xs), min(ys), max(xs), max(ys)],
                atol=1e-6)
            assert ann['iscrowd'] == 0 and ann['area'] > 0


def test_same_seed_gives_identical_files(dataset, tmp_path):
    root, _ = dataset
    generate_shapes_coco(tmp_path / 'again', **SMALL)
    assert read_bytes(tmp_path / 'again') == read_bytes(root)


def test_other_seed_gives_other_data(dataset, tmp_path):
    root, _ = dataset
    generate_shapes_coco(tmp_path / 'other', **dict(SMALL, seed=1))
    for split in SPLITS:
        assert (load(tmp_path / 'other', split)['annotations'] !=
                load(root, split)['annotations'])


def test_val_does_not_depend_on_num_train(dataset, tmp_path):
    root, _ = dataset
    generate_shapes_coco(tmp_path / 'fewer', **dict(SMALL, num_train=2))
    fewer, full = load(tmp_path / 'fewer', 'val'), load(root, 'val')
    assert fewer['annotations'] == full['annotations']


def test_failed_run_leaves_nothing_and_keeps_old_data(tmp_path, monkeypatch):
    out_dir = tmp_path / 'data'
    render = shapes_coco._render
    calls = []

    def render_then_fail(*args):
        calls.append(None)
        if len(calls) == 4:  # midway through train: some files written
            raise RuntimeError('interrupted')
        return render(*args)

    monkeypatch.setattr(shapes_coco, '_render', render_then_fail)
    with pytest.raises(RuntimeError, match='interrupted'):
        generate_shapes_coco(out_dir, **SMALL)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(shapes_coco, '_render', render)
    generate_shapes_coco(out_dir, **SMALL)
    before = read_bytes(out_dir)
    calls.clear()
    monkeypatch.setattr(shapes_coco, '_render', render_then_fail)
    with pytest.raises(RuntimeError, match='interrupted'):
        generate_shapes_coco(out_dir, **dict(SMALL, seed=1))
    assert [p.name for p in tmp_path.iterdir()] == ['data']
    assert read_bytes(out_dir) == before


def test_regenerating_replaces_old_data(tmp_path):
    out_dir = tmp_path / 'data'
    generate_shapes_coco(out_dir, **SMALL)
    generate_shapes_coco(out_dir, **dict(SMALL, num_train=2))
    assert len(load(out_dir, 'train')['images']) == 2
    assert sorted(p.name for p in (out_dir / 'train').iterdir()) == [
        '000001.png', '000002.png'
    ]
    assert [p.name for p in tmp_path.iterdir()] == ['data']


@pytest.mark.parametrize('setting, value, allowed', [
    ('num_train', 0, 'an integer >= 1'),
    ('num_val', -1, 'an integer >= 1'),
    ('image_size', 32, r'an integer in \[64, 1024\]'),
    ('image_size', 64.0, r'an integer in \[64, 1024\]'),
    ('seed', -1, 'an integer >= 0'),
])
def test_bad_settings_raise(tmp_path, setting, value, allowed):
    with pytest.raises(ValueError, match=f'{setting} must be {allowed}'):
        generate_shapes_coco(tmp_path / 'data', **{setting: value})
    assert list(tmp_path.iterdir()) == []


def test_is_complete_needs_both_annotation_files(dataset, tmp_path):
    root, _ = dataset
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations' / 'instances_train.json').write_bytes(
        open(ann_path(root, 'train'), 'rb').read())
    assert not is_complete(tmp_path)
    assert not is_complete(tmp_path / 'missing')


def test_cli_reuses_matching_data_only(tmp_path, monkeypatch, capsys):
    out_dir = str(tmp_path / 'data')

    def run(*args):
        monkeypatch.setattr(sys, 'argv', [SCRIPT, out_dir, *args])
        runpy.run_path(SCRIPT, run_name='__main__')
        return capsys.readouterr().out

    small = ['--num-train', '2', '--num-val', '1', '--image-size', '64']
    assert run(*small).startswith(f'shapes_coco generated at {out_dir}: '
                                  'train 2 images / ')
    assert 'reused' in run(*small)
    assert 'generated' in run(*small, '--force')
    assert 'generated' in run(*small, '--seed', '1')
    assert 'val 1 images' in run(*small, '--seed', '1')
