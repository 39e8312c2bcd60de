"""Training-cost accounting and measurement: per-layer statistics of real runs.

``ndsnn_triton.profiler.report(model, out=..., **options)`` writes the cost report of any model
(:func:`ndsnn_triton.profiler.report.report_model`); the report module (and matplotlib) is
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ndsnn_triton.profiler.monitor import LayerStats, SpikeRateMonitor

__all__ = ["LayerStats", "SpikeRateMonitor", "report", "report_model"]


def __getattr__(name: str) -> Any:
    """``report`` (the callable report module) and ``report_model``, imported lazily."""
    if name in ("report", "report_model"):
        module = importlib.import_module("ndsnn_triton.profiler.report")
        return module if name == "report" else module.report_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
