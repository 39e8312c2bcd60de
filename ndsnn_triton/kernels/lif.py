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

import math

import torch
from torch import Tensor

from ndsnn_triton.kernels.launch import KernelLaunch, check_elements, check_grid, plan, pow2_block
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
# it); backward runs the loop in reverse.
#
# Numerics, decided on purpose (the same on every GPU and Triton version, and in the
# interpreter): fp32 arithmetic with the reference's expression order, every division IEEE
# round-to-nearest (``div_rn``, not the approximate reciprocal Triton emits for ``/``), and no
# contraction into fused multiply-adds (``enable_fp_fusion=False``), so each operation rounds
# once, as torch's eager ops do. Constants the reference computes in Python double precision
# (1 - 1/tau, pi/2·alpha, alpha/2) come from the host. With bf16/fp16 storage, h is rounded to
# the storage dtype before the spike decision, so the backward (which recomputes spikes from the
# stored h) sees every spike the forward emitted.
#
# Guarantee against the torch reference (tested in tests/test_kernels.py; fp32):
# * CPU / interpreter: spikes, h and v identical.
# * CUDA: torch divides by a Python scalar through a rounded reciprocal (x·(1/tau)), one rounding
#   more than ``div_rn``. h and v agree within LIF_FWD_ULPS_PER_STEP·t ulps of the neuron's
#   magnitude after t steps (:func:`lif_forward_tolerance`); spikes agree except where the
#   reference's h lies within that tolerance of the threshold (after which that neuron's
#   trajectories may differ by a reset).
# * Backward: the surrogates are evaluated as the reference writes them; the sigmoid's exp is
#   Triton's fast exp2 (about 2 ulp), so gradients agree within LIF_BWD_RTOL relative.


#: fp32 ulps per time step by which h and v may differ from torch's CUDA reference (see above)
LIF_FWD_ULPS_PER_STEP = 2
#: relative tolerance of the backward against the reference on CUDA (fast exp in the sigmoid)
LIF_BWD_RTOL = 1e-5

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
                    h = v + tl.math.div_rn(x - v, tau)
                else:
                    h = v + tl.math.div_rn(x - (v - v_reset), tau)
            else:
                if RESET0:
                    h = v * decay + x
                else:
                    h = v - tl.math.div_rn(v - v_reset, tau) + x
            # the stored h (h_ptr's dtype: x's) is what the backward sees: decide spikes on it
            h = h.to(h_ptr.dtype.element_ty).to(tl.float32)
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
        gs_ptr, gv_ptr, h_ptr, gx_ptr, gv0_ptr, M, T, dh_dx, dh_dv, v_th, v_reset, scale, coef,
        SOFT: tl.constexpr, DETACH: tl.constexpr, ATAN: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < M
        dh_dx = tl.cast(dh_dx, tl.float32)  # 1/tau (decay_input) or 1, from the host
        dh_dv = tl.cast(dh_dv, tl.float32)  # 1 - 1/tau, from the host
        v_th = tl.cast(v_th, tl.float32)
        v_reset = tl.cast(v_reset, tl.float32)
        scale = tl.cast(scale, tl.float32)  # atan: pi/2·alpha; sigmoid: alpha
        coef = tl.cast(coef, tl.float32)  # atan: alpha/2; sigmoid: alpha
        grad_v = tl.load(gv_ptr + offs, mask=m, other=0).to(tl.float32)
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
            if ATAN:  # reference: (alpha/2) / (1 + z²) · gs, the division as reciprocal · scalar
                z = scale * xs
                grad_h = grad_h + tl.math.div_rn(1.0, 1.0 + z * z) * coef * gs
            else:  # reference: gs · (1 - sig) · sig · alpha
                sig = tl.math.div_rn(1.0, 1.0 + tl.exp(-(xs * scale)))
                grad_h = grad_h + gs * (1.0 - sig) * sig * coef
            tl.store(gx_ptr + t * M + offs, (grad_h * dh_dx).to(gx_ptr.dtype.element_ty), mask=m)
            grad_v = grad_h * dh_dv
        tl.store(gv0_ptr + offs, grad_v.to(gv0_ptr.dtype.element_ty), mask=m)


# ----------------------------------------------------------------------------- launch plans

#: no contraction into FMAs: each operation rounds once, as the eager reference does
LIF_FP_FUSION = False
#: software-pipelining depth of the time loop (Triton's default, stated explicitly)
LIF_NUM_STAGES = 3


