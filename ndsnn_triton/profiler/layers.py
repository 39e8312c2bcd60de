"""The layer table of a model, derived by tracing shapes once.

For every weight layer (``SpikeConv2d``/``SpikeLinear`` and plain ``nn.Conv2d``/``nn.Linear``):
dense MACs per sample per timestep ``M_l`` (conv: ``Cout·Cin/groups·kh·kw·Hout·Wout``, padding
included, as FlopCounterMode counts), the timesteps ``τ_l`` it runs per sample (T, or 1 for the
static direct-coding stem), its weight count and density, whether its input is spikes, and whether
the backward computes its input gradient (not for the first layer, whose input is the data).

Elementwise work (BN, LIF, pooling modules) is traced too, as element counts, and kept
apart from the MAC table.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ndsnn_triton.backend import aten_reference
from ndsnn_triton.nn.layers import MaskedLayer
from ndsnn_triton.nn.lif import LIF, reset_net


@dataclass(frozen=True)
class LayerInfo:
    """One weight layer's static cost facts."""

    name: str
    kind: str  # "conv" or "linear"
    weight_shape: tuple[int, ...]
    weights: int  # weight count (prunable)
    macs: int  # dense MACs per sample per timestep (M_l)
    timesteps: int  # τ_l: how often it runs per sample
    spike_input: bool  # input is binary spikes (rate r_l applies)
    input_grad: bool  # backward computes dL/dinput
    density: float  # kept fraction of weights when traced
    maskable: bool  # a MaskedLayer (SpikeConv2d / SpikeLinear)


@dataclass(frozen=True)
class ElementwiseInfo:
    """A stateless non-MAC module's elements processed per sample (all its timesteps)."""

    name: str
    kind: str  # "bn", "lif", "pool"
    elements: int


@dataclass
class LayerTable:
    """All weight layers of a model (in execution order) and its elementwise work."""

    layers: list[LayerInfo]
    elementwise: list[ElementwiseInfo]
    batch: int  # the batch the table was traced with (costs are per sample)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def macs_per_sample(self) -> int:
        """Dense forward MACs per sample (all timesteps): ``Σ τ_l·M_l``."""
        return sum(layer.macs * layer.timesteps for layer in self.layers)


def trace_layers(
    model: nn.Module, example: Tensor | Sequence[int], batch: int | None = None
) -> LayerTable:
    """Run one forward of a shape-only copy of ``model`` and record its layer table.

    ``example`` is an input tensor or an input shape; ``batch`` is its number of samples (default:
    dim 1 of a 5-D ``[T, B, C, H, W]`` input, else dim 0). A layer's ``τ_l`` is the number of rows
    it processes per sample (its input's leading dims over ``batch``). A CPU copy of the model runs
    one forward of a zero input of that shape as plain aten ops (pass one sample: VGG-16 takes
    ~0.1 s), so ``model`` is left untouched. A meta-device copy would do no arithmetic, but meta
    kernels and the ndsnn custom ops import ``torch._dynamo`` on first use (~1.4 s, most of a cost
    report's set-up); CPU aten kernels do not.
    """
    shape = tuple(example.shape) if isinstance(example, Tensor) else tuple(example)
    batch = batch or (shape[1] if len(shape) == 5 else shape[0])
    densities = {name: m.density for name, m in model.named_modules() if isinstance(m, MaskedLayer)}
    ghost = copy.deepcopy(model).to("cpu")
    reset_net(ghost)
    records: list[LayerInfo] = []
    elementwise: list[ElementwiseInfo] = []
    hooks = []

    def weight_hook(name: str, module: nn.Module):
        def hook(mod: nn.Module, args: tuple, out: Tensor) -> None:
            x = args[0]
            if isinstance(mod, nn.Conv2d):
                kind, rows = "conv", math.prod(x.shape[:-3])
                macs = mod.weight[0].numel() * mod.out_channels * out.shape[-2] * out.shape[-1]
            else:
                kind, rows = "linear", math.prod(x.shape[:-1])
                macs = mod.in_features * mod.out_features
            if rows % batch:
                raise ValueError(
                    f"trace_layers: layer {name} sees {rows} rows, not a multiple of batch {batch}"
                )
            records.append(
                LayerInfo(
                    name=name,
                    kind=kind,
                    weight_shape=tuple(mod.weight.shape),
                    weights=mod.weight.numel(),
                    macs=int(macs),
                    timesteps=rows // batch,
                    spike_input=bool(getattr(mod, "spike_input", False)),
                    input_grad=bool(x.requires_grad),
                    density=densities.get(name, 1.0),
                    maskable=isinstance(mod, MaskedLayer),
                )
            )

        return hook

    def elem_hook(name: str, kind: str):
        def hook(mod: nn.Module, args: tuple, out: Tensor) -> None:
            n = out.numel() if isinstance(out, Tensor) else 0
            elementwise.append(ElementwiseInfo(name, kind, n))

        return hook

    for name, module in ghost.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            hooks.append(module.register_forward_hook(weight_hook(name, module)))
        elif isinstance(module, LIF):
            hooks.append(module.register_forward_hook(elem_hook(name, "lif")))
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            hooks.append(module.register_forward_hook(elem_hook(name, "bn")))
        elif isinstance(module, nn.MaxPool2d | nn.AvgPool2d | nn.AdaptiveAvgPool2d):
            hooks.append(module.register_forward_hook(elem_hook(name, "pool")))
    x = torch.zeros(shape)
    try:
        ghost.train()
        with torch.enable_grad(), aten_reference():
            ghost(x)
    finally:
        for h in hooks:
            h.remove()
    elementwise = [ElementwiseInfo(e.name, e.kind, e.elements // batch) for e in elementwise]
    return LayerTable(records, elementwise, batch)
