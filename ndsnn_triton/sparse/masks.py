"""Mask construction for models built from :class:`ndsnn_triton.nn.MaskedLayer` layers."""

from __future__ import annotations

import math

import torch
from torch import nn

from ndsnn_triton.nn.layers import masked_layers


def check_density(density: float, what: str = "density") -> float:
    """Return ``density`` as a float if it lies in (0, 1], else raise ``ValueError``."""
    if (
        isinstance(density, bool)
        or not isinstance(density, int | float)
        or not math.isfinite(density)
    ):
        raise ValueError(f"{what} must be a number in (0, 1], got {density!r}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"{what} must lie in (0, 1] (1 = dense), got {density}")
    return float(density)


def layer_generator(seed: int, step: int, layer: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, step, layer)``: the same draw on every rank and after resume."""
    g = torch.Generator()
    g.manual_seed(((seed * 1_000_003 + step) * 10_007 + layer) % 2**63)
    return g


@torch.no_grad()
def random_masks(model: nn.Module, density: float, seed: int = 0) -> dict[str, float]:
    """Give every masked layer a uniformly random mask keeping ``round(density·n)`` of its n weights.

    Returns the realised density per layer name.
    """
    density = check_density(density)
    realised = {}
    for index, (name, layer) in enumerate(masked_layers(model)):
        n = layer.weight.numel()
        keep = max(1, round(density * n))
        order = torch.randperm(n, generator=layer_generator(seed, 0, index))
        mask = torch.zeros(n, dtype=torch.bool)
        mask[order[:keep]] = True
        layer.set_mask(mask.view_as(layer.mask).to(layer.mask.device))
        realised[name] = keep / n
    return realised
