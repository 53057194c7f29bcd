"""The Python steps of ``tools/device_check.sh``.

    python tools/misc/device_check.py coco-data OUT_DIR --num 20 \\
        --size 800 1333
    python tools/misc/device_check.py summary OUT_DIR --device cuda

``coco-data`` writes images of COCO's training size with random boxes of
COCO's 80 classes, in COCO's annotation format, so the stock Faster R-CNN
config trains on them unchanged (only the paths differ). ``summary`` reads
what the stages left in ``OUT_DIR`` (the CUDA tests' JUnit XML, the
benchmark JSONs, the training logs), writes ``summary.json`` and prints its
last line: whether the 'fused' implementation passed the tests on this device
and whether it was faster than 'reference'.
"""
import argparse
import glob
import json
import os
import os.path as osp
import xml.etree.ElementTree as ET

import numpy as np

from mmela.utils.provenance import environment


def coco_data(out_dir: str, num: int, height: int, width: int,
              seed: int = 0, boxes: int = 5) -> None:
    """``out_dir/images/*.jpg`` and ``out_dir/annotations/train.json``."""
    import cv2
    from mmdet.datasets import CocoDataset
    classes = CocoDataset.METAINFO['classes']
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(out_dir, 'images'), exist_ok=True)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for index in range(num):
        # Smooth colour noise: cheap to write and to decode.
        small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3),
                             dtype=np.uint8)
        pixels = cv2.resize(small, (width, height))
        name = f'{index:06d}.jpg'
        cv2.imwrite(osp.join(out_dir, 'images', name), pixels)
        images.append(dict(id=index, file_name=name, height=height,
                           width=width))
        for _ in range(boxes):
            w = rng.uniform(32, width / 3)
            h = rng.uniform(32, height / 3)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=index,
                category_id=int(rng.integers(1, len(classes) + 1)),
                bbox=[x, y, w, h], area=w * h, iscrowd=0))
    coco = dict(images=images, annotations=annotations,
                categories=[dict(id=i + 1, name=name)
                            for i, name in enumerate(classes)])
    with open(osp.join(out_dir, 'annotations', 'train.json'), 'w') as f:
        json.dump(coco, f)
    print(f'{num} images of {height}x{width} with {len(annotations)} boxes '
          f'in {out_dir}')


def test_outcomes(xml_path: str) -> dict:
    """Passed / failed / skipped counts of a pytest JUnit XML, per
    implementation (the ``la_impl`` parameter in the test id)."""
    outcomes = {impl: dict(passed=0, failed=0, skipped=0)
                for impl in ('fused', 'reference', 'other')}
    if not osp.exists(xml_path):
        return outcomes
    for case in ET.parse(xml_path).getroot().iter('testcase'):
        name = case.get('name', '')
        impl = next((i for i in ('fused', 'reference')
                     if f'-{i}]' in name or f'[{i}]' in name
                     or f'[{i}-' in name or f'-{i}-' in name), 'other')
        if case.find('skipped') is not None:
            outcome = 'skipped'
        elif case.find('failure') is not None or \
                case.find('error') is not None:
            outcome = 'failed'
        else:
            outcome = 'passed'
        outcomes[impl][outcome] += 1
    return outcomes


def speed_ratios(out_dir: str) -> list:
    """Per benchmark workload and layer-attention method: the median step
    time of 'fused' over 'reference' (< 1: fused is faster)."""
    ratios = []
    for path in sorted(glob.glob(osp.join(out_dir, '*', 'benchmark_*.json'))):
        with open(path) as f:
            result = json.load(f)
        for suite in result['suites']:
            for workload in suite.get('workloads', []):
                rows = {(r['method'], r.get('impl')): r
                        for r in workload['rows']}
                for method in ('mrla-b', 'mrla-l', 'ela'):
                    fused = rows.get((method, 'fused'))
                    reference = rows.get((method, 'reference'))
                    if fused and reference:
                        ratios.append(dict(
                            run=osp.basename(osp.dirname(path)),
                            workload=workload['name'], method=method,
                            fused_ms=fused['median_ms'],
                            reference_ms=reference['median_ms'],
                            fused_over_reference=fused['median_ms'] /
                            reference['median_ms']))
    return ratios


def training_outcomes(out_dir: str) -> dict:
    """Per training run: its exit status and the pruning reports it
    wrote."""
    runs = {}
    for status in sorted(glob.glob(osp.join(out_dir, 'train', '*',
                                            'exit_status'))):
        run_dir = osp.dirname(status)
        with open(status) as f:
            record = dict(exit_status=int(f.read().strip() or 1))
        report = osp.join(run_dir, 'ela_pruning.json')
        if osp.exists(report):
            with open(report) as f:
                reports = json.load(f)
            record['windows'] = [dict(
                window=r['window'], retrievals_on=r['retrievals_on'],
                retrievals_total=r['retrievals_total'],
                layer_attention_impl=r.get('layer_attention_impl'))
                for r in reports]
        runs[osp.basename(run_dir)] = record
    return runs


def summary(out_dir: str, device: str) -> dict:
    tests = test_outcomes(osp.join(out_dir, 'tests.xml'))
    ratios = speed_ratios(out_dir)
    fused = tests['fused']
    passed = fused['passed'] > 0 and fused['failed'] == 0 and \
        tests['reference']['failed'] == 0 and tests['other']['failed'] == 0
    stages = []
    if osp.exists(osp.join(out_dir, 'stages.tsv')):
        with open(osp.join(out_dir, 'stages.tsv')) as f:
            stages = [dict(zip(('stage', 'status', 'seconds'),
                               line.rstrip('\n').split('\t')))
                      for line in f if line.strip()]
    result = dict(environment=environment(device), tests=tests,
                  fused_passed=passed, speed=ratios,
                  training=training_outcomes(out_dir), stages=stages)
    if ratios:
        values = [r['fused_over_reference'] for r in ratios]
        result['fused_over_reference_median'] = float(np.median(values))
        result['fused_faster'] = bool(np.median(values) < 1)
    with open(osp.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(result, f, indent=2)
    speed = 'no fused/reference timings' if not ratios else (
        f"fused / reference step time: median "
        f"{result['fused_over_reference_median']:.2f} over {len(ratios)} "
        f"rows (min {min(values):.2f}, max {max(values):.2f}), so fused is "
        f"{'faster' if result['fused_faster'] else 'not faster'}")
    failed = [s['stage'] for s in stages
              if not s['status'].startswith(('ok', 'skipped'))]
    skipped = [s['stage'] for s in stages if s['status'].startswith('skip')]
    print(f"device_check on {result['environment']['device_name']}: fused "
          f"{'PASSED' if passed else 'did NOT pass'} the tests on {device} "
          f"({fused['passed']} passed, {fused['failed']} failed); {speed}"
          + (f"; skipped: {', '.join(skipped)}" if skipped else '')
          + (f"; FAILED stages: {', '.join(failed)}" if failed else ''))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    data = sub.add_parser('coco-data')
    data.add_argument('out_dir')
    data.add_argument('--num', type=int, default=20)
    data.add_argument('--size', type=int, nargs=2, default=(800, 1333),
                      metavar=('H', 'W'))
    data.add_argument('--seed', type=int, default=0)
    report = sub.add_parser('summary')
    report.add_argument('out_dir')
    report.add_argument('--device', default='cuda')
    args = parser.parse_args(argv)
    if args.command == 'coco-data':
        coco_data(args.out_dir, args.num, *args.size, seed=args.seed)
    else:
        summary(args.out_dir, args.device)


if __name__ == '__main__':
    main()
