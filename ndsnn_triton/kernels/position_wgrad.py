"""The position-driven masked weight gradient: the library's kernel before spike skipping, kept as
the baseline the event-driven kernel (``spike_conv._conv_wgrad_kernel``) is benchmarked against.

For every kept weight it loads every output position of ``dY`` and the matching input, whether
the input spiked or not: ``kept weights × N·OH·OW`` MACs. Shapes as in :mod:`spike_conv`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
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
from ndsnn_triton.kernels.spike_conv import (
    _GEOMETRY,
    CONV_FP_FUSION,
    CONV_NUM_STAGES,
    WGRAD_BLOCK_E,
    WGRAD_BLOCK_P,
    WGRAD_NUM_WARPS,
    _ptr,
    _scalars,
    hands_to_reference,
    masked_conv2d_weight_grad_ref,
)
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, cdiv, tl, triton
from ndsnn_triton.kernels.work import out_hw

#: position chunks at most (partial sums: chunks × cap)
MAX_WGRAD_CHUNKS = 64

if HAS_TRITON:

    @triton.jit
    def _conv_wgrad_positions_kernel(
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


@plan("conv_wgrad_positions")
def conv_wgrad_positions_plan(
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
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
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
        name="conv_wgrad_positions",
        kernel=_conv_wgrad_positions_kernel if HAS_TRITON else None,
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


def masked_conv2d_weight_grad_positions_triton(
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
    launch = conv_wgrad_positions_plan(
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
