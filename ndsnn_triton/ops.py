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
from ndsnn_triton.companion import SpikeCompanion, attach, companion_of
from ndsnn_triton.kernels.lif import (
    companion_map_size,
    lif_backward_ref,
    lif_companion_ref,
    lif_forward_ref,
)

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
from ndsnn_triton.kernels.spike_prep import COMPACT, map_geometry, spike_prep_ref
from ndsnn_triton.neuron_equations import SURROGATES

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
#: dtypes a binary spike input may come in besides the float ones (1 byte per spike)
SPIKE_DTYPES = COMPACT
#: compute dtypes that may read an fp32 master weight as it is stored (mixed precision, as
#: autocast runs a layer; the weight gradient comes back in fp32)
HALF_DTYPES = (torch.float16, torch.bfloat16)


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


def _saved_input(x: Tensor, spike_input: bool, spikes: Tensor | None) -> Tensor:
    """What the backward keeps of a layer input: binary spikes as int8 (1 byte instead of 2 or 4;
    lossless, the forward checked them) — the companion's copy where one came with the input, an
    int8 input as is, else a cast — and analog input as is. Only the weight gradient reads it."""
    if not spike_input:
        return x
    return spikes if spikes is not None else x.to(torch.int8)


# ----------------------------------------------------------------------------- spike prep


@torch.library.custom_op("ndsnn::spike_prep", mutates_args=())
def _spike_prep(x: Tensor, op: str) -> tuple[Tensor, Tensor]:
    """``(spikes_i8, active)`` of a spike input no LIF described, checked binary for ``op``."""
    mode = spike_check_for(x.device.type)
    impl = resolve("ndsnn::spike_prep", spike_prep_ref, x.device.type)
    copy, active, bad = impl(x, mode != "off")
    if bad.numel():
        if mode == "eager" and bool(bad[0]):
            raise spike_error(op)
        if mode == "deferred":
            defer_spike_error(op, bad[0])
    return copy, active


@_spike_prep.register_fake
def _(x, op):
    copy = x.new_empty(0 if x.dtype in SPIKE_DTYPES else x.shape, dtype=torch.int8)
    maps, _ = map_geometry(x.shape)
    return copy, x.new_empty(x.shape[:2] if maps else 0, dtype=torch.int8)


def spike_companion(x: Tensor, op: str, given: SpikeCompanion | None = None) -> SpikeCompanion:
    """The companion of spike input ``x`` (shaped as ``x``): ``given``, else the one its producer
    attached (:func:`~ndsnn_triton.companion.companion_of`), else one made by the fallback pass
    ``ndsnn::spike_prep``, which also runs the binary-spike check for ``op``."""
    comp = given if given is not None else companion_of(x)
    if comp is not None:
        return comp
    copy, active = torch.ops.ndsnn.spike_prep(x, op)
    spikes = x.view(torch.int8) if x.dtype in SPIKE_DTYPES else copy
    return SpikeCompanion(spikes, active if active.numel() else None)


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
    spikes: Optional[Tensor] = None,
    active: Optional[Tensor] = None,
) -> Tensor:
    if spike_input and spikes is None:
        _check_binary(x, "ndsnn::masked_conv2d")
    impl = resolve(
        "ndsnn::masked_conv2d", masked_conv2d_ref, x.device.type, prefer_dense=not spike_input
    )
    return impl(x, weight, mask, bias, stride, padding, dilation, groups, spikes, active)


@_masked_conv2d.register_fake
def _(
    x, weight, mask, bias, stride, padding, dilation, groups, spike_input, dense_weight_grad,
    spikes=None, active=None,
):  # fmt: skip
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
    grad_dtype: Optional[torch.dtype] = None,
    has_bias: bool = False,
) -> tuple[Tensor, Tensor]:
    impl = resolve("ndsnn::masked_conv2d_weight_grad", masked_conv2d_weight_grad_ref, x.device.type)
    return impl(grad_out, x, mask, stride, padding, dilation, groups, dense, grad_dtype, has_bias)


@_masked_conv2d_weight_grad.register_fake
def _(
    grad_out, x, mask, stride, padding, dilation, groups, dense, spike_input, grad_dtype=None,
    has_bias=False,
):  # fmt: skip
    dtype = grad_out.dtype if grad_dtype is None else grad_dtype
    bias_shape = (mask.shape[0],) if has_bias else (0,)
    return grad_out.new_empty(mask.shape, dtype=dtype), grad_out.new_empty(bias_shape, dtype=dtype)


