"""Masked 2-D convolution over (usually binary) spike maps: pure-PyTorch references, and the
sparse Triton kernels with their launchers (below).

Shapes: ``x [N, Cin, H, W]`` (N = T*B), ``weight``/``mask [Cout, Cin/groups, kh, kw]``,
``y [N, Cout, Hout, Wout]``. The effective weight is ``weight`` with the pruned positions
(``mask == False``) set to zero, whatever the stored value there is. A spike input ``x`` may be
float or compact (int8/uint8/bool, 1 byte per spike); ``y`` has the weight's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ndsnn_triton.kernels.launch import (
    KernelLaunch,
    check_elements,
    check_grid,
    plan,
    pow2_block,
)
from ndsnn_triton.kernels.sparse_index import get_index
from ndsnn_triton.kernels.spike_events import spike_events_plan, spike_events_triton
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, cdiv, tl, triton
from ndsnn_triton.kernels.work import forward_block, out_hw


def apply_mask(weight: Tensor, mask: Tensor) -> Tensor:
    """``weight`` with the positions where ``mask`` is False set to exactly zero (a new tensor)."""
    return weight.masked_fill(~mask, 0)


def masked_conv2d_ref(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> Tensor:
    """Forward ``y = conv2d(x, weight ⊙ mask) + bias``, returned contiguous."""
    x = x.to(weight.dtype)
    y = F.conv2d(x, apply_mask(weight, mask), bias, stride, padding, dilation, groups)
    return y.contiguous()


def masked_conv2d_input_grad_ref(
    grad_out: Tensor,
    weight: Tensor,
    mask: Tensor,
    input_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> Tensor:
    """Input gradient ``dX = dY ⊛ (weight ⊙ mask)ᵀ`` of shape ``input_size``."""
    # convolution_backward only reads the input's shape for dX: a stride-0 view costs nothing.
    x_shape_only = grad_out.new_empty(1).expand(input_size)
    grad_x = torch.ops.aten.convolution_backward(
        grad_out,
        x_shape_only,
        apply_mask(weight, mask),
        None,
        stride,
        padding,
        dilation,
        False,
        [0, 0],
        groups,
        [True, False, False],
    )[0]
    return grad_x.contiguous()


def masked_conv2d_weight_grad_ref(
    grad_out: Tensor,
    x: Tensor,
    mask: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    dense: bool,
) -> Tensor:
    """Weight gradient ``dW = dYᵀ ⊛ X``; zero off the mask unless ``dense`` (growth steps).

    ``x`` may be the int8 copy of binary spikes that the forward saved.
    """
    x = x.to(grad_out.dtype)
    w_shape_only = x.new_empty(1).expand(mask.shape)
    grad_w = torch.ops.aten.convolution_backward(
        grad_out,
        x,
        w_shape_only,
        None,
        stride,
        padding,
        dilation,
        False,
        [0, 0],
        groups,
        [False, True, False],
    )[1]
    if not dense:
        grad_w = grad_w.masked_fill(~mask, 0)
    return grad_w.contiguous()


# ----------------------------------------------------------------------------- Triton kernels
#
# Sparse weights on CUDA cores, "pull" row gather: one program owns one output channel (taken in
# row_order, longest rows first) and BLOCK_P output positions across all N = T·B samples, and
# walks that channel's kept weights; per weight it gathers the shifted input values (int8 spikes:
# 1 byte per value instead of 4) and accumulates in fp32, skipping the weight when every sample
# the block touches has a silent input map in that weight's channel (the activity comes from one
# pass over the input: spike_events.py). The input gradient walks the transpose index per input
# channel. The weight gradient is driven by spikes: one program per (sample chunk, input channel)
# multiplies each kept weight of the channel with the channel's events (non-zero inputs, compacted
# by spike_events.py) only, so its work is ∝ kept weights × spikes; per-chunk partial sums are
# reduced in a second, deterministic pass (no float atomics). work.py states the executed MACs;
# with COUNT_WORK the kernels count them (instrumented interpreter tests).
#
# Grids put the position blocks on axis 0 (up to 2³¹ − 1 programs) and channels on axis 1 (CUDA
# caps axes 1 and 2 at 65,535). Offsets are int32: the plans refuse tensors past that range.


if HAS_TRITON:

    @triton.jit
    def _conv_fwd_kernel(
        x_ptr, w_ptr, bias_ptr, row_ptr, col_idx, row_order, active_ptr, y_ptr, work_ptr,
        N, C, H, W, OC, OH, OW, K,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_P: tl.constexpr,
        COUNT_WORK: tl.constexpr,
    ):  # fmt: skip
        o = tl.load(row_order + tl.program_id(1))
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = p < N * OH * OW
        n = p // (OH * OW)
        rem = p % (OH * OW)
        oh = rem // OW
        ow = rem % OW
        start = tl.load(row_ptr + o)
        end = tl.load(row_ptr + o + 1)
        acc = tl.zeros([BLOCK_P], dtype=tl.float32)
        for j in range(start, end):
            k = tl.load(col_idx + j)
            c = k // (KH * KW)
            # skip the weight where every sample this block touches has a silent map in channel c
            live = tl.load(active_ptr + n * C + c, mask=pmask, other=0)
            if tl.max(live, axis=0) > 0:
                wv = tl.load(w_ptr + o * K + k).to(tl.float32)
                r = k % (KH * KW)
                ih = oh * stride_h - pad_h + (r // KW) * dil_h
                iw = ow * stride_w - pad_w + (r % KW) * dil_w
                valid = pmask & (live != 0) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                xv = tl.load(x_ptr + ((n * C + c) * H + ih) * W + iw, mask=valid, other=0)
                acc += wv * xv.to(tl.float32)
                if COUNT_WORK:
                    tl.atomic_add(work_ptr, tl.sum(pmask.to(tl.int32), axis=0))
        if HAS_BIAS:
            acc += tl.load(bias_ptr + o).to(tl.float32)
        tl.store(
            y_ptr + ((n * OC + o) * OH + oh) * OW + ow, acc.to(y_ptr.dtype.element_ty), mask=pmask
        )

    @triton.jit
    def _conv_dgrad_kernel(
        dy_ptr, w_ptr, col_ptr, t_row_idx, dx_ptr,
        N, C, H, W, OC, OH, OW, K,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        c = tl.program_id(1)
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = p < N * H * W
        n = p // (H * W)
        rem = p % (H * W)
        ih = rem // W
        iw = rem % W
        acc = tl.zeros([BLOCK_P], dtype=tl.float32)
        for kh in tl.static_range(KH):
            for kw in tl.static_range(KW):
                k = (c * KH + kh) * KW + kw
                th = ih + pad_h - kh * dil_h
                tw = iw + pad_w - kw * dil_w
                oh = th // stride_h
                ow = tw // stride_w
                valid = (
                    pmask
                    & (th >= 0)
                    & (tw >= 0)
                    & (th % stride_h == 0)
                    & (tw % stride_w == 0)
                    & (oh < OH)
                    & (ow < OW)
                )
                start = tl.load(col_ptr + k)
                end = tl.load(col_ptr + k + 1)
                for j in range(start, end):
                    o = tl.load(t_row_idx + j)
                    wv = tl.load(w_ptr + o * K + k).to(tl.float32)
                    g = tl.load(
                        dy_ptr + ((n * OC + o) * OH + oh) * OW + ow, mask=valid, other=0
                    ).to(tl.float32)
                    acc += wv * g
        tl.store(
            dx_ptr + ((n * C + c) * H + ih) * W + iw, acc.to(dx_ptr.dtype.element_ty), mask=pmask
        )

    @triton.jit
    def _conv_wgrad_kernel(
        dy_ptr, x_ptr, events_ptr, counts_ptr, col_ptr, t_row_idx, t_col_idx, partial_ptr, work_ptr,
        N, C, H, W, OC, OH, OW, CAP, SPC,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_P: tl.constexpr,
        COUNT_WORK: tl.constexpr,
    ):  # fmt: skip
        j = tl.program_id(0)
        c = tl.program_id(1)
        HW = H * W
        t_lo = tl.load(col_ptr + c * (KH * KW))
        t_hi = tl.load(col_ptr + (c + 1) * (KH * KW))
        n_events = tl.load(counts_ptr + c * tl.num_programs(0) + j)
        events = events_ptr + c * (N * HW) + j * SPC * HW
        for t0 in range(t_lo, t_hi, BLOCK_E):
            t = t0 + tl.arange(0, BLOCK_E)
            tmask = t < t_hi
            o = tl.load(t_row_idx + t, mask=tmask, other=0)
            r = tl.load(t_col_idx + t, mask=tmask, other=0) % (KH * KW)
            kh = r // KW
            kw = r % KW
            acc = tl.zeros([BLOCK_E], dtype=tl.float32)
            for q0 in range(0, n_events, BLOCK_P):
                q = q0 + tl.arange(0, BLOCK_P)
                qmask = q < n_events
                ev = tl.load(events + q, mask=qmask, other=0)
                n = ev // HW
                pos = ev % HW
                xv = tl.load(x_ptr + (n * C + c) * HW + pos, mask=qmask, other=0).to(tl.float32)
                th = (pos // W)[None, :] + pad_h - kh[:, None] * dil_h
                tw = (pos % W)[None, :] + pad_w - kw[:, None] * dil_w
                oh = th // stride_h
                ow = tw // stride_w
                both = tmask[:, None] & qmask[None, :]
                valid = (
                    both
                    & (th >= 0)
                    & (tw >= 0)
                    & (th % stride_h == 0)
                    & (tw % stride_w == 0)
                    & (oh < OH)
                    & (ow < OW)
                )
                g = tl.load(
                    dy_ptr + ((n[None, :] * OC + o[:, None]) * OH + oh) * OW + ow,
                    mask=valid,
                    other=0,
                )
                acc += tl.sum(g.to(tl.float32) * xv[None, :], axis=1)
                if COUNT_WORK:
                    tl.atomic_add(work_ptr, tl.sum(tl.sum(both.to(tl.int32), axis=1), axis=0))
            tl.store(partial_ptr + j * CAP + t, acc, mask=tmask)


# ----------------------------------------------------------------------------- launch plans

_I32 = "i32"
_GEOMETRY = ("stride_h", "stride_w", "pad_h", "pad_w", "dil_h", "dil_w")
#: weight-gradient tile: BLOCK_E kept weights of one input channel × BLOCK_P of its events per
#: loop iteration, on 8 warps (4 elements per thread). Sample chunks: spike_events.MAX_CHUNKS.
WGRAD_BLOCK_E = 16
WGRAD_BLOCK_P = 64
WGRAD_NUM_WARPS = 8
#: compile options pinned per kernel, so results do not follow Triton's changing defaults. The
#: conv kernels accumulate ``acc += w·x`` with fused multiply-adds (one rounding per term).
CONV_FP_FUSION = True
#: software-pipelining depth of the gather loops (Triton's default, stated explicitly)
CONV_NUM_STAGES = 3


def _ptr(dtype: torch.dtype) -> torch.dtype:
    """The element dtype a tensor is passed to the kernels as (bool spikes travel as int8)."""
    return torch.int8 if dtype == torch.bool else dtype


def _warps(block: int) -> int:
    """Warps for a 1-D block of ``block`` lanes: one element per thread, 1 to 4 warps."""
    return max(1, min(4, block // 32))


def _positions_by_channels(name: str, positions: int, channels: int) -> tuple[int, tuple[int, int]]:
    """``(BLOCK_P, grid)`` of a forward / input-gradient launch: position blocks on grid axis 0
    (no 65,535 cap there), one program row per channel on axis 1; checked against CUDA's limits."""
    block = pow2_block(positions, 16, 128, others=channels)
    grid = (cdiv(positions, block), channels)
    check_grid(name, grid)
    return block, grid


