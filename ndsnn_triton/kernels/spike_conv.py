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
    FILL_PROGRAMS,
    KernelLaunch,
    check_elements,
    check_grid,
    plan,
    pow2_block,
)
from ndsnn_triton.kernels.sparse_index import get_index
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, cdiv, tl, triton


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
# 1 byte per value instead of 4) and accumulates in fp32. The input gradient walks the transpose
# index per input channel; the weight gradient is a sampled product at the kept positions only,
# split over chunks of positions and reduced in a second, deterministic pass.
#
# Grids put the position blocks on axis 0 (up to 2³¹ − 1 programs) and channels on axis 1 (CUDA
# caps axes 1 and 2 at 65,535). Offsets are int32: the plans refuse tensors past that range.


if HAS_TRITON:

    @triton.jit
    def _conv_fwd_kernel(
        x_ptr, w_ptr, bias_ptr, row_ptr, col_idx, row_order, y_ptr,
        N, C, H, W, OC, OH, OW, K,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_P: tl.constexpr,
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
            wv = tl.load(w_ptr + o * K + k).to(tl.float32)
            c = k // (KH * KW)
            r = k % (KH * KW)
            ih = oh * stride_h - pad_h + (r // KW) * dil_h
            iw = ow * stride_w - pad_w + (r % KW) * dil_w
            valid = pmask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            xv = tl.load(x_ptr + ((n * C + c) * H + ih) * W + iw, mask=valid, other=0).to(
                tl.float32
            )
            acc += wv * xv
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
        dy_ptr, x_ptr, row_ptr, entry_row, col_idx, partial_ptr,
        N, C, H, W, OC, OH, OW, ROWS, CAP, CHUNK,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        e = tl.program_id(0) * BLOCK_E + tl.arange(0, BLOCK_E)
        chunk = tl.program_id(1)
        nnz = tl.load(row_ptr + ROWS)
        emask = e < nnz
        o = tl.load(entry_row + e, mask=emask, other=0)
        k = tl.load(col_idx + e, mask=emask, other=0)
        c = k // (KH * KW)
        r = k % (KH * KW)
        kh = r // KW
        kw = r % KW
        # per-entry parts of the offsets, hoisted out of the position loop
        dy_base = o * (OH * OW)
        x_base = c * (H * W)
        acc = tl.zeros([BLOCK_E], dtype=tl.float32)
        P = N * OH * OW
        p_lo = chunk * CHUNK
        for p0 in range(p_lo, p_lo + CHUNK, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            pmask = (p < P) & (p < p_lo + CHUNK)
            n = p // (OH * OW)
            rem = p % (OH * OW)
            oh = rem // OW
            ow = rem % OW
            ih = oh[None, :] * stride_h - pad_h + kh[:, None] * dil_h
            iw = ow[None, :] * stride_w - pad_w + kw[:, None] * dil_w
            both = emask[:, None] & pmask[None, :]
            inside = both & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            g = tl.load(
                dy_ptr + (dy_base[:, None] + (n * (OC * OH * OW) + rem)[None, :]),
                mask=both,
                other=0,
            )
            xv = tl.load(
                x_ptr + (x_base[:, None] + (n * (C * H * W))[None, :] + ih * W + iw),
                mask=inside,
                other=0,
            )
            acc += tl.sum(g.to(tl.float32) * xv.to(tl.float32), axis=1)
        tl.store(partial_ptr + chunk * CAP + e, acc, mask=e < CAP)


# ----------------------------------------------------------------------------- launch plans

_I32 = "i32"
_GEOMETRY = ("stride_h", "stride_w", "pad_h", "pad_w", "dil_h", "dil_w")
#: the weight gradient splits positions into at most this many chunks (partial sums: chunks × cap)
MAX_WGRAD_CHUNKS = 64
#: weight-gradient tile: BLOCK_E kept weights × BLOCK_P positions per loop iteration, on 8 warps
#: (4 elements per thread). Compiled for sm_90: 48 registers, 62.5 % occupancy; the earlier
#: 16 × 128 tile on 4 warps held 96-153 registers (19-31 %), 16 × 64 on 4 warps 80 (37.5 %).
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


def _out_hw(h: int, w: int, kh: int, kw: int, stride, padding, dilation) -> tuple[int, int]:
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return oh, ow


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
) -> KernelLaunch:
    """The forward's launch for ``x [N, C, H, W]`` and ``weight [OC, C, KH, KW]`` (groups = 1)."""
    n, c, h, w = x_shape
    oc, _, kh, kw = w_shape
    oh, ow = _out_hw(h, w, kh, kw, stride, padding, dilation)
    name = "ndsnn::masked_conv2d (Triton forward)"
    check_elements(name, x=n * c * h * w, weight=oc * c * kh * kw, output=n * oc * oh * ow)
    block, grid = _positions_by_channels(name, n * oh * ow, oc)
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
            "y_ptr": w_dtype,
        },
        scalars=_scalars("N", "C", "H", "W", "OC", "OH", "OW", "K", *_GEOMETRY),
        constexprs={"KH": kh, "KW": kw, "HAS_BIAS": bool(has_bias), "BLOCK_P": block},
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
    oh, ow = _out_hw(h, w, kh, kw, stride, padding, dilation)
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
) -> KernelLaunch:
    """The weight gradient's launch over the ``cap`` index entries of a ``w_shape`` mask.

    Positions are split into chunks only as far as needed to offer :data:`FILL_PROGRAMS`
    programs: the partial sums cost ``chunks × cap`` fp32 values.
    """
    n, c, h, w = x_shape
    oc, _, kh, kw = w_shape
    oh, ow = _out_hw(h, w, kh, kw, stride, padding, dilation)
    name = "ndsnn::masked_conv2d_weight_grad (Triton)"
    positions = n * oh * ow
    e_blocks = cdiv(max(cap, 1), WGRAD_BLOCK_E)
    want = max(1, min(MAX_WGRAD_CHUNKS, cdiv(FILL_PROGRAMS, e_blocks)))
    block_p = pow2_block(positions, 16, WGRAD_BLOCK_P, others=e_blocks)
    chunks = max(1, min(want, cdiv(positions, block_p)))
    chunk = cdiv(cdiv(positions, chunks), block_p) * block_p
    chunks = cdiv(positions, chunk) if positions else 0
    check_elements(
        name, input=n * c * h * w, grad_out=n * oc * oh * ow, partial_sums=chunks * max(cap, 1)
    )
    grid = (e_blocks, chunks)
    check_grid(name, grid)
    return KernelLaunch(
        name="conv_wgrad",
        kernel=_conv_wgrad_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "dy_ptr": dy_dtype,
            "x_ptr": _ptr(x_dtype),
            "row_ptr": torch.int32,
            "entry_row": torch.int32,
            "col_idx": torch.int32,
            "partial_ptr": torch.float32,
        },
        scalars=_scalars("N", "C", "H", "W", "OC", "OH", "OW", "ROWS", "CAP", "CHUNK", *_GEOMETRY),
        constexprs={"KH": kh, "KW": kw, "BLOCK_E": WGRAD_BLOCK_E, "BLOCK_P": block_p},
        num_warps=WGRAD_NUM_WARPS,
        num_stages=CONV_NUM_STAGES,
        enable_fp_fusion=CONV_FP_FUSION,
        values={"CHUNK": chunk},
    )


