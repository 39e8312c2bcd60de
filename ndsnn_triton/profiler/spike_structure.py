"""The structure of real spikes: which all-zero groups of a layer's input a kernel could skip.

:class:`SpikeStructureMonitor` puts a forward-pre hook on every masked layer and counts, on the
input's device and without host synchronisation, over all forwards seen:

* the non-zero elements (spike rate);
* silent 32-element *words*: runs of 32 consecutive elements of the contiguous ``[N, C, H, W]``
  input in memory order (the layout the kernels read; the last, partial word counts as a word);
* silent *maps*: ``(sample, channel)`` planes ``H×W`` that are all zero;
* *dead* channels: channels all zero over the ``N`` samples of one forward;
* the kernels' work sums (:mod:`ndsnn_triton.kernels.work`): forward lanes ``Σ_c A_c``, weight-
  gradient events ``Σ_c E_c`` and the dense work ``C·N·OH·OW``, whose ratios are the forward and
  weight-gradient work factors of :func:`~ndsnn_triton.kernels.work.work_factors`.

Layer inputs are time-first: a ``SpikeConv2d`` gets ``[T, B, C, H, W]`` and is read as
``[N, C, H, W]`` with ``N = T·B``; a ``SpikeLinear`` gets ``[..., F]``, read as ``[N, F, 1, 1]``
(a 1×1 convolution with stride 1 and no padding).

Guaranteed relations (per forward, so also over forwards of equal shape): every fraction lies in
[0, 1]; ``silent_maps ≥ dead_channels``; ``silent_words32 ≥ silent_maps`` when 32 divides
``H·W``; ``rate ≤ 1 − silent_maps ≤ work.forward ≤ 1``, with ``work.forward = 1 − silent_maps``
where the forward skips silent maps (output maps of 4 positions or more);
``silent_words32 ≥ 1 − nonzero / words``; ``work.weight_grad ≤ rate · H·W / (OH·OW)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ndsnn_triton.kernels.work import active_samples, channel_events, map_activity, out_hw
from ndsnn_triton.profiler.monitor import Geometry, LayerInputHooks, as_maps

WORD = 32  # elements per word the kernels read

#: order of the device-side counters of one layer
_COUNTERS = (
    "nonzero",
    "silent_words32",
    "silent_maps",
    "dead_channels",
    "lanes",
    "events",
)


@dataclass
class _Totals:
    """Host-side totals of one layer (known from shapes, no sync) and its device counters."""

    forwards: int = 0
    elements: int = 0
    words: int = 0
    maps: int = 0
    channels: int = 0  # Σ C over forwards (the denominator of dead channels)
    dense: int = 0  # Σ C·N·OH·OW
    input_shape: tuple[int, int, int] | None = None
    output_shape: tuple[int, int, int] | None = None
    counts: Tensor | None = None  # int64 [len(_COUNTERS)] on the input's device


def structure_counts(x4: Tensor, geometry: Geometry) -> tuple[Tensor, dict[str, Any]]:
    """Counters of one ``[N, C, H, W]`` input (int64 ``[6]`` in :data:`_COUNTERS` order, on the
    input's device, no host sync) and the host-known sizes (``words``, ``maps``, ``channels``,
    ``dense``, ``out_hw``)."""
    n, c, h, w = x4.shape
    kh, kw = geometry.kernel_size
    oh, ow = out_hw(h, w, kh, kw, geometry.stride, geometry.padding, geometry.dilation)
    positions = oh * ow
    numel = x4.numel()
    words = -(-numel // WORD)

    nz = x4 != 0
    flat = nz.reshape(-1)
    if words * WORD != numel:
        flat = torch.cat([flat, flat.new_zeros(words * WORD - numel)])
    active_words = flat.reshape(words, WORD).any(1).sum(dtype=torch.int64)
    active = map_activity(x4)  # bool [N, C]
    live_channels = active.any(0).sum(dtype=torch.int64)
    lanes = active_samples(x4, positions).sum() * positions
    events = channel_events(
        x4, geometry.kernel_size, geometry.stride, geometry.padding, geometry.dilation
    ).sum()
    counts = torch.stack(
        [
            nz.sum(dtype=torch.int64),
            words - active_words,
            n * c - active.sum(dtype=torch.int64),
            c - live_channels,
            lanes,
            events,
        ]
    )
    sizes = {
        "words": words,
        "maps": n * c,
        "channels": c,
        "dense": c * n * positions,
        "out_hw": (oh, ow),
    }
    return counts, sizes


class SpikeStructureMonitor(LayerInputHooks):
    """Context manager recording the silent-group structure of every masked layer's input.

    >>> with SpikeStructureMonitor(model) as monitor:
    ...     model(images)
    >>> monitor.layers()  # one dict per layer, in model order

    The hooks only queue device work (no host sync); :meth:`layers` reads everything back with one
    synchronisation.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._totals: dict[str, _Totals] = {}

    def _hook(self, name: str):
        geometry = self._geometry[name]

        def record(_module: nn.Module, args: tuple) -> None:
            x4 = as_maps(args[0].detach(), geometry.kind)
            counts, sizes = structure_counts(x4, geometry)
            t = self._totals.setdefault(name, _Totals())
            t.counts = counts if t.counts is None else t.counts + counts
            t.forwards += 1
            t.elements += x4.numel()
            for key in ("words", "maps", "channels", "dense"):
                setattr(t, key, getattr(t, key) + sizes[key])
            t.input_shape = tuple(x4.shape[1:])
            t.output_shape = (geometry.out_channels, *sizes["out_hw"])

        return record

    def reset(self) -> None:
        """Forget everything counted so far."""
        self._totals.clear()

    def layers(self) -> list[dict[str, Any]]:
        """Per masked layer that saw an input, in model order (one host sync for all layers):
        ``name``, ``kind``, ``spike_input``, ``input_shape`` ``[C, H, W]``, ``output_shape``
        ``[OC, OH, OW]``, geometry, ``forwards``, ``elements``, and as fractions in [0, 1]:
        ``rate`` (non-zero elements), ``silent_words32`` (of 32-element words),
        ``silent_maps`` (of (sample, channel) maps), ``dead_channels`` (of channels, per forward), ``work`` (``forward`` = Σ lanes / Σ dense,
        ``weight_grad`` = Σ events / Σ dense), ``density`` (weight density now), and ``counts``
        (the raw totals behind the fractions)."""
        seen = [(n, layer) for n, layer in self._layers if n in self._totals]
        if not seen:
            return []
        values = torch.stack([self._totals[n].counts.cpu() for n, _ in seen]).tolist()
        rows = []
        for (name, layer), vals in zip(seen, values, strict=True):
            t = self._totals[name]
            geo = self._geometry[name]
            c = dict(zip(_COUNTERS, vals, strict=True))
            rows.append(
                {
                    "name": name,
                    "kind": geo.kind,
                    "spike_input": bool(layer.spike_input),
                    "input_shape": list(t.input_shape),
                    "output_shape": list(t.output_shape),
                    "kernel_size": list(geo.kernel_size),
                    "stride": list(geo.stride),
                    "padding": list(geo.padding),
                    "dilation": list(geo.dilation),
                    "forwards": t.forwards,
                    "elements": t.elements,
                    "rate": _ratio(c["nonzero"], t.elements),
                    "silent_words32": _ratio(c["silent_words32"], t.words),
                    "silent_maps": _ratio(c["silent_maps"], t.maps),
                    "dead_channels": _ratio(c["dead_channels"], t.channels),
                    "work": {
                        "forward": _ratio(c["lanes"], t.dense),
                        "weight_grad": _ratio(c["events"], t.dense),
                    },
                    "density": layer.density,
                    "counts": {
                        **c,
                        "words": t.words,
                        "maps": t.maps,
                        "channels": t.channels,
                        "dense": t.dense,
                    },
                }
            )
        return rows


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else float("nan")