def _scalars(*names: str) -> dict[str, str]:
    return dict.fromkeys(names, _I32)


@plan("conv_fwd")
def conv_fwd_plan(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    x_dtype: torch.dtype,
    w_dtype: torch.dtype,
    has_bias: bool,
    count_work: bool = False,
) -> KernelLaunch:
    """The forward's launch for ``x [N, C, H, W]`` and ``weight [OC, C, KH, KW]`` (groups = 1);
    ``count_work`` compiles in the executed-MAC counter (tests only)."""
    n, c, h, w = x_shape
    oc, _, kh, kw = w_shape
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    name = "ndsnn::masked_conv2d (Triton forward)"
    check_elements(name, x=n * c * h * w, weight=oc * c * kh * kw, output=n * oc * oh * ow)
    block, grid = _positions_by_channels(name, n * oh * ow, oc)
    assert block == forward_block(n * oh * ow, oc)  # the executed-work rule's block (work.py)
    return KernelLaunch(
        name="conv_fwd",
        kernel=_conv_fwd_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "x_ptr": _ptr(x_dtype),
            "w_ptr": w_dtype,
            "bias_ptr": w_dtype,
            "row_ptr": torch.int32,
            "col_idx": torch.int32,
            "row_order": torch.int32,
            "active_ptr": torch.int32,
            "y_ptr": w_dtype,
            "work_ptr": torch.int64,
        },
        scalars=_scalars("N", "C", "H", "W", "OC", "OH", "OW", "K", *_GEOMETRY),
        constexprs={
            "KH": kh,
            "KW": kw,
            "HAS_BIAS": bool(has_bias),
            "BLOCK_P": block,
            "COUNT_WORK": bool(count_work),
        },
        num_warps=_warps(block),
        num_stages=CONV_NUM_STAGES,
        enable_fp_fusion=CONV_FP_FUSION,
    )