def _lif_block(neurons: int) -> tuple[int, int]:
    """``(BLOCK, num_warps)``: up to 512 neurons per program (4 per thread, 128-bit accesses in
    fp32) on large layers, down to 64 on small ones so the launch still offers enough programs."""
    block = pow2_block(neurons, 64, 512)
    return block, max(1, min(4, block // 64))


def _lif_launch(
    name: str, tensor: str, shape: tuple[int, ...] | torch.Size
) -> tuple[int, int, tuple[int]]:
    """``(BLOCK, num_warps, grid)`` for a ``[T, ...]`` tensor of ``shape``, after checking its
    element count against int32 offsets and the grid against CUDA's limits."""
    check_elements(name, **{tensor: math.prod(shape)})
    block, warps = _lif_block(math.prod(shape[1:]))
    grid = (cdiv(math.prod(shape[1:]), block),)
    check_grid(name, grid)
    return block, warps, grid


@plan("lif_fwd")
def lif_fwd_plan(
    shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, int8_spikes: bool,
    decay_input: bool, v_reset: float | None,
) -> KernelLaunch:  # fmt: skip
    """The forward's launch for ``x_seq`` of ``shape`` ``[T, ...]`` and ``dtype``."""
    block, warps, grid = _lif_launch("ndsnn::lif_multistep (Triton forward)", "x_seq", shape)
    return KernelLaunch(
        name="lif_fwd",
        kernel=_lif_fwd_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "x_ptr": dtype,
            "v0_ptr": dtype,
            "s_ptr": torch.int8 if int8_spikes else dtype,
            "h_ptr": dtype,
            "vlast_ptr": dtype,
        },
        scalars={
            **dict.fromkeys(("M", "T"), "i32"),
            **dict.fromkeys(("tau", "decay", "v_th", "v_reset"), "fp32"),
        },
        constexprs={
            "DECAY_INPUT": bool(decay_input),
            "RESET0": v_reset is None or v_reset == 0.0,
            "SOFT": v_reset is None,
            "STORE_H": not int8_spikes,
            "BLOCK": block,
        },
        num_warps=warps,
        num_stages=LIF_NUM_STAGES,
        enable_fp_fusion=LIF_FP_FUSION,
    )


@plan("lif_bwd")
def lif_bwd_plan(
    shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, v_reset: float | None,
    detach_reset: bool, surrogate: str,
) -> KernelLaunch:  # fmt: skip
    """The backward's launch for ``h_seq`` of ``shape`` ``[T, ...]`` and ``dtype``."""
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {SURROGATES}")
    block, warps, grid = _lif_launch("ndsnn::lif_multistep_backward (Triton)", "h_seq", shape)
    return KernelLaunch(
        name="lif_bwd",
        kernel=_lif_bwd_kernel if HAS_TRITON else None,
        grid=grid,
        pointers=dict.fromkeys(("gs_ptr", "gv_ptr", "h_ptr", "gx_ptr", "gv0_ptr"), dtype),
        scalars={
            **dict.fromkeys(("M", "T"), "i32"),
            **dict.fromkeys(("dh_dx", "dh_dv", "v_th", "v_reset", "scale", "coef"), "fp32"),
        },
        constexprs={
            "SOFT": v_reset is None,
            "DETACH": bool(detach_reset),
            "ATAN": surrogate == "atan",
            "BLOCK": block,
        },
        num_warps=warps,
        num_stages=LIF_NUM_STAGES,
        enable_fp_fusion=LIF_FP_FUSION,
    )


def lif_forward_tolerance(
    x_seq: Tensor, h_seq: Tensor, v_init: Tensor, v_threshold: float, v_reset: float | None
) -> Tensor:
    """The stated fp32 agreement bound of h (and v) with torch's CUDA reference, per element of
    ``h_seq [T, ...]``: ``LIF_FWD_ULPS_PER_STEP · (t + 1)`` ulps (fp32 eps) of the largest
    magnitude the neuron's arithmetic has met up to step t — its inputs, potentials and initial
    state, plus ``|v_threshold|`` and ``|v_reset|``, which enter the reset and the charge."""
    mags = torch.maximum(x_seq.abs(), h_seq.abs())
    scale = torch.maximum(torch.cummax(mags, dim=0).values, v_init.abs().unsqueeze(0))
    scale = scale + abs(v_threshold) + (0.0 if v_reset is None else abs(v_reset))
    steps = torch.arange(1, x_seq.shape[0] + 1, device=x_seq.device, dtype=scale.dtype)
    steps = steps.view(-1, *([1] * (x_seq.dim() - 1)))
    eps = torch.finfo(torch.float32).eps
    return LIF_FWD_ULPS_PER_STEP * steps * eps * scale


# ----------------------------------------------------------------------------- launchers


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
    launch = lif_fwd_plan(x_seq.shape, x_seq.dtype, int8_spikes, decay_input, v_reset)
    x = x_seq.contiguous()
    T = x.shape[0]
    M = x[0].numel()
    spikes = torch.empty_like(x, dtype=torch.int8 if int8_spikes else x.dtype)
    h_seq = x.new_empty(0) if int8_spikes else torch.empty_like(x)
    v_last = torch.empty(x.shape[1:], dtype=x.dtype, device=x.device)
    launch.run(
        # without STORE_H nothing is written through the h pointer: x stands in for the empty h_seq
        x, v_init.to(x.dtype).contiguous(), spikes, x if int8_spikes else h_seq, v_last, M, T,
        float(tau), 1.0 - 1.0 / float(tau), float(v_threshold), 0.0 if v_reset is None else float(v_reset),
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
    launch = lif_bwd_plan(h_seq.shape, h_seq.dtype, v_reset, detach_reset, surrogate)
    h = h_seq.contiguous()
    T = h.shape[0]
    M = h[0].numel()
    grad_x = torch.empty_like(h)
    grad_v0 = torch.empty(h.shape[1:], dtype=h.dtype, device=h.device)
    tau, alpha = float(tau), float(alpha)
    atan = surrogate == "atan"
    launch.run(
        grad_spike.to(h.dtype).contiguous(), grad_v_last.to(h.dtype).contiguous(), h, grad_x, grad_v0, M, T,
        1.0 / tau if decay_input else 1.0, 1.0 - 1.0 / tau, float(v_threshold),
        0.0 if v_reset is None else float(v_reset),
        math.pi / 2 * alpha if atan else alpha, alpha / 2 if atan else alpha,
    )  # fmt: skip
    return grad_x, grad_v0
