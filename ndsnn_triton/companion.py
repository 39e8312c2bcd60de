"""What the producer of a binary spike tensor knows about it, handed to the next layer's kernels.

The library's LIF writes, in the same launch as the spikes, their *companion*: an int8 copy (the
sparse kernels read spikes one byte each, and the next layer keeps that copy for its weight
gradient) and, for maps of at least 4 positions, one flag per ``(sample, channel)`` map saying
whether it holds a spike (the forward skips silent maps). Max pooling carries it through (a pooled
map is silent exactly when its input map is). A spiking layer that finds a companion on its input
uses it as is: no pass over the input, no binary check (the LIF's spikes are 0/1 by
construction), no cast. An input without one (the first layer, a user's own neurons) takes one
parallel fallback pass in the ops (``ndsnn::spike_prep``).

The companion rides on the float spike tensor as an attribute and is found again from any view
with the same elements (``flatten``/``unflatten``/``reshape`` of the contiguous spikes), as long
as the spikes were not changed in place since (their version counter is checked). Anything else
(a copy, arithmetic, ``detach``) yields a plain tensor, and the fallback runs. Under
``torch.compile`` and ``torch.jit`` tracing the attribute is neither set nor read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_ATTR = "_ndsnn_companion"


@dataclass(frozen=True)
class SpikeCompanion:
    """The companion of a binary spike tensor ``x``.

    * ``spikes``: int8, ``x``'s number of elements (any shape with them, contiguous): 0/1.
    * ``active``: int8 ``[maps]`` or ``None``: 1 where a ``(sample, channel)`` map of ``x`` holds a
      spike, maps taken over every dimension before the last two (``[T, B, C, H, W]`` →
      ``T·B·C`` maps of ``H·W``); ``None`` where not known (1×1 maps, linear-layer inputs).
    """

    spikes: Tensor
    active: Tensor | None = None

    def view_as(self, x: Tensor) -> SpikeCompanion:
        """This companion shaped for ``x`` (same elements): spikes as ``x``'s shape, activity as
        ``[N, C]`` of an ``[N, C, H, W]`` ``x``, flat otherwise (dropped where it does not fit)."""
        active = self.active
        if active is not None:
            maps = x.shape[:-2].numel() if x.dim() >= 3 else -1
            if active.numel() != maps:
                active = None
            elif x.dim() == 4:
                active = active.view(x.shape[0], x.shape[1])
        return SpikeCompanion(self.spikes.view(x.shape), active)


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def attach(x: Tensor, companion: SpikeCompanion) -> Tensor:
    """Attach ``companion`` to ``x`` (returned as is); a no-op while tracing."""
    if not _tracing():
        setattr(x, _ATTR, (x._version, companion))
    return x


def companion_of(x: Tensor) -> SpikeCompanion | None:
    """The companion attached to ``x`` or to the tensor ``x`` is a same-element view of, shaped
    for ``x``; ``None`` if there is none or the spikes changed since it was attached."""
    if _tracing() or not isinstance(x, Tensor):
        return None
    for holder in (x, x._base):
        found = getattr(holder, _ATTR, None) if holder is not None else None
        if found is None:
            continue
        version, companion = found
        same_elements = holder is x or (
            x.numel() == holder.numel()
            and x.is_contiguous()
            and holder.is_contiguous()
            and x.storage_offset() == holder.storage_offset()
        )
        if version == holder._version and same_elements and companion.spikes.numel() == x.numel():
            return companion.view_as(x)
    return None