def _conv_setup_context(ctx, inputs, output):
    x, weight, mask, bias, stride, padding, dilation, groups, spike_input, dense_weight_grad = (
        inputs[:10]
    )
    spikes = inputs[10] if len(inputs) > 10 else None
    ctx.save_for_backward(_saved_input(x, spike_input, spikes), weight, mask)
    ctx.conv_args = (list(stride), list(padding), list(dilation), groups)
    ctx.dense_weight_grad = dense_weight_grad
    ctx.spike_input = spike_input
    ctx.has_bias = bias is not None
    ctx.grad_dtypes = (weight.dtype, None if bias is None else bias.dtype)


def _weight_and_bias_grads(ctx, op, grad_out: Tensor, *args) -> tuple[Tensor | None, Tensor | None]:
    """``(grad_w, grad_b)`` from one weight-gradient op call (the bias's fused in)."""
    w_dtype, b_dtype = ctx.grad_dtypes
    need_w, need_b = ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[3]
    if not (need_w or need_b):
        return None, None
    grad_w, grad_b = op(grad_out, *args, ctx.dense_weight_grad, ctx.spike_input, w_dtype, need_b)
    if need_b and b_dtype != grad_b.dtype:
        grad_b = grad_b.to(b_dtype)
    return (grad_w if need_w else None), (grad_b if need_b else None)


def _conv_backward(ctx, grad_out):
    x, weight, mask = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.conv_args
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = torch.ops.ndsnn.masked_conv2d_input_grad(
            grad_out, weight, mask, list(x.shape), stride, padding, dilation, groups
        )
    grad_w, grad_b = _weight_and_bias_grads(
        ctx, torch.ops.ndsnn.masked_conv2d_weight_grad, grad_out, x, mask, stride, padding,
        dilation, groups,
    )  # fmt: skip
    return grad_x, grad_w, None, grad_b, None, None, None, None, None, None, None, None


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
    spikes: Optional[Tensor] = None,
) -> Tensor:
    if spike_input and spikes is None:
        _check_binary(x, "ndsnn::masked_linear")
    impl = resolve(
        "ndsnn::masked_linear", masked_linear_ref, x.device.type, prefer_dense=not spike_input
    )
    return impl(x, weight, mask, bias, spikes)


@_masked_linear.register_fake
def _(x, weight, mask, bias, spike_input, dense_weight_grad, spikes=None):
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
    grad_out: Tensor,
    x: Tensor,
    mask: Tensor,
    dense: bool,
    spike_input: bool,
    grad_dtype: Optional[torch.dtype] = None,
    has_bias: bool = False,
) -> tuple[Tensor, Tensor]:
    impl = resolve("ndsnn::masked_linear_weight_grad", masked_linear_weight_grad_ref, x.device.type)
    return impl(grad_out, x, mask, dense, grad_dtype, has_bias)


@_masked_linear_weight_grad.register_fake
def _(grad_out, x, mask, dense, spike_input, grad_dtype=None, has_bias=False):
    dtype = grad_out.dtype if grad_dtype is None else grad_dtype
    bias_shape = (mask.shape[0],) if has_bias else (0,)
    return grad_out.new_empty(mask.shape, dtype=dtype), grad_out.new_empty(bias_shape, dtype=dtype)


def _linear_setup_context(ctx, inputs, output):
    x, weight, mask, bias, spike_input, dense_weight_grad = inputs[:6]
    spikes = inputs[6] if len(inputs) > 6 else None
    ctx.save_for_backward(_saved_input(x, spike_input, spikes), weight, mask)
    ctx.dense_weight_grad = dense_weight_grad
    ctx.spike_input = spike_input
    ctx.has_bias = bias is not None
    ctx.grad_dtypes = (weight.dtype, None if bias is None else bias.dtype)


def _linear_backward(ctx, grad_out):
    x, weight, mask = ctx.saved_tensors
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = torch.ops.ndsnn.masked_linear_input_grad(grad_out, weight, mask)
    grad_w, grad_b = _weight_and_bias_grads(
        ctx, torch.ops.ndsnn.masked_linear_weight_grad, grad_out, x, mask
    )
    return grad_x, grad_w, None, grad_b, None, None, None


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
    map_size: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    impl = resolve("ndsnn::lif_multistep", lif_forward_ref, x_seq.device.type)
    return impl(x_seq, v_init, tau, v_threshold, v_reset, decay_input, int8_spikes, map_size)


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
    map_size=0,
):
    spikes = x_seq.new_empty(x_seq.shape, dtype=torch.int8 if int8_spikes else x_seq.dtype)
    copy, active = lif_companion_ref(spikes, companion_map_size(spikes[0].numel(), map_size))
    return (
        spikes,
        x_seq.new_empty(x_seq.shape[1:]),
        x_seq.new_empty(0) if int8_spikes else x_seq.new_empty(x_seq.shape),
        copy,
        active,
    )


