"""Backend selection for the ``ndsnn::`` ops.

Three backends:

* ``"torch"``  - the pure-PyTorch references (``kernels/*_ref``); run anywhere.
* ``"triton"`` - the Triton kernels; on CPU they run in the interpreter when
  ``TRITON_INTERPRET=1`` is set before Triton is imported (that is how CI tests them).
* ``"auto"``   - the default: a Triton kernel where one is registered for the op and the
  tensors live on CUDA, else the reference (which calls cuDNN/cuBLAS on CUDA).

The choice is process-wide (``set_backend``), scoped (``use_backend``) or taken from the
``NDSNN_BACKEND`` environment variable at import. Ops read it at call time, inside their
opaque implementations, so switching never retraces a ``torch.compile`` graph.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")

_KERNELS: dict[tuple[str, str], Callable] = {}


def _validated(name: str, source: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(
            f"unknown ndsnn backend {name!r} (from {source}); expected one of {BACKENDS}"
        )
    return name.strip().lower()


_current: str = _validated(os.environ.get("NDSNN_BACKEND", "auto"), "NDSNN_BACKEND")
_check_spikes: bool = os.environ.get("NDSNN_CHECK_SPIKES", "1") not in ("0", "false", "False")


def get_backend() -> str:
    """The backend the ops use now: ``"auto"``, ``"torch"`` or ``"triton"``."""
    return _current


def set_backend(name: str) -> None:
    """Select the backend for every later op call in this process."""
    global _current
    _current = _validated(name, "set_backend")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: run the enclosed block on backend ``name``, then restore."""
    global _current
    previous = _current
    _current = _validated(name, "use_backend")
    try:
        yield
    finally:
        _current = previous


_aten_reference: bool = False


def aten_reference_enabled() -> bool:
    """Whether the nn layers run as plain aten ops (see :func:`aten_reference`)."""
    return _aten_reference


@contextlib.contextmanager
def aten_reference() -> Iterator[None]:
    """Within the block, ``SpikeConv2d``/``SpikeLinear``/``LIF`` run as plain PyTorch ops.

    Convolutions and matmuls on ``weight ⊙ mask`` and the LIF equations under autograd, with no
    ``ndsnn::`` op: what a dense SNN library would execute. Used to count FLOPs with
    ``FlopCounterMode``'s own aten formulas and to cross-check the ops.
    """
    global _aten_reference
    previous = _aten_reference
    _aten_reference = True
    try:
        yield
    finally:
        _aten_reference = previous


def spike_check_enabled() -> bool:
    """Whether ops with ``spike_input=True`` verify that their input is binary."""
    return _check_spikes


def set_spike_check(enabled: bool) -> None:
    """Turn the binary-spike input check on or off (``NDSNN_CHECK_SPIKES=0`` at import).

    The check is one extra pass over the input per call; switch it off for timing runs.
    """
    global _check_spikes
    _check_spikes = bool(enabled)


@contextlib.contextmanager
def use_spike_check(enabled: bool) -> Iterator[None]:
    """Context manager: run the enclosed block with the binary-spike check on or off, then restore."""
    global _check_spikes
    previous = _check_spikes
    _check_spikes = bool(enabled)
    try:
        yield
    finally:
        _check_spikes = previous


def register_kernel(op_name: str, backend: str = "triton") -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as the implementation of ``op_name`` on ``backend``."""

    def decorator(fn: Callable) -> Callable:
        _KERNELS[(op_name, backend)] = fn
        return fn

    return decorator


def resolve(
    op_name: str, reference: Callable, device_type: str, prefer_dense: bool = False
) -> Callable:
    """Pick the implementation of ``op_name`` for the current backend and device.

    ``prefer_dense`` (analog input, e.g. the image stem) keeps ``"auto"`` on the reference.
    Raises ``NotImplementedError`` naming the op when ``"triton"`` is forced and no kernel exists.
    """
    backend = _current
    if backend == "torch":
        return reference
    kernel = _KERNELS.get((op_name, "triton"))
    if backend == "triton":
        if kernel is None:
            raise NotImplementedError(
                f"{op_name} has no Triton kernel; use backend 'torch' or 'auto' "
                "(ndsnn_triton.set_backend / NDSNN_BACKEND)"
            )
        return kernel
    # auto: Triton only on CUDA, where it exists; the reference otherwise.
    if kernel is not None and device_type == "cuda" and not prefer_dense:
        return kernel
    return reference
