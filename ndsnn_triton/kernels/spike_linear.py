"""Masked linear layer over (usually binary) spike vectors: pure-PyTorch references.

Shapes: ``x [N, in]`` (N = T*B), ``weight``/``mask [out, in]``, ``y [N, out]``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ndsnn_triton.kernels.spike_conv import apply_mask


def masked_linear_ref(x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None) -> Tensor:
    """Forward ``y = x (weight ⊙ mask)ᵀ + bias``."""
    return F.linear(x, apply_mask(weight, mask), bias).contiguous()


def masked_linear_input_grad_ref(grad_out: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    """Input gradient ``dX = dY (weight ⊙ mask)`` of shape ``[N, in]``."""
    return (grad_out @ apply_mask(weight, mask)).contiguous()


def masked_linear_weight_grad_ref(grad_out: Tensor, x: Tensor, mask: Tensor, dense: bool) -> Tensor:
    """Weight gradient ``dW = dYᵀ X``; zero off the mask unless ``dense``."""
    grad_w = grad_out.t() @ x
    if not dense:
        grad_w = grad_w.masked_fill(~mask, 0)
    return grad_w.contiguous()
