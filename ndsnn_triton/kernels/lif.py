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
from ndsnn_triton.kernels.work import emits_activity
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
    map_size: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Run T steps; returns ``(spike_seq [T,...], v_last [...], h_seq [T,...], spikes_i8,
    active)`` — the first three in x's dtype.

    ``h_seq`` (the charged, pre-reset potential) is what the backward needs. With
    ``int8_spikes`` (no gradient wanted) the spikes come as int8 and ``h_seq`` is empty ``[0]``.
    ``map_size`` > 0 asks for the *companion* of the spikes that the next layer's kernels read
    (:func:`lif_companion_ref`): an int8 copy (empty when the spikes are int8 already) and, for
    maps of at least 4 positions, per-map activity; both empty for ``map_size == 0``.
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
    spikes_i8, active = lif_companion_ref(spikes, map_size)
    return spikes, v.contiguous(), h_seq, spikes_i8, active


def lif_companion_ref(spikes: Tensor, map_size: int) -> tuple[Tensor, Tensor]:
    """``(spikes_i8, active)`` of ``spikes [T, ...]`` viewed as maps of ``map_size`` positions:
    an int8 copy (empty if the spikes are int8 already or ``map_size == 0``) and int8
    ``[T, maps]`` flags, 1 where the map holds a spike (empty unless :func:`emits_activity`)."""

    def empty() -> Tensor:  # a fresh one each time: op outputs must not alias
        return spikes.new_empty(0, dtype=torch.int8)

    if map_size <= 0:
        return empty(), empty()
    copy = empty() if spikes.dtype == torch.int8 else spikes.to(torch.int8)
    if not emits_activity(map_size):
        return copy, empty()
    maps = spikes.reshape(spikes.shape[0], -1, map_size)
    return copy, (maps != 0).any(-1).to(torch.int8)


