"""A deterministic, tiny COCO-format dataset of coloured shapes.

``make demo`` trains a Faster R-CNN from scratch on a 2-core CPU in minutes,
so it needs data that is available offline, reproducible byte for byte and
easy to learn. Every class therefore differs in both shape and colour family
and is drawn large on a smooth, desaturated, low-contrast background, which
gives the backbone texture to ignore without hiding the objects.

Objects never overlap, so each annotation's polygon is exactly the pixels
drawn for it (no occlusion to account for) and ``area`` is their count.
"""
import json
import numbers
import os
import os.path as osp
import shutil

import numpy as np
from PIL import Image

CLASSES = ('circle', 'square', 'triangle')

# Per class: polygon vertices, angle of the first vertex and the largest
# random rotation (degrees), and the centre of its colour family (RGB).
_SHAPES = {
    'circle': (64, 0, 0, (215, 55, 50)),
    'square': (4, 45, 15, (55, 185, 65)),
    'triangle': (3, -90, 30, (60, 85, 220)),
}
_COLOR_JITTER = 30  # per channel, small enough to keep the families apart
_SIZE_RANGE = (0.2, 0.6)  # longer bbox side, as a fraction of the image side
_MAX_OBJECTS = 3
_PLACEMENT_TRIES = 20  # an object that cannot be placed free is dropped
_GAP = 2  # pixels kept free between objects and to the image border
_IMAGE_SIZE_RANGE = (64, 1024)


def _check_int(name, value, low, high=None):
    """Reject a bad setting early, saying which one and what is allowed.

    Returns it as a plain int (numpy integers would not serialise to JSON).
    """
    if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
            or value < low or (high is not None and value > high)):
        allowed = (f'an integer >= {low}' if high is None else
                   f'an integer in [{low}, {high}]')
        raise ValueError(f'{name} must be {allowed}, got {value!r}')
    return int(value)


def _background(rng, size):
    """Smooth grey noise plus a linear gradient, as float RGB.

    Coarse noise upsampled bicubically gives blobs with no sharp edges;
    a mostly shared channel offset keeps it far from every class colour.
    """
    cells = int(rng.integers(3, 8))
    coarse = (rng.uniform(90, 160) + rng.normal(0, 15, (cells, cells, 1)) +
              rng.normal(0, 5, (cells, cells, 3)))
    coarse = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8))
    pixels = np.asarray(
        coarse.resize((size, size), Image.BICUBIC), dtype=np.float32)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = rng.uniform(0, 25) * (
        np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None])
    return pixels + gradient[..., None]


def _apart(a, b):
    """Whether boxes (x0, y0, x1, y1) are more than ``_GAP`` pixels apart."""
    return (a[0] > b[2] + _GAP or b[0] > a[2] + _GAP or a[1] > b[3] + _GAP
            or b[1] > a[3] + _GAP)


def _polygon(rng, shape, image_size, taken):
    """A regular polygon placed clear of the boxes in ``taken``, or None.

    Returns the flat COCO polygon ``[x0, y0, x1, y1, ...]`` (rounded to
    0.01 px so the JSON is short and exact) and its box (x0, y0, x1, y1).
    """
    num_vertices, start, max_rotation, _ = _SHAPES[shape]
    for _ in range(_PLACEMENT_TRIES):
        rotation = start + rng.uniform(-max_rotation, max_rotation)
        angles = np.deg2rad(rotation) + np.arange(num_vertices) * (
            2 * np.pi / num_vertices)
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        points -= points.min(axis=0)
        points *= (rng.uniform(*_SIZE_RANGE) * image_size /
                   points.max())  # longer side of the box becomes the size
        extent = points.max(axis=0)
        points += rng.uniform(_GAP, image_size - _GAP - extent)
        points = np.round(points, 2)
        box = (*points.min(axis=0), *points.max(axis=0))
        if all(_apart(box, other) for other in taken):
            return points.ravel().tolist(), box
    return None


def _rasterize(polygon, size):
    """Mask of the pixels whose centre lies inside the convex ``polygon``.

    This is COCO's convention (pixel (i, j) spans [i, i+1) x [j, j+1)), so
    mask and polygon agree. ImageDraw.polygon instead rounds vertices to
    integers and also fills the edge pixels, growing a shape by up to a
    pixel all round: up to a fifth of a small shape's IoU.
    """
    points = np.asarray(polygon).reshape(-1, 2)
    centres = np.arange(size) + 0.5
    inside = np.ones((size, size), dtype=bool)
    # Vertices run by increasing angle, so every edge has the interior on
    # the side where this cross product is positive.
    for (x0, y0), (x1, y1) in zip(points, np.roll(points, -1, axis=0)):
        inside &= ((x1 - x0) * (centres[:, None] - y0) -
                   (y1 - y0) * (centres[None, :] - x0)) >= 0
    return inside