@plan("conv_dgrad")
def conv_dgrad_plan(
    input_size: Sequence[int],
    w_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    dtype: torch.dtype,
) -> KernelLaunch:
    """The input gradient's launch: ``dY [N, OC, OH, OW]`` (``dtype``) to ``dX`` of ``input_size``."""
    n, c, h, w = input_size
    oc, _, kh, kw = w_shape
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    name = "ndsnn::masked_conv2d_input_grad (Triton)"
    check_elements(
        name, grad_input=n * c * h * w, weight=oc * c * kh * kw, grad_out=n * oc * oh * ow
    )
    block, grid = _positions_by_channels(name, n * h * w, c)
    return KernelLaunch(
        name="conv_dgrad",
        kernel=_conv_dgrad_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "dy_ptr": dtype,
            "w_ptr": dtype,
            "col_ptr": torch.int32,
            "t_row_idx": torch.int32,
            "dx_ptr": dtype,
        },
        scalars=_scalars("N", "C", "H", "W", "OC", "OH", "OW", "K", *_GEOMETRY),
        constexprs={"KH": kh, "KW": kw, "BLOCK_P": block},
        num_warps=_warps(block),
        num_stages=CONV_NUM_STAGES,
        enable_fp_fusion=CONV_FP_FUSION,
    )


