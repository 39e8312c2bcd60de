"""The ``ndsnn::`` torch ops: masked spike convolution, masked spike linear, multi-step LIF.

Every op is a ``torch.library.custom_op`` with a fake (meta) implementation and an autograd
formula whose backward is itself made of ``ndsnn::`` ops, so ``torch.compile`` traces models
that use them without graph breaks. The compute behind each op is chosen at call time by
:mod:`ndsnn_triton.backend` (``"torch"`` reference, ``"triton"`` kernels, ``"auto"``).

Call the ops through the checked Python wrappers below (:func:`masked_conv2d`,
:func:`masked_linear`, :func:`lif_multistep`): they turn bad input into a ``ValueError`` or
``TypeError`` that names the problem. The raw ops are ``torch.ops.ndsnn.<name>``.

Weight masks follow the torchao frontend/backend contract: a dense weight tensor plus a bool
mask of the same shape; the effective weight is ``weight ⊙ mask``.
"""

import math
from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

from ndsnn_triton.backend import defer_spike_error, resolve, spike_check_for, spike_error
from ndsnn_triton.kernels.lif import lif_backward_ref, lif_forward_ref

# For nn layers: the mask's kept count is recorded at set_mask's host sync, so the kernels' index
# is sized with no extra host synchronisation.
from ndsnn_triton.kernels.sparse_index import note_nnz as record_mask_count  # noqa: F401
from ndsnn_triton.kernels.spike_conv import (
    masked_conv2d_input_grad_ref,
    masked_conv2d_ref,
    masked_conv2d_weight_grad_ref,
)
from ndsnn_triton.kernels.spike_linear import (
    masked_linear_input_grad_ref,
    masked_linear_ref,
    masked_linear_weight_grad_ref,
)
from ndsnn_triton.neuron_equations import SURROGATES

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
#: dtypes a binary spike input may come in besides the float ones (1 byte per spike)
SPIKE_DTYPES = (torch.int8, torch.uint8, torch.bool)


def _check_binary(x: Tensor, op: str) -> None:
    """Check that spike input ``x`` holds only 0 and 1: raise now (eager mode) or OR a device-side
    flag that ``raise_deferred_spike_errors`` reads later (deferred mode, no host sync)."""
    mode = spike_check_for(x.device.type)
    if mode == "off" or not x.numel() or x.dtype == torch.bool:
        return
    bad = torch.logical_and(x != 0, x != 1).any()  # NaN counts as non-binary
    if mode == "deferred":
        defer_spike_error(op, bad)
    elif bool(bad):
        raise spike_error(op)