@torch.library.custom_op("ndsnn::lif_multistep_backward", mutates_args=())
def _lif_multistep_backward(
    grad_spike: Tensor,
    grad_v_last: Optional[Tensor],
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
    # Outputs nobody differentiates (v_last, h, the companion) get None, not a zero tensor each.
    ctx.set_materialize_grads(False)
    _x, _v, tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha = inputs[:9]
    int8_spikes = len(inputs) > 9 and bool(inputs[9])  # the raw op may be called without it
    h_seq = output[2]
    # The backward needs h alone (it recomputes the spikes, S = (H - v_th >= 0)). Keep h, or the
    # inputs when their storage is smaller (an input expanded over T, as a direct-coding stem
    # gives, holds one step): then the backward reruns the forward for h, bit for bit.
    x_seq, v_init = inputs[:2]
    inputs_bytes = x_seq.untyped_storage().nbytes() + v_init.untyped_storage().nbytes()
    ctx.recompute_h = not int8_spikes and inputs_bytes < h_seq.numel() * h_seq.element_size()
    ctx.save_for_backward(*((x_seq, v_init) if ctx.recompute_h else (h_seq,)))
    ctx.params = (tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, alpha)
    ctx.int8_spikes = int8_spikes


def _lif_backward(ctx, grad_spike, grad_v_last, *_grad_h_and_companion):
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
    # grad_v_last None (no gradient reached the last potential) is passed on: no zero fill
    grad_x, grad_v = torch.ops.ndsnn.lif_multistep_backward(
        grad_spike, grad_v_last, h_seq, *ctx.params
    )
    return grad_x, grad_v, None, None, None, None, None, None, None, None, None


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
    elif weight.dtype != x.dtype and not (x.dtype in HALF_DTYPES and weight.dtype == torch.float32):
        raise TypeError(
            f"{op}: weight dtype {weight.dtype} differs from x dtype {x.dtype}; cast one of them "
            "(an fp32 weight with fp16/bf16 x is taken: it computes in x's dtype)"
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
        if bias.dtype not in (weight.dtype, _out_dtype(x, weight)):
            raise TypeError(
                f"{op}: bias dtype {bias.dtype} differs from weight dtype {weight.dtype}"
            )
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"{op}: bias shape {tuple(bias.shape)} should be ({weight.shape[0]},)")


def _checked_companion(
    op: str, x: Tensor, spike_input: bool, given: SpikeCompanion | None
) -> SpikeCompanion | None:
    """The companion an op call runs with: none for analog input; for spikes ``given`` (checked
    against ``x``), the producer's, or the fallback pass's."""
    if not spike_input:
        if given is not None:
            raise ValueError(
                f"{op}: a spike companion was given for analog input (spike_input=False)"
            )
        return None
    if given is not None:
        if not isinstance(given, SpikeCompanion):
            raise TypeError(f"{op}: companion must be a SpikeCompanion, got {type(given).__name__}")
        spikes = given.spikes
        if (
            spikes.dtype != torch.int8
            or tuple(spikes.shape) != tuple(x.shape)
            or spikes.device != x.device
        ):
            raise ValueError(
                f"{op}: companion spikes must be int8 of x's shape {tuple(x.shape)} on {x.device}, "
                f"got {spikes.dtype} {tuple(spikes.shape)} on {spikes.device}"
            )
        active = given.active
        want = (x.shape[0], x.shape[1])
        if active is not None and (active.dtype != torch.int8 or tuple(active.shape) != want):
            raise ValueError(
                f"{op}: companion activity must be int8 {want} (one flag per sample and channel), "
                f"got {active.dtype} {tuple(active.shape)}"
            )
    return spike_companion(x, f"ndsnn::{op.split('.')[-1]}", given)


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
    companion: SpikeCompanion | None = None,
) -> Tensor:
    """Masked 2-D convolution ``conv2d(x, weight ⊙ mask) + bias``.

    Args:
        x: ``[N, Cin, H, W]`` (N = T·B); binary spikes when ``spike_input`` (checked), as a
            float tensor or compactly as int8/uint8/bool (no gradient to x then).
        weight: ``[Cout, Cin/groups, kh, kw]``, floating, on x's device: x's dtype, or fp32
            with bf16/fp16 x (mixed precision: read as stored, gradient in fp32).
        mask: bool, weight's shape; False marks a pruned weight.
        bias: ``[Cout]`` or None, weight's (or x's) dtype.
        spike_input: declares x binary, which lets kernels store and multiply it as spikes.
        dense_weight_grad: if True the backward returns the full dense ``dL/dW`` (what
            gradient-based growth needs); otherwise the weight gradient is zero off the mask.
        companion: the int8 copy and map activity of x (:class:`~ndsnn_triton.companion.
            SpikeCompanion`, shaped as x); default: the one the library's LIF attached to x,
            else one fallback pass over x makes it (and checks x is binary).

    Returns: ``[N, Cout, Hout, Wout]``, contiguous, in x's float dtype (weight's for compact x).
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
    comp = _checked_companion(op, x, spike_input, companion)
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
        None if comp is None else comp.spikes,
        None if comp is None else comp.active,
    )


def masked_linear(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None = None,
    *,
    spike_input: bool = True,
    dense_weight_grad: bool = False,
    companion: SpikeCompanion | None = None,
) -> Tensor:
    """Masked linear map ``x (weight ⊙ mask)ᵀ + bias``.

    Args:
        x: ``[N, in]``; binary spikes when ``spike_input`` (checked), float or int8/uint8/bool.
        weight, mask: ``[out, in]`` (mask bool). bias: ``[out]`` or None.
        dense_weight_grad, companion: as in :func:`masked_conv2d` (only the int8 copy is used).

    Returns: ``[N, out]``, in x's float dtype (weight's for compact x).
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
    if companion is not None and companion.active is not None:
        companion = SpikeCompanion(companion.spikes)  # a linear layer's input has no maps
    comp = _checked_companion(op, x, spike_input, companion)
    return torch.ops.ndsnn.masked_linear(
        x, weight, mask, bias, bool(spike_input), bool(dense_weight_grad),
        None if comp is None else comp.spikes,
    )  # fmt: skip


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
    map_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Fused multi-step LIF: ``(x_seq [T, ...], v_init [...]) -> (spike_seq [T, ...], v_last [...])``.

    Stateless; SpikingJelly ``LIFNode`` semantics and defaults (see :mod:`ndsnn_triton.neuron_equations`).
    ``v_reset=None`` selects the soft reset. ``surrogate`` is ``"atan"`` or ``"sigmoid"``.
    ``int8_spikes``: emit the spikes as int8 (a quarter of fp32's bytes, and ``h`` is not written)
    where no gradient flows back into ``x_seq`` — inference, or an input that needs no gradient.

    The same launch writes the spikes' companion (:mod:`ndsnn_triton.companion`: an int8 copy
    and, on maps of ≥ 4 positions, which ``(sample, channel)`` maps fired), attached to
    ``spike_seq`` for the next spiking layer. ``map_size``: positions per map (default
    :func:`spike_map_size` of the shape); 0 writes no companion.
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
    if map_size is None:
        map_size = spike_map_size(x_seq.shape)
    if not isinstance(map_size, int) or map_size < 0:
        raise ValueError(f"{op}: map_size must be a non-negative int, got {map_size!r}")
    v_reset_ = None if v_reset is None else float(v_reset)
    spikes, v_last, _h, copy, active = torch.ops.ndsnn.lif_multistep(
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
        map_size,
    )
    if int8_spikes:
        copy = spikes
    if map_size and copy.numel() == spikes.numel():
        attach(spikes, SpikeCompanion(copy, active if active.numel() else None))
    return spikes, v_last