def _render(rng, image_size):
    """One image (uint8 HxWx3) and its objects as (label, polygon, area)."""
    pixels = _background(rng, image_size)
    objects, taken = [], []
    for _ in range(int(rng.integers(1, _MAX_OBJECTS + 1))):
        label = int(rng.integers(len(CLASSES)))
        placed = _polygon(rng, CLASSES[label], image_size, taken)
        if placed is None:
            continue
        polygon, box = placed
        taken.append(box)
        mask = _rasterize(polygon, image_size)
        pixels[mask] = np.array(_SHAPES[CLASSES[label]][3]) + rng.integers(
            -_COLOR_JITTER, _COLOR_JITTER + 1, 3)
        objects.append((label, polygon, int(mask.sum())))
    # Fine noise over everything, objects included: texture, not a flat fill.
    pixels += rng.normal(0, 4, pixels.shape)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8), objects


def _make_split(root, split, num_images, image_size, rng, settings):
    """Write ``root/split/*.png`` and its annotation file; return counts."""
    os.makedirs(osp.join(root, split))
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        file_name = f'{image_id:06d}.png'
        pixels, objects = _render(rng, image_size)
        Image.fromarray(pixels).save(osp.join(root, split, file_name))
        images.append(
            dict(
                id=image_id,
                file_name=file_name,
                width=image_size,
                height=image_size))
        for label, polygon, area in objects:
            xs, ys = polygon[0::2], polygon[1::2]
            x0, y0 = min(xs), min(ys)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=label + 1,
                    bbox=[x0, y0,
                          round(max(xs) - x0, 2),
                          round(max(ys) - y0, 2)],
                    area=area,
                    iscrowd=0,
                    segmentation=[polygon]))
    coco = dict(
        info=dict(
            description=f'mmela synthetic shapes ({split})',
            settings=settings),
        images=images,
        annotations=annotations,
        categories=[
            dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)
        ])
    with open(osp.join(root, 'annotations', f'instances_{split}.json'),
              'w') as f:
        json.dump(coco, f)
    return dict(images=num_images, objects=len(annotations))


def generate_shapes_coco(out_dir,
                         num_train=400,
                         num_val=100,
                         image_size=128,
                         seed=0):
    """Generate the dataset into ``out_dir``, replacing what is there.

    Layout: ``train/*.png``, ``val/*.png`` and
    ``annotations/instances_{train,val}.json`` (COCO, category ids from 1).
    The same arguments give byte-identical files; they are recorded in each
    file's ``info['settings']`` so a caller can tell stale data. Each split
    draws from its own random stream, so changing ``num_train`` leaves the
    val images and annotations unchanged.

    Everything is built in a hidden sibling directory that is renamed into
    place at the end, so an interrupted run never leaves a dataset that
    :func:`is_complete` would accept.

    Returns:
        dict: ``out_dir`` and, per split, the number of images and objects.
    """
    num_train = _check_int('num_train', num_train, 1)
    num_val = _check_int('num_val', num_val, 1)
    image_size = _check_int('image_size', image_size, *_IMAGE_SIZE_RANGE)
    seed = _check_int('seed', seed, 0)
    settings = dict(
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        seed=seed)
    out_dir = osp.abspath(out_dir)
    tmp = osp.join(
        osp.dirname(out_dir), f'.{osp.basename(out_dir)}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
    try:
        os.makedirs(osp.join(tmp, 'annotations'))
        stats = {}
        streams = np.random.SeedSequence(seed).spawn(2)
        for split, num, stream in zip(('train', 'val'), (num_train, num_val),
                                      streams):
            stats[split] = _make_split(tmp, split, num, image_size,
                                       np.random.default_rng(stream), settings)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if osp.lexists(out_dir):  # swap in the new copy, then drop the old one
        old = tmp + '.old'
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old)
    else:
        os.rename(tmp, out_dir)
    return dict(out_dir=out_dir, **stats)


def is_complete(out_dir):
    """Whether ``out_dir`` holds a finished dataset (both annotation files).

    Enough because :func:`generate_shapes_coco` only ever renames a finished
    directory into place.
    """
    return all(
        osp.isfile(osp.join(out_dir, 'annotations', f'instances_{s}.json'))
        for s in ('train', 'val'))