def _conv_out_hw(
    hw: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> list[int]:
    return [
        (hw[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
        for i in range(2)
    ]


def _saved_input(x: Tensor, spike_input: bool) -> Tensor:
    """What the backward keeps of a layer input: binary spikes as int8 (1 byte instead of 2 or 4;
    lossless, the forward checked them; an int8 input is kept as is, without a copy), analog
    input as is. Only the weight gradient reads it."""
    return x.to(torch.int8) if spike_input else x


def _out_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """Float inputs give x's dtype (which equals weight's); integer spikes give weight's."""
    return x.dtype if x.is_floating_point() else weight.dtype


# ----------------------------------------------------------------------------- conv2d


@torch.library.custom_op("ndsnn::masked_conv2d", mutates_args=())
def _masked_conv2d(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Optional[Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    spike_input: bool,
    dense_weight_grad: bool,
) -> Tensor:
    if spike_input:
        _check_binary(x, "ndsnn::masked_conv2d")
    impl = resolve(
        "ndsnn::masked_conv2d", masked_conv2d_ref, x.device.type, prefer_dense=not spike_input
    )
    return impl(x, weight, mask, bias, stride, padding, dilation, groups)


@_masked_conv2d.register_fake
def _(x, weight, mask, bias, stride, padding, dilation, groups, spike_input, dense_weight_grad):
    h, w = _conv_out_hw(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    return x.new_empty((x.shape[0], weight.shape[0], h, w), dtype=_out_dtype(x, weight))


@torch.library.custom_op("ndsnn::masked_conv2d_input_grad", mutates_args=())
def _masked_conv2d_input_grad(
    grad_out: Tensor,
    weight: Tensor,
    mask: Tensor,
    input_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> Tensor:
    impl = resolve(
        "ndsnn::masked_conv2d_input_grad", masked_conv2d_input_grad_ref, grad_out.device.type
    )
    return impl(grad_out, weight, mask, input_size, stride, padding, dilation, groups)


@_masked_conv2d_input_grad.register_fake
def _(grad_out, weight, mask, input_size, stride, padding, dilation, groups):
    return grad_out.new_empty(input_size)


@torch.library.custom_op("ndsnn::masked_conv2d_weight_grad", mutates_args=())
def _masked_conv2d_weight_grad(
    grad_out: Tensor,
    x: Tensor,
    mask: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    dense: bool,
    spike_input: bool,
) -> Tensor:
    impl = resolve("ndsnn::masked_conv2d_weight_grad", masked_conv2d_weight_grad_ref, x.device.type)
    return impl(grad_out, x, mask, stride, padding, dilation, groups, dense)


@_masked_conv2d_weight_grad.register_fake
def _(grad_out, x, mask, stride, padding, dilation, groups, dense, spike_input):
    return grad_out.new_empty(mask.shape)


def _conv_setup_context(ctx, inputs, output):
    x, weight, mask, bias, stride, padding, dilation, groups, spike_input, dense_weight_grad = (
        inputs
    )
    ctx.save_for_backward(_saved_input(x, spike_input), weight, mask)
    ctx.conv_args = (list(stride), list(padding), list(dilation), groups)
    ctx.dense_weight_grad = dense_weight_grad
    ctx.spike_input = spike_input
    ctx.has_bias = bias is not None


def _conv_backward(ctx, grad_out):
    x, weight, mask = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.conv_args
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_x = torch.ops.ndsnn.masked_conv2d_input_grad(
            grad_out, weight, mask, list(x.shape), stride, padding, dilation, groups
        )
    if ctx.needs_input_grad[1]:
        grad_w = torch.ops.ndsnn.masked_conv2d_weight_grad(
            grad_out,
            x,
            mask,
            stride,
            padding,
            dilation,
            groups,
            ctx.dense_weight_grad,
            ctx.spike_input,
        )
    if ctx.has_bias and ctx.needs_input_grad[3]:
        grad_b = grad_out.sum(dim=(0, 2, 3))
    return grad_x, grad_w, None, grad_b, None, None, None, None, None, None


_masked_conv2d.register_autograd(_conv_backward, setup_context=_conv_setup_context)


# ----------------------------------------------------------------------------- linear


@torch.library.custom_op("ndsnn::masked_linear", mutates_args=())
def _masked_linear(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Optional[Tensor],
    spike_input: bool,
    dense_weight_grad: bool,
) -> Tensor:
    if spike_input:
        _check_binary(x, "ndsnn::masked_linear")
    impl = resolve(
        "ndsnn::masked_linear", masked_linear_ref, x.device.type, prefer_dense=not spike_input
    )
    return impl(x, weight, mask, bias)


@_masked_linear.register_fake
def _(x, weight, mask, bias, spike_input, dense_weight_grad):
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=_out_dtype(x, weight))


@torch.library.custom_op("ndsnn::masked_linear_input_grad", mutates_args=())
def _masked_linear_input_grad(grad_out: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    impl = resolve(
        "ndsnn::masked_linear_input_grad", masked_linear_input_grad_ref, grad_out.device.type
    )
    return impl(grad_out, weight, mask)


@_masked_linear_input_grad.register_fake
def _(grad_out, weight, mask):
    return grad_out.new_empty((grad_out.shape[0], weight.shape[1]))


@torch.library.custom_op("ndsnn::masked_linear_weight_grad", mutates_args=())
def _masked_linear_weight_grad(
    grad_out: Tensor, x: Tensor, mask: Tensor, dense: bool, spike_input: bool
) -> Tensor:
    impl = resolve("ndsnn::masked_linear_weight_grad", masked_linear_weight_grad_ref, x.device.type)
    return impl(grad_out, x, mask, dense)


@_masked_linear_weight_grad.register_fake
def _(grad_out, x, mask, dense, spike_input):
    return grad_out.new_empty(mask.shape)


def _linear_setup_context(ctx, inputs, output):
    x, weight, mask, bias, spike_input, dense_weight_grad = inputs
    ctx.save_for_backward(_saved_input(x, spike_input), weight, mask)
    ctx.dense_weight_grad = dense_weight_grad
    ctx.spike_input = spike_input
    ctx.has_bias = bias is not None


def _linear_backward(ctx, grad_out):
    x, weight, mask = ctx.saved_tensors
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_x = torch.ops.ndsnn.masked_linear_input_grad(grad_out, weight, mask)
    if ctx.needs_input_grad[1]:
        grad_w = torch.ops.ndsnn.masked_linear_weight_grad(
            grad_out, x, mask, ctx.dense_weight_grad, ctx.spike_input
        )
    if ctx.has_bias and ctx.needs_input_grad[3]:
        grad_b = grad_out.sum(dim=0)
    return grad_x, grad_w, None, grad_b, None, None


_masked_linear.register_autograd(_linear_backward, setup_context=_linear_setup_context)


# ----------------------------------------------------------------------------- LIF


@torch.library.custom_op("ndsnn::lif_multistep", mutates_args=())
def _lif_multistep(
    x_seq: Tensor,
    v_init: Tensor,
    tau: float,
    v_threshold: float,
    v_reset: Optional[float],
    decay_input: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
    int8_spikes: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    impl = resolve("ndsnn::lif_multistep", lif_forward_ref, x_seq.device.type)
    return impl(x_seq, v_init, tau, v_threshold, v_reset, decay_input, int8_spikes)


@_lif_multistep.register_fake
def _(
    x_seq,
    v_init,
    tau,
    v_threshold,
    v_reset,
    decay_input,
    detach_reset,
    surrogate,
    alpha,
    int8_spikes=False,
):
    return (
        x_seq.new_empty(x_seq.shape, dtype=torch.int8 if int8_spikes else x_seq.dtype),
        x_seq.new_empty(x_seq.shape[1:]),
        x_seq.new_empty(0) if int8_spikes else x_seq.new_empty(x_seq.shape),
    )


@torch.library.custom_op("ndsnn::lif_multistep_backward", mutates_args=())
def _lif_multistep_backward(
    grad_spike: Tensor,
    grad_v_last: Tensor,
    h_seq: Tensor,
    tau: float,
    v_threshold: float,
    v_reset: Optional[float],
    decay_input: bool,
    detach_reset: bool,
    surrogate: str,
    alpha: float,
) -> tuple[Tensor, Tensor]:
    impl = resolve("ndsnn::lif_multistep_backward", lif_backward_ref, h_seq.device.type)
    return impl(
        grad_spike,
        grad_v_last,
        h_seq,
        tau,
        v_threshold,
        v_reset,
        decay_input,
        detach_reset,
        surrogate,
        alpha,
    )


@_lif_multistep_backward.register_fake
def _(
    grad_spike,
    grad_v_last,
    h_seq,
    tau,
    v_threshold,
    v_reset,
    decay_input,
    detach_reset,
    surrogate,
    alpha,
):
    return h_seq.new_empty(h_seq.shape), h_seq.new_empty(h_seq.shape[1:])


def _lif_setup_context(ctx, inputs, output):
    _x, _v, tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha = inputs[:9]
    int8_spikes = len(inputs) > 9 and bool(inputs[9])  # the raw op may be called without it
    _spike_seq, _v_last, h_seq = output
    # The backward needs h alone (it recomputes the spikes, S = (H - v_th >= 0)). Keep h, or the
    # inputs when their storage is smaller (an input expanded over T, as a direct-coding stem
    # gives, holds one step): then the backward reruns the forward for h, bit for bit.
    x_seq, v_init = inputs[:2]
    inputs_bytes = x_seq.untyped_storage().nbytes() + v_init.untyped_storage().nbytes()
    ctx.recompute_h = not int8_spikes and inputs_bytes < h_seq.numel() * h_seq.element_size()
    ctx.save_for_backward(*((x_seq, v_init) if ctx.recompute_h else (h_seq,)))
    ctx.params = (tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha)
    ctx.int8_spikes = int8_spikes


def _lif_backward(ctx, grad_spike, grad_v_last, _grad_h):
    if ctx.int8_spikes:
        raise RuntimeError(
            "ndsnn::lif_multistep: int8_spikes=True was used on an input that needs a gradient; "
            "int8 spikes carry none (use float spikes for training)"
        )
    if ctx.recompute_h:
        x_seq, v_init = ctx.saved_tensors
        with torch.no_grad():
            h_seq = torch.ops.ndsnn.lif_multistep(x_seq, v_init, *ctx.params, False)[2]
    else:
        (h_seq,) = ctx.saved_tensors
    if grad_spike is None:
        grad_spike = torch.zeros_like(h_seq)
    if grad_v_last is None:
        grad_v_last = torch.zeros_like(h_seq[0])
    grad_x, grad_v = torch.ops.ndsnn.lif_multistep_backward(
        grad_spike, grad_v_last, h_seq, *ctx.params
    )
    return grad_x, grad_v, None, None, None, None, None, None, None, None


_lif_multistep.register_autograd(_lif_backward, setup_context=_lif_setup_context)


# ----------------------------------------------------------------------------- checked wrappers


def _pair(value: int | Sequence[int], name: str) -> list[int]:
    if isinstance(value, int):
        return [value, value]
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [int(value[0]), int(value[1])]
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def _check_tensor(t: object, name: str, op: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _check_weight_mask_bias(
    op: str, x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None, spike_input: bool
) -> None:
    if x.dtype in SPIKE_DTYPES:
        if not spike_input:
            raise TypeError(
                f"{op}: an {x.dtype} input must be binary spikes; pass spike_input=True, or give "
                "analog input as a floating tensor"
            )
        if weight.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: weight must be floating, got {weight.dtype}")
    elif x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: x must be a floating tensor (float32/float16/bfloat16/float64) or, for spikes, "
            f"int8/uint8/bool; got {x.dtype}"
        )
    elif weight.dtype != x.dtype:
        raise TypeError(
            f"{op}: weight dtype {weight.dtype} differs from x dtype {x.dtype}; cast one of them"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"{op}: mask must be a bool tensor, got {mask.dtype}")
    if tuple(mask.shape) != tuple(weight.shape):
        raise ValueError(
            f"{op}: mask shape {tuple(mask.shape)} does not match weight shape {tuple(weight.shape)}"
        )
    for name, t in (("weight", weight), ("mask", mask), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{op}: {name} is on {t.device} but x is on {x.device}")
    if bias is not None:
        if bias.dtype != weight.dtype:
            raise TypeError(
                f"{op}: bias dtype {bias.dtype} differs from weight dtype {weight.dtype}"
            )
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"{op}: bias shape {tuple(bias.shape)} should be ({weight.shape[0]},)")


def masked_conv2d(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    spike_input: bool = True,
    dense_weight_grad: bool = False,
) -> Tensor:
    """Masked 2-D convolution ``conv2d(x, weight ⊙ mask) + bias``.

    Args:
        x: ``[N, Cin, H, W]`` (N = T·B); binary spikes when ``spike_input`` (checked), as a
            float tensor (weight's dtype) or compactly as int8/uint8/bool (no gradient to x then).
        weight: ``[Cout, Cin/groups, kh, kw]``, floating, on x's device.
        mask: bool, weight's shape; False marks a pruned weight.
        bias: ``[Cout]`` or None.
        spike_input: declares x binary, which lets kernels store and multiply it as spikes.
        dense_weight_grad: if True the backward returns the full dense ``dL/dW`` (what
            gradient-based growth needs); otherwise the weight gradient is zero off the mask.

    Returns: ``[N, Cout, Hout, Wout]``, contiguous, weight's dtype.
    """
    op = "ndsnn.masked_conv2d"
    for name, t in (("x", x), ("weight", weight), ("mask", mask)):
        _check_tensor(t, name, op)
    if x.dim() != 4:
        raise ValueError(
            f"{op}: x must have shape [N, C, H, W] (4-D), got {x.dim()}-D shape {tuple(x.shape)}"
        )
    if weight.dim() != 4:
        raise ValueError(
            f"{op}: weight must be 4-D [Cout, Cin/groups, kh, kw], got shape {tuple(weight.shape)}"
        )
    if not isinstance(groups, int) or groups < 1 or weight.shape[0] % groups:
        raise ValueError(
            f"{op}: groups={groups!r} must be a positive int dividing Cout={weight.shape[0]}"
        )
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(
            f"{op}: x has {x.shape[1]} input channels but weight expects {weight.shape[1] * groups} "
            f"(weight shape {tuple(weight.shape)}, groups={groups})"
        )
    _check_weight_mask_bias(op, x, weight, mask, bias, spike_input)
    stride_, padding_, dilation_ = (
        _pair(stride, "stride"),
        _pair(padding, "padding"),
        _pair(dilation, "dilation"),
    )
    if min(stride_) < 1 or min(dilation_) < 1 or min(padding_) < 0:
        raise ValueError(
            f"{op}: need stride >= 1, dilation >= 1, padding >= 0; got {stride_}, {dilation_}, {padding_}"
        )
    out_hw = _conv_out_hw(x.shape[2:], weight.shape[2:], stride_, padding_, dilation_)
    if min(out_hw) < 1:
        raise ValueError(
            f"{op}: input map {tuple(x.shape[2:])} is too small for kernel {tuple(weight.shape[2:])} "
            f"with padding {padding_} (output would be {out_hw})"
        )
    return torch.ops.ndsnn.masked_conv2d(
        x,
        weight,
        mask,
        bias,
        stride_,
        padding_,
        dilation_,
        groups,
        bool(spike_input),
        bool(dense_weight_grad),
    )


def masked_linear(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None = None,
    *,
    spike_input: bool = True,
    dense_weight_grad: bool = False,
) -> Tensor:
    """Masked linear map ``x (weight ⊙ mask)ᵀ + bias``.

    Args:
        x: ``[N, in]``; binary spikes when ``spike_input`` (checked), float or int8/uint8/bool.
        weight, mask: ``[out, in]`` (mask bool). bias: ``[out]`` or None.
        dense_weight_grad: as in :func:`masked_conv2d`.

    Returns: ``[N, out]``, weight's dtype.
    """
    op = "ndsnn.masked_linear"
    for name, t in (("x", x), ("weight", weight), ("mask", mask)):
        _check_tensor(t, name, op)
    if x.dim() != 2:
        raise ValueError(
            f"{op}: x must have shape [N, in_features] (2-D), got shape {tuple(x.shape)}"
        )
    if weight.dim() != 2:
        raise ValueError(f"{op}: weight must be 2-D [out, in], got shape {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"{op}: x has {x.shape[1]} features but weight expects {weight.shape[1]}")
    _check_weight_mask_bias(op, x, weight, mask, bias, spike_input)
    return torch.ops.ndsnn.masked_linear(
        x, weight, mask, bias, bool(spike_input), bool(dense_weight_grad)
    )


def check_lif_params(
    tau: float, v_threshold: float, v_reset: float | None, surrogate: str, alpha: float, where: str
) -> None:
    """Raise ``ValueError`` naming the first invalid LIF parameter."""
    if not (isinstance(tau, int | float) and math.isfinite(tau) and tau >= 1.0):
        raise ValueError(
            f"{where}: tau must be a finite number >= 1 (membrane time constant in steps), got {tau!r}"
        )
    if not (isinstance(v_threshold, int | float) and math.isfinite(v_threshold)):
        raise ValueError(f"{where}: v_threshold must be a finite number, got {v_threshold!r}")
    if v_reset is not None and not (isinstance(v_reset, int | float) and math.isfinite(v_reset)):
        raise ValueError(
            f"{where}: v_reset must be a finite number or None (soft reset), got {v_reset!r}"
        )
    if surrogate not in SURROGATES:
        raise ValueError(f"{where}: unknown surrogate {surrogate!r}; expected one of {SURROGATES}")
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(
            f"{where}: surrogate alpha must be a positive finite number, got {alpha!r}"
        )


def lif_multistep(
    x_seq: Tensor,
    v_init: Tensor,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: str = "sigmoid",
    alpha: float = 4.0,
    int8_spikes: bool = False,
) -> tuple[Tensor, Tensor]:
    """Fused multi-step LIF: ``(x_seq [T, ...], v_init [...]) -> (spike_seq [T, ...], v_last [...])``.

    Stateless; SpikingJelly ``LIFNode`` semantics and defaults (see :mod:`ndsnn_triton.neuron_equations`).
    ``v_reset=None`` selects the soft reset. ``surrogate`` is ``"atan"`` or ``"sigmoid"``.
    ``int8_spikes``: emit the spikes as int8 (a quarter of fp32's bytes, and ``h`` is not written)
    where no gradient flows back into ``x_seq`` — inference, or an input that needs no gradient.
    """
    op = "ndsnn.lif_multistep"
    _check_tensor(x_seq, "x_seq", op)
    _check_tensor(v_init, "v_init", op)
    if x_seq.dim() < 2:
        raise ValueError(
            f"{op}: x_seq must be time-first [T, ...] with at least 2 dims, got shape {tuple(x_seq.shape)}"
        )
    if x_seq.shape[0] < 1:
        raise ValueError(f"{op}: x_seq has T=0 timesteps")
    if x_seq.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: x_seq must be floating, got {x_seq.dtype}")
    if v_init.dtype != x_seq.dtype:
        raise TypeError(f"{op}: v_init dtype {v_init.dtype} differs from x_seq dtype {x_seq.dtype}")
    if tuple(v_init.shape) != tuple(x_seq.shape[1:]):
        raise ValueError(
            f"{op}: v_init shape {tuple(v_init.shape)} must equal one timestep of x_seq {tuple(x_seq.shape[1:])}"
        )
    if v_init.device != x_seq.device:
        raise ValueError(f"{op}: v_init is on {v_init.device} but x_seq is on {x_seq.device}")
    check_lif_params(tau, v_threshold, v_reset, surrogate, alpha, op)
    if int8_spikes and torch.is_grad_enabled() and (x_seq.requires_grad or v_init.requires_grad):
        raise ValueError(
            f"{op}: int8_spikes=True carries no gradient, but x_seq/v_init require one; "
            "use float spikes for training, or run under torch.no_grad()"
        )
    v_reset_ = None if v_reset is None else float(v_reset)
    spikes, v_last, _h = torch.ops.ndsnn.lif_multistep(
        x_seq,
        v_init,
        float(tau),
        float(v_threshold),
        v_reset_,
        bool(decay_input),
        bool(detach_reset),
        surrogate,
        float(alpha),
        bool(int8_spikes),
    )
    return spikes, v_last


# ----------------------------------------------------------------------------- FLOP formulas
#
# FlopCounterMode counts an ``ndsnn::`` op with these (2 FLOPs per MAC). They count the work a
# mask- and spike-skipping kernel does on the actual tensors of the call: every kept weight meets
# every output position, scaled by the non-zero fraction of a spike input (analog inputs count in
# full). At full density and all-one spikes they equal the dense aten convolution/matmul counts.
# The LIF ops are elementwise and count 0, as FlopCounterMode counts aten elementwise ops.


def _nonzero_fraction(x: Tensor, spike_input: bool) -> float:
    if not spike_input or x.numel() == 0:
        return 1.0
    return int(torch.count_nonzero(x)) / x.numel()


def _register_flop_formulas() -> None:
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    def register(op, formula) -> None:
        if op not in flop_registry:
            register_flop_formula(op, get_raw=True)(formula)

    def conv_fwd(
        x,
        weight,
        mask,
        bias,
        stride,
        padding,
        dilation,
        groups,
        spike_input,
        dense_weight_grad,
        out_val=None,
    ):
        n, _, h, w = out_val.shape
        return round(2 * n * h * w * int(mask.sum()) * _nonzero_fraction(x, spike_input))

    def conv_input_grad(
        grad_out, weight, mask, input_size, stride, padding, dilation, groups, out_val=None
    ):
        n, _, h, w = grad_out.shape
        return 2 * n * h * w * int(mask.sum())

    def conv_weight_grad(
        grad_out, x, mask, stride, padding, dilation, groups, dense, spike_input, out_val=None
    ):
        n, _, h, w = grad_out.shape
        kept = mask.numel() if dense else int(mask.sum())
        return round(2 * n * h * w * kept * _nonzero_fraction(x, spike_input))

    def linear_fwd(x, weight, mask, bias, spike_input, dense_weight_grad, out_val=None):
        return round(2 * x.shape[0] * int(mask.sum()) * _nonzero_fraction(x, spike_input))

    def linear_input_grad(grad_out, weight, mask, out_val=None):
        return 2 * grad_out.shape[0] * int(mask.sum())

    def linear_weight_grad(grad_out, x, mask, dense, spike_input, out_val=None):
        kept = mask.numel() if dense else int(mask.sum())
        return round(2 * x.shape[0] * kept * _nonzero_fraction(x, spike_input))

    def elementwise(*args, out_val=None, **kwargs):
        return 0

    ops = torch.ops.ndsnn
    register(ops.masked_conv2d, conv_fwd)
    register(ops.masked_conv2d_input_grad, conv_input_grad)
    register(ops.masked_conv2d_weight_grad, conv_weight_grad)
    register(ops.masked_linear, linear_fwd)
    register(ops.masked_linear_input_grad, linear_input_grad)
    register(ops.masked_linear_weight_grad, linear_weight_grad)
    register(ops.lif_multistep, elementwise)
    register(ops.lif_multistep_backward, elementwise)


_register_flop_formulas()


def _register_kernels() -> None:
    from ndsnn_triton.kernels.dispatch import register_all

    register_all()


_register_kernels()
