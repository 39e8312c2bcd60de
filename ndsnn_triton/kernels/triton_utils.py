"""Triton availability and small launch helpers shared by the kernel files."""

from __future__ import annotations

import os

import torch

try:  # Triton is a dependency, but keep the pure-torch path importable without it.
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = None
    tl = None
    HAS_TRITON = False


def interpreting() -> bool:
    """Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1`` set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_usable(*tensors: torch.Tensor) -> bool:
    """Triton can run on these tensors: CUDA tensors, or CPU tensors under the interpreter."""
    if not HAS_TRITON:
        return False
    devices = {t.device.type for t in tensors}
    return devices == {"cuda"} or (devices == {"cpu"} and interpreting())


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