def spike_structure(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor] | Tensor],
    *,
    train: bool,
) -> list[dict[str, Any]]:
    """:meth:`SpikeStructureMonitor.layers` of ``model`` over ``batches``.

    ``train=True``: train mode, forward, ``mean_t`` cross-entropy and backward of each
    ``(images [B, C, H, W], labels [B])`` batch; gradients are left in ``.grad`` and *not* applied
    (no optimizer step; batch-norm running statistics do move, as in any train-mode forward).
    ``train=False``: eval mode under ``torch.no_grad()`` (labels, if given, are ignored). The
    network state is reset after each batch; the model's train/eval mode is restored at the end.
    """
    from ndsnn_triton.nn import reset_net, temporal_cross_entropy

    was_training = model.training
    model.train(train)
    try:
        with SpikeStructureMonitor(model) as monitor:
            for batch in batches:
                x, y = _split(batch)
                if train:
                    if y is None:
                        raise ValueError(
                            "spike_structure(train=True) needs (images, labels) batches"
                        )
                    model.zero_grad(set_to_none=True)
                    temporal_cross_entropy(model(x), y).backward()
                else:
                    with torch.no_grad():
                        model(x)
                reset_net(model)
    finally:
        model.train(was_training)
    return monitor.layers()


def _split(batch: Sequence[Tensor] | Tensor) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, None
    return batch[0], (batch[1] if len(batch) > 1 else None)
