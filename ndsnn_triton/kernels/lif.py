"""Multi-step leaky integrate-and-fire (LIF) neuron: pure-PyTorch references.

SpikingJelly ``LIFNode(step_mode='m')`` semantics. Per step t, with ``v_reset=None`` meaning
soft reset (and a charge that decays towards 0):

* charge, ``decay_input=True``:  ``H = V + (X - (V - v_reset)) / tau``  (``V + (X - V)/tau`` if v_reset is None or 0)
* charge, ``decay_input=False``: ``H = V - (V - v_reset) / tau + X``  (``V·(1 - 1/tau) + X`` if v_reset is None or 0)
* fire: ``S = (H - v_threshold >= 0)``
* reset, hard: ``V = (1 - S)·H + S·v_reset``; soft: ``V = H - S·v_threshold``
  (``detach_reset`` stops the gradient through S in the reset).

The spike's backward uses a surrogate derivative of the Heaviside step at ``H - v_threshold``.
Shapes: ``x_seq [T, ...]``, ``v_init [...]``; every tensor of the time loop has ``x_seq[0]``'s shape.

Two references live here: ``lif_forward_ref``/``lif_backward_ref`` are the op's ``"torch"``
backend with the backward written out by hand, and ``lif_multistep_autograd_ref`` runs the same
equations through autograd, so the hand-written backward has an independent check.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SURROGATES: tuple[str, ...] = ("atan", "sigmoid")


def surrogate_backward(grad: Tensor, x: Tensor, surrogate: str, alpha: float) -> Tensor:
    """``grad · g'(x)`` for the surrogate ``g`` of the Heaviside step.

    ATan: ``g'(x) = (alpha/2) / (1 + (pi/2·alpha·x)^2)``;
    Sigmoid: ``g'(x) = alpha·s·(1 - s)`` with ``s = sigmoid(alpha·x)``.
    """
    if surrogate == "atan":
        return alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2) * grad
    if surrogate == "sigmoid":
        s = torch.sigmoid(x * alpha)
        return grad * (1.0 - s) * s * alpha
    raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {SURROGATES}")


def _charge(x: Tensor, v: Tensor, tau: float, v_reset: float | None, decay_input: bool) -> Tensor:
    # SpikingJelly picks the "reset0" expressions when v_reset is None or 0; we follow it so
    # that float64 results agree bit for bit.
    reset0 = v_reset is None or v_reset == 0.0
    if decay_input:
        return v + (x - v) / tau if reset0 else v + (x - (v - v_reset)) / tau
    return v * (1.0 - 1.0 / tau) + x if reset0 else v - (v - v_reset) / tau + x


def _reset(h: Tensor, s: Tensor, v_threshold: float, v_reset: float | None) -> Tensor:
    if v_reset is None:
        return h - s * v_threshold
    return (1.0 - s) * h + s * v_reset


def lif_forward_ref(
    x_seq: Tensor,
    v_init: Tensor,
    tau: float,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run T steps; returns ``(spike_seq [T,...], v_last [...], h_seq [T,...])`` in x's dtype.

    ``h_seq`` (the charged, pre-reset potential) is what the backward needs.
    """
    spikes = torch.empty_like(x_seq, memory_format=torch.contiguous_format)
    h_seq = torch.empty_like(spikes)
    v = v_init.to(x_seq.dtype)
    for t in range(x_seq.shape[0]):
        h = _charge(x_seq[t], v, tau, v_reset, decay_input)
        s = (h - v_threshold >= 0).to(x_seq.dtype)
        v = _reset(h, s, v_threshold, v_reset)
        spikes[t] = s
        h_seq[t] = h
    return spikes, v.contiguous(), h_seq


def lif_backward_ref(
    grad_spike: Tensor,
    grad_v_last: Tensor,
    h_seq: Tensor,
    spike_seq: Tensor,
    tau: float,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
) -> tuple[Tensor, Tensor]:
    """Backward through time: returns ``(grad_x_seq [T,...], grad_v_init [...])``."""
    grad_x = torch.empty_like(h_seq, memory_format=torch.contiguous_format)
    grad_v = grad_v_last.to(h_seq.dtype)
    dh_dx = 1.0 / tau if decay_input else 1.0
    dh_dv = 1.0 - 1.0 / tau
    for t in range(h_seq.shape[0] - 1, -1, -1):
        h, s = h_seq[t], spike_seq[t]
        grad_s = grad_spike[t]
        if v_reset is None:  # V = H - S·v_th
            grad_h_direct = grad_v
            if not detach_reset:
                grad_s = grad_s - grad_v * v_threshold
        else:  # V = (1 - S)·H + S·v_reset
            grad_h_direct = grad_v * (1.0 - s)
            if not detach_reset:
                grad_s = grad_s + grad_v * (v_reset - h)
        grad_h = grad_h_direct + surrogate_backward(grad_s, h - v_threshold, surrogate, alpha)
        grad_x[t] = grad_h * dh_dx
        grad_v = grad_h * dh_dv
    return grad_x, grad_v.contiguous()


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
    """Differentiable spike function: Heaviside forward, surrogate ``surrogate`` backward."""
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
    """The LIF equations step by step under autograd: ``(spike_seq, v_last)``."""
    v = v_init
    spikes = []
    for t in range(x_seq.shape[0]):
        h = _charge(x_seq[t], v, tau, v_reset, decay_input)
        s = heaviside_surrogate(h - v_threshold, surrogate, alpha)
        v = _reset(h, s.detach() if detach_reset else s, v_threshold, v_reset)
        spikes.append(s)
    return torch.stack(spikes), v
