"""Fast exact sorting of float32 scores on the CPU.

``torch.sort`` of float32 values takes a comparison sort; the same values viewed as int32 after
an order-preserving bit transform sort with a radix sort, 5-8x faster on a CPU (14.7M magnitudes:
0.3 s instead of 1.7 s) and give the same order. The transform: non-negative floats keep their bit
pattern (already ordered as integers); negative ones flip their 31 low bits, which reverses their
order while keeping them below every non-negative one. Exact for every finite float and ±inf;
``-0.0`` sorts just below ``+0.0``; NaN is not supported.
"""

from __future__ import annotations

import torch
from torch import Tensor

_LOW_BITS = 0x7FFFFFFF


def order_key(x: Tensor) -> Tensor:
    """int32 keys ordered as the float32 values of ``x`` (any shape)."""
    bits = x.to(torch.float32).contiguous().view(torch.int32)
    return torch.where(bits < 0, bits ^ _LOW_BITS, bits)


def _from_key(key: Tensor) -> Tensor:
    return torch.where(key < 0, key ^ _LOW_BITS, key).view(torch.float32)


def sorted_values(x: Tensor, descending: bool = False) -> Tensor:
    """``torch.sort(x.flatten().float(), descending=descending).values``, faster."""
    key = order_key(x.flatten())
    if descending:  # ascending sort of the negated keys: the fast path
        return _from_key(-torch.sort(-key).values)
    return _from_key(torch.sort(key).values)


def argsort_descending(x: Tensor) -> Tensor:
    """``torch.argsort(x.flatten().float(), descending=True, stable=True)``, faster: ties keep
    their positions' order."""
    return torch.sort(-order_key(x.flatten()), stable=True).indices
