"""Kernel registration and the ``auto`` choice between sparse Triton kernels and dense cuDNN/cuBLAS.

Backend ``"triton"`` always runs the Triton kernel. Backend ``"auto"`` (CUDA only) prices the
Triton kernel and the reference (cuDNN/cuBLAS on the masked dense weight) with the kernels' time
model (:mod:`ndsnn_triton.kernels.perf_model`, calibrated on recorded GPU runs; nothing is timed
inside a training run) and keeps the sparse kernel only where it is predicted faster by
:data:`SPARSE_MARGIN` (sparse only where it clearly wins). The choice is made
once per *choice key*: the op, the tensors' shapes, dtypes and devices, the non-tensor arguments
(stride, padding, ...) and the mask's density bucket (:data:`DENSITY_BUCKETS`) — never the mask's
address or version, so a mask update within a bucket reuses it. The model prices the mask the
choice is first made for, at its own density: the sparse-training methods' densities only fall
(NDSNN, LTH) or stay (SET, RigL, static), so that is the bucket's densest mask they run. A weight
gradient is priced at the spike-rate prior
(:data:`~ndsnn_triton.kernels.perf_model.PRIOR_RATE`). Calls whose Triton launcher would run the
reference anyway (dense weight gradients, ``groups != 1``) are never priced. float64 runs on the
reference under ``auto`` and is refused under ``triton``: the kernels accumulate in float32.
Shapes the kernels cannot launch on (int32 offsets, CUDA grid limits: a
:class:`~ndsnn_triton.kernels.launch.LaunchLimitError`) run on the reference under ``auto``.
:func:`clear_caches` frees the choices and the cached mask indices.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

from ndsnn_triton.backend import get_backend, register_kernel
from ndsnn_triton.kernels import perf_model
from ndsnn_triton.kernels.launch import LaunchLimitError
from ndsnn_triton.kernels.sparse_index import INDEX_CACHE, known_nnz, note_nnz
from ndsnn_triton.kernels.spike_conv import hands_to_reference
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, triton_usable

_CHOICES: OrderedDict[tuple, str] = OrderedDict()
_MAX_CHOICES = 4096
#: the sparse kernel must be predicted faster than the dense one by this factor to be chosen:
#: the margin covers the model's error (its fits are within ±36 % on the recorded cases)
SPARSE_MARGIN = 0.7
#: lower edges of the density buckets a choice is made for: [0.5, 1], [0.2, 0.5), ...,
#: [0.01, 0.02), and below 0.01 (bucket 0.0); log-spaced, so a run whose density falls from
#: dense to 1 % times each op shape at most seven times
DENSITY_BUCKETS: tuple[float, ...] = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
#: every masked op takes its bool weight mask as the third argument
_MASK_ARG = 2


# ----------------------------------------------------------------------------- reference-only calls
# Where a Triton launcher hands the call to the reference (spike_conv.hands_to_reference), the model
# would price the reference against itself. Per op: (groups, dense) from its arguments.

_REFERENCE_ONLY: dict[str, Callable[..., tuple[int, bool]]] = {
    "ndsnn::masked_conv2d": lambda x, w, mask, bias, s, p, d, groups, *_: (groups, False),
    "ndsnn::masked_conv2d_input_grad": lambda dy, w, mask, size, s, p, d, groups: (groups, False),
    "ndsnn::masked_conv2d_weight_grad": lambda dy, x, mask, s, p, d, groups, dense, *_: (
        groups,
        dense,
    ),
    "ndsnn::masked_linear_weight_grad": lambda dy, x, mask, dense, *_: (1, dense),
}


def reference_only(op: str, args: tuple) -> bool:
    """Whether ``op``'s Triton launcher runs the reference for these arguments."""
    unpack = _REFERENCE_ONLY.get(op)
    return unpack is not None and hands_to_reference(*unpack(*args))


# ----------------------------------------------------------------------------- choice key


def density_bucket(density: float) -> float:
    """The lower edge of the :data:`DENSITY_BUCKETS` bucket holding ``density`` (0.0 below all)."""
    return next((edge for edge in DENSITY_BUCKETS if density >= edge), 0.0)


def mask_density(mask: Tensor) -> float:
    """The kept fraction of ``mask``: free where ``set_mask`` recorded the count, else one host
    synchronisation per mask version (the count is recorded for the index build too)."""
    nnz = known_nnz(mask)
    if nnz is None:
        nnz = int(mask.count_nonzero())
        note_nnz(mask, nnz)
    return nnz / max(mask.numel(), 1)


