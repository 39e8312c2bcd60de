"""Time-first helpers: run stateless layers (BN, pooling, ...) over ``[T, B, ...]`` tensors."""

from __future__ import annotations

from torch import Tensor, nn


def flatten_time(x: Tensor) -> Tensor:
    """``[T, B, ...] -> [T*B, ...]`` (a view where possible)."""
    if x.dim() < 2:
        raise ValueError(
            f"flatten_time: expected a time-first tensor [T, B, ...], got shape {tuple(x.shape)}"
        )
    return x.flatten(0, 1)


def unflatten_time(x: Tensor, T: int) -> Tensor:
    """``[T*B, ...] -> [T, B, ...]``."""
    if T < 1 or x.dim() < 1 or x.shape[0] % T:
        raise ValueError(
            f"unflatten_time: leading dim {x.shape[0] if x.dim() else None} is not a multiple of T={T}"
        )
    return x.unflatten(0, (T, x.shape[0] // T))


class SeqToANNContainer(nn.Sequential):
    """Apply stateless modules to ``[T, B, ...]`` by folding time into the batch (SpikingJelly's name).

    ``SeqToANNContainer(nn.BatchNorm2d(64))`` normalises over T·B samples, as in LTH-SNN.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"SeqToANNContainer: input must be time-first [T, B, ...], got {shape}"
            )
        T, B = x.shape[:2]
        y = super().forward(x.flatten(0, 1))
        return y.unflatten(0, (T, B))
