"""What every recorded result names: where, with what and under which settings it was measured."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

import ndsnn_triton

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name: ``/proc/cpuinfo``'s "model name", else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def torch_flags() -> dict[str, Any]:
    """The torch settings that change which convolution/matmul algorithms run (TF32 or IEEE fp32)."""
    cudnn = torch.backends.cudnn
    return {
        "cudnn_enabled": cudnn.enabled,
        "cudnn_benchmark": cudnn.benchmark,
        "cudnn_deterministic": cudnn.deterministic,
        "cudnn_allow_tf32": cudnn.allow_tf32,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def _git(*args: str) -> str | None:
    """``git args`` run in the repository (no index lock taken); its stdout, or None if it failed."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit_info() -> dict[str, Any]:
    """``commit`` (``git rev-parse HEAD``, else ``$NDSNN_COMMIT``, else the package version and
    "unknown commit"), ``commit_source`` and ``dirty`` (tracked files changed; None without git)."""
    commit = _git("rev-parse", "HEAD")
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no")
        return {
            "commit": commit,
            "commit_source": "git",
            "dirty": None if status is None else bool(status),
        }
    if os.environ.get("NDSNN_COMMIT"):
        return {
            "commit": os.environ["NDSNN_COMMIT"],
            "commit_source": "NDSNN_COMMIT",
            "dirty": None,
        }
    return {
        "commit": f"ndsnn_triton {ndsnn_triton.__version__} (unknown commit)",
        "commit_source": "version",
        "dirty": None,
    }


def load_average() -> float | None:
    """The 1-minute load average (other processes competing for the cores), None if unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def environment(device: str | None = None) -> dict[str, Any]:
    """Device, CPU, thread counts, load, library versions, commit, torch flags and UTC date of a
    measurement. ``device``: what the numbers were measured on (default: the CUDA device, else
    ``"cpu"``)."""
    if device is None:
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {
        "device": device,
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "ndsnn_triton": ndsnn_triton.__version__,
        **commit_info(),
        "flags": torch_flags(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
