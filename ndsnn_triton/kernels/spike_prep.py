"""The fallback pass over a spike input that no library LIF described: one parallel launch that
writes what the sparse kernels read (an int8 copy, per-map activity) and checks the input is
binary.

Shapes: ``x [N, C, H, W]`` (maps of ``H·W``, activity ``[N, C]``) or any other shape (no
activity). The library's LIF emits the same *companion* with its spikes
(:mod:`ndsnn_triton.companion`), so on a LIF → layer path this pass never runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ndsnn_triton.kernels.launch import KernelLaunch, check_elements, check_grid, plan, pow2_block
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, cdiv, tl, triton
from ndsnn_triton.kernels.work import emits_activity

#: compact spike dtypes, read as they are (bool and uint8 viewed as int8)
COMPACT = (torch.int8, torch.uint8, torch.bool)


def map_geometry(shape: Sequence[int]) -> tuple[int, int]:
    """``(maps, positions per map)`` of an ``[N, C, H, W]`` input whose map activity the pass
    writes (:func:`~ndsnn_triton.kernels.work.emits_activity`), else ``(0, 0)``."""
    if len(shape) != 4:
        return 0, 0
    n, c, h, w = shape
    return (n * c, h * w) if emits_activity(h * w) else (0, 0)


def spike_prep_ref(x: Tensor, check: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(spikes_i8, active, bad)``: the int8 copy of ``x`` (empty if ``x`` is compact already),
    int8 ``[N, C]`` map flags (empty where :func:`map_geometry` says none) and an int32 ``[1]``
    that is non-zero if ``check`` and some value is neither 0 nor 1 (NaN included; empty
    without ``check``)."""
    copy = x.new_empty(0, dtype=torch.int8) if x.dtype in COMPACT else x.to(torch.int8)
    maps, _ = map_geometry(x.shape)
    active = (
        (x != 0).flatten(2).any(-1).to(torch.int8) if maps else x.new_empty(0, dtype=torch.int8)
    )
    if check and x.dtype != torch.bool:
        bad = torch.logical_and(x != 0, x != 1).any().to(torch.int32).reshape(1)
    else:
        bad = x.new_zeros(1 if check else 0, dtype=torch.int32)
    return copy, active, bad


if HAS_TRITON:

    @triton.jit
    def _spike_prep_kernel(
        x_ptr, s8_ptr, act_ptr, bad_ptr, MAPS_TOTAL, HW, PB,
        COPY: tl.constexpr, ACTIVITY: tl.constexpr, CHECK: tl.constexpr,
        MAPS: tl.constexpr, HWB: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        m = (pid // PB) * MAPS + tl.arange(0, MAPS)
        p = (pid % PB) * HWB + tl.arange(0, HWB)
        inside = (m < MAPS_TOTAL)[:, None] & (p < HW)[None, :]
        offs = (m * HW)[:, None] + p[None, :]
        x = tl.load(x_ptr + offs, mask=inside, other=0)
        if COPY:
            tl.store(s8_ptr + offs, x.to(tl.int8), mask=inside)
        if ACTIVITY:  # the whole map is in this program (PB == 1)
            live = tl.max(((x != 0) & inside).to(tl.int8), axis=1)
            tl.store(act_ptr + m, live, mask=m < MAPS_TOTAL)
        if CHECK:
            wrong = tl.sum(tl.sum(((x != 0) & (x != 1) & inside).to(tl.int32), axis=1), axis=0)
            tl.atomic_or(bad_ptr, 1, mask=wrong > 0)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@plan("spike_prep")
def spike_prep_plan(shape: Sequence[int], dtype: torch.dtype, check: bool) -> KernelLaunch:
    """The pass over ``x`` of ``shape`` and ``dtype``: whole maps per program where it writes
    activity, flat blocks otherwise. ``values``: ``MAPS_TOTAL``, ``HW``, ``PB``."""
    name = "ndsnn spike prep (Triton)"
    numel = math.prod(shape)
    check_elements(name, input=numel)
    maps, hw = map_geometry(shape)
    if maps:
        hwb = _pow2_at_least(hw)
        lanes = max(hwb, pow2_block(numel, 64, 1024))
        tile_maps, pb = lanes // hwb, 1
    else:
        hwb = lanes = pow2_block(numel, 64, 1024)
        maps, hw, tile_maps, pb = 1, numel, 1, cdiv(numel, hwb)
    grid = (cdiv(maps, tile_maps) * pb,)
    check_grid(name, grid)
    return KernelLaunch(
        name="spike_prep",
        kernel=_spike_prep_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "x_ptr": torch.int8 if dtype in COMPACT else dtype,
            "s8_ptr": torch.int8,
            "act_ptr": torch.int8,
            "bad_ptr": torch.int32,
        },
        scalars=dict.fromkeys(("MAPS_TOTAL", "HW", "PB"), "i32"),
        constexprs={
            "COPY": dtype not in COMPACT,
            "ACTIVITY": map_geometry(shape)[0] > 0,
            "CHECK": bool(check) and dtype != torch.bool,
            "MAPS": tile_maps,
            "HWB": hwb,
        },
        num_warps=max(1, min(8, lanes // 128)),
        num_stages=3,
        values={"MAPS_TOTAL": maps, "HW": hw, "PB": pb},
    )


def spike_prep_triton(x: Tensor, check: bool) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`spike_prep_ref` in one launch (the check ORs into a zeroed ``[1]`` flag)."""
    launch = spike_prep_plan(x.shape, x.dtype, check)
    c = launch.constexprs
    xc = x.contiguous()
    if x.dtype in COMPACT:
        xc = xc.view(torch.int8)
    device = x.device
    copy = torch.empty(x.shape if c["COPY"] else 0, dtype=torch.int8, device=device)
    maps, _ = map_geometry(x.shape)
    active = torch.empty(x.shape[:2] if maps else 0, dtype=torch.int8, device=device)
    bad = torch.zeros(1 if check else 0, dtype=torch.int32, device=device)
    unused = torch.empty(1, dtype=torch.int8, device=device)  # stands in for an output not written
    if x.numel():
        launch.run(
            xc, copy if c["COPY"] else unused, active if maps else unused,
            bad if check else torch.empty(1, dtype=torch.int32, device=device),
            launch.values["MAPS_TOTAL"], launch.values["HW"], launch.values["PB"],
        )  # fmt: skip
    return copy, active, bad