@plan("conv_wgrad")
def conv_wgrad_plan(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    cap: int,
    dy_dtype: torch.dtype,
    x_dtype: torch.dtype,
    count_work: bool = False,
) -> KernelLaunch:
    """The event-driven weight gradient's launch over the ``cap`` index entries of a ``w_shape``
    mask: one program per (sample chunk, input channel), the chunks of the spike-events pass
    (partial sums: ``chunks × cap`` fp32 values)."""
    n, c, h, w = x_shape
    oc, _, kh, kw = w_shape
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    name = "ndsnn::masked_conv2d_weight_grad (Triton)"
    events = spike_events_plan(x_shape, (kh, kw), x_dtype, True)
    chunks = events.grid[0]
    check_elements(
        name, input=n * c * h * w, grad_out=n * oc * oh * ow, partial_sums=chunks * max(cap, 1)
    )
    grid = (chunks, c)
    check_grid(name, grid)
    return KernelLaunch(
        name="conv_wgrad",
        kernel=_conv_wgrad_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "dy_ptr": dy_dtype,
            "x_ptr": _ptr(x_dtype),
            "events_ptr": torch.int32,
            "counts_ptr": torch.int32,
            "col_ptr": torch.int32,
            "t_row_idx": torch.int32,
            "t_col_idx": torch.int32,
            "partial_ptr": torch.float32,
            "work_ptr": torch.int64,
        },
        scalars=_scalars("N", "C", "H", "W", "OC", "OH", "OW", "CAP", "SPC", *_GEOMETRY),
        constexprs={
            "KH": kh,
            "KW": kw,
            "BLOCK_E": WGRAD_BLOCK_E,
            "BLOCK_P": WGRAD_BLOCK_P,
            "COUNT_WORK": bool(count_work),
        },
        num_warps=WGRAD_NUM_WARPS,
        num_stages=CONV_NUM_STAGES,
        enable_fp_fusion=CONV_FP_FUSION,
        values={"SPC": events.values["SPC"]},
    )


# ----------------------------------------------------------------------------- launchers


def _counter(work: Tensor | None, like: Tensor) -> Tensor:
    """The executed-MAC counter to pass (any int64 tensor when not counting: never touched)."""
    if work is None:
        return like.new_empty(1, dtype=torch.int64)
    if work.dtype != torch.int64 or work.numel() < 1 or work.device != like.device:
        raise ValueError("work counter must be an int64 tensor on the output's device")
    return work


def hands_to_reference(groups: int, dense: bool = False) -> bool:
    """Whether a Triton launcher runs the reference (cuDNN) instead of a kernel: grouped
    convolutions, and dense weight gradients (growth steps). ``auto`` never times these."""
    return groups != 1 or bool(dense)