def _arg_key(a: object) -> object:
    if isinstance(a, Tensor):
        return (tuple(a.shape), a.dtype, a.device)
    if a is None or isinstance(a, int | float | bool | str | torch.dtype):
        return a
    return tuple(a)


def _mask_arg(args: tuple) -> Tensor | None:
    mask = args[_MASK_ARG] if len(args) > _MASK_ARG else None
    return mask if isinstance(mask, Tensor) and mask.dtype == torch.bool else None


def choice_key(op: str, args: tuple) -> tuple:
    """What decides ``op``'s sparse-vs-dense choice: shapes, dtypes, devices, the non-tensor
    arguments and the mask's density bucket (no address: a freed mask's reuse cannot alias)."""
    mask = _mask_arg(args)
    bucket = None if mask is None else density_bucket(mask_density(mask))
    return (op, *map(_arg_key, args), bucket)


# ----------------------------------------------------------------------------- pricing and choice


def _gpu(device: torch.device) -> perf_model.Gpu:
    return perf_model.gpu_for(torch.cuda.get_device_name(device))


def _shape_and_nnz(op: str, args: tuple) -> tuple[perf_model.ConvShape, int]:
    """The convolution ``op`` runs (a linear layer as 1×1) and its mask's kept count."""
    mask = args[_MASK_ARG]
    nnz = round(mask_density(mask) * mask.numel())
    if op.startswith("ndsnn::masked_linear"):
        fout, fin = mask.shape
        n = args[0].shape[0]
        return perf_model.ConvShape.linear(n, fin, fout), max(nnz, 1)
    if op == "ndsnn::masked_conv2d_input_grad":
        _, weight, _, size, stride, padding, dilation = args[:7]
        return perf_model.shape_of(size, weight.shape, stride, padding, dilation), max(nnz, 1)
    first, second, _, *rest = args
    x = first if op == "ndsnn::masked_conv2d" else second
    stride, padding, dilation = rest[:3] if op.endswith("weight_grad") else rest[1:4]
    return perf_model.shape_of(x.shape, mask.shape, stride, padding, dilation), max(nnz, 1)


def predicted_us(op: str, args: tuple) -> tuple[float, float]:
    """``(sparse, dense)`` predicted µs of ``op`` on these arguments (CUDA tensors)."""
    shape, nnz = _shape_and_nnz(op, args)
    tensors = [a for a in args if isinstance(a, Tensor)]
    gpu = _gpu(tensors[0].device)
    w = args[1] if op in ("ndsnn::masked_conv2d", "ndsnn::masked_linear") else None
    dtype = next(t.dtype for t in tensors if t.is_floating_point())
    linear = op.startswith("ndsnn::masked_linear")
    tf32 = torch.backends.cuda.matmul.allow_tf32 if linear else torch.backends.cudnn.allow_tf32
    if op.endswith("_input_grad"):
        cost = perf_model.conv_dgrad_cost(shape, nnz, dtype, args[1].dtype)
        dense = perf_model.dense_us(shape, dtype, "bwd", gpu, tf32) / 2
    elif op.endswith("_weight_grad"):
        spikes = perf_model.Spikes(rate=perf_model.PRIOR_RATE)
        cost = perf_model.conv_wgrad_cost(shape, nnz, dtype, spikes)
        dense = perf_model.dense_us(shape, dtype, "bwd", gpu, tf32) / 2
    else:
        y_dtype = dtype if args[0].is_floating_point() else w.dtype
        spikes = args[-2] if op == "ndsnn::masked_conv2d" else args[-1]
        x_dtype = torch.int8 if spikes is not None else args[0].dtype
        skip = op == "ndsnn::masked_conv2d" and args[-1] is not None
        cost = perf_model.conv_fwd_cost(
            shape, nnz, x_dtype, w.dtype, y_dtype, None, args[3] is not None, skip
        )
        dense = perf_model.dense_us(shape, y_dtype, "fwd", gpu, tf32)
    return perf_model.predict(cost, gpu).total_us, dense


def _remember(key: tuple, choice: str) -> None:
    _CHOICES[key] = choice
    while len(_CHOICES) > _MAX_CHOICES:
        _CHOICES.popitem(last=False)


def choose(op: str, sparse: Callable, dense: Callable, args: tuple) -> Callable:
    """The implementation the time model predicts faster for these arguments (once per choice
    key)."""
    if reference_only(op, args):
        return dense
    key = choice_key(op, args)
    choice = _CHOICES.get(key)
    if choice is None:
        sparse_us, dense_us = predicted_us(op, args)
        choice = "sparse" if sparse_us < SPARSE_MARGIN * dense_us else "dense"
        _remember(key, choice)
    else:
        _CHOICES.move_to_end(key)
    return sparse if choice == "sparse" else dense


