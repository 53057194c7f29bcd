"""Generate the synthetic shapes dataset that ``make demo`` trains on.

Does nothing when a complete dataset made with the same settings is already
there, so ``make demo`` can call it every time; other settings, or
``--force``, regenerate it. Prints one line: where the data is and how many
images and objects each split holds.
"""
import argparse
import json
import os.path as osp

from mmela.datasets import generate_shapes_coco, is_complete


def parse_args():
    parser = argparse.ArgumentParser(
        description='Generate the synthetic shapes COCO dataset for the demo')
    parser.add_argument(
        'out_dir',
        nargs='?',
        default='data/shapes_coco',
        help='output directory (default: %(default)s)')
    parser.add_argument(
        '--num-train', type=int, default=400, help='training images')
    parser.add_argument(
        '--num-val', type=int, default=100, help='validation images')
    parser.add_argument(
        '--image-size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--force',
        action='store_true',
        help='regenerate even if the dataset is already there')
    return parser.parse_args()


def load_annotations(out_dir):
    """The COCO dicts of both splits, keyed by split name."""
    annotations = {}
    for split in ('train', 'val'):
        path = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        with open(path) as f:
            annotations[split] = json.load(f)
    return annotations


def main():
    args = parse_args()
    settings = dict(
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        seed=args.seed)
    reuse = not args.force and is_complete(args.out_dir)
    if reuse:  # only data made with the requested settings
        info = load_annotations(args.out_dir)['train']['info']
        reuse = info.get('settings') == settings
    if not reuse:
        generate_shapes_coco(args.out_dir, **settings)
    counts = ', '.join(
        f"{split} {len(coco['images'])} images / "
        f"{len(coco['annotations'])} objects"
        for split, coco in load_annotations(args.out_dir).items())
    print(f"shapes_coco {'reused' if reuse else 'generated'} at "
          f'{args.out_dir}: {counts}')


if __name__ == '__main__':
    main()