def lif_backward_ref(
    grad_spike: Tensor,
    grad_v_last: Tensor | None,
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
    expression), so the forward saves nothing but ``h_seq``. ``grad_v_last=None``: no gradient
    reaches the last potential (zero).
    """
    grad_x = torch.empty_like(h_seq, memory_format=torch.contiguous_format)
    if grad_v_last is None:
        grad_v_last = h_seq.new_zeros(h_seq.shape[1:])
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
        x_ptr, v0_ptr, s_ptr, s8_ptr, act_ptr, h_ptr, vlast_ptr,
        MAPS_TOTAL, HW, PB, T, x_tstride, tau, decay, v_th, v_reset,
        DECAY_INPUT: tl.constexpr, RESET0: tl.constexpr, SOFT: tl.constexpr, STORE_H: tl.constexpr,
        COPY_I8: tl.constexpr, ACTIVITY: tl.constexpr, V0_SCALAR: tl.constexpr,
        MAPS: tl.constexpr, HWB: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        m = (pid // PB) * MAPS + tl.arange(0, MAPS)  # [MAPS] maps of one step
        p = (pid % PB) * HWB + tl.arange(0, HWB)  # [HWB] positions of a map
        inside = (m < MAPS_TOTAL)[:, None] & (p < HW)[None, :]
        offs = (m * HW)[:, None] + p[None, :]
        M = MAPS_TOTAL * HW
        tau = tl.cast(tau, tl.float32)
        decay = tl.cast(decay, tl.float32)  # 1 - 1/tau, rounded once on the host as torch does
        v_th = tl.cast(v_th, tl.float32)
        v_reset = tl.cast(v_reset, tl.float32)
        if V0_SCALAR:  # one rest potential for every neuron (an expanded 0-d tensor)
            v = tl.zeros([MAPS, HWB], dtype=tl.float32) + tl.load(v0_ptr).to(tl.float32)
        else:
            v = tl.load(v0_ptr + offs, mask=inside, other=0).to(tl.float32)
        for t in range(T):
            x = tl.load(x_ptr + t * x_tstride + offs, mask=inside, other=0).to(tl.float32)
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
            fired = (h - v_th >= 0) & inside
            s = tl.where(fired, 1.0, 0.0)
            if SOFT:
                v = h - s * v_th
            else:
                v = (1.0 - s) * h + s * v_reset
            tl.store(s_ptr + t * M + offs, s.to(s_ptr.dtype.element_ty), mask=inside)
            if COPY_I8:
                tl.store(s8_ptr + t * M + offs, fired.to(tl.int8), mask=inside)
            if ACTIVITY:  # the whole map is in this program (PB == 1)
                any_spike = tl.max(fired.to(tl.int8), axis=1)
                tl.store(act_ptr + t * MAPS_TOTAL + m, any_spike, mask=m < MAPS_TOTAL)
            if STORE_H:
                tl.store(h_ptr + t * M + offs, h.to(h_ptr.dtype.element_ty), mask=inside)
        tl.store(vlast_ptr + offs, v.to(vlast_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def _lif_bwd_kernel(
        gs_ptr, gv_ptr, h_ptr, gx_ptr, gv0_ptr, M, T, dh_dx, dh_dv, v_th, v_reset, scale, coef,
        SOFT: tl.constexpr, DETACH: tl.constexpr, ATAN: tl.constexpr, HAS_GV: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < M
        dh_dx = tl.cast(dh_dx, tl.float32)  # 1/tau (decay_input) or 1, from the host
        dh_dv = tl.cast(dh_dv, tl.float32)  # 1 - 1/tau, from the host
        v_th = tl.cast(v_th, tl.float32)
        v_reset = tl.cast(v_reset, tl.float32)
        scale = tl.cast(scale, tl.float32)  # atan: pi/2·alpha; sigmoid: alpha
        coef = tl.cast(coef, tl.float32)  # atan: alpha/2; sigmoid: alpha
        if HAS_GV:
            grad_v = tl.load(gv_ptr + offs, mask=m, other=0).to(tl.float32)
        else:  # no gradient reached the last potential
            grad_v = tl.zeros([BLOCK], dtype=tl.float32)
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


def companion_map_size(step_numel: int, map_size: int) -> int:
    """The map size a forward over ``step_numel`` neurons per step emits a companion for: 0 (none)
    when ``map_size`` is 0 or does not divide the step."""
    return map_size if map_size > 0 and step_numel % map_size == 0 else 0


@plan("lif_fwd")
def lif_fwd_plan(
    shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, int8_spikes: bool,
    decay_input: bool, v_reset: float | None, map_size: int = 0, v0_scalar: bool = False,
) -> KernelLaunch:  # fmt: skip
    """The forward's launch for ``x_seq`` of ``shape`` ``[T, ...]`` and ``dtype``; ``map_size``
    > 0: also write the spikes' companion (int8 copy; per-map activity on maps where
    :func:`emits_activity`, each map in one program); ``v0_scalar``: ``v_init`` is one value
    broadcast to every neuron. ``values``: the kernel's map geometry ``MAPS_TOTAL``, ``HW``,
    ``PB`` (position blocks per map)."""
    name = "ndsnn::lif_multistep (Triton forward)"
    check_elements(name, x_seq=math.prod(shape))
    neurons = math.prod(shape[1:])
    map_size = companion_map_size(neurons, map_size)
    activity = emits_activity(map_size)
    if activity:  # whole maps per program, a few of them on small maps
        hwb = _pow2_at_least(map_size)
        lanes = max(hwb, pow2_block(neurons, 64, 512))
        maps, hw, pb, tile_maps = neurons // map_size, map_size, 1, lanes // hwb
    else:  # one flat "map" of every neuron of a step, in blocks
        hwb, _ = _lif_block(neurons)
        lanes = hwb
        maps, hw, pb, tile_maps = 1, neurons, cdiv(neurons, hwb), 1
    grid = (cdiv(maps, tile_maps) * pb,)
    check_grid(name, grid)
    return KernelLaunch(
        name="lif_fwd",
        kernel=_lif_fwd_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "x_ptr": dtype,
            "v0_ptr": dtype,
            "s_ptr": torch.int8 if int8_spikes else dtype,
            "s8_ptr": torch.int8,
            "act_ptr": torch.int8,
            "h_ptr": dtype,
            "vlast_ptr": dtype,
        },
        scalars={
            **dict.fromkeys(("MAPS_TOTAL", "HW", "PB", "T", "x_tstride"), "i32"),
            **dict.fromkeys(("tau", "decay", "v_th", "v_reset"), "fp32"),
        },
        constexprs={
            "DECAY_INPUT": bool(decay_input),
            "RESET0": v_reset is None or v_reset == 0.0,
            "SOFT": v_reset is None,
            "STORE_H": not int8_spikes,
            "COPY_I8": map_size > 0 and not int8_spikes,
            "ACTIVITY": activity,
            "V0_SCALAR": bool(v0_scalar),
            "MAPS": tile_maps,
            "HWB": hwb,
        },
        num_warps=max(1, min(8, lanes // 128)),
        num_stages=LIF_NUM_STAGES,
        enable_fp_fusion=LIF_FP_FUSION,
        values={"MAPS_TOTAL": maps, "HW": hw, "PB": pb},
    )


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@plan("lif_bwd")
def lif_bwd_plan(
    shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, v_reset: float | None,
    detach_reset: bool, surrogate: str, has_grad_v: bool = True,
) -> KernelLaunch:  # fmt: skip
    """The backward's launch for ``h_seq`` of ``shape`` ``[T, ...]`` and ``dtype``
    (``has_grad_v``: a gradient reaches the last potential)."""
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
            "HAS_GV": bool(has_grad_v),
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


def _time_stride(x_seq: Tensor) -> tuple[Tensor, int]:
    """``(x, stride of t)``: ``x_seq`` as the kernel reads it — one contiguous step, either
    repeated over T (an input expanded from one step, as a direct-coding stem gives: stride 0, no
    copy) or stored T times."""
    if x_seq.stride(0) == 0 and x_seq[0].is_contiguous():
        return x_seq, 0
    x = x_seq.contiguous()
    return x, x[0].numel()


def _scalar_view(v: Tensor) -> bool:
    """Whether ``v`` is one value seen at every position (an expanded 0-d or 1-element tensor)."""
    return v.numel() > 0 and all(st == 0 for st in v.stride())


def lif_forward_triton(
    x_seq: Tensor,
    v_init: Tensor,
    tau: float,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    int8_spikes: bool = False,
    map_size: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Fused multi-step LIF forward, as :func:`lif_forward_ref`: one launch writes the spikes,
    ``h``, the last potential and the spikes' companion."""
    x, tstride = _time_stride(x_seq)
    v0 = v_init.to(x.dtype)
    v0_scalar = _scalar_view(v0)
    launch = lif_fwd_plan(
        x_seq.shape, x_seq.dtype, int8_spikes, decay_input, v_reset, map_size, v0_scalar
    )
    T = x_seq.shape[0]
    shape = x_seq.shape
    device = x_seq.device
    spikes = torch.empty(shape, dtype=torch.int8 if int8_spikes else x.dtype, device=device)
    h_seq = x.new_empty(0) if int8_spikes else torch.empty(shape, dtype=x.dtype, device=device)
    v_last = torch.empty(shape[1:], dtype=x.dtype, device=device)
    c = launch.constexprs
    spikes_i8 = torch.empty(shape if c["COPY_I8"] else 0, dtype=torch.int8, device=device)
    values = launch.values
    active = torch.empty(
        (T, values["MAPS_TOTAL"]) if c["ACTIVITY"] else 0, dtype=torch.int8, device=device
    )
    unused = spikes.new_empty(1, dtype=torch.int8)  # stands in for outputs a variant never writes
    launch.run(
        x, v0 if v0_scalar else v0.contiguous(), spikes, spikes_i8 if c["COPY_I8"] else unused,
        active if c["ACTIVITY"] else unused, x if int8_spikes else h_seq, v_last,
        values["MAPS_TOTAL"], values["HW"], values["PB"], T, tstride,
        float(tau), 1.0 - 1.0 / float(tau), float(v_threshold), 0.0 if v_reset is None else float(v_reset),
    )  # fmt: skip
    return spikes, v_last, h_seq, spikes_i8, active


def lif_backward_triton(
    grad_spike: Tensor,
    grad_v_last: Tensor | None,
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
    launch = lif_bwd_plan(
        h_seq.shape, h_seq.dtype, v_reset, detach_reset, surrogate, grad_v_last is not None
    )
    h = h_seq.contiguous()
    T = h.shape[0]
    M = h[0].numel()
    grad_x = torch.empty_like(h)
    grad_v0 = torch.empty(h.shape[1:], dtype=h.dtype, device=h.device)
    gv = (
        grad_v0 if grad_v_last is None else grad_v_last.to(h.dtype).contiguous()
    )  # never read if absent
    tau, alpha = float(tau), float(alpha)
    atan = surrogate == "atan"
    launch.run(
        grad_spike.to(h.dtype).contiguous(), gv, h, grad_x, grad_v0, M, T,
        1.0 / tau if decay_input else 1.0, 1.0 - 1.0 / tau, float(v_threshold),
        0.0 if v_reset is None else float(v_reset),
        math.pi / 2 * alpha if atan else alpha, alpha / 2 if atan else alpha,
    )  # fmt: skip
    return grad_x, grad_v0
