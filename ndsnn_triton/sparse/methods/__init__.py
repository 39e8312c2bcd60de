"""Sparse-training methods behind one interface (:class:`SparseMethod`)."""

from __future__ import annotations

from typing import Any

from ndsnn_triton.sparse.methods.base import Phase, SparseMethod, drop_and_grow, zero_off_mask
from ndsnn_triton.sparse.methods.dst import NDSNN, SET, DropAndGrow, RigL, Static
from ndsnn_triton.sparse.methods.lth import LTH


class Dense(SparseMethod):
    """The dense baseline: every mask full, no updates."""

    name = "dense"

    def __init__(self, density: float = 1.0, **kwargs: Any) -> None:
        if density != 1.0:
            raise ValueError(f"dense: density must be 1, got {density}")
        super().__init__(1.0, **kwargs)


METHODS: dict[str, type[SparseMethod]] = {
    "ndsnn": NDSNN,
    "lth": LTH,
    "set": SET,
    "rigl": RigL,
    "static": Static,
    "dense": Dense,
}


def build_method(name: str, **kwargs: Any) -> SparseMethod:
    """A method by name with its keyword arguments (see each class for the parameters)."""
    if name not in METHODS:
        raise ValueError(
            f"unknown sparse-training method {name!r}; expected one of {sorted(METHODS)}"
        )
    return METHODS[name](**kwargs)


__all__ = [
    "LTH",
    "METHODS",
    "NDSNN",
    "SET",
    "Dense",
    "DropAndGrow",
    "Phase",
    "RigL",
    "SparseMethod",
    "Static",
    "build_method",
    "drop_and_grow",
    "zero_off_mask",
]
