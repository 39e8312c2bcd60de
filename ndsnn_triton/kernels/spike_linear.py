"""Masked linear layer over (usually binary) spike vectors: pure-PyTorch references, and the
Triton launchers (a linear layer runs on the 1×1 convolution kernels).

Shapes: ``x [N, in]`` (N = T*B), ``weight``/``mask [out, in]``, ``y [N, out]``. Dtypes as in
:mod:`ndsnn_triton.kernels.spike_conv` (compute dtype = x's float dtype, or the weight's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ndsnn_triton.kernels.spike_conv import (
    apply_mask,
    compute_dtype,
    hands_to_reference,
    masked_conv2d_input_grad_triton,
    masked_conv2d_triton,
    masked_conv2d_weight_grad_triton,
)


def masked_linear_ref(
    x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None, spikes: Tensor | None = None
) -> Tensor:
    """Forward ``y = x (weight ⊙ mask)ᵀ + bias`` (``x`` float, or int8/uint8/bool spikes; the
    compact copy ``spikes`` does not change the result)."""
    dtype = compute_dtype(x, weight)
    b = None if bias is None else bias.to(dtype)
    return F.linear(x.to(dtype), apply_mask(weight, mask).to(dtype), b).contiguous()


def masked_linear_input_grad_ref(grad_out: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    """Input gradient ``dX = dY (weight ⊙ mask)`` of shape ``[N, in]``, in dY's dtype."""
    return (grad_out @ apply_mask(weight, mask).to(grad_out.dtype)).contiguous()


def masked_linear_weight_grad_ref(
    grad_out: Tensor,
    x: Tensor,
    mask: Tensor,
    dense: bool,
    grad_dtype: torch.dtype | None = None,
    has_bias: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(dW, db)``: ``dW = dYᵀ X``, zero off the mask unless ``dense`` (``x`` may be int8
    spikes), and ``db = Σ_n dY`` (empty unless ``has_bias``), returned in ``grad_dtype``."""
    grad_dtype = grad_out.dtype if grad_dtype is None else grad_dtype
    grad_w = grad_out.t() @ x.to(grad_out.dtype)
    if not dense:
        grad_w = grad_w.masked_fill(~mask, 0)
    if has_bias:
        grad_b = grad_out.sum(dim=0).to(grad_dtype)
    else:
        grad_b = grad_out.new_empty(0, dtype=grad_dtype)
    return grad_w.to(grad_dtype).contiguous(), grad_b


# ----------------------------------------------------------------------------- Triton launchers
# A linear layer is a 1×1 convolution on [N, in, 1, 1]: the conv kernels serve it unchanged.


_ONE = [1, 1]
_ZERO = [0, 0]


def _as_map(t: Tensor) -> Tensor:
    return t.reshape(*t.shape, 1, 1)


def masked_linear_triton(
    x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None, spikes: Tensor | None = None
) -> Tensor:
    y = masked_conv2d_triton(
        _as_map(x), _as_map(weight), _as_map(mask), bias, _ONE, _ZERO, _ONE, 1,
        None if spikes is None else _as_map(spikes),
    )  # fmt: skip
    return y.reshape(x.shape[0], weight.shape[0])


def masked_linear_input_grad_triton(grad_out: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    n, fin = grad_out.shape[0], weight.shape[1]
    dx = masked_conv2d_input_grad_triton(
        _as_map(grad_out), _as_map(weight), _as_map(mask), [n, fin, 1, 1], _ONE, _ZERO, _ONE, 1
    )
    return dx.reshape(n, fin)


def masked_linear_weight_grad_triton(
    grad_out: Tensor,
    x: Tensor,
    mask: Tensor,
    dense: bool,
    grad_dtype: torch.dtype | None = None,
    has_bias: bool = False,
) -> tuple[Tensor, Tensor]:
    if hands_to_reference(1, dense):
        return masked_linear_weight_grad_ref(grad_out, x, mask, dense, grad_dtype, has_bias)
    dw, db = masked_conv2d_weight_grad_triton(
        _as_map(grad_out), _as_map(x), _as_map(mask), _ONE, _ZERO, _ONE, 1, False, grad_dtype,
        has_bias,
    )  # fmt: skip
    return dw.reshape(mask.shape), db
