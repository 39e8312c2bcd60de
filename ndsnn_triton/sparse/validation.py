"""Argument checks shared by the sparse-training code."""

from __future__ import annotations

import math


def check_density(density: float, what: str = "density") -> float:
    """Return ``density`` as a float if it lies in (0, 1], else raise ``ValueError``."""
    if (
        isinstance(density, bool)
        or not isinstance(density, int | float)
        or not math.isfinite(density)
    ):
        raise ValueError(f"{what} must be a number in (0, 1], got {density!r}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"{what} must lie in (0, 1] (1 = dense), got {density}")
    return float(density)


def check_fraction(value: float, what: str, *, allow_zero: bool = True) -> float:
    """Return ``value`` if it lies in [0, 1] ((0, 1] without ``allow_zero``), else raise."""
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (low_ok and value <= 1.0)
    ):
        raise ValueError(
            f"{what} must lie in {'[0, 1]' if allow_zero else '(0, 1]'}, got {value!r}"
        )
    return float(value)


def check_positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value
