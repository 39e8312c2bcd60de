"""Benchmark setup: result files, per-case memory hygiene, pinned torch flags.

* ``pytest bench --benchmark-only`` measures. On a GPU the CUDA suites write
  ``bench/results/<suite>-<device>.json``; everywhere the CPU suite (``test_bench_cpu.py``) writes
  ``bench/results/<suite>-cpu.json``. CUDA-only cases skip without a GPU (root ``conftest.py``).
* Any other run (plain ``pytest``, ``--benchmark-disable``) runs each CPU case once as a smoke
  test and writes nothing.
* Each case's rows are merged into their file as soon as the case is measured, atomically
  (:mod:`bench.result_file`); ``NDSNN_BENCH_OUT`` names another output folder.
* Between cases the library's index and dispatch caches are freed and CUDA's cache emptied, so
  ``peak_memory_bytes`` is the case's own.
* ``NDSNN_BENCH_FULL=1`` runs the full GPU grids (default: a trimmed grid that fits one GPU run).
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.environment import environment, load_average, torch_flags
from bench.result_file import merge_into_file

RESULTS_DIR = Path(__file__).parent / "results"
#: the full GPU grids (slow: ~25-50 min on one GPU) instead of the trimmed ones
BENCH_FULL = os.environ.get("NDSNN_BENCH_FULL") == "1"
#: files written this session -> their row count (for the terminal summary)
WRITTEN: dict[Path, int] = {}
_ENVIRONMENTS: dict[str, dict[str, Any]] = {}


def results_dir() -> Path:
    """Where result files go: ``$NDSNN_BENCH_OUT`` or ``bench/results``."""
    return Path(os.environ.get("NDSNN_BENCH_OUT") or RESULTS_DIR)


def _environment(device: str) -> dict[str, Any]:
    """The environment of ``device`` (computed once a session; threads, load, flags, date now)."""
    if device not in _ENVIRONMENTS:
        _ENVIRONMENTS[device] = environment(device)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return _ENVIRONMENTS[device] | {
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": load_average(),
        "flags": torch_flags(),
        "date": now,
    }


def record(suite: str, row: dict[str, Any], device: str | None = None) -> Path:
    """Merge one measured row into ``<suite>-<device>.json`` now (atomic rewrite); returns the path.

    ``device``: ``"cpu"`` for CPU measurements; default the CUDA device (``"cpu"`` without one).
    The row gets ``recorded`` (date, commit, dirty, 1-minute load average) since a merged file
    holds rows of several runs.
    """
    if device is None:
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    env = _environment(device)
    row = row | {"recorded": {k: env[k] for k in ("date", "commit", "dirty", "load_avg_1m")}}
    path = results_dir() / f"{suite}-{device.replace(' ', '_')}.json"
    WRITTEN[path] = len(merge_into_file(path, env, [row]))
    return path


def timing_enabled(config: pytest.Config) -> bool:
    """True when this run records timings: ``--benchmark-only`` without ``--benchmark-disable``."""
    only = config.getoption("benchmark_only", default=False)
    return bool(only) and not config.getoption("benchmark_disable", default=False)


def clear_library_caches() -> None:
    """Drop the library's compressed-index cache and auto-dispatch choices."""
    from ndsnn_triton.kernels.dispatch import clear_caches

    clear_caches()


def free_memory() -> None:
    """Free the library caches and, on CUDA, unreferenced tensors and the allocator's cached
    blocks; reset the peak-memory counter."""
    clear_library_caches()
    if torch.cuda.is_available():
        gc.collect()  # ~0.1-0.5 s: only where peak memory is measured
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


@pytest.fixture(autouse=True)
def _fresh_memory_per_case() -> Iterator[None]:
    """Each benchmark case starts with empty caches (per-case peak memory) and leaves none."""
    free_memory()
    yield
    clear_library_caches()


@contextlib.contextmanager
def pinned_flags(
    *, cudnn_benchmark: bool | None = None, tf32: bool | None = None
) -> Iterator[None]:
    """Set cuDNN autotuning and TF32 (cuDNN convolutions and CUDA fp32 matmuls) for the block;
    restore them after. ``None`` leaves a flag as it is."""
    cudnn = torch.backends.cudnn
    saved = (cudnn.benchmark, cudnn.allow_tf32, torch.get_float32_matmul_precision())
    try:
        if cudnn_benchmark is not None:
            cudnn.benchmark = cudnn_benchmark
        if tf32 is not None:
            cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32 = saved[0], saved[1]
        torch.set_float32_matmul_precision(saved[2])


def pytest_terminal_summary(terminalreporter) -> None:
    """List the result files this session wrote."""
    for path, n in WRITTEN.items():
        terminalreporter.write_line(f"bench results: {path} ({n} rows)")
