"""Kernel registration and the ``auto`` choice between sparse Triton kernels and dense cuDNN/cuBLAS.

Backend ``"triton"`` always runs the Triton kernel. Backend ``"auto"`` (CUDA only) times the
Triton kernel and the reference (cuDNN/cuBLAS on the masked dense weight) once per op, shape, dtype
and mask version with ``triton.testing.do_bench``, and keeps the faster until the mask changes
(SparseProp's rule: sparse only where it measurably wins), so ``auto`` is never slower than dense
by more than the timing noise. The analog input stem and dense-gradient steps use the reference.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

from ndsnn_triton.backend import get_backend, register_kernel
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, triton, triton_usable

_CHOICES: OrderedDict[tuple, str] = OrderedDict()
_MAX_CHOICES = 4096
#: the sparse kernel must beat the dense one by this factor to be chosen (timing noise margin)
SPARSE_MARGIN = 0.97


def _key(op: str, args: tuple) -> tuple:
    parts: list = [op]
    for a in args:
        if isinstance(a, Tensor):
            parts.append((tuple(a.shape), a.dtype, a.device.type))
            if a.dtype == torch.bool:  # the mask: its identity and version decide the sparse cost
                parts.append((a.data_ptr(), a._version))
        else:
            parts.append(a if isinstance(a, int | float | bool | str | type(None)) else tuple(a))
    return tuple(parts)


def _time_ms(fn: Callable, args: tuple) -> float:
    return float(triton.testing.do_bench(lambda: fn(*args), warmup=5, rep=20, return_mode="median"))


def choose(op: str, sparse: Callable, dense: Callable, args: tuple) -> Callable:
    """The faster of ``sparse`` and ``dense`` for these arguments (timed once, then cached)."""
    key = _key(op, args)
    choice = _CHOICES.get(key)
    if choice is None:
        choice = (
            "sparse" if _time_ms(sparse, args) < SPARSE_MARGIN * _time_ms(dense, args) else "dense"
        )
        _CHOICES[key] = choice
        while len(_CHOICES) > _MAX_CHOICES:
            _CHOICES.popitem(last=False)
    return sparse if choice == "sparse" else dense


def register(op: str, sparse: Callable, dense: Callable, timed: bool = True) -> None:
    """Register ``sparse`` as ``op``'s Triton implementation, with the ``auto`` choice around it."""

    def run(*args):
        tensors = [a for a in args if isinstance(a, Tensor)]
        if not triton_usable(*tensors):
            if get_backend() == "triton":
                devices = sorted({t.device.type for t in tensors})
                raise RuntimeError(
                    f"{op}: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before import for CPU); got {devices}"
                )
            return dense(*args)
        if get_backend() == "auto" and timed and tensors[0].device.type == "cuda":
            return choose(op, sparse, dense, args)(*args)
        return sparse(*args)

    run.__name__ = f"{op.split('::')[1]}_dispatch"
    register_kernel(op, "triton")(run)


def register_all() -> None:
    """Register every Triton kernel behind its ``ndsnn::`` op (no-op without Triton)."""
    if not HAS_TRITON:
        return
    from ndsnn_triton.kernels import lif, spike_conv, spike_linear

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
    # The LIF kernel is elementwise and always at least as fast as the eager loop: no timing.
    register("ndsnn::lif_multistep", lif.lif_forward_triton, lif.lif_forward_ref, timed=False)
    register(
        "ndsnn::lif_multistep_backward", lif.lif_backward_triton, lif.lif_backward_ref, timed=False
    )