def spike_map_size(shape: Sequence[int]) -> int:
    """Positions per ``(sample, channel)`` map of a time-first ``[T, B, C, ...]`` tensor: the
    product of the dimensions after ``C`` (1 for ``[T, B, F]``: one feature per map)."""
    # int(): under torch.jit tracing the sizes are traced tensors
    return int(math.prod(shape[3:])) if len(shape) >= 4 else 1


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
        spikes=None,
        active=None,
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
        grad_out, x, mask, stride, padding, dilation, groups, dense, spike_input, grad_dtype=None,
        has_bias=False, out_val=None,
    ):  # fmt: skip
        n, _, h, w = grad_out.shape
        kept = mask.numel() if dense else int(mask.sum())
        return round(2 * n * h * w * kept * _nonzero_fraction(x, spike_input))

    def linear_fwd(
        x, weight, mask, bias, spike_input, dense_weight_grad, spikes=None, out_val=None
    ):
        return round(2 * x.shape[0] * int(mask.sum()) * _nonzero_fraction(x, spike_input))

    def linear_input_grad(grad_out, weight, mask, out_val=None):
        return 2 * grad_out.shape[0] * int(mask.sum())

    def linear_weight_grad(
        grad_out, x, mask, dense, spike_input, grad_dtype=None, has_bias=False, out_val=None
    ):
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
    register(ops.spike_prep, elementwise)


_register_flop_formulas()


def _register_kernels() -> None:
    from ndsnn_triton.kernels.dispatch import register_all

    register_all()


_register_kernels()
