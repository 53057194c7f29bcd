"""Export a trained (ELA) model to ONNX or to a torch.export program, and
check the export against PyTorch.

    python tools/deployment/export.py CONFIG CHECKPOINT --format onnx \\
        --out model.onnx [--shape H W] [--tolerance 1e-4] \\
        [--cfg-options k=v ...]

What is exported (``mmela/deployment/model.py``): an mmpretrain
classifier whole (images -> logits), an mmdet detector's backbone and neck
(images -> one feature map per level), with the data preprocessor's channel
flip and mean / std normalisation at the start. Batch, height and width are
dynamic.

- ``--format onnx``: ``torch.onnx.export(dynamo=True)``, checked with ONNX
  Runtime (CPU).
- ``--format export``: ``torch.export.export``, saved with
  ``torch.export.save`` (a ``.pt2`` file; ``torch.export.load(path)
  .module()`` runs it), checked by loading the saved file.

The retrieval masks are the checkpoint's. Layer attention runs its
``'reference'`` implementation (stock operators); the modules of pruned
retrievals are removed before export, so they leave neither operators nor
weights in the graph. The tool says how many layer-attention blocks there
are, how many are pruned, and which ones the graph holds.

The check runs the exported file and the PyTorch model (as loaded, before
anything was removed) on the same random images, once per
``--verify-batch-sizes`` entry (default 3 and 7, neither the export batch of
2), at the export shape and at a second one (``--verify-shapes``). It prints
the largest relative difference, ``max |exported - pytorch| / max
|pytorch|`` over each output, and fails (an ``error:`` line, exit status 1,
no file written) above ``--tolerance`` (default 1e-4: in float32 both
exports match PyTorch to about 1e-6 of the output's scale, and a wrong
graph, such as batch norm with batch statistics or a lost mask, is off by
1e-2 or more).

Bad input (a missing or unreadable file, a checkpoint of another model, an
output path of the wrong extension) ends with one ``error:`` line and exit
status 2. The output is written to a temporary file next to ``--out`` and
renamed once checked, so ``--out`` is never half-written.
"""
import argparse
import functools
import os.path as osp
import re
import sys
import time
from typing import List, Sequence, Set, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..deployment.model import (INPUT_NAME, DeployError, atomic_output,
                                deployable, drop_pruned_retrievals,
                                export_onnx, export_program, input_channels,
                                input_ranges, layer_attention_blocks,
                                load_model, retrieval_counts)
from .args import OneLineParser
from .errors import print_errors, user_errors


FORMATS = {'onnx': '.onnx', 'export': '.pt2'}
EXPORT_BATCH = 2  # not 1: a batch of 1 would be specialised into the graph
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (800, 1344)}
SECOND_SHAPE_OFFSET = (32, 64)
DEFAULT_TOLERANCE = 1e-4
EXPORTERS = {'onnx': export_onnx, 'export': export_program}


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = OneLineParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint (its masks are used)')
    parser.add_argument('--format', required=True, choices=list(FORMATS),
                        help='onnx: torch.onnx.export(dynamo=True), checked '
                        'with ONNX Runtime; export: a torch.export program '
                        '(.pt2)')
    parser.add_argument('--out', required=True,
                        help='output file (.onnx or .pt2)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='image size of the example input (default: '
                        '224 224 for classifiers, 800 1344 for detectors)')
    parser.add_argument('--verify-batch-sizes', type=int, nargs='+',
                        default=[3, 7], metavar='N',
                        help='batch sizes of the check (default: 3 7)')
    parser.add_argument('--verify-shapes', type=int, nargs='+',
                        metavar='H W',
                        help='image sizes of the check, H W pairs, used in '
                        'turn with the batch sizes (default: the example '
                        f'shape, then it plus {SECOND_SHAPE_OFFSET})')
    parser.add_argument('--tolerance', type=float,
                        default=DEFAULT_TOLERANCE,
                        help='largest accepted relative difference, '
                        'max |exported - pytorch| / max |pytorch| '
                        f'(default: {DEFAULT_TOLERANCE:g})')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, xxx=yyy pairs merged into '
        'it, e.g. model.backbone.depth=18')
    args = parser.parse_args(argv)
    if not osp.isdir(osp.dirname(osp.abspath(args.out))):
        parser.error(f'--out {args.out}: its folder does not exist')
    if osp.splitext(args.out)[1] != FORMATS[args.format]:
        parser.error(f'--out {args.out}: --format {args.format} writes a '
                     f'{FORMATS[args.format]} file')
    if args.verify_shapes and len(args.verify_shapes) % 2:
        parser.error('--verify-shapes takes H W pairs')
    if min(args.verify_batch_sizes) < 1 or \
            EXPORT_BATCH in args.verify_batch_sizes:
        parser.error(f'--verify-batch-sizes must be >= 1 and other than '
                     f'the export batch {EXPORT_BATCH}')
    return args



