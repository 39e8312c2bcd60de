"""Masked 2-D convolution over (usually binary) spike maps: pure-PyTorch references, and the
sparse Triton kernels with their launchers (below).

Shapes: ``x [N, Cin, H, W]`` (N = T*B), ``weight``/``mask [Cout, Cin/groups, kh, kw]``,
``y [N, Cout, Hout, Wout]``. The effective weight is ``weight`` with the pruned positions
(``mask == False``) set to zero, whatever the stored value there is. A spike input ``x`` may be
float or compact (int8/uint8/bool, 1 byte per spike); ``y`` has the weight's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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


if HAS_TRITON:

    @triton.jit
    def _conv_fwd_kernel(
        x_ptr, w_ptr, bias_ptr, row_ptr, col_idx, row_order, y_ptr,
        N, C, H, W, OC, OH, OW, K,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        o = tl.load(row_order + tl.program_id(0))
        p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
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
        c = tl.program_id(0)
        p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
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
                dy_ptr + ((n[None, :] * OC + o[:, None]) * OH + oh[None, :]) * OW + ow[None, :],
                mask=both,
                other=0,
            )
            xv = tl.load(
                x_ptr + ((n[None, :] * C + c[:, None]) * H + ih) * W + iw, mask=inside, other=0
            )
            acc += tl.sum(g.to(tl.float32) * xv.to(tl.float32), axis=1)
        tl.store(partial_ptr + chunk * CAP + e, acc, mask=e < CAP)


_TARGET_PROGRAMS = 512


def _block_p(positions: int) -> int:
    return 128 if positions >= 128 else max(16, 1 << (positions - 1).bit_length())


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
    if groups != 1:
        return masked_conv2d_ref(x, weight, mask, bias, stride, padding, dilation, groups)
    n, c, h, w = x.shape
    oc, _, kh, kw = weight.shape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    index = get_index(mask, oc, c * kh * kw)
    y = torch.empty((n, oc, oh, ow), dtype=weight.dtype, device=x.device)
    positions = n * oh * ow
    block = _block_p(positions)
    wc = weight.contiguous()
    grid = (oc, cdiv(positions, block))
    xc = x.contiguous()
    _conv_fwd_kernel[grid](
        xc.view(torch.int8) if xc.dtype == torch.bool else xc, wc, bias if bias is not None else wc, index.row_ptr, index.col_idx, index.row_order, y,
        n, c, h, w, oc, oh, ow, c * kh * kw,
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        KH=kh, KW=kw, HAS_BIAS=bias is not None, BLOCK_P=block,
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
    if groups != 1:
        return masked_conv2d_input_grad_ref(
            grad_out, weight, mask, input_size, stride, padding, dilation, groups
        )
    n, c, h, w = input_size
    oc, _, kh, kw = weight.shape
    _, _, oh, ow = grad_out.shape
    index = get_index(mask, oc, c * kh * kw)
    dx = torch.empty((n, c, h, w), dtype=grad_out.dtype, device=grad_out.device)
    positions = n * h * w
    block = _block_p(positions)
    _conv_dgrad_kernel[(c, cdiv(positions, block))](
        grad_out.contiguous(), weight.contiguous(), index.col_ptr, index.t_row_idx, dx,
        n, c, h, w, oc, oh, ow, c * kh * kw,
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        KH=kh, KW=kw, BLOCK_P=block,
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
    """
    if dense or groups != 1:
        return masked_conv2d_weight_grad_ref(
            grad_out, x, mask, stride, padding, dilation, groups, dense
        )
    n, c, h, w = x.shape
    oc, _, kh, kw = mask.shape
    _, _, oh, ow = grad_out.shape
    index = get_index(mask, oc, c * kh * kw)
    positions = n * oh * ow
    block_p = _block_p(positions)
    block_e = 16
    # Split the positions only as far as needed to fill the GPU (~512 programs): the partial sums
    # cost chunks × cap floats, so many entries means few chunks.
    chunks = max(1, min(64, _TARGET_PROGRAMS // cdiv(index.cap, block_e), cdiv(positions, block_p)))
    chunk = cdiv(cdiv(positions, chunks), block_p) * block_p
    chunks = cdiv(positions, chunk)
    partial = torch.zeros((chunks, index.cap), dtype=torch.float32, device=grad_out.device)
    _conv_wgrad_kernel[(cdiv(index.cap, block_e), chunks)](
        grad_out.contiguous(), x.contiguous(), index.row_ptr, index.entry_row, index.col_idx, partial,
        n, c, h, w, oc, oh, ow, oc, index.cap, chunk,
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        KH=kh, KW=kw, BLOCK_E=block_e, BLOCK_P=block_p,
    )  # fmt: skip
    grad = torch.zeros(mask.numel(), dtype=torch.float32, device=grad_out.device)
    grad.scatter_(
        0, index.entry_flat, partial.sum(0)
    )  # entries past nnz carry 0 to pruned positions
    return grad.view(mask.shape).to(grad_out.dtype)
