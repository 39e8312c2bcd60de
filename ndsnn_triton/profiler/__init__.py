"""Training-cost accounting and measurement: per-layer statistics of real runs."""

from ndsnn_triton.profiler.monitor import LayerStats, SpikeRateMonitor

__all__ = ["LayerStats", "SpikeRateMonitor"]
