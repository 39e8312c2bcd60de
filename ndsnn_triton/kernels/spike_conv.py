"""Masked 2-D convolution over (usually binary) spike maps: pure-PyTorch references.

Shapes: ``x [N, Cin, H, W]`` (N = T*B), ``weight``/``mask [Cout, Cin/groups, kh, kw]``,
``y [N, Cout, Hout, Wout]``. The effective weight is ``weight`` with the pruned positions
(``mask == False``) set to zero, whatever the stored value there is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
    """Weight gradient ``dW = dYᵀ ⊛ X``; zero off the mask unless ``dense`` (growth steps)."""
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