def masked_conv2d_triton(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    work: Tensor | None = None,
    skip_silent: bool = True,
) -> Tensor:
    """Forward on the sparse kernel (groups = 1; others fall back to the reference).

    ``work``: an int64 ``[1]`` tensor the kernel adds its executed MACs to (instrumented runs).
    ``skip_silent=False`` runs every kept weight over every position (the benchmark baseline).
    """
    if hands_to_reference(groups):
        return masked_conv2d_ref(x, weight, mask, bias, stride, padding, dilation, groups)
    launch = conv_fwd_plan(
        x.shape, weight.shape, stride, padding, dilation, x.dtype, weight.dtype, bias is not None,
        work is not None,
    )  # fmt: skip
    n, c, h, w = x.shape
    oc, _, kh, kw = weight.shape
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    y = torch.empty((n, oc, oh, ow), dtype=weight.dtype, device=x.device)
    if y.numel() == 0:
        return y
    index = get_index(mask, oc, c * kh * kw)
    wc = weight.contiguous()
    xc = x.contiguous()
    xc = xc.view(torch.int8) if xc.dtype == torch.bool else xc
    if skip_silent:
        active = spike_events_triton(xc, (kh, kw), stride, padding, dilation, False).active
    else:
        active = torch.ones((n, c), dtype=torch.int32, device=x.device)
    launch.run(
        xc, wc, bias if bias is not None else wc, index.row_ptr, index.col_idx, index.row_order, active, y, _counter(work, y),
        n, c, h, w, oc, oh, ow, c * kh * kw,
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
    )  # fmt: skip
    return y


def masked_conv2d_input_grad_triton(
    grad_out: Tensor,
    weight: Tensor,
    mask: Tensor,
    input_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> Tensor:
    """Input gradient through the transpose index (groups = 1; others: reference)."""
    if hands_to_reference(groups):
        return masked_conv2d_input_grad_ref(
            grad_out, weight, mask, input_size, stride, padding, dilation, groups
        )
    launch = conv_dgrad_plan(input_size, weight.shape, stride, padding, dilation, grad_out.dtype)
    n, c, h, w = input_size
    oc, _, kh, kw = weight.shape
    _, _, oh, ow = grad_out.shape
    dx = torch.empty((n, c, h, w), dtype=grad_out.dtype, device=grad_out.device)
    if dx.numel() == 0:
        return dx
    index = get_index(mask, oc, c * kh * kw)
    launch.run(
        grad_out.contiguous(), weight.contiguous(), index.col_ptr, index.t_row_idx, dx,
        n, c, h, w, oc, oh, ow, c * kh * kw,
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
    )  # fmt: skip
    return dx


def masked_conv2d_weight_grad_triton(
    grad_out: Tensor,
    x: Tensor,
    mask: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    dense: bool,
    work: Tensor | None = None,
) -> Tensor:
    """Weight gradient at the kept positions, driven by the input's events (two-stage
    deterministic reduction); ``work`` as for the forward.

    Dense weight gradients (growth steps) and grouped convolutions use the reference (cuDNN).
    An empty batch gives zeros.
    """
    if hands_to_reference(groups, dense):
        return masked_conv2d_weight_grad_ref(
            grad_out, x, mask, stride, padding, dilation, groups, dense
        )
    n, c, h, w = x.shape
    oc, _, kh, kw = mask.shape
    _, _, oh, ow = grad_out.shape
    if n * oh * ow == 0:
        return torch.zeros(mask.shape, dtype=grad_out.dtype, device=grad_out.device)
    index = get_index(mask, oc, c * kh * kw)
    launch = conv_wgrad_plan(
        x.shape, mask.shape, stride, padding, dilation, index.cap, grad_out.dtype, x.dtype,
        work is not None,
    )  # fmt: skip
    xc = x.contiguous()
    xc = xc.view(torch.int8) if xc.dtype == torch.bool else xc
    found = spike_events_triton(xc, (kh, kw), stride, padding, dilation, True)
    partial = torch.zeros((launch.grid[0], index.cap), dtype=torch.float32, device=grad_out.device)
    launch.run(
        grad_out.contiguous(), xc, found.events, found.counts, index.col_ptr, index.t_row_idx, index.t_col_idx, partial, _counter(work, partial),
        n, c, h, w, oc, oh, ow, index.cap, found.samples_per_chunk,
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
    )  # fmt: skip
    grad = torch.zeros(mask.numel(), dtype=torch.float32, device=grad_out.device)
    # entries past nnz carry 0 to pruned positions
    grad.scatter_(0, index.t_entry_flat, partial.sum(0))
    return grad.view(mask.shape).to(grad_out.dtype)
