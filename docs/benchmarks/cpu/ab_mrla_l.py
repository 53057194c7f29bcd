"""A/B of MRLA-L implementations in one process: the current code against
``mmela/models/layer_attention.py`` of another checkout, on the same
ResNet-110 weights and inputs, steps interleaved round by round.

    git worktree add /tmp/old 8628bf9
    python docs/benchmarks/cpu/ab_mrla_l.py /tmp/old [--rounds 15]

Prints the median step time of plain ResNet, the other checkout's MRLA-L
(``old``) and this one's (``new``), and the medians of the per-round ratios
(each round times the three back to back, in rotating order).
"""
import argparse
import copy
import importlib.util
import os.path as osp
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from mmela.models import ELAResNetCIFAR
from mmela.models.layer_attention import LightLayerAttention


def load_old_forward(checkout: str):
    path = osp.join(checkout, 'mmela', 'models', 'layer_attention.py')
    spec = importlib.util.spec_from_file_location(
        'mmela.models._old_layer_attention', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.LightLayerAttention


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkout')
    parser.add_argument('--depth', type=int, default=110)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--warmup', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    old_cls = load_old_forward(args.checkout)

    torch.manual_seed(0)
    light = ELAResNetCIFAR(args.depth, layer_attention='light')
    torch.manual_seed(0)
    plain = ELAResNetCIFAR(args.depth, layer_attention=None)
    old = copy.deepcopy(light)
    for module in old.modules():
        if isinstance(module, LightLayerAttention):
            # The old forward and helpers, on the same parameters.
            module.forward = old_cls.forward.__get__(module)
            module._fused = old_cls._fused.__get__(module)
    models = dict(plain=plain, old=old, new=light)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 10, (args.batch_size, ), generator=gen)
    heads = {name: torch.nn.Linear(m.feat_dim, 10) for name, m in
             models.items()}
    optimizers = {
        name: torch.optim.SGD(list(m.parameters()) +
                              list(heads[name].parameters()), lr=1e-3,
                              momentum=0.9, weight_decay=1e-4)
        for name, m in models.items()}

    def step(name):
        optimizers[name].zero_grad(set_to_none=True)
        start = time.perf_counter()
        feats = models[name](x)[-1].mean((2, 3))
        F.cross_entropy(heads[name](feats), labels).backward()
        optimizers[name].step()
        return time.perf_counter() - start

    names = list(models)
    times = {name: [] for name in names}
    for round_idx in range(args.warmup + args.rounds):
        shift = round_idx % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = step(name)
            if round_idx >= args.warmup:
                times[name].append(elapsed)
    for name in names:
        print(f'{name:6s} median {1e3 * statistics.median(times[name]):7.1f}'
              f' ms')
    for a, b in (('old', 'plain'), ('new', 'plain'), ('new', 'old')):
        ratios = [ta / tb for ta, tb in zip(times[a], times[b])]
        print(f'{a} / {b}: median {statistics.median(ratios):.3f} '
              f'(quartiles {statistics.quantiles(ratios, n=4)[0]:.3f}-'
              f'{statistics.quantiles(ratios, n=4)[2]:.3f})')


if __name__ == '__main__':
    main()
