"""Process-wide state for test suites: what a test may change only inside a context manager.

``capture_state()`` takes a snapshot of every process-wide setting that changes results or speed
of later code — torch's thread count, default dtype, grad/inference/anomaly modes, deterministic
and TF32 flags, autocast state, the library's switches (backend, binary-spike check, aten
reference mode) and the environment variables they read — plus the library's caches, kernel registry
and pending deferred binary-spike check flags.
``changed_settings(before, after)`` names the settings that differ; ``restore_state(before)``
puts everything back. The project's pytest fixture uses them to fail any test that leaks state
(a test that calls ``torch.set_num_threads(1)`` changes every later test's float summation order).

Change such state in tests through a scoped helper instead: :func:`num_threads`,
``ndsnn_triton.use_backend``, ``ndsnn_triton.use_spike_check``, ``backend.aten_reference``,
``torch.autocast``, ``torch.no_grad``, pytest's ``monkeypatch.setenv``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ndsnn_triton import backend
from ndsnn_triton.kernels import dispatch, sparse_index

_AUTOCAST_DEVICES = ("cpu", "cuda")
#: environment variables read by the library, torch, Triton, OpenMP and torch.distributed
_WATCHED_ENV_PREFIXES = ("NDSNN_", "TRITON_", "TORCH_", "PYTORCH_", "CUDA_", "OMP_", "MKL_")
_WATCHED_ENV_NAMES = frozenset(
    {"WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
)


def _watched(name: str) -> bool:
    return name in _WATCHED_ENV_NAMES or name.startswith(_WATCHED_ENV_PREFIXES)


@dataclass(frozen=True)
class ProcessState:
    """A snapshot: ``settings`` (compared between snapshots) and ``caches`` (restored only:
    filling a cache is legitimate, but entries a test added are dropped after it)."""

    settings: dict[str, Any]
    caches: dict[str, Any]


def _settings() -> dict[str, Any]:
    s: dict[str, Any] = {
        "torch thread count (torch.set_num_threads)": torch.get_num_threads(),
        "torch default dtype (torch.set_default_dtype)": torch.get_default_dtype(),
        "grad mode (torch.set_grad_enabled)": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        "anomaly detection (torch.autograd.set_detect_anomaly)": torch.is_anomaly_enabled(),
        "deterministic algorithms (torch.use_deterministic_algorithms)": (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "cudnn flags (enabled, benchmark, deterministic, allow_tf32)": (
            torch.backends.cudnn.enabled,
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.allow_tf32,
        ),
        "cuda matmul allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "autocast cache": torch.is_autocast_cache_enabled(),
        "ndsnn backend (ndsnn_triton.set_backend)": backend.get_backend(),
        "ndsnn binary-spike check (ndsnn_triton.set_spike_check)": backend.spike_check_mode(),
        "ndsnn aten reference mode": backend.aten_reference_enabled(),
        "ndsnn recompute density (ndsnn_triton.set_recompute_density)": (
            backend.get_recompute_density()
        ),
        "ndsnn kernel registry": dict(backend._KERNELS),
        "environment variables": {k: v for k, v in os.environ.items() if _watched(k)},
    }
    for device in _AUTOCAST_DEVICES:
        s[f"autocast on {device}"] = (
            torch.is_autocast_enabled(device),
            torch.get_autocast_dtype(device),
        )
    return s


def capture_state() -> ProcessState:
    """Snapshot the process-wide settings and the library's caches."""
    caches = {
        "sparse index cache": sparse_index.INDEX_CACHE.entries.copy(),
        "auto-dispatch choices": dispatch._CHOICES.copy(),
        # Flags are updated in place: a copy, so a test's pending spike errors do not leak.
        "deferred spike-check flags": {k: v.clone() for k, v in backend._DEFERRED.items()},
    }
    return ProcessState(_settings(), caches)


def changed_settings(before: ProcessState, after: ProcessState | None = None) -> list[str]:
    """``"name: old -> new"`` for each setting that differs (environment: the variables only)."""
    after = capture_state() if after is None else after
    out = []
    for name, old in before.settings.items():
        new = after.settings[name]
        if new == old:
            continue
        if name == "environment variables":
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            out.append(
                f"{name}: " + ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys)
            )
        elif name == "ndsnn kernel registry":
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) is not new.get(k))
            out.append(f"{name}: entries {keys} changed")
        else:
            out.append(f"{name}: {old!r} -> {new!r}")
    return out


def restore_state(state: ProcessState) -> None:
    """Put every setting and cache of ``state`` back."""
    s = state.settings
    torch.set_num_threads(s["torch thread count (torch.set_num_threads)"])
    torch.set_default_dtype(s["torch default dtype (torch.set_default_dtype)"])
    torch.set_grad_enabled(s["grad mode (torch.set_grad_enabled)"])
    torch.autograd.set_detect_anomaly(s["anomaly detection (torch.autograd.set_detect_anomaly)"])
    enabled, warn_only = s["deterministic algorithms (torch.use_deterministic_algorithms)"]
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.set_float32_matmul_precision(s["float32 matmul precision"])
    (
        torch.backends.cudnn.enabled,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.allow_tf32,
    ) = s["cudnn flags (enabled, benchmark, deterministic, allow_tf32)"]
    torch.backends.cuda.matmul.allow_tf32 = s["cuda matmul allow_tf32"]
    torch.set_autocast_cache_enabled(s["autocast cache"])
    for device in _AUTOCAST_DEVICES:
        enabled, dtype = s[f"autocast on {device}"]
        torch.set_autocast_enabled(device, enabled)
        torch.set_autocast_dtype(device, dtype)
    backend.set_backend(s["ndsnn backend (ndsnn_triton.set_backend)"])
    backend.set_spike_check(s["ndsnn binary-spike check (ndsnn_triton.set_spike_check)"])
    backend._aten_reference = s["ndsnn aten reference mode"]
    backend.set_recompute_density(s["ndsnn recompute density (ndsnn_triton.set_recompute_density)"])
    backend._KERNELS.clear()
    backend._KERNELS.update(s["ndsnn kernel registry"])
    env = s["environment variables"]
    for key in {k for k in os.environ if _watched(k)} - set(env):
        del os.environ[key]
    os.environ.update(env)
    sparse_index.INDEX_CACHE.entries = state.caches["sparse index cache"].copy()
    dispatch._CHOICES.clear()
    dispatch._CHOICES.update(state.caches["auto-dispatch choices"])
    backend._DEFERRED.clear()
    backend._DEFERRED.update(
        {k: v.clone() for k, v in state.caches["deferred spike-check flags"].items()}
    )


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
