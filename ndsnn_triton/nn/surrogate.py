"""Surrogate gradients of the spike (Heaviside) function, as small SpikingJelly-style objects.

``ATan(alpha=2.0)``: ``g'(x) = (alpha/2) / (1 + (pi/2·alpha·x)^2)``;
``Sigmoid(alpha=4.0)``: ``g'(x) = alpha·s·(1 - s)``, ``s = sigmoid(alpha·x)``.
Calling one applies the Heaviside step forward and its surrogate derivative backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ndsnn_triton.neuron_equations import heaviside_surrogate, surrogate_backward


@dataclass(frozen=True)
class Surrogate:
    """Base: a named surrogate with sharpness ``alpha`` (what the fused LIF op takes)."""

    alpha: float
    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.alpha, int | float) and self.alpha > 0):
            raise ValueError(
                f"{type(self).__name__}: alpha must be a positive number, got {self.alpha!r}"
            )

    def __call__(self, x: Tensor) -> Tensor:
        """Spike ``(x >= 0)`` with the surrogate derivative in backward."""
        return heaviside_surrogate(x, self.name, float(self.alpha))

    def derivative(self, x: Tensor) -> Tensor:
        """``g'(x)`` elementwise."""
        return surrogate_backward(torch.ones_like(x), x, self.name, float(self.alpha))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha})"


@dataclass(frozen=True, repr=False)
class ATan(Surrogate):
    """Arctangent surrogate (SpikingJelly ``surrogate.ATan``), default ``alpha=2``."""

    alpha: float = 2.0
    name: ClassVar[str] = "atan"


@dataclass(frozen=True, repr=False)
class Sigmoid(Surrogate):
    """Sigmoid surrogate (SpikingJelly ``surrogate.Sigmoid``), default ``alpha=4``."""

    alpha: float = 4.0
    name: ClassVar[str] = "sigmoid"