# ----------------------------------------------------------------------------- launchers


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
) -> Tensor:
    """Forward on the sparse kernel (groups = 1; others fall back to the reference)."""
    if hands_to_reference(groups):
        return masked_conv2d_ref(x, weight, mask, bias, stride, padding, dilation, groups)
    launch = conv_fwd_plan(
        x.shape, weight.shape, stride, padding, dilation, x.dtype, weight.dtype, bias is not None
    )
    n, c, h, w = x.shape
    oc, _, kh, kw = weight.shape
    oh, ow = _out_hw(h, w, kh, kw, stride, padding, dilation)
    y = torch.empty((n, oc, oh, ow), dtype=weight.dtype, device=x.device)
    if y.numel() == 0:
        return y
    index = get_index(mask, oc, c * kh * kw)
    wc = weight.contiguous()
    xc = x.contiguous()
    launch.run(
        xc.view(torch.int8) if xc.dtype == torch.bool else xc, wc, bias if bias is not None else wc, index.row_ptr, index.col_idx, index.row_order, y,
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
) -> Tensor:
    """Weight gradient at the kept positions (sampled product, two-stage deterministic reduction).

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
        x.shape, mask.shape, stride, padding, dilation, index.cap, grad_out.dtype, x.dtype
    )
    chunks, chunk = launch.grid[1], launch.values["CHUNK"]
    partial = torch.zeros((chunks, index.cap), dtype=torch.float32, device=grad_out.device)
    xc = x.contiguous()
    launch.run(
        grad_out.contiguous(), xc.view(torch.int8) if xc.dtype == torch.bool else xc, index.row_ptr, index.entry_row, index.col_idx, partial,
        n, c, h, w, oc, oh, ow, oc, index.cap, chunk,
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
    )  # fmt: skip
    grad = torch.zeros(mask.numel(), dtype=torch.float32, device=grad_out.device)
    # entries past nnz carry 0 to pruned positions
    grad.scatter_(0, index.entry_flat, partial.sum(0))
    return grad.view(mask.shape).to(grad_out.dtype)
