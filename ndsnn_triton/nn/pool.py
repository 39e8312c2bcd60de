"""Max pooling that also takes compact (int8/uint8/bool) spike maps."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ndsnn_triton.ops import SPIKE_DTYPES


def _as_pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class SpikeMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` for ``[N, C, H, W]`` maps that may hold compact spikes.

    Float input goes to ``nn.MaxPool2d`` unchanged. For int8/uint8/bool spikes (which CUDA's max
    pooling does not take) a non-overlapping window (kernel = stride, no padding or dilation) is a
    max over reshaped blocks in the spikes' own dtype; any other window pools a float16 copy (exact
    for 0/1) and converts back. The output keeps the input's dtype. Indices are not supported for
    compact input.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype not in SPIKE_DTYPES:
            return super().forward(x)
        if self.return_indices:
            raise ValueError("SpikeMaxPool2d: return_indices is not supported for compact spikes")
        kh, kw = _as_pair(self.kernel_size)
        sh, sw = _as_pair(self.stride if self.stride is not None else self.kernel_size)
        h, w = x.shape[-2:]
        blocks = (
            (kh, kw) == (sh, sw)
            and _as_pair(self.padding) == (0, 0)
            and _as_pair(self.dilation) == (1, 1)
            and h % kh == 0
            and w % kw == 0
        )
        if blocks:
            if x.dtype == torch.bool:
                return self.forward(x.view(torch.uint8)).view(torch.bool)
            tiles = x.unflatten(-1, (w // kw, kw)).unflatten(-3, (h // kh, kh))
            return tiles.amax(dim=(-3, -1))
        return super().forward(x.to(torch.float16)).to(x.dtype)