def clear_caches() -> None:
    """Free the library's caches: the ``auto`` choices and the cached mask indices (with the
    masks they keep alive). Call between benchmark cases; later calls re-price and rebuild."""
    _CHOICES.clear()
    INDEX_CACHE.clear()


# ----------------------------------------------------------------------------- registration


def _has_float64(tensors: list[Tensor]) -> bool:
    return any(t.dtype == torch.float64 for t in tensors)


def _on_gpu(tensors: list[Tensor]) -> bool:
    return tensors[0].device.type == "cuda"


def wrap(
    op: str, sparse: Callable, dense: Callable, priced: bool = True, float64: bool = False
) -> Callable:
    """``op``'s Triton entry point: checks, then ``sparse``, ``dense`` or the ``auto`` choice
    (``float64``: the kernel takes float64 too; it does no float arithmetic)."""

    def run(*args):
        tensors = [a for a in args if isinstance(a, Tensor)]
        backend = get_backend()
        if not float64 and _has_float64(tensors):
            if backend == "triton":
                raise TypeError(
                    f"{op}: backend 'triton' does not take float64 (its kernels accumulate in "
                    "float32); use backend 'torch' or 'auto' for float64, or float32 inputs"
                )
            return dense(*args)
        if not triton_usable(*tensors):
            if backend == "triton":
                devices = sorted({t.device.type for t in tensors})
                raise RuntimeError(
                    f"{op}: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before import for CPU); got {devices}"
                )
            return dense(*args)
        if backend == "triton":
            return sparse(*args)
        if backend == "dense":  # the priced ops are the convolutions: cuDNN/cuBLAS
            return dense(*args) if priced else sparse(*args)
        try:  # the plans refuse shapes past int32 offsets or grid limits before launching
            if priced and _on_gpu(tensors):
                return choose(op, sparse, dense, args)(*args)
            return sparse(*args)
        except LaunchLimitError:
            return dense(*args)

    run.__name__ = f"{op.split('::')[1]}_dispatch"
    return run


def register(
    op: str, sparse: Callable, dense: Callable, priced: bool = True, float64: bool = False
) -> None:
    """Register ``sparse`` as ``op``'s Triton implementation, with the ``auto`` choice around it
    (``priced=False``: always the kernel on CUDA; ``float64``: as in :func:`wrap`)."""
    register_kernel(op, "triton")(wrap(op, sparse, dense, priced, float64))


def register_all() -> None:
    """Register every Triton kernel behind its ``ndsnn::`` op (no-op without Triton)."""
    if not HAS_TRITON:
        return
    from ndsnn_triton.kernels import lif, spike_conv, spike_linear, spike_prep

    register("ndsnn::masked_conv2d", spike_conv.masked_conv2d_triton, spike_conv.masked_conv2d_ref)
    register(
        "ndsnn::masked_conv2d_input_grad",
        spike_conv.masked_conv2d_input_grad_triton,
        spike_conv.masked_conv2d_input_grad_ref,
    )
    register(
        "ndsnn::masked_conv2d_weight_grad",
        spike_conv.masked_conv2d_weight_grad_triton,
        spike_conv.masked_conv2d_weight_grad_ref,
    )
    register(
        "ndsnn::masked_linear", spike_linear.masked_linear_triton, spike_linear.masked_linear_ref
    )
    register(
        "ndsnn::masked_linear_input_grad",
        spike_linear.masked_linear_input_grad_triton,
        spike_linear.masked_linear_input_grad_ref,
    )
    register(
        "ndsnn::masked_linear_weight_grad",
        spike_linear.masked_linear_weight_grad_triton,
        spike_linear.masked_linear_weight_grad_ref,
    )
    # The LIF kernel is elementwise and always at least as fast as the eager loop: not priced.
    register("ndsnn::lif_multistep", lif.lif_forward_triton, lif.lif_forward_ref, priced=False)
    register(
        "ndsnn::lif_multistep_backward", lif.lif_backward_triton, lif.lif_backward_ref, priced=False
    )
    # One pass over a spike input, elementwise: never slower than its torch equivalent.
    register(
        "ndsnn::spike_prep",
        spike_prep.spike_prep_triton,
        spike_prep.spike_prep_ref,
        priced=False,
        float64=True,
    )
