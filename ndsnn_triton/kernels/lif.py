"""Multi-step leaky integrate-and-fire (LIF) neuron: the op's pure-PyTorch references and the
fused Triton kernels.

The equations (SpikingJelly ``LIFNode(step_mode='m')`` semantics) and the surrogate derivatives
are defined once in :mod:`ndsnn_triton.neuron_equations`; the kernels below restate them in
Triton with the same expression order. Shapes: ``x_seq [T, ...]``, ``v_init [...]``; every tensor
of the time loop has ``x_seq[0]``'s shape.

``lif_forward_ref``/``lif_backward_ref`` are the op's ``"torch"`` backend with the backward
written out by hand; :func:`ndsnn_triton.neuron_equations.lif_multistep_autograd_ref` runs the
same equations through autograd, an independent check of that backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ndsnn_triton.kernels.triton_utils import HAS_TRITON, cdiv, tl, triton
from ndsnn_triton.neuron_equations import (
    SURROGATES,
    charge,
    reset_potential,
    surrogate_backward,
)


def lif_forward_ref(
    x_seq: Tensor,
    v_init: Tensor,
    tau: float,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    int8_spikes: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run T steps; returns ``(spike_seq [T,...], v_last [...], h_seq [T,...])`` in x's dtype.

    ``h_seq`` (the charged, pre-reset potential) is what the backward needs. With
    ``int8_spikes`` (no gradient wanted) the spikes come as int8 and ``h_seq`` is empty ``[0]``.
    """
    spikes = torch.empty(
        x_seq.shape, dtype=torch.int8 if int8_spikes else x_seq.dtype, device=x_seq.device
    )
    h_seq = x_seq.new_empty(0) if int8_spikes else torch.empty_like(spikes)
    v = v_init.to(x_seq.dtype)
    for t in range(x_seq.shape[0]):
        h = charge(x_seq[t], v, tau, v_reset, decay_input)
        s = (h - v_threshold >= 0).to(x_seq.dtype)
        v = reset_potential(h, s, v_threshold, v_reset)
        spikes[t] = s
        if not int8_spikes:
            h_seq[t] = h
    return spikes, v.contiguous(), h_seq


def lif_backward_ref(
    grad_spike: Tensor,
    grad_v_last: Tensor,
    h_seq: Tensor,
    tau: float,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
) -> tuple[Tensor, Tensor]:
    """Backward through time: returns ``(grad_x_seq [T,...], grad_v_init [...])``.

    The spikes are recomputed from ``h_seq`` (``S = (H - v_threshold >= 0)``, the forward's own
    expression), so the forward saves nothing but ``h_seq``.
    """
    grad_x = torch.empty_like(h_seq, memory_format=torch.contiguous_format)
    grad_v = grad_v_last.to(h_seq.dtype)
    dh_dx = 1.0 / tau if decay_input else 1.0
    dh_dv = 1.0 - 1.0 / tau
    for t in range(h_seq.shape[0] - 1, -1, -1):
        h = h_seq[t]
        s = (h - v_threshold >= 0).to(h.dtype)
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


# ----------------------------------------------------------------------------- Triton kernels
#
# One program per BLOCK neurons; the T loop runs in registers (v never leaves the chip). Forward
# writes spikes and the charged potential h (all the backward needs: spikes are recomputed from
# it); backward runs the loop in reverse. Arithmetic in fp32 with the reference's expression
# order; scalar arguments are cast to fp32 inside the kernels.


_LIF_BLOCK = 256

