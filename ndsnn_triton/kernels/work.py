"""The multiply-accumulates the sparse Triton kernels execute, from the spikes and the mask.

One rule, shared by the kernels (``spike_conv.py``), the instrumented interpreter tests and the
profiler's ``kernel`` cost convention. Shapes: ``x [N, C, H, W]`` (N = T·B; a linear layer's
``[N, F]`` is a ``[N, F, 1, 1]`` map), mask ``[OC, C, KH, KW]``, output ``[N, OC, OH, OW]``.

* **Forward** (one program = one output channel × ``BLOCK_P`` consecutive output positions of the
  flattened ``(n, oh, ow)``): for each kept weight ``(o, c, kh, kw)`` the program runs its
  ``lanes(b)`` in-range positions unless every sample the block touches has an all-zero input map
  in channel ``c`` (a silent ``(sample-block, channel)`` pair is skipped). With ``A_c`` = Σ over
  blocks of ``active(b, c)·lanes(b)``: executed = Σ_c kept_c · A_c.
* **Input gradient**: every kept weight runs over every input position: ``nnz · N·H·W``.
* **Weight gradient** (event-driven): each input channel's non-zero inputs at *usable* positions
  (those some kernel tap maps onto an output position) are compacted into event lists, and every
  kept weight of channel ``c`` is multiplied with each of the channel's events: with ``E_c`` the
  channel's events, executed = Σ_c kept_c · E_c. A tap that falls outside the output or off the
  stride grid for a given event is still issued (masked), so it counts.

The ``snn`` ideal of a step is ``d·M·r`` per sample with ``M = OC·C·KH·KW·OH·OW``: the kernel's
forward reaches it only if spikes cluster in whole silent maps; the event-driven weight gradient
reaches it up to the correlation of kept weights with channel activity (stride 1), and issues
about ``s²`` times it on a stride-``s`` layer with a 3×3 kernel (every event meets every tap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ndsnn_triton.kernels.launch import pow2_block


def out_hw(
    h: int,
    w: int,
    kh: int,
    kw: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, int]:
    """Output height and width of a convolution."""
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return oh, ow


def forward_block(positions: int, out_channels: int) -> int:
    """``BLOCK_P`` of the forward kernel for ``positions = N·OH·OW`` (the plan's own rule)."""
    return pow2_block(positions, 16, 128, others=out_channels)


def usable_rows(size: int, out_size: int, k: int, stride: int, pad: int, dil: int) -> Tensor:
    """Bool ``[size]``: input rows (or columns) that some tap maps onto an output row."""
    i = torch.arange(size)[:, None]
    t = i + pad - torch.arange(k)[None, :] * dil
    hit = (t >= 0) & (t % stride == 0) & (t // stride < out_size)
    return hit.any(1)


def _as_4d(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"spike input must be a tensor, got {type(x).__name__}")
    if x.dim() == 2:
        return x.reshape(*x.shape, 1, 1)
    if x.dim() != 4:
        raise ValueError(f"spike input must be [N, C, H, W] or [N, F], got {tuple(x.shape)}")
    return x


def map_activity(x: Tensor) -> Tensor:
    """Bool ``[N, C]``: whether input map ``(n, c)`` has any non-zero value."""
    x = _as_4d(x)
    return (x.reshape(x.shape[0], x.shape[1], -1) != 0).any(-1)


def active_lanes(active: Tensor, out_positions: int, block_p: int) -> Tensor:
    """``A_c`` (int64 ``[C]``): forward lanes run per kept weight of input channel ``c``.

    ``active`` is :func:`map_activity`'s ``[N, C]``; ``out_positions`` = ``OH·OW`` per sample.
    """
    n, _ = active.shape
    total = n * out_positions
    if total == 0:
        return torch.zeros(active.shape[1], dtype=torch.int64, device=active.device)
    starts = torch.arange(0, total, block_p, device=active.device)
    lanes = torch.clamp(total - starts, max=block_p)
    n_lo = starts // out_positions
    n_hi = (starts + lanes - 1) // out_positions
    csum = torch.cat(
        [active.new_zeros(1, active.shape[1], dtype=torch.int64), active.long().cumsum(0)]
    )
    block_active = (csum[n_hi + 1] - csum[n_lo]) > 0  # [blocks, C]
    return (block_active.long() * lanes[:, None]).sum(0)


def channel_events(
    x: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """``E_c`` (int64 ``[C]``): non-zero inputs of channel ``c`` at usable positions (all samples)."""
    x = _as_4d(x)
    h, w = x.shape[2:]
    kh, kw = kernel_size
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    rows = usable_rows(h, oh, kh, stride[0], padding[0], dilation[0]).to(x.device)
    cols = usable_rows(w, ow, kw, stride[1], padding[1], dilation[1]).to(x.device)
    usable = rows[:, None] & cols[None, :]
    return ((x != 0) & usable).sum((0, 2, 3), dtype=torch.int64)


@dataclass(frozen=True)
class ExecutedWork:
    """MACs one call of each kernel executes (int64 scalar tensors; no host synchronisation)."""

    forward: Tensor
    input_grad: Tensor
    weight_grad: Tensor


def executed_macs(
    x: Tensor,
    mask: Tensor,
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1),
) -> ExecutedWork:
    """MACs the Triton forward, input-gradient and (masked) weight-gradient kernels execute for
    input ``x`` (``[N, C, H, W]`` or ``[N, F]``) and bool ``mask`` (``[OC, C, KH, KW]`` or
    ``[OC, F]``), by the rule of the module docstring."""
    x = _as_4d(x)
    if mask.dtype != torch.bool:
        raise TypeError(f"executed_macs: mask must be bool, got {mask.dtype}")
    if mask.dim() == 2:
        mask = mask.reshape(*mask.shape, 1, 1)
    if mask.dim() != 4 or mask.shape[1] != x.shape[1]:
        raise ValueError(
            f"executed_macs: mask shape {tuple(mask.shape)} does not fit an input of "
            f"{x.shape[1]} channels (expected [OC, {x.shape[1]}, KH, KW] or [OC, {x.shape[1]}])"
        )
    n, c, h, w = x.shape
    oc, _, kh, kw = mask.shape
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    kept = mask.reshape(oc, c, kh * kw).sum((0, 2), dtype=torch.int64).to(x.device)
    lanes = active_lanes(map_activity(x), oh * ow, forward_block(n * oh * ow, oc))
    events = channel_events(x, (kh, kw), stride, padding, dilation)
    return ExecutedWork(
        forward=(kept * lanes).sum(),
        input_grad=kept.sum() * (n * h * w),
        weight_grad=(kept * events).sum(),
    )


@dataclass(frozen=True)
class WorkFactors:
    """Mask-independent spike structure of one layer input, per output position of the dense
    work ``C·N·OH·OW`` (so that, for a mask of density ``d`` spread evenly over input channels,
    executed MACs = factor · d · M · N):

    * ``rate``: non-zero fraction of the input (the ``snn`` convention's ``r``);
    * ``forward``: Σ_c A_c / (C·N·OH·OW), forward lanes run (``r ≤ forward ≤ 1``);
    * ``weight_grad``: Σ_c E_c / (C·N·OH·OW), events per output position (≈ ``r`` at stride 1).
    """

    rate: float
    forward: float
    weight_grad: float


def work_factors(
    x: Tensor,
    kernel_size: Sequence[int] = (1, 1),
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1),
    out_channels: int = 1,
) -> WorkFactors:
    """:class:`WorkFactors` of input ``x`` for a convolution of that geometry (one host sync)."""
    x = _as_4d(x)
    n, c, h, w = x.shape
    kh, kw = kernel_size
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    dense = c * n * oh * ow
    lanes = active_lanes(map_activity(x), oh * ow, forward_block(n * oh * ow, out_channels))
    events = channel_events(x, kernel_size, stride, padding, dilation)
    nonzero = torch.count_nonzero(x)
    vals = torch.stack([nonzero, lanes.sum(), events.sum()]).tolist()
    if dense == 0 or x.numel() == 0:
        return WorkFactors(float("nan"), float("nan"), float("nan"))
    return WorkFactors(vals[0] / x.numel(), vals[1] / dense, vals[2] / dense)
