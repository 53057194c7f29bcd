"""What the layer attention of one stage's blocks shares in one forward
pass (:class:`StageMemory`)."""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .ops import KeyValueBuffer


@dataclass
class StageMemory:
    """What the layer attention of one stage's blocks shares in one forward
    pass. A stage creates one, hands it to every block, and calls
    :meth:`advance_batch_counts` at the end.

    Attributes:
        keys_values: MRLA-B, reference implementation: the ``(key, value)``
            of every earlier retrieving block, in order.
        kv_buffer: MRLA-B, fused implementation: the same keys and values,
            in one :class:`~mmela.models.ops.KeyValueBuffer`.
        batch_counters: MRLA-L, fused implementation: the batch counters of
            the norms to advance together at the end of the stage (one
            kernel instead of one per block), or None for each module to
            advance its own (a module used outside a stage).
    """
    keys_values: List[Tuple[Tensor, Tensor]] = field(default_factory=list)
    kv_buffer: Optional[KeyValueBuffer] = None
    batch_counters: Optional[List[Tensor]] = None

    @property
    def retrievals(self) -> int:
        """How many MRLA-B blocks have offered their key and value."""
        buffered = self.kv_buffer.count if self.kv_buffer is not None else 0
        return len(self.keys_values) + buffered

    def count_batch(self, counter: Tensor) -> None:
        """Advance a norm's batch counter, now or at the stage's end."""
        if self.batch_counters is None:
            counter.add_(1)
        else:
            self.batch_counters.append(counter)

    def advance_batch_counts(self) -> None:
        if self.batch_counters:
            torch._foreach_add_(self.batch_counters, 1)
            self.batch_counters = []
