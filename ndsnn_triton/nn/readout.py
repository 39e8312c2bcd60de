"""Readout of time-first classifier outputs ``[T, B, classes]``: loss and prediction."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def temporal_cross_entropy(out: Tensor, target: Tensor) -> Tensor:
    """``mean_t CE(out[t], target)`` (LTH-SNN's loss). ``out [T, B, classes]``, ``target [B]``."""
    if out.dim() != 3:
        raise ValueError(
            f"temporal_cross_entropy: out must be [T, B, classes], got shape {tuple(out.shape)}"
        )
    if target.shape != out.shape[1:2]:
        raise ValueError(
            f"temporal_cross_entropy: target shape {tuple(target.shape)} should be ({out.shape[1]},)"
        )
    T = out.shape[0]
    return F.cross_entropy(out.flatten(0, 1).float(), target.repeat(T))


def predict(out: Tensor) -> Tensor:
    """Class prediction ``argmax(sum_t out[t])``: ``[T, B, classes] -> [B]``."""
    return out.sum(0).argmax(-1)
