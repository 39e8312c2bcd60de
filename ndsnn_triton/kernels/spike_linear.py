"""Masked linear layer over (usually binary) spike vectors: pure-PyTorch references, and the
Triton launchers (a linear layer runs on the 1×1 convolution kernels).

Shapes: ``x [N, in]`` (N = T*B), ``weight``/``mask [out, in]``, ``y [N, out]``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ndsnn_triton.kernels.spike_conv import (
    apply_mask,
    hands_to_reference,
    masked_conv2d_input_grad_triton,
    masked_conv2d_triton,
    masked_conv2d_weight_grad_triton,
)


def masked_linear_ref(x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None) -> Tensor:
    """Forward ``y = x (weight ⊙ mask)ᵀ + bias`` (``x`` float, or int8/uint8/bool spikes)."""
    return F.linear(x.to(weight.dtype), apply_mask(weight, mask), bias).contiguous()


def masked_linear_input_grad_ref(grad_out: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    """Input gradient ``dX = dY (weight ⊙ mask)`` of shape ``[N, in]``."""
    return (grad_out @ apply_mask(weight, mask)).contiguous()


def masked_linear_weight_grad_ref(grad_out: Tensor, x: Tensor, mask: Tensor, dense: bool) -> Tensor:
    """Weight gradient ``dW = dYᵀ X``; zero off the mask unless ``dense`` (``x`` may be int8 spikes)."""
    grad_w = grad_out.t() @ x.to(grad_out.dtype)
    if not dense:
        grad_w = grad_w.masked_fill(~mask, 0)
    return grad_w.contiguous()


# ----------------------------------------------------------------------------- Triton launchers
# A linear layer is a 1×1 convolution on [N, in, 1, 1]: the conv kernels serve it unchanged.


_ONE = [1, 1]
_ZERO = [0, 0]


def masked_linear_triton(x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None) -> Tensor:
    n, fin = x.shape
    y = masked_conv2d_triton(
        x.reshape(n, fin, 1, 1),
        weight.reshape(*weight.shape, 1, 1),
        mask.reshape(*mask.shape, 1, 1),
        bias,
        _ONE,
        _ZERO,
        _ONE,
        1,
    )
    return y.reshape(n, weight.shape[0])


def masked_linear_input_grad_triton(grad_out: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    n, fout = grad_out.shape
    fin = weight.shape[1]
    dx = masked_conv2d_input_grad_triton(
        grad_out.reshape(n, fout, 1, 1),
        weight.reshape(fout, fin, 1, 1),
        mask.reshape(fout, fin, 1, 1),
        [n, fin, 1, 1],
        _ONE,
        _ZERO,
        _ONE,
        1,
    )
    return dx.reshape(n, fin)


def masked_linear_weight_grad_triton(
    grad_out: Tensor, x: Tensor, mask: Tensor, dense: bool
) -> Tensor:
    if hands_to_reference(1, dense):
        return masked_linear_weight_grad_ref(grad_out, x, mask, dense)
    n, fout = grad_out.shape
    fin = x.shape[1]
    dw = masked_conv2d_weight_grad_triton(
        grad_out.reshape(n, fout, 1, 1),
        x.reshape(n, fin, 1, 1),
        mask.reshape(fout, fin, 1, 1),
        _ONE,
        _ZERO,
        _ONE,
        1,
        False,
    )
    return dw.reshape(fout, fin)
