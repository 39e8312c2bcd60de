"""Max pooling for spike maps: compact (int8/uint8/bool) input, and a 1-byte backward for floats."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ndsnn_triton.companion import SpikeCompanion, attach, companion_of
from ndsnn_triton.ops import SPIKE_DTYPES

#: largest window (``kh * kw`` elements) whose in-window offset fits the uint8 code
MAX_CODED_WINDOW = 256


def _as_pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _windows(x: Tensor, kh: int, kw: int) -> Tensor:
    """``[..., H, W]`` -> ``[..., H // kh, W // kw, kh * kw]``: each non-overlapping window's
    elements in row-major order on the last dim (a copy: the window dims are not contiguous)."""
    h, w = x.shape[-2:]
    tiles = x.unflatten(-1, (w // kw, kw)).unflatten(-3, (h // kh, kh))  # [..., Ho, kh, Wo, kw]
    return tiles.movedim(-3, -2).flatten(-2)


class _CodedMaxPool2d(torch.autograd.Function):
    """Non-overlapping ``kh x kw`` max pooling (stride = kernel, no padding) of ``[..., H, W]``
    (``H % kh == W % kw == 0``) that saves for backward one uint8 per output: the row-major offset
    (``0 .. kh*kw - 1``) of the window element the output's gradient goes to, instead of the int64
    flat input index ``F.max_pool2d`` saves (1 byte per output instead of 8).

    The element is the window's first maximum (``max(dim)`` / ``argmax`` break ties to the lowest
    index), which is the one torch's own max pooling picks on CPU and CUDA (it replaces its running
    max only on a strictly larger value), so output and input gradient are bitwise those of
    ``F.max_pool2d`` (the output is the element at the code, so even the sign of a zero maximum in
    a window holding both ``-0.0`` and ``+0.0`` matches; ``amax`` does not guarantee that). For
    binary spikes the code is the first spiking position, or 0 for a silent window.

    NaN: a window holding NaN outputs NaN, as torch does, but the gradient goes to the window's
    FIRST NaN, while torch's kernels (``val > max || isnan(val)``) send it to the LAST NaN. Spikes
    are never NaN.
    """

    @staticmethod
    def forward(ctx, x: Tensor, kh: int, kw: int) -> Tensor:
        y, offset = _windows(x, kh, kw).max(dim=-1)  # offset: int64 [..., Ho, Wo], transient
        ctx.save_for_backward(offset.to(torch.uint8))
        ctx.window = (kh, kw)
        ctx.input_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor, None, None]:
        (code,) = ctx.saved_tensors
        kh, kw = ctx.window
        # [kh, 1, kw]: each window element's row-major offset, laid out as in [..., Ho, kh, Wo, kw]
        offsets = torch.arange(kh * kw, device=code.device, dtype=torch.uint8).view(kh, 1, kw)
        hit = code.unsqueeze(-1).unsqueeze(-3) == offsets  # [..., Ho, kh, Wo, kw]
        # "+ 0" as torch's kernels do (they add the gradient to a zero): -0.0 becomes +0.0.
        g = (grad_y + 0).unsqueeze(-1).unsqueeze(-3)
        grad_x = torch.where(hit, g, 0)
        return grad_x.reshape(ctx.input_shape), None, None


class SpikeMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` for ``[N, C, H, W]`` (or ``[C, H, W]``) maps of spikes, with a compact
    backward.

    Float input with a non-overlapping window (``stride == kernel_size``, ``padding=0``,
    ``dilation=1``, ``ceil_mode=False``, ``return_indices=False``, ``H``, ``W`` divisible by the
    kernel, ``kh * kw <= 256``), the layout of spiking VGG/ResNet pooling:

    * needing a gradient (grad mode on and ``x.requires_grad``): :class:`_CodedMaxPool2d`, whose
      autograd saves exactly one ``torch.uint8`` tensor of the output's shape ``[N, C, H/kh, W/kw]``
      -- the row-major offset in its window of each output's first maximum (for spikes: the first
      spike, or 0 for a silent window) -- instead of ``nn.MaxPool2d``'s int64 indices: 1 byte per
      output instead of 8 kept for backpropagation through time. Output and input gradient are
      bitwise those of ``nn.MaxPool2d`` (but for NaN: see :class:`_CodedMaxPool2d`). The output is
      contiguous (``nn.MaxPool2d`` keeps a channels-last input's layout); the forward makes a
      transient window-major copy of the input.
    * no gradient needed: ``nn.MaxPool2d.forward`` itself (nothing is saved; on CPU it is faster
      than reduction-based block pooling), so no code is computed.

    Every other float configuration (overlapping, padded, dilated, ``ceil_mode``, indices, sizes
    not divisible by the kernel, windows over 256 elements, other ranks) runs
    ``nn.MaxPool2d.forward`` unchanged, saving its int64 indices.

    Spikes that came with a companion (:mod:`ndsnn_triton.companion`: the library's LIF attaches
    one) pass it on through non-overlapping windows: the pooled int8 copy, and the same per-map
    activity (a pooled map is silent exactly when its input map is).

    Pooling runs in the input's dtype (float16/bfloat16/float32/float64), also under
    ``torch.autocast``, as ``nn.MaxPool2d`` does. Pure torch ops: any device, and
    ``torch.compile``.

    For int8/uint8/bool spikes (which CUDA's max pooling does not take; no gradient) a
    non-overlapping window is a max over reshaped blocks in the spikes' own dtype; any other window
    pools a float16 copy (exact for 0/1) and converts back. The output keeps the input's dtype.
    Indices are not supported for compact input.
    """

    def _window(self, x: Tensor) -> tuple[int, int] | None:
        """``(kh, kw)`` when the pooling of ``x`` is a max over non-overlapping blocks, else None."""
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
        return (kh, kw) if blocks else None

    def forward(self, x: Tensor) -> Tensor:
        companion = companion_of(x)
        y = self._pool(x)
        if (
            companion is not None
            and not self.return_indices
            and x.dim() == 4
            and self._window(x) is not None
        ):
            copy = y if y.dtype == torch.int8 else y.to(torch.int8)
            attach(y, SpikeCompanion(copy.view(torch.int8), companion.active))
        return y

    def _pool(self, x: Tensor) -> Tensor:
        if x.dtype not in SPIKE_DTYPES:
            return self._forward_float(x)
        if self.return_indices:
            raise ValueError("SpikeMaxPool2d: return_indices is not supported for compact spikes")
        window = self._window(x)
        if window is not None:
            if x.dtype == torch.bool:
                return self._pool(x.view(torch.uint8)).view(torch.bool)
            kh, kw = window
            h, w = x.shape[-2:]
            tiles = x.unflatten(-1, (w // kw, kw)).unflatten(-3, (h // kh, kh))
            return tiles.amax(dim=(-3, -1))
        return super().forward(x.to(torch.float16)).to(x.dtype)

    def _forward_float(self, x: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        window = self._window(x) if x.dim() in (3, 4) else None
        if (
            window is None
            or self.ceil_mode
            or self.return_indices
            or window[0] * window[1] > MAX_CODED_WINDOW
            or x.shape[-1] == 0
            or x.shape[-2] == 0
        ):
            return super().forward(x)
        return _CodedMaxPool2d.apply(x, *window)
