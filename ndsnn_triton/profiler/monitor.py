"""Measured per-layer statistics of a model: weight density and input spike rate.

The spike rate of a layer is the fraction of non-zero entries of its input (binary spikes, or
analog values for the image stem). Forward-pre hooks accumulate counts on the input's device
without host synchronisation, so the monitor is cheap enough to leave on during training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ndsnn_triton.nn.layers import MaskedLayer, SpikeConv2d, masked_layers


@dataclass(frozen=True)
class LayerStats:
    """One masked layer's statistics over the forwards seen since the last reset."""

    name: str
    kind: str  # "conv" or "linear"
    weights: int  # prunable weights
    density: float  # kept fraction of weights, in [0, 1]
    spike_input: bool  # whether the layer declares binary input
    input_rate: float  # non-zero fraction of the inputs seen (nan if none seen)
    inputs_seen: int  # input elements counted


class SpikeRateMonitor:
    """Context manager that records each masked layer's input non-zero rate.

    >>> with SpikeRateMonitor(model) as monitor:
    ...     model(images)
    >>> monitor.rates()  # {layer name: rate}
    """

    def __init__(self, model: nn.Module) -> None:
        self._layers: list[tuple[str, MaskedLayer]] = masked_layers(model)
        self._nonzero: dict[str, Tensor] = {}
        self._total: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):
        def record(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            count = torch.count_nonzero(x)
            self._nonzero[name] = self._nonzero[name] + count if name in self._nonzero else count
            self._total[name] = self._total.get(name, 0) + x.numel()

        return record

    def __enter__(self) -> SpikeRateMonitor:
        for name, layer in self._layers:
            self._handles.append(layer.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Detach the hooks (the counts stay readable)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def reset(self) -> None:
        """Forget the counts collected so far."""
        self._nonzero.clear()
        self._total.clear()

    def rates(self) -> dict[str, float]:
        """Input non-zero rate per layer name (one host sync for all layers)."""
        names = [n for n, _ in self._layers if n in self._nonzero]
        if not names:
            return {}
        counts = torch.stack([self._nonzero[n].cpu() for n in names]).tolist()
        return {n: c / self._total[n] for n, c in zip(names, counts, strict=True)}

    def stats(self) -> list[LayerStats]:
        """:class:`LayerStats` of every masked layer, in model order."""
        rates = self.rates()
        return [
            LayerStats(
                name=name,
                kind="conv" if isinstance(layer, SpikeConv2d) else "linear",
                weights=layer.weight.numel(),
                density=layer.density,
                spike_input=layer.spike_input,
                input_rate=rates.get(name, float("nan")),
                inputs_seen=self._total.get(name, 0),
            )
            for name, layer in self._layers
        ]
