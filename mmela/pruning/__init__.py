"""Pure maths of ELA pruning: KL redundancy (Eq. 11) and masks (Alg. 1)."""
from .functional import (PRUNING_METHODS, ebqm, keep_mask, mapped_divergences,
                         padded_kl)

__all__ = [
    'PRUNING_METHODS', 'ebqm', 'keep_mask', 'mapped_divergences', 'padded_kl'
]