@functools.lru_cache(maxsize=1)
def load_program(path: str) -> torch.export.ExportedProgram:
    """The saved ``.pt2`` file, read once for the summary and the check."""
    return torch.export.load(path)


# ----------------------------------------------- what the graph holds
_ATTENTION = re.compile(r'([\w.]*\.layer_attention)(?![\w])')


def graph_summary(path: str, fmt: str) -> Tuple[int, Set[str]]:
    """The saved graph's node count (ONNX nodes; torch.export operator
    calls) and the layer-attention modules its nodes and weights come
    from."""
    if fmt == 'onnx':
        import onnx
        model = onnx.load(path)
        sources = [i.name for i in model.graph.initializer]
        sources += [p.value for node in model.graph.node
                    for p in node.metadata_props
                    if p.key == 'pkg.torch.onnx.name_scopes']
        count = len(model.graph.node)
    else:
        program = load_program(path)
        nodes = [n for n in program.graph.nodes if n.op == 'call_function']
        sources = list(program.state_dict)
        sources += [path for n in nodes
                    for path, _ in (n.meta.get('nn_module_stack')
                                    or {}).values()]
        count = len(nodes)
    return count, {m for s in sources for m in _ATTENTION.findall(s)}


# --------------------------------------------------------- checking
def runner(path: str, fmt: str):
    """A function from images to the saved graph's outputs (numpy)."""
    if fmt == 'onnx':
        import onnxruntime
        session = onnxruntime.InferenceSession(
            path, providers=['CPUExecutionProvider'])
        return lambda images: session.run(
            None, {INPUT_NAME: images.numpy()})
    module = load_program(path).module()

    def run(images):
        with torch.no_grad():
            out = module(images)
        return [t.numpy() for t in _as_tuple(out)]
    return run


def _as_tuple(out) -> tuple:
    return (out, ) if isinstance(out, Tensor) else tuple(out)


def relative_difference(got: Sequence[np.ndarray],
                        expected: Sequence[Tensor]) -> float:
    """``max |got - expected| / max |expected|``, the largest over the
    outputs."""
    if len(got) != len(expected):
        raise RuntimeError(f'{len(got)} outputs, PyTorch has '
                           f'{len(expected)}')
    worst = 0.0
    for out, ref in zip(got, expected):
        ref = ref.numpy()
        if out.shape != ref.shape:
            raise RuntimeError(f'an output of shape {out.shape}, PyTorch '
                               f'gives {ref.shape}')
        scale = max(float(np.abs(ref).max()), np.finfo(np.float32).tiny)
        worst = max(worst, float(np.abs(out - ref).max()) / scale)
    return worst


def verification_cases(batch_sizes: Sequence[int],
                       shapes: Sequence[Tuple[int, int]]
                       ) -> List[Tuple[int, Tuple[int, int]]]:
    """``(batch, (H, W))``: each batch size with the next shape in turn."""
    return [(batch, shapes[i % len(shapes)])
            for i, batch in enumerate(batch_sizes)]