if HAS_TRITON:

    @triton.jit
    def _lif_fwd_kernel(
        x_ptr, v0_ptr, s_ptr, h_ptr, vlast_ptr, M, T, tau, decay, v_th, v_reset,
        DECAY_INPUT: tl.constexpr, RESET0: tl.constexpr, SOFT: tl.constexpr, STORE_H: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < M
        tau = tl.cast(tau, tl.float32)
        decay = tl.cast(decay, tl.float32)  # 1 - 1/tau, rounded once on the host as torch does
        v_th = tl.cast(v_th, tl.float32)
        v_reset = tl.cast(v_reset, tl.float32)
        v = tl.load(v0_ptr + offs, mask=m, other=0).to(tl.float32)
        for t in range(T):
            x = tl.load(x_ptr + t * M + offs, mask=m, other=0).to(tl.float32)
            if DECAY_INPUT:
                if RESET0:
                    h = v + (x - v) / tau
                else:
                    h = v + (x - (v - v_reset)) / tau
            else:
                if RESET0:
                    h = v * decay + x
                else:
                    h = v - (v - v_reset) / tau + x
            s = tl.where(h - v_th >= 0, 1.0, 0.0)
            if SOFT:
                v = h - s * v_th
            else:
                v = (1.0 - s) * h + s * v_reset
            tl.store(s_ptr + t * M + offs, s.to(s_ptr.dtype.element_ty), mask=m)
            if STORE_H:
                tl.store(h_ptr + t * M + offs, h.to(h_ptr.dtype.element_ty), mask=m)
        tl.store(vlast_ptr + offs, v.to(vlast_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _lif_bwd_kernel(
        gs_ptr, gv_ptr, h_ptr, gx_ptr, gv0_ptr, M, T, tau, v_th, v_reset, alpha,
        DECAY_INPUT: tl.constexpr, SOFT: tl.constexpr, DETACH: tl.constexpr, ATAN: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < M
        tau = tl.cast(tau, tl.float32)
        v_th = tl.cast(v_th, tl.float32)
        v_reset = tl.cast(v_reset, tl.float32)
        alpha = tl.cast(alpha, tl.float32)
        grad_v = tl.load(gv_ptr + offs, mask=m, other=0).to(tl.float32)
        if DECAY_INPUT:
            dh_dx = 1.0 / tau
        else:
            dh_dx = 1.0
        dh_dv = 1.0 - 1.0 / tau
        for i in range(T):
            t = T - 1 - i
            h = tl.load(h_ptr + t * M + offs, mask=m, other=0).to(tl.float32)
            gs = tl.load(gs_ptr + t * M + offs, mask=m, other=0).to(tl.float32)
            s = tl.where(h - v_th >= 0, 1.0, 0.0)
            if SOFT:
                grad_h = grad_v
                if not DETACH:
                    gs = gs - grad_v * v_th
            else:
                grad_h = grad_v * (1.0 - s)
                if not DETACH:
                    gs = gs + grad_v * (v_reset - h)
            xs = h - v_th
            if ATAN:
                z = 3.141592653589793 / 2 * alpha * xs
                sg = alpha / 2 / (1 + z * z)
            else:
                sig = tl.sigmoid(xs * alpha)
                sg = (1.0 - sig) * sig * alpha
            grad_h = grad_h + gs * sg
            tl.store(gx_ptr + t * M + offs, (grad_h * dh_dx).to(gx_ptr.dtype.element_ty), mask=m)
            grad_v = grad_h * dh_dv
        tl.store(gv0_ptr + offs, grad_v.to(gv0_ptr.dtype.element_ty), mask=m)


def lif_forward_triton(
    x_seq: Tensor,
    v_init: Tensor,
    tau: float,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    int8_spikes: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fused multi-step LIF forward: ``(spike_seq, v_last, h_seq)`` as :func:`lif_forward_ref`."""
    x = x_seq.contiguous()
    T = x.shape[0]
    M = x[0].numel()
    spikes = torch.empty_like(x, dtype=torch.int8 if int8_spikes else x.dtype)
    h_seq = x.new_empty(0) if int8_spikes else torch.empty_like(x)
    v_last = torch.empty(x.shape[1:], dtype=x.dtype, device=x.device)
    reset0 = v_reset is None or v_reset == 0.0
    _lif_fwd_kernel[(cdiv(M, _LIF_BLOCK),)](
        # without STORE_H nothing is written through the h pointer: x stands in for the empty h_seq
        x, v_init.to(x.dtype).contiguous(), spikes, x if int8_spikes else h_seq, v_last, M, T,
        float(tau), 1.0 - 1.0 / float(tau), float(v_threshold), 0.0 if v_reset is None else float(v_reset),
        DECAY_INPUT=decay_input, RESET0=reset0, SOFT=v_reset is None, STORE_H=not int8_spikes,
        BLOCK=_LIF_BLOCK,
    )  # fmt: skip
    return spikes, v_last, h_seq


def lif_backward_triton(
    grad_spike: Tensor,
    grad_v_last: Tensor,
    h_seq: Tensor,
    tau: float,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
) -> tuple[Tensor, Tensor]:
    """Fused multi-step LIF backward, as :func:`lif_backward_ref`."""
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {SURROGATES}")
    h = h_seq.contiguous()
    T = h.shape[0]
    M = h[0].numel()
    grad_x = torch.empty_like(h)
    grad_v0 = torch.empty(h.shape[1:], dtype=h.dtype, device=h.device)
    _lif_bwd_kernel[(cdiv(M, _LIF_BLOCK),)](
        grad_spike.to(h.dtype).contiguous(), grad_v_last.to(h.dtype).contiguous(), h, grad_x, grad_v0, M, T,
        float(tau), float(v_threshold), 0.0 if v_reset is None else float(v_reset), float(alpha),
        DECAY_INPUT=decay_input, SOFT=v_reset is None, DETACH=detach_reset, ATAN=surrogate == "atan", BLOCK=_LIF_BLOCK,
    )  # fmt: skip
    return grad_x, grad_v0
