"""The multiply-accumulates the sparse Triton kernels execute, from the spikes and the mask.

One rule, shared by the kernels (``spike_conv.py``), the instrumented interpreter tests and the
profiler's ``kernel`` cost convention. Shapes: ``x [N, C, H, W]`` (N = T·B; a linear layer's
``[N, F]`` is a ``[N, F, 1, 1]`` map), mask ``[OC, C, KH, KW]``, output ``[N, OC, OH, OW]``.

* **Forward** (a program gathers, for a tile of samples × output positions of one map, the
  inputs of a row's kept weights): with the map activity of its input (which the library's LIF,
  or the fallback pass, hands it) and output maps of at least
  :data:`FORWARD_SKIP_MIN_POSITIONS` positions, the kernel runs kept weight ``(o, c, kh, kw)`` for sample ``n`` only if input map
  ``(n, c)`` holds a spike, over all ``OH·OW`` positions of the output map (padding lanes
  included); otherwise for every sample. With ``A_c`` the samples whose map ``c`` is active
  (``N`` without skipping): executed = Σ_c kept_c · A_c · OH·OW.
* **Input gradient**: every kept weight runs over every input position: ``nnz · N·H·W``.
* **Weight gradient** (event-driven): each input channel's non-zero inputs at *usable* positions
  (those some kernel tap maps onto an output position) are compacted into event lists, and every
  kept weight of channel ``c`` is multiplied with each of the channel's events: with ``E_c`` the
  channel's events, executed = Σ_c kept_c · E_c. A tap that falls outside the output or off the
  stride grid for a given event is still issued (masked), so it counts.

The ``snn`` ideal of a step is ``d·M·r`` per sample with ``M = OC·C·KH·KW·OH·OW``: the kernel's
forward reaches it only if spikes cluster in whole silent maps (its work factor is the fraction of
active maps); the event-driven weight gradient
reaches it up to the correlation of kept weights with channel activity (stride 1), and issues
about ``s²`` times it on a stride-``s`` layer with a 3×3 kernel (every event meets every tap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: smallest output map (positions) on which the forward skips silent input maps: on smaller ones
#: (1×1: a linear layer) the activity load would cost as much as the gather it saves
FORWARD_SKIP_MIN_POSITIONS = 4


#: largest map whose activity the LIF and the fallback pass write (each map in one program)
MAX_ACTIVITY_MAP = 4096


def forward_skips_silent_maps(out_positions: int) -> bool:
    """Whether the forward, given map activity, skips silent input maps on ``OH·OW`` outputs."""
    return out_positions >= FORWARD_SKIP_MIN_POSITIONS


def emits_activity(map_size: int) -> bool:
    """Whether the producers of spikes (LIF, fallback pass) write per-map activity for maps of
    ``map_size`` positions: maps the forward can skip, small enough for one program."""
    return FORWARD_SKIP_MIN_POSITIONS <= map_size <= MAX_ACTIVITY_MAP


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


def active_samples(x: Tensor, out_positions: int, skip: bool = True) -> Tensor:
    """``A_c`` (int64 ``[C]``): samples the forward runs each kept weight of input channel ``c``
    over — those whose map ``c`` holds a spike when the forward skips silent maps (``skip`` and
    ``out_positions`` large enough), else all ``N``."""
    x = _as_4d(x)
    n, c = x.shape[:2]
    if skip and forward_skips_silent_maps(out_positions):
        return map_activity(x).sum(0, dtype=torch.int64)
    return torch.full((c,), n, dtype=torch.int64, device=x.device)


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
    skip: bool = True,
) -> ExecutedWork:
    """MACs the Triton forward, input-gradient and (masked) weight-gradient kernels execute for
    input ``x`` (``[N, C, H, W]`` or ``[N, F]``) and bool ``mask`` (``[OC, C, KH, KW]`` or
    ``[OC, F]``), by the rule of the module docstring; ``skip``: the forward is given the input's
    map activity (as the library's LIF and the ops' fallback pass give it to every spike input)."""
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
    samples = active_samples(x, oh * ow, skip)
    events = channel_events(x, (kh, kw), stride, padding, dilation)
    return ExecutedWork(
        forward=(kept * samples).sum() * (oh * ow),
        input_grad=kept.sum() * (n * h * w),
        weight_grad=(kept * events).sum(),
    )


@dataclass(frozen=True)
class WorkFactors:
    """Mask-independent spike structure of one layer input, per output position of the dense
    work ``C·N·OH·OW`` (so that, for a mask of density ``d`` spread evenly over input channels,
    executed MACs = factor · d · M · N):

    * ``rate``: non-zero fraction of the input (the ``snn`` convention's ``r``);
    * ``forward``: Σ_c A_c·OH·OW / (C·N·OH·OW), forward lanes run — the fraction of active input
      maps where the forward skips silent ones, else 1 (``r ≤ forward ≤ 1``);
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
) -> WorkFactors:
    """:class:`WorkFactors` of input ``x`` for a convolution of that geometry (one host sync)."""
    x = _as_4d(x)
    n, c, h, w = x.shape
    kh, kw = kernel_size
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    dense = c * n * oh * ow
    lanes = active_samples(x, oh * ow).sum() * (oh * ow)
    events = channel_events(x, kernel_size, stride, padding, dilation)
    nonzero = torch.count_nonzero(x)
    vals = torch.stack([nonzero, lanes, events.sum()]).tolist()
    if dense == 0 or x.numel() == 0:
        return WorkFactors(float("nan"), float("nan"), float("nan"))
    return WorkFactors(vals[0] / x.numel(), vals[1] / dense, vals[2] / dense)
