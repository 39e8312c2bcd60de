"""Backend selection for the ``ndsnn::`` ops.

Four backends:

* ``"torch"``  - the pure-PyTorch references (``kernels/*_ref``); run anywhere.
* ``"triton"`` - the Triton kernels; on CPU they run in the interpreter when
  ``TRITON_INTERPRET=1`` is set before Triton is imported (that is how CI tests them).
* ``"auto"``   - the default: a Triton kernel where one is registered for the op and the
  tensors live on CUDA (the convolution and linear ops only where the time model predicts the
  sparse kernel faster), else the reference (which calls cuDNN/cuBLAS on CUDA).
* ``"dense"``  - a good dense step: the convolution and linear ops on cuDNN/cuBLAS with the
  masked dense weight, the elementwise ops (the fused multi-step LIF, the spike preparation pass)
  on their Triton kernels where ``"auto"`` would run them.

The choice is process-wide (``set_backend``), scoped (``use_backend``) or taken from the
``NDSNN_BACKEND`` environment variable at import. Ops read it at call time, inside their
opaque implementations, so switching never retraces a ``torch.compile`` graph.

The binary-spike input check is chosen the same way (``set_spike_check``, ``use_spike_check``,
``NDSNN_CHECK_SPIKES``): ``"eager"`` raises at the call, ``"deferred"`` keeps a device-side flag
per op that :func:`raise_deferred_spike_errors` reads back, ``"auto"`` (default) is eager on CPU
and deferred elsewhere, so a training step on a GPU never waits for the check.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch

BACKENDS: tuple[str, ...] = ("auto", "torch", "triton", "dense")

_KERNELS: dict[tuple[str, str], Callable] = {}


def _validated(name: str, source: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(
            f"unknown ndsnn backend {name!r} (from {source}); expected one of {BACKENDS}"
        )
    return name.strip().lower()


_current: str = _validated(os.environ.get("NDSNN_BACKEND", "auto"), "NDSNN_BACKEND")


def get_backend() -> str:
    """The backend the ops use now: ``"auto"``, ``"torch"``, ``"triton"`` or ``"dense"``."""
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


# ----------------------------------------------------------------------------- recomputation

#: Default density at or below which a spiking segment is recomputed in backward (see
#: :mod:`ndsnn_triton.nn.recompute`): recomputing a layer costs one extra sparse forward, at most
#: this fraction of the layer's dense forward.
RECOMPUTE_MAX_DENSITY: float = 0.1


def _recompute_density(value: float | str, source: str) -> float:
    try:
        d = float(value)
    except (TypeError, ValueError):
        d = float("nan")
    if isinstance(value, bool) or not 0.0 <= d <= 1.0:
        raise ValueError(
            f"recompute density must be a number in [0, 1] (0 turns recomputation off), got "
            f"{value!r} (from {source})"
        )
    return d


_recompute_max_density: float = _recompute_density(
    os.environ.get("NDSNN_RECOMPUTE_DENSITY", RECOMPUTE_MAX_DENSITY), "NDSNN_RECOMPUTE_DENSITY"
)


def get_recompute_density() -> float:
    """Weight density at or below which spiking segments recompute their activations in backward
    instead of saving them (0: never; 1: always)."""
    return _recompute_max_density


def set_recompute_density(max_density: float) -> None:
    """Set the recompute threshold for every later forward (``NDSNN_RECOMPUTE_DENSITY`` at import)."""
    global _recompute_max_density
    _recompute_max_density = _recompute_density(max_density, "set_recompute_density")


@contextlib.contextmanager
def use_recompute_density(max_density: float) -> Iterator[None]:
    """Context manager: :func:`set_recompute_density` for the block, then the previous value."""
    global _recompute_max_density
    previous = _recompute_max_density
    _recompute_max_density = _recompute_density(max_density, "use_recompute_density")
    try:
        yield
    finally:
        _recompute_max_density = previous


# ----------------------------------------------------------------------------- binary-spike check

SPIKE_CHECK_MODES: tuple[str, ...] = ("auto", "eager", "deferred", "off")
# Boolean spellings of the environment variable (it used to be an on/off switch).
_SPIKE_MODE_ALIASES = {"": "auto", "1": "auto", "true": "auto", "0": "off", "false": "off"}
#: pending deferred checks: (op name, device) -> bool scalar on that device, True once an input failed
_DEFERRED: dict[tuple[str, torch.device], torch.Tensor] = {}


def _spike_mode(value: bool | str, source: str) -> str:
    if isinstance(value, bool):
        return "auto" if value else "off"
    name = value.strip().lower() if isinstance(value, str) else None
    name = _SPIKE_MODE_ALIASES.get(name, name)
    if name not in SPIKE_CHECK_MODES:
        raise ValueError(
            f"unknown binary-spike check mode {value!r} (from {source}); expected a bool or "
            f"one of {SPIKE_CHECK_MODES}"
        )
    return name


_spike_check: str = _spike_mode(os.environ.get("NDSNN_CHECK_SPIKES", "auto"), "NDSNN_CHECK_SPIKES")


def spike_check_mode() -> str:
    """The binary-spike check mode: ``"auto"``, ``"eager"``, ``"deferred"`` or ``"off"``."""
    return _spike_check


def spike_check_enabled() -> bool:
    """Whether ops with ``spike_input=True`` verify that their input is binary (any mode but off)."""
    return _spike_check != "off"


def spike_check_for(device_type: str) -> str:
    """How an op checks a spike input on ``device_type``: ``"eager"``, ``"deferred"`` or ``"off"``.

    ``"auto"`` checks eagerly on CPU (an immediate error costs nothing there) and deferred
    elsewhere, where reading the result back would stall the host until the device queue drains.
    """
    if _spike_check != "auto":
        return _spike_check
    return "eager" if device_type == "cpu" else "deferred"


def set_spike_check(mode: bool | str) -> None:
    """Select the binary-spike input check for every later op call (``NDSNN_CHECK_SPIKES`` at import).

    ``True`` is ``"auto"``, ``False`` is ``"off"``. ``"eager"`` raises at the offending call (one
    host synchronisation per call); ``"deferred"`` only ORs a device-side flag per op, raised by
    :func:`raise_deferred_spike_errors`; ``"auto"`` is eager on CPU, deferred on other devices.
    Each check is one extra pass over the input; switch it off for timing runs.
    """
    global _spike_check
    _spike_check = _spike_mode(mode, "set_spike_check")


@contextlib.contextmanager
def use_spike_check(mode: bool | str) -> Iterator[None]:
    """Context manager: run the enclosed block with the binary-spike check ``mode``, then restore."""
    global _spike_check
    previous = _spike_check
    _spike_check = _spike_mode(mode, "use_spike_check")
    try:
        yield
    finally:
        _spike_check = previous


def spike_error(op: str, deferred: bool = False) -> ValueError:
    """The error for non-binary input to ``op`` (one or more op names, comma-separated)."""
    message = (
        f"{op}: spike_input=True requires binary spikes (every value 0 or 1), but the input "
        "holds other values; pass spike_input=False for analog input"
    )
    if deferred:
        message += (
            " (found by the deferred check since the previous check point; run under "
            "ndsnn_triton.use_spike_check('eager') to raise at the offending call)"
        )
    return ValueError(message)


def defer_spike_error(op: str, bad: torch.Tensor) -> None:
    """OR ``bad`` (a bool scalar on the input's device) into ``op``'s pending flag; no host sync."""
    key = (op, bad.device)
    flag = _DEFERRED.get(key)
    if flag is None:
        # A normal tensor even inside inference mode, so later in-place updates stay legal.
        with torch.inference_mode(False):
            flag = _DEFERRED[key] = torch.zeros((), dtype=torch.bool, device=bad.device)
    flag.logical_or_(bad)


def raise_deferred_spike_errors() -> None:
    """Raise the ``ValueError`` of every op whose deferred binary-spike check failed since the
    last call, and clear the flags.

    One host synchronisation per device that holds flags; none when no op deferred a check.
    """
    failed: list[str] = []
    for device in {device for _, device in _DEFERRED}:
        items = [(op, flag) for (op, dev), flag in _DEFERRED.items() if dev == device]
        values = torch.stack([flag for _, flag in items]).tolist()
        for (op, flag), value in zip(items, values, strict=True):
            if value:
                failed.append(op)
                flag.zero_()
    if failed:
        raise spike_error(", ".join(sorted(failed)), deferred=True)


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
    if backend == "dense":  # the kernel's entry point runs the dense reference where it should
        return kernel if kernel is not None and not prefer_dense else reference
    # auto: Triton only on CUDA, where it exists; the reference otherwise.
    if kernel is not None and device_type == "cuda" and not prefer_dense:
        return kernel
    return reference
