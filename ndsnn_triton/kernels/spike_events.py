"""Spike events: one pass over a layer's (usually 1-byte) input that finds which
``(sample, channel)`` maps are silent and, for the weight gradient, compacts each channel's
non-zero inputs into event lists.

Shapes: ``x [N, C, H, W]`` (N = T·B). The pass runs on a grid of ``(chunk, channel)`` programs;
chunk ``j`` covers samples ``[j·S, min((j+1)·S, N))`` (``S`` samples per chunk) and writes

* ``active [N, C]`` int32: the non-zero count of every input map (0 = a silent map);
* ``events [C, N·H·W]`` int32 (weight gradient only): channel ``c``'s events of chunk ``j`` at
  ``events[c, j·S·H·W :][:counts[c, j]]``, each the flat index ``n·H·W + ih·W + iw`` of a
  non-zero input at a *usable* position (one some kernel tap maps onto an output position), in
  increasing order — the order is fixed, so results are deterministic;
* ``counts [C, chunks]`` int32: the number of events of each ``(channel, chunk)``.

A channel's slab of ``events`` has room for every position (``N·H·W``), so chunks write their
lists without a global prefix sum and without a host synchronisation; the buffer is a temporary
of the backward pass (4 bytes per input element).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ndsnn_triton.kernels.launch import (
    KernelLaunch,
    check_elements,
    check_grid,
    plan,
)
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, cdiv, tl, triton
from ndsnn_triton.kernels.work import out_hw, usable_rows

#: at most this many sample chunks per channel (the weight gradient's partial sums: chunks × nnz)
MAX_CHUNKS = 64
#: programs the pass (and the weight gradient on its chunks) aims for: each program walks its
#: chunk's samples one after another, so the launch needs many of them in flight (16 per SM of a
#: 132-SM H100/H200); the first H200 run with 264 took 0.28 ms for VGG-16 conv2's activity
EVENT_PROGRAMS = 2048
#: positions of one map scanned per loop iteration
EVENTS_BLOCK = 128


@dataclass(frozen=True)
class SpikeEvents:
    """What the pass found (see the module docstring)."""

    active: Tensor  # int32 [N, C]
    events: Tensor | None  # int32 [C, N·H·W], or None when only activity was asked for
    counts: Tensor | None  # int32 [C, chunks]
    samples_per_chunk: int


def spike_events_ref(
    x: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    samples_per_chunk: int,
) -> SpikeEvents:
    """Pure-torch reference of the pass (events and counts; unused slots of ``events`` are -1)."""
    n, c, h, w = x.shape
    oh, ow = out_hw(h, w, kernel_size[0], kernel_size[1], stride, padding, dilation)
    nz = x != 0
    active = nz.reshape(n, c, h * w).sum(-1, dtype=torch.int32)
    usable = (
        usable_rows(h, oh, kernel_size[0], stride[0], padding[0], dilation[0])[:, None]
        & usable_rows(w, ow, kernel_size[1], stride[1], padding[1], dilation[1])[None, :]
    ).to(x.device)
    per_channel = (nz & usable).transpose(0, 1).reshape(c, n * h * w)
    chunks = cdiv(n, samples_per_chunk) if n else 0
    events = torch.full((c, n * h * w), -1, dtype=torch.int32, device=x.device)
    counts = torch.zeros((c, chunks), dtype=torch.int32, device=x.device)
    span = samples_per_chunk * h * w
    for ch in range(c):
        for j in range(chunks):
            lo, hi = j * span, min((j + 1) * span, n * h * w)
            idx = torch.nonzero(per_channel[ch, lo:hi]).flatten() + lo
            events[ch, lo : lo + idx.numel()] = idx.to(torch.int32)
            counts[ch, j] = idx.numel()
    return SpikeEvents(active, events, counts, samples_per_chunk)


if HAS_TRITON:

    @triton.jit
    def _spike_events_kernel(
        x_ptr, active_ptr, events_ptr, counts_ptr,
        N, C, H, W, OH, OW, SPC,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, WRITE_EVENTS: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        j = tl.program_id(0)
        c = tl.program_id(1)
        HW = H * W
        n_lo = j * SPC
        n_hi = tl.minimum(n_lo + SPC, N)
        slab = c * (N * HW) + n_lo * HW
        total = n_lo * 0  # events written so far by this program (an int32 scalar)
        for n in range(n_lo, n_hi):
            seen = n * 0
            for p0 in range(0, HW, BLOCK):
                pos = p0 + tl.arange(0, BLOCK)
                inside = pos < HW
                xv = tl.load(x_ptr + (n * C + c) * HW + pos, mask=inside, other=0)
                nonzero = inside & (xv != 0)
                seen += tl.sum(nonzero.to(tl.int32), axis=0)
                if WRITE_EVENTS:
                    ih = pos // W
                    iw = pos % W
                    rows = tl.zeros([BLOCK], dtype=tl.int1)
                    for kh in tl.static_range(KH):
                        th = ih + pad_h - kh * dil_h
                        rows = rows | ((th >= 0) & (th % stride_h == 0) & (th // stride_h < OH))
                    cols = tl.zeros([BLOCK], dtype=tl.int1)
                    for kw in tl.static_range(KW):
                        tw = iw + pad_w - kw * dil_w
                        cols = cols | ((tw >= 0) & (tw % stride_w == 0) & (tw // stride_w < OW))
                    flag = (nonzero & rows & cols).to(tl.int32)
                    rank = tl.cumsum(flag, axis=0) - flag
                    tl.store(events_ptr + slab + total + rank, n * HW + pos, mask=flag != 0)
                    total += tl.sum(flag, axis=0)
            tl.store(active_ptr + n * C + c, seen)
        if WRITE_EVENTS:
            tl.store(counts_ptr + c * tl.num_programs(0) + j, total)


@plan("spike_events")
def spike_events_plan(
    x_shape: Sequence[int],
    kernel_size: Sequence[int],
    x_dtype: torch.dtype,
    write_events: bool,
) -> KernelLaunch:
    """The pass over ``x [N, C, H, W]``: enough sample chunks per channel to offer
    :data:`EVENT_PROGRAMS` programs (at most :data:`MAX_CHUNKS`, at most one per sample)."""
    n, c, h, w = x_shape
    name = "ndsnn spike events (Triton)"
    check_elements(name, input=n * c * h * w)
    chunks = max(1, min(MAX_CHUNKS, n, cdiv(EVENT_PROGRAMS, max(c, 1))))
    per_chunk = cdiv(n, chunks) if n else 1
    chunks = cdiv(n, per_chunk) if n else 0
    grid = (chunks, c)
    check_grid(name, grid)
    block = EVENTS_BLOCK
    while block > 16 and block // 2 >= h * w:
        block //= 2
    return KernelLaunch(
        name="spike_events",
        kernel=_spike_events_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "x_ptr": torch.int8 if x_dtype == torch.bool else x_dtype,
            "active_ptr": torch.int32,
            "events_ptr": torch.int32,
            "counts_ptr": torch.int32,
        },
        scalars=dict.fromkeys(
            (
                "N",
                "C",
                "H",
                "W",
                "OH",
                "OW",
                "SPC",
                "stride_h",
                "stride_w",
                "pad_h",
                "pad_w",
                "dil_h",
                "dil_w",
            ),
            "i32",
        ),
        constexprs={
            "KH": int(kernel_size[0]),
            "KW": int(kernel_size[1]),
            "WRITE_EVENTS": bool(write_events),
            "BLOCK": block,
        },
        num_warps=max(1, min(4, block // 32)),
        num_stages=3,
        values={"SPC": per_chunk},
    )


def spike_events_triton(
    x: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    write_events: bool,
) -> SpikeEvents:
    """Run the pass (Triton): activity of every map, and the event lists if ``write_events``."""
    n, c, h, w = x.shape
    launch = spike_events_plan(x.shape, kernel_size, x.dtype, write_events)
    per_chunk = launch.values["SPC"]
    oh, ow = out_hw(h, w, kernel_size[0], kernel_size[1], stride, padding, dilation)
    xc = x.contiguous()
    if xc.dtype == torch.bool:
        xc = xc.view(torch.int8)
    active = torch.empty((n, c), dtype=torch.int32, device=x.device)
    if write_events:
        events = torch.empty((c, n * h * w), dtype=torch.int32, device=x.device)
        counts = torch.empty((c, launch.grid[0]), dtype=torch.int32, device=x.device)
    else:
        events = counts = active  # placeholders the kernel never touches
    launch.run(
        xc, active, events, counts,
        n, c, h, w, oh, ow, per_chunk,
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
    )  # fmt: skip
    if not write_events:
        return SpikeEvents(active, None, None, per_chunk)
    return SpikeEvents(active, events, counts, per_chunk)
