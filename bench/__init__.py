"""Benchmarks (pytest-benchmark) and the plot script; see README "Benchmarks"."""