def random_images(batch: int, channels: int, shape: Tuple[int, int],
                  seed: int) -> Tensor:
    """Pixel-like values (0-255), as the normalisation expects."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, *shape, generator=gen) * 255


def pytorch_outputs(module: nn.Module, cases, channels: int
                    ) -> List[Tuple[Tensor, tuple]]:
    inputs = []
    with torch.no_grad():
        for i, (batch, shape) in enumerate(cases):
            images = random_images(batch, channels, shape, seed=i)
            inputs.append((images, _as_tuple(module(images))))
    return inputs


# -------------------------------------------------------------- main
def fail(message: str) -> None:
    """A failed check: one ``error:`` line, exit status 1; the temporary
    output is removed on the way out."""
    print_errors([DeployError(f'{message}; nothing written')])
    sys.exit(1)


def main(argv=None) -> None:
    args = parse_args(argv)
    with user_errors():
        model, codebase = load_model(args.config, args.checkpoint,
                                     args.cfg_options)
        module = deployable(model, codebase)
    shape = tuple(args.shape or DEFAULT_SHAPES[codebase])
    shapes = [tuple(args.verify_shapes[i:i + 2])
              for i in range(0, len(args.verify_shapes), 2)] \
        if args.verify_shapes else \
        [shape, (shape[0] + SECOND_SHAPE_OFFSET[0],
                 shape[1] + SECOND_SHAPE_OFFSET[1])]
    cases = verification_cases(args.verify_batch_sizes, shapes)
    channels = input_channels(module)
    print(f'model: {type(model).__name__}, {module.kind}; input '
          f'{channels} channels; normalisation: '
          f'{module.normalize.extra_repr()}')

    counts = retrieval_counts(module)
    # The reference outputs come from the model as loaded, before the
    # pruned modules are removed.
    expected = pytorch_outputs(module, cases, channels)
    dropped = drop_pruned_retrievals(module)
    print(f"layer attention: {counts['blocks']} blocks, {counts['on']} "
          f"retrievals on, {counts['pruned']} pruned (removed before "
          f'export)')

    exporter = {'onnx': 'torch.onnx.export(dynamo=True)',
                'export': 'torch.export.export'}[args.format]
    print(f'exporting with {exporter}: example batch {EXPORT_BATCH} at '
          f'{shape[0]}x{shape[1]}; batch, height and width dynamic; '
          f"layer attention 'reference'")
    example = random_images(EXPORT_BATCH, channels, shape, seed=100)
    with atomic_output(args.out) as tmp:
        start = time.perf_counter()
        program = EXPORTERS[args.format](module, example, tmp)
        print(f'exported in {time.perf_counter() - start:.1f} s')
        if any(high is not None
               for _, high in input_ranges(program).values()):
            fail(f'the example ({EXPORT_BATCH} images of {shape[0]}x'
                 f'{shape[1]}) fixed an input size of the graph (a feature '
                 f'map of size 1?): export with a larger --shape')

        nodes, in_graph = graph_summary(tmp, args.format)
        on = {name for name, _ in layer_attention_blocks(module)}
        print(f'graph: {nodes} nodes; layer attention of {len(in_graph)} '
              f"blocks in it ({len(in_graph & set(dropped))} pruned ones)")
        if in_graph & set(dropped) or in_graph != on:
            fail(f'the graph holds layer attention of {sorted(in_graph)}, '
                 f'expected exactly the retrieving blocks {sorted(on)}')

        run = runner(tmp, args.format)
        checker = 'ONNX Runtime' if args.format == 'onnx' else \
            'torch.export.load'
        worst = 0.0
        for (batch, (height, width)), (images, ref) in zip(cases, expected):
            try:
                diff = relative_difference(run(images), ref)
            except Exception as e:  # a shape the graph does not accept
                fail(f'the export fails on batch {batch} at {height}x'
                     f"{width}: {type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}")
            worst = max(worst, diff)
            print(f'verify ({checker} vs PyTorch): batch {batch}, '
                  f'{height}x{width}: max relative difference {diff:.2e}')
        if not worst <= args.tolerance:
            fail(f'the export differs from PyTorch by {worst:.2e} '
                 f'(relative), above --tolerance {args.tolerance:g}')
    size = osp.getsize(args.out) / 2**20
    print(f'wrote {args.out} ({size:.1f} MiB); largest relative difference '
          f'{worst:.2e} <= tolerance {args.tolerance:g}')
