"""The eager reference path's masked convolution and linear layer, without a saved weight copy.

Under :func:`~ndsnn_triton.backend.aten_reference` the layers run as plain aten ops on
``weight ⊙ mask``. Written as ``F.conv2d(x, weight * mask)``, autograd would keep the product —
a full-size copy of every layer's weight (59 MB for VGG-16 in fp32) — for the input gradient.
These functions keep ``weight`` and ``mask`` themselves (a parameter and a buffer, no copy) and
re-apply the mask in backward. The aten ops are the ones autograd calls (``aten.convolution``
forward, ``aten.convolution_backward``; ``aten.addmm``/``aten.mm`` for the linear layer), so
``FlopCounterMode`` counts them as before. Shapes: conv ``x [N, Cin, H, W]``, linear
``x [..., in]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _masked_weight(weight: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    return (weight * mask).to(dtype)


def _weight_grad(grad_masked: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    """The gradient through ``(weight * mask).to(dtype)``: cast back, then zero off the mask
    (autograd's ToCopy and Mul backward, in that order)."""
    return grad_masked.to(weight.dtype) * mask


class _MaskedConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, mask, bias, dtype, stride, padding, dilation, groups):
        ctx.conv_args = (list(stride), list(padding), list(dilation), groups, dtype)
        ctx.bias_shape = None if bias is None else list(bias.shape)
        ctx.save_for_backward(x, weight, mask)
        return F.conv2d(
            x, _masked_weight(weight, mask, dtype), bias, stride, padding, dilation, groups
        )

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mask = ctx.saved_tensors
        stride, padding, dilation, groups, dtype = ctx.conv_args
        need_x, need_w, _, need_b = ctx.needs_input_grad[:4]
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out,
            x,
            _masked_weight(weight, mask, dtype),
            ctx.bias_shape,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [need_x, need_w, need_b and ctx.bias_shape is not None],
        )
        grad_w = _weight_grad(grad_w, weight, mask) if need_w else None
        return grad_x, grad_w, None, grad_b, None, None, None, None, None


class _MaskedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, mask, bias, dtype):
        ctx.dtype = dtype
        ctx.save_for_backward(x, weight, mask)
        return F.linear(x, _masked_weight(weight, mask, dtype), bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mask = ctx.saved_tensors
        need_x, need_w, _, need_b = ctx.needs_input_grad[:4]
        grad_2d = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if need_x:
            masked = _masked_weight(weight, mask, ctx.dtype)
            grad_x = grad_2d.mm(masked).reshape(x.shape)
        if need_w:
            grad_w = _weight_grad(grad_2d.t().mm(x.reshape(-1, x.shape[-1])), weight, mask)
        if need_b:
            grad_b = grad_2d.sum(0)
        return grad_x, grad_w, None, grad_b, None


def masked_conv2d_aten(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None,
    dtype: torch.dtype,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """``F.conv2d(x, (weight ⊙ mask).to(dtype), bias, ...)`` keeping no copy of the weight."""
    return _MaskedConv2d.apply(x, weight, mask, bias, dtype, stride, padding, dilation, groups)


def masked_linear_aten(
    x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None, dtype: torch.dtype
) -> Tensor:
    """``F.linear(x, (weight ⊙ mask).to(dtype), bias)`` keeping no copy of the weight."""
    return _MaskedLinear.apply(x, weight, mask, bias, dtype)
