"""Measured per-layer statistics of a model: weight density, input spike rate and work factors.

The spike rate of a layer is the fraction of non-zero entries of its input (binary spikes, or
analog values for the image stem). The work factors are the ``kernel`` cost convention's measure
of the same input (:class:`ndsnn_triton.kernels.work.WorkFactors`): forward lanes the sparse
forward kernel runs and weight-gradient events, per dense output position ``C·N·OH·OW``.
Forward-pre hooks accumulate counts on the input's device without host synchronisation, so the
monitor is cheap enough to leave on during training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ndsnn_triton.kernels import work
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


@dataclass(frozen=True)
class Geometry:
    """A layer's convolution geometry (a linear layer is 1×1, stride 1, no padding)."""

    kind: str  # "conv" or "linear"
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]


def layer_geometry(layer: MaskedLayer) -> Geometry:
    """:class:`Geometry` of a ``SpikeConv2d`` (explicit padding, also for ``"same"``/``"valid"``)
    or a ``SpikeLinear``."""
    if isinstance(layer, SpikeConv2d):
        padding = getattr(layer, "_padding_ints", layer.padding)
        return Geometry(
            "conv",
            layer.out_channels,
            tuple(layer.kernel_size),
            tuple(layer.stride),
            tuple(int(p) for p in padding),
            tuple(layer.dilation),
        )
    return Geometry("linear", layer.weight.shape[0], (1, 1), (1, 1), (0, 0), (1, 1))


def as_maps(x: Tensor, kind: str) -> Tensor:
    """A layer input as contiguous ``[N, C, H, W]``: conv ``[T, B, C, H, W]`` (or already 4-D)
    → ``[T·B, C, H, W]``; linear ``[..., F]`` → ``[N, F, 1, 1]``."""
    if kind == "linear":
        return x.reshape(-1, x.shape[-1], 1, 1).contiguous()
    if x.dim() == 5:
        x = x.flatten(0, 1)
    if x.dim() != 4:
        raise ValueError(
            f"conv input must be [T, B, C, H, W] or [N, C, H, W], got {tuple(x.shape)}"
        )
    return x.contiguous()


class LayerInputHooks:
    """Base of the monitors: a forward-pre hook per masked layer of ``model`` (``_hook(name)``
    makes it), attached on ``with`` entry and detached on exit or :meth:`remove`."""

    def __init__(self, model: nn.Module) -> None:
        self._layers: list[tuple[str, MaskedLayer]] = masked_layers(model)
        self._geometry = {name: layer_geometry(layer) for name, layer in self._layers}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):  # pragma: no cover - each monitor defines its own
        raise NotImplementedError

    def __enter__(self):
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


