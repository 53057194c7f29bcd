"""Count the kernel-launching aten operators a piece of code dispatches.

On a GPU a small network's training step is bound by kernel launches rather
than arithmetic, and the number of launches can be counted exactly on any
device: every aten operator that reaches a backend kernel is one launch
(``torch.compile`` aside). :class:`KernelOpCounter` is a
``TorchDispatchMode``, so it sees the operators below autograd: those of the
forward pass, those autograd runs for the backward pass, and the optimizer's
(one per ``_foreach_*`` call with ``foreach=True``). It does not count

- views (operators whose schema returns an alias of an input: ``view``,
  ``expand``, ``unbind``, ``select``, ``t``, ``detach``, ...), which only make
  new tensor metadata;
- metadata queries (``promote_types``, ``sym_size``, ...) and operators
  outside the ``aten`` namespace (the profiler's record functions).

Allocations (``empty``, ``empty_strided``, ...) launch no kernel but are
counted; they are few (about one per batch norm).

Operators called from inside another operator's implementation are not seen
(the mode is off while an operator runs): that is the dispatcher's view. It
depends on the device's kernels (a plain CIFAR ResNet-110 step: 977 on the
CPU, 865 on CUDA, where cuDNN's batch norm is a single operator), not on its
load or the batch size.
"""
from collections import Counter
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Operators that are not views by schema but launch no kernel.
_NO_KERNEL = {
    aten.promote_types.default, aten.result_type.Tensor,
    aten.result_type.Scalar, aten._unsafe_view.default,
    aten.lift_fresh.default, aten.is_same_size.default,
    aten.sym_size.int, aten.sym_stride.int, aten.sym_numel.default,
    aten.sym_storage_offset.default, aten.is_contiguous.default,
    aten.is_contiguous.memory_format, aten.set_.source_Storage_storage_offset,
    aten.resize_.default,
}


def launches_kernel(func) -> bool:
    """Whether an aten operator overload launches a kernel (see above)."""
    return func.namespace == 'aten' and not (func.is_view
                                             or func in _NO_KERNEL)


class KernelOpCounter(TorchDispatchMode):
    """Counts kernel-launching aten operators, by name, while active.

    Example::

        with KernelOpCounter() as ops:
            loss = model(x).sum()
            loss.backward()
        print(ops.total, ops.counts.most_common(5))
    """

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if launches_kernel(func):
            self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_kernel_ops(fn: Callable[[], object]) -> KernelOpCounter:
    """Run ``fn()`` once and return the counter (``.total``, ``.counts``)."""
    with KernelOpCounter() as counter:
        fn()
    return counter
