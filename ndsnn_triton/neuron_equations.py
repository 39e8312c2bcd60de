"""The LIF neuron's equations and the spike's surrogate derivatives, in plain PyTorch.

The one definition shared by the kernels' references (:mod:`ndsnn_triton.kernels.lif`), the ops'
parameter checks and the ``nn`` modules; it imports nothing from ``kernels``, ``ops`` or ``nn``.

SpikingJelly ``LIFNode(step_mode='m')`` semantics. Per step t, with ``v_reset=None`` meaning
soft reset (and a charge that decays towards 0):

* charge, ``decay_input=True``:  ``H = V + (X - (V - v_reset)) / tau``  (``V + (X - V)/tau`` if v_reset is None or 0)
* charge, ``decay_input=False``: ``H = V - (V - v_reset) / tau + X``  (``V·(1 - 1/tau) + X`` if v_reset is None or 0)
* fire: ``S = (H - v_threshold >= 0)``
* reset, hard: ``V = (1 - S)·H + S·v_reset``; soft: ``V = H - S·v_threshold``
  (``detach_reset`` stops the gradient through S in the reset).

The spike's backward uses a surrogate derivative of the Heaviside step at ``H - v_threshold``.
Potentials are in the same (arbitrary) units as ``v_threshold``; ``tau`` is in time steps.
Shapes: ``x_seq [T, ...]``, ``v_init [...]``; every tensor of the time loop has ``x_seq[0]``'s
shape.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: names of the surrogate derivatives the ops, kernels and modules accept
SURROGATES: tuple[str, ...] = ("atan", "sigmoid")


def surrogate_backward(grad: Tensor, x: Tensor, surrogate: str, alpha: float) -> Tensor:
    """``grad · g'(x)`` elementwise (any shape, x's shape) for the surrogate ``g`` of the
    Heaviside step.

    ATan: ``g'(x) = (alpha/2) / (1 + (pi/2·alpha·x)^2)``;
    Sigmoid: ``g'(x) = alpha·s·(1 - s)`` with ``s = sigmoid(alpha·x)``.
    """
    if surrogate == "atan":
        return alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2) * grad
    if surrogate == "sigmoid":
        s = torch.sigmoid(x * alpha)
        return grad * (1.0 - s) * s * alpha
    raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {SURROGATES}")


def charge(x: Tensor, v: Tensor, tau: float, v_reset: float | None, decay_input: bool) -> Tensor:
    """One step's charge: the pre-reset potential ``H [...]`` from input ``x [...]`` and ``v [...]``."""
    # SpikingJelly picks the "reset0" expressions when v_reset is None or 0; we follow it so
    # that float64 results agree bit for bit.
    reset0 = v_reset is None or v_reset == 0.0
    if decay_input:
        return v + (x - v) / tau if reset0 else v + (x - (v - v_reset)) / tau
    return v * (1.0 - 1.0 / tau) + x if reset0 else v - (v - v_reset) / tau + x


def reset_potential(h: Tensor, s: Tensor, v_threshold: float, v_reset: float | None) -> Tensor:
    """One step's reset: the next potential ``V [...]`` from ``H [...]`` and spikes ``S [...]``
    (hard reset to ``v_reset``; soft, subtracting ``v_threshold``, when ``v_reset`` is None)."""
    if v_reset is None:
        return h - s * v_threshold
    return (1.0 - s) * h + s * v_reset


class _SurrogateHeaviside(torch.autograd.Function):
    """``S = (x >= 0)`` forward, surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x: Tensor, surrogate: str, alpha: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate, ctx.alpha = surrogate, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return surrogate_backward(grad, x, ctx.surrogate, ctx.alpha), None, None


def heaviside_surrogate(x: Tensor, surrogate: str, alpha: float) -> Tensor:
    """Differentiable spike function: Heaviside forward (0/1 in x's dtype and shape), surrogate
    ``surrogate`` backward."""
    return _SurrogateHeaviside.apply(x, surrogate, alpha)


def lif_multistep_autograd_ref(
    x_seq: Tensor,
    v_init: Tensor,
    tau: float,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
) -> tuple[Tensor, Tensor]:
    """The LIF equations step by step under autograd: ``(spike_seq [T, ...], v_last [...])``.

    An independent check of the op's hand-written backward, and what ``nn.LIF`` runs under
    :func:`ndsnn_triton.backend.aten_reference`.
    """
    v = v_init
    spikes = []
    for t in range(x_seq.shape[0]):
        h = charge(x_seq[t], v, tau, v_reset, decay_input)
        s = heaviside_surrogate(h - v_threshold, surrogate, alpha)
        v = reset_potential(h, s.detach() if detach_reset else s, v_threshold, v_reset)
        spikes.append(s)
    return torch.stack(spikes), v
