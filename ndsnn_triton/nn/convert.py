"""Masked layers for ordinary (non-spiking) networks, and conversion of any torch model.

``MaskedConv2d`` / ``MaskedLinear`` are the analog, time-free forms of ``SpikeConv2d`` /
``SpikeLinear``: input ``[B, C, H, W]`` / ``[..., in]``, ``spike_input=False``. :func:`to_masked`
swaps every ``nn.Conv2d`` / ``nn.Linear`` of a model for them (weights copied), so the sparse
methods, schedules and the cost model work on any network — e.g. to reproduce RigL's published
FLOP multipliers for ResNet-50.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ndsnn_triton.nn.layers import SpikeConv2d, SpikeLinear


class MaskedConv2d(SpikeConv2d):
    """Masked ``nn.Conv2d`` on ``[B, C, H, W]`` analog input (no time dimension)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("spike_input", False)
        super().__init__(*args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"MaskedConv2d: input must be [B, C, H, W] (4-D), got {shape}")
        return super().forward(x.unsqueeze(0)).squeeze(0)


class MaskedLinear(SpikeLinear):
    """Masked ``nn.Linear`` on analog input ``[..., in]``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("spike_input", False)
        super().__init__(*args, **kwargs)


@torch.no_grad()
def to_masked(model: nn.Module) -> nn.Module:
    """Replace (in place) every plain ``nn.Conv2d`` / ``nn.Linear`` with its masked form; returns ``model``."""
    for name, child in list(model.named_children()):
        if isinstance(child, SpikeConv2d | SpikeLinear):
            continue
        if isinstance(child, nn.Conv2d):
            if child.padding_mode != "zeros":
                raise ValueError(
                    f"to_masked: {name} uses padding_mode={child.padding_mode!r}; only 'zeros' is supported"
                )
            new = MaskedConv2d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                child.stride,
                child.padding,
                child.dilation,
                child.groups,
                child.bias is not None,
                device=child.weight.device,
                dtype=child.weight.dtype,
            )
        elif isinstance(child, nn.Linear):
            new = MaskedLinear(
                child.in_features,
                child.out_features,
                child.bias is not None,
                device=child.weight.device,
                dtype=child.weight.dtype,
            )
        else:
            to_masked(child)
            continue
        new.weight.copy_(child.weight)
        if child.bias is not None:
            new.bias.copy_(child.bias)
        setattr(model, name, new)
    return model