class SpikeRateMonitor(LayerInputHooks):
    """Context manager that records each masked layer's input non-zero rate and, with
    ``work=True`` (the default), its ``kernel``-convention work factors.

    >>> with SpikeRateMonitor(model) as monitor:
    ...     model(images)
    >>> monitor.rates()  # {layer name: rate}
    >>> monitor.work_factors()  # {layer name: WorkFactors(rate, forward, weight_grad)}
    """

    def __init__(self, model: nn.Module, work: bool = True) -> None:
        super().__init__(model)
        self._work = bool(work)
        # int64 [5] per layer on the input's device, accumulated in place (a captured training
        # step replays the additions into the same tensor): non-zero inputs, forward lanes,
        # events, input elements, Σ C·N·OH·OW
        self._counts: dict[str, Tensor] = {}
        self._usable: dict[tuple, Tensor] = {}  # usable-position masks, by shape and device
        self._sizes: dict[tuple, Tensor] = {}  # [input elements, C·N·OH·OW], by shape and device

    def _usable_mask(self, name: str, h: int, w: int, oh: int, ow: int, device) -> Tensor:
        """Bool ``[H, W]`` of the positions the weight-gradient kernel turns into events, made
        once per layer, shape and device (a host-to-device copy would synchronise)."""
        key = (name, h, w, str(device))
        if key not in self._usable:
            g = self._geometry[name]
            rows = work.usable_rows(
                h, oh, g.kernel_size[0], g.stride[0], g.padding[0], g.dilation[0]
            )
            cols = work.usable_rows(
                w, ow, g.kernel_size[1], g.stride[1], g.padding[1], g.dilation[1]
            )
            self._usable[key] = (rows[:, None] & cols[None, :]).to(device)
        return self._usable[key]

    def _work_counts(self, name: str, x: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        """Non-zero inputs, forward lanes ``Σ_c A_c``, events ``Σ_c E_c`` (int64 scalars on the
        input's device) and the dense work ``C·N·OH·OW`` of one input."""
        g = self._geometry[name]
        x4 = x.flatten(0, -4) if g.kind == "conv" else x.reshape(-1, x.shape[-1], 1, 1)
        n, c, h, w = x4.shape
        oh, ow = work.out_hw(h, w, *g.kernel_size, g.stride, g.padding, g.dilation)
        nonzero = x4 != 0
        lanes = work.active_samples(nonzero, oh * ow).sum() * (oh * ow)
        usable = self._usable_mask(name, h, w, oh, ow, x4.device)
        events = (nonzero & usable).sum(dtype=torch.int64)
        return nonzero.sum(dtype=torch.int64), lanes, events, c * n * oh * ow

    def _hook(self, name: str):
        def record(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            if self._work:
                count, lanes, events, dense = self._work_counts(name, x)
            else:
                count, dense = torch.count_nonzero(x), 0
                lanes = events = count.new_zeros(())
            key = (name, tuple(x.shape), str(x.device))
            sizes = self._sizes.get(key)
            if sizes is None:  # made once per shape: a host-to-device copy
                sizes = torch.tensor([x.numel(), dense], dtype=torch.int64, device=x.device)
                self._sizes[key] = sizes
            if name not in self._counts:
                self._counts[name] = torch.zeros(5, dtype=torch.int64, device=x.device)
            self._counts[name].add_(torch.cat([torch.stack([count, lanes, events]), sizes]))

        return record

    def reset(self) -> None:
        """Forget the counts collected so far (zeroed in place)."""
        for counts in self._counts.values():
            counts.zero_()

    def _read(self) -> dict[str, list[int]]:
        """Every seen layer's counters, on the host (one sync for all layers)."""
        names = [n for n, _ in self._layers if n in self._counts]
        if not names:
            return {}
        values = torch.stack([self._counts[n].cpu() for n in names]).tolist()
        return {n: c for n, c in zip(names, values, strict=True) if c[3]}

    def rates(self) -> dict[str, float]:
        """Input non-zero rate per layer name (one host sync for all layers)."""
        return {n: c[0] / c[3] for n, c in self._read().items()}

    def work_factors(self) -> dict[str, work.WorkFactors]:
        """:class:`~ndsnn_triton.kernels.work.WorkFactors` of each layer's inputs since the last
        reset (sums over forwards, one host sync for all layers): ``rate`` = non-zero fraction,
        ``forward`` = Σ forward lanes / Σ ``C·N·OH·OW``, ``weight_grad`` = Σ events / the same.
        Empty if the monitor was made with ``work=False``."""
        if not self._work:
            return {}
        nan = float("nan")
        return {
            n: work.WorkFactors(
                rate=c[0] / c[3],
                forward=c[1] / c[4] if c[4] else nan,
                weight_grad=c[2] / c[4] if c[4] else nan,
            )
            for n, c in self._read().items()
        }

    def stats(self) -> list[LayerStats]:
        """:class:`LayerStats` of every masked layer, in model order."""
        counts = self._read()
        return [
            LayerStats(
                name=name,
                kind="conv" if isinstance(layer, SpikeConv2d) else "linear",
                weights=layer.weight.numel(),
                density=layer.density,
                spike_input=layer.spike_input,
                input_rate=counts[name][0] / counts[name][3] if name in counts else float("nan"),
                inputs_seen=counts[name][3] if name in counts else 0,
            )
            for name, layer in self._layers
        ]
