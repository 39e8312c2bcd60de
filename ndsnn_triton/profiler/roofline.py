"""Work model per kernel launch and its roofline lower bound — a *model, not a measurement*.

For every launch the library makes (:mod:`ndsnn_triton.kernels.spike_events`,
:mod:`ndsnn_triton.kernels.spike_conv`, :mod:`ndsnn_triton.kernels.lif`; a linear layer runs on
the conv kernels as a 1×1 convolution, :meth:`ConvShape.linear`) and for the benchmark baselines
(the forward without skipping, :mod:`ndsnn_triton.kernels.position_wgrad`), :class:`LaunchWork`
gives the minimum bytes it must move to and from HBM and the FLOPs it does, from the shapes, the
dtypes, the mask (:class:`MaskStats`) and the spikes' structure (:class:`WorkFactors`, see
:mod:`ndsnn_triton.kernels.work`). :func:`roofline_ms` turns that into
``max(bytes / bandwidth, FLOPs / peak)`` on a GPU (:class:`GpuPeaks`), and
:func:`achieved_fraction` rates a measured time against it.

What is counted:

* bytes: every tensor the launch must read, once, and every output it writes, once, in its dtype
  (int8/uint8/bool spikes 1 byte, bf16/fp16 2, fp32 4), plus the sparse index the kernel walks
  and the spike-event buffers (int32 entries). Gathers are assumed to hit L1/L2: the HBM minimum
  reads each element once — only the elements some kept weight reaches (:class:`MaskStats`), and,
  where the kernel skips zero spikes, only those of live inputs. No cache, sector or launch
  overhead is added.
* FLOPs: 2 per multiply-accumulate the kernel *executes* (the rule of
  :mod:`ndsnn_triton.kernels.work`, padding lanes included; bias adds not counted):
  ``2·N·OH·OW·nnz·f_fwd`` for the forward (``f_fwd``: the fraction of (position block, channel)
  lanes with a live input, 1 without a structure: the dense-read model), ``2·N·OH·OW·nnz`` for
  the input gradient and the position-driven weight gradient, ``2·Σ_c kept_c·E_c ≈
  2·N·OH·OW·nnz·f_wg`` for the event-driven weight gradient (``E_c`` events of input channel
  ``c``, ``f_wg`` events per output position ≈ the spike rate at stride 1). The spike-events pass
  does no FLOPs. :func:`spike_skipping_flops` scales any launch by a rate (SPEC §6's ``snn``
  ideal).
* LIF: a documented count of elementwise operations per neuron-step (:data:`LIF_FWD_FLOPS`).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ndsnn_triton._version import __version__
from ndsnn_triton.kernels.position_wgrad import conv_wgrad_positions_plan
from ndsnn_triton.kernels.spike_conv import conv_wgrad_plan
from ndsnn_triton.kernels.spike_events import spike_events_plan
from ndsnn_triton.kernels.work import WorkFactors, forward_block, usable_rows
from ndsnn_triton.models.vgg import CFG_D

COMPUTE_KINDS: tuple[str, ...] = ("fp32_cuda", "bf16_tensor")
INDEX_BYTES = 4  # int32 entries of row_ptr, col_idx, row_order, col_ptr, t_row_idx, events, ...

# ----------------------------------------------------------------------------- GPU peaks


@dataclass(frozen=True)
class GpuPeaks:
    """Peak rates of one GPU: HBM bandwidth in TB/s (10¹² B/s, read + write together) and
    compute in TFLOP/s (10¹² FLOP/s): fp32 on CUDA cores (no tensor cores) and dense bf16 on
    tensor cores (without 2:4 structured sparsity)."""

    name: str
    hbm_tb_s: float
    fp32_cuda_tflops: float
    bf16_tensor_tflops: float
    source: str

    def flops_per_s(self, compute: str) -> float:
        """Peak FLOP/s of ``compute`` (one of :data:`COMPUTE_KINDS`)."""
        if compute == "fp32_cuda":
            return self.fp32_cuda_tflops * 1e12
        if compute == "bf16_tensor":
            return self.bf16_tensor_tflops * 1e12
        raise ValueError(f"unknown compute kind {compute!r}; expected one of {COMPUTE_KINDS}")

    @property
    def bytes_per_s(self) -> float:
        return self.hbm_tb_s * 1e12


#: NVIDIA H100 datasheet, SXM5 80 GB: HBM3 3.35 TB/s, FP32 67 TFLOP/s, BF16 tensor core
#: 1,979 TFLOP/s *with sparsity* (the datasheet's footnote), so 989 dense.
H100_SXM = GpuPeaks("H100 SXM", 3.35, 67.0, 989.0, "NVIDIA H100 datasheet (SXM5)")
#: NVIDIA H200 datasheet, SXM 141 GB: HBM3e 4.8 TB/s; same GH100 compute as the H100 SXM.
H200_SXM = GpuPeaks("H200 SXM", 4.8, 67.0, 989.0, "NVIDIA H200 datasheet (SXM)")
#: SPEC §8's own H100 measurements: bf16 GEMM 8192³ at 737 TFLOP/s, device-to-device copy at
#: 3.0 TB/s (read + write: one-way it would exceed the 3.35 TB/s peak). SPEC measures no fp32
#: CUDA-core rate: the datasheet's 67 stands in.
H100_MEASURED = GpuPeaks(
    "H100 (SPEC §8 measured)", 3.0, 67.0, 737.0, "SPEC §8 (copy, GEMM); fp32: datasheet"
)
PEAKS: dict[str, GpuPeaks] = {"h100": H100_SXM, "h200": H200_SXM, "h100-measured": H100_MEASURED}


# ----------------------------------------------------------------------------- launch work


@dataclass(frozen=True)
class LaunchWork:
    """One kernel launch's minimum HBM traffic (bytes per tensor) and FLOPs, with the inputs
    they were derived from."""

    kernel: str
    flops: int
    traffic: Mapping[str, int]  # "read x", "write y", ...: bytes
    inputs: Mapping[str, object] = field(default_factory=dict)

    @property
    def bytes_min(self) -> int:
        return sum(self.traffic.values())

    @property
    def intensity(self) -> float:
        """FLOPs per byte of the minimum traffic."""
        return self.flops / self.bytes_min


def dtype_bytes(dtype: torch.dtype) -> int:
    """Bytes per element: 1 for int8/uint8/bool, 2 for bf16/fp16, 4 for fp32."""
    return dtype.itemsize


@dataclass(frozen=True)
class ConvShape:
    """A conv launch: ``x [n, cin, h, w]`` (n = T·B), ``weight [cout, cin, kh, kw]``."""

    n: int
    cin: int
    h: int
    w: int
    cout: int
    kh: int = 3
    kw: int = 3
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)

    @classmethod
    def linear(cls, n: int, fin: int, fout: int) -> ConvShape:
        """A linear layer ``x [n, fin] → [n, fout]``: the 1×1 conv the launchers run it as."""
        return cls(n, fin, 1, 1, fout, 1, 1, (1, 1), (0, 0), (1, 1))

    @property
    def oh(self) -> int:
        return _out_len(self.h, self.kh, self.stride[0], self.padding[0], self.dilation[0])

    @property
    def ow(self) -> int:
        return _out_len(self.w, self.kw, self.stride[1], self.padding[1], self.dilation[1])

    @property
    def weights(self) -> int:
        return self.cout * self.cin * self.kh * self.kw


def _out_len(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@dataclass(frozen=True)
class MaskStats:
    """What the work model needs of a mask: ``nnz`` kept weights, and per sample the input
    elements (of ``cin·h·w``) and output-gradient elements (of ``cout·oh·ow``) that some kept
    weight reaches — the rest need not be read. May be fractional (expectations)."""

    nnz: int
    x_reached: float
    dy_reached: float

    @classmethod
    def full(cls, shape: ConvShape, nnz: int) -> MaskStats:
        """Every element counted as reached (exact for a dense 3×3 same-padding conv)."""
        return cls(nnz, shape.cin * shape.h * shape.w, shape.cout * shape.oh * shape.ow)


def _tap_reach(
    k: int, out_len: int, in_len: int, s: int, p: int, d: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tap: the input positions it reads ``[k, in_len]`` and the output positions whose
    read lands inside the input ``[k, out_len]`` (bool)."""
    i = torch.arange(out_len)[None, :] * s - p + torch.arange(k)[:, None] * d
    inside = (i >= 0) & (i < in_len)
    hit = F.one_hot(i.clamp(0, in_len - 1), in_len).bool() & inside[..., None]
    return hit.any(1), inside


def _reached(taps: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> int:
    """Elements of ``[groups, A, B]`` reached by each group's kept taps ``[groups, kh, kw]``,
    tap kh reaching rows ``rows[kh]`` and tap kw columns ``cols[kw]``."""
    cover = torch.einsum("gkl,ka,lb->gab", taps.double(), rows.double(), cols.double())
    return int((cover > 0).sum())


def mask_stats(mask: torch.Tensor, shape: ConvShape) -> MaskStats:
    """Exact :class:`MaskStats` of a bool ``mask [cout, cin, kh, kw]`` (or ``[cout, cin]``)."""
    m = mask.detach().reshape(shape.cout, shape.cin, shape.kh, shape.kw).bool().cpu()
    s, p, d = shape.stride, shape.padding, shape.dilation
    in_rows, out_rows = _tap_reach(shape.kh, shape.oh, shape.h, s[0], p[0], d[0])
    in_cols, out_cols = _tap_reach(shape.kw, shape.ow, shape.w, s[1], p[1], d[1])
    return MaskStats(
        nnz=int(m.sum()),
        x_reached=_reached(m.any(0), in_rows, in_cols),
        dy_reached=_reached(m.any(1), out_rows, out_cols),
    )


def expected_mask_stats(shape: ConvShape, density: float) -> MaskStats:
    """:class:`MaskStats` expected of a uniformly random mask (each weight kept with probability
    ``density``; ``nnz = round(density · weights)``)."""
    s, p, d = shape.stride, shape.padding, shape.dilation
    in_rows, out_rows = _tap_reach(shape.kh, shape.oh, shape.h, s[0], p[0], d[0])
    in_cols, out_cols = _tap_reach(shape.kw, shape.ow, shape.w, s[1], p[1], d[1])

    def expected(rows: torch.Tensor, cols: torch.Tensor, fan: int) -> float:
        # an element reached by a·b taps is missed only if all fan·a·b weights there are pruned
        taps = rows.sum(0).double()[:, None] * cols.sum(0).double()[None, :]
        return float((1 - (1 - density) ** (fan * taps)).sum())

    return MaskStats(
        nnz=round(density * shape.weights),
        x_reached=shape.cin * expected(in_rows, in_cols, shape.cout),
        dy_reached=shape.cout * expected(out_rows, out_cols, shape.cin),
    )


def _b(elements: float, dtype: torch.dtype) -> int:
    return round(elements * dtype_bytes(dtype))


def _conv_inputs(shape: ConvShape, stats: MaskStats, **dtypes: torch.dtype) -> dict[str, object]:
    return {"shape": shape, "mask": stats, **{k: str(v) for k, v in dtypes.items()}}


# ----------------------------------------------------------------------------- spike structure


def usable_positions(shape: ConvShape) -> int:
    """Input positions per map that some kernel tap maps onto an output position (where the
    spike-events pass keeps events): ``H·W`` for a stride-1 'same' convolution."""
    s, p, d = shape.stride, shape.padding, shape.dilation
    rows = usable_rows(shape.h, shape.oh, shape.kh, s[0], p[0], d[0])
    cols = usable_rows(shape.w, shape.ow, shape.kw, s[1], p[1], d[1])
    return int(rows.sum()) * int(cols.sum())


def dense_activity(shape: ConvShape) -> WorkFactors:
    """The structure of an input with no zero: every lane live, an event at every usable position
    (the factors the models use when given no structure)."""
    return WorkFactors(1.0, 1.0, usable_positions(shape) / (shape.oh * shape.ow))


def _structure_counts(
    n: int, c: int, hw: int, silent_maps: float, dead_channels: float
) -> tuple[int, int, int]:
    """``(dead channels, other silent maps, live maps)`` of :func:`synthetic_spikes`."""
    dead = min(c, max(0, round(dead_channels * c)))
    silent = min(n * c, max(0, round(silent_maps * n * c)))
    others = min((c - dead) * n, max(0, silent - dead * n))
    return dead, others, n * c - dead * n - others


def _forward_blocks(shape: ConvShape) -> tuple[torch.Tensor, torch.Tensor]:
    """Per forward position block (the kernel's ``BLOCK_P`` over the flattened ``(n, oh, ow)``):
    its lanes and the number of samples it spans (float64)."""
    positions = shape.oh * shape.ow
    total = shape.n * positions
    block = forward_block(total, shape.cout)
    starts = torch.arange(0, total, block, dtype=torch.float64)
    lanes = torch.clamp(total - starts, max=block)
    spans = torch.div(starts + lanes - 1, positions, rounding_mode="floor")
    spans = spans - torch.div(starts, positions, rounding_mode="floor") + 1
    return lanes, spans


def synthetic_activity(
    shape: ConvShape,
    rate: float,
    silent_maps: float | None = None,
    dead_channels: float = 0.0,
) -> WorkFactors:
    """Expected :class:`WorkFactors` of :func:`synthetic_spikes` on the input of ``shape``.

    ``silent_maps=None``: i.i.d. spikes at ``rate`` (a map is silent by chance only, with
    probability ``(1 − r)^(H·W)``). Otherwise ``dead_channels`` of the channels are silent in every
    sample, further maps of the other channels are silent until ``silent_maps`` of all
    ``(sample, channel)`` maps are, and the live maps hold the spikes (at least one each), so the
    rate is ``rate`` unless that is below one spike per live map. A forward block is skipped for a
    channel when every sample it spans is silent there (maps taken as independent).
    """
    n, c, hw = shape.n, shape.cin, shape.h * shape.w
    lanes, spans = _forward_blocks(shape)
    if lanes.numel() == 0 or c == 0 or hw == 0:
        return WorkFactors(float("nan"), float("nan"), float("nan"))
    if silent_maps is None:
        quiet, live_channels, achieved = (1.0 - rate) ** hw, 1.0, rate
    else:
        dead, others, live = _structure_counts(n, c, hw, silent_maps, dead_channels)
        quiet = others / ((c - dead) * n) if c > dead else 0.0
        live_channels = (c - dead) / c
        achieved = max(rate * n * c * hw, live) / (n * c * hw) if live else 0.0
    forward = live_channels * float((lanes * (1.0 - quiet**spans)).sum() / lanes.sum())
    return WorkFactors(
        achieved, forward, achieved * usable_positions(shape) / (shape.oh * shape.ow)
    )


def synthetic_spikes(
    size: Sequence[int],
    rate: float,
    silent_maps: float | None = None,
    dead_channels: float = 0.0,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Binary spikes ``[N, C, H, W]`` with the structure :func:`synthetic_activity` describes:
    i.i.d. at ``rate`` if ``silent_maps`` is None; else ``round(dead_channels·C)`` channels silent
    in every sample, further randomly chosen maps silent until ``round(silent_maps·N·C)`` are, and
    in every live map one spike at a random position plus i.i.d. spikes at the rate that makes the
    total ``rate·N·C·H·W`` in expectation."""
    n, c, h, w = (int(v) for v in size)
    hw = h * w
    if silent_maps is None:
        return (torch.rand(n, c, h, w, generator=generator, device=device) < rate).to(dtype)
    dead, others, live = _structure_counts(n, c, hw, silent_maps, dead_channels)
    alive = torch.ones(n, c, dtype=torch.bool, device=device)
    dead_idx = torch.randperm(c, generator=generator, device=device)[:dead]
    alive[:, dead_idx] = False
    candidates = alive.flatten().nonzero().flatten()
    order = torch.randperm(candidates.numel(), generator=generator, device=device)
    alive.view(-1)[candidates[order[:others]]] = False
    live_idx = alive.flatten().nonzero().flatten()
    x = torch.zeros(n * c, hw, dtype=dtype, device=device)
    if live and hw:
        extra = (rate * n * c * hw - live) / (live * (hw - 1)) if hw > 1 else 0.0
        extra = min(1.0, max(0.0, extra))
        x[live_idx] = (torch.rand(live, hw, generator=generator, device=device) < extra).to(dtype)
        first = torch.randint(hw, (live,), generator=generator, device=device)
        x[live_idx, first] = 1
    return x.view(n, c, h, w)


@dataclass(frozen=True)
class LayerSpikes:
    """The measured spike structure of one layer's input (a row of
    ``bench/results/spike_structure.json``, :mod:`ndsnn_triton.profiler.spike_structure`)."""

    name: str  # the model's layer name, e.g. "features.1"
    input_shape: tuple[int, int, int]  # [C, H, W]
    rate: float
    silent_maps: float
    dead_channels: float
    work: WorkFactors  # the kernels' measured work factors on that input


def load_vgg16_spikes(
    path: str | Path, stage: str = "trained", mode: str = "train"
) -> dict[str, LayerSpikes]:
    """The VGG-16 layer inputs of a spike-structure result file, keyed ``conv1`` … ``conv13`` (the
    k-th conv of the model; conv1's input is the analog image). ``stage``: ``init`` or
    ``trained``; ``mode``: ``train`` or ``eval``. ``ValueError`` if the file has no VGG-16 row or
    its layers do not have VGG-16's input shapes."""
    doc = json.loads(Path(path).read_text())
    rows = [r for r in doc.get("results", []) if r.get("model") == "vgg16"]
    if not rows:
        raise ValueError(f"{path}: no vgg16 row")
    layers = [r for r in rows[-1]["structure"][stage][mode] if r["kind"] == "conv"]
    sizes = vgg16_lif_sizes(layers[0]["input_shape"][1] if layers else 32)
    # conv k runs at the side of LIF k; its input has conv k-1's channels (conv1: the image's)
    want = [(c, side, side) for (c, _), (_, side) in itertools.pairwise(sizes)]
    got = [tuple(r["input_shape"]) for r in layers[1:]]
    if len(layers) != len(sizes) or got != want:
        raise ValueError(f"{path}: the vgg16 row's conv layers are not VGG-16's")
    return {
        f"conv{k}": LayerSpikes(
            name=r["name"],
            input_shape=tuple(r["input_shape"]),
            rate=r["rate"],
            silent_maps=r["silent_maps"],
            dead_channels=r["dead_channels"],
            work=WorkFactors(r["rate"], r["work"]["forward"], r["work"]["weight_grad"]),
        )
        for k, r in enumerate(layers, start=1)
    }


def _activity_inputs(activity: WorkFactors | None) -> dict[str, object]:
    return {"activity": activity if activity is not None else "dense (no structure given)"}


# ----------------------------------------------------------------------------- conv launches


def spike_events_work(
    shape: ConvShape,
    x_dtype: torch.dtype,
    write_events: bool,
    activity: WorkFactors | None = None,
) -> LaunchWork:
    """``_spike_events_kernel``: read the input once, write the activity ``active [N, C]`` int32
    and, for the weight gradient (``write_events``), the events — one int32 per non-zero input at
    a usable position, ``E = f_wg·C·N·OH·OW`` — and their counts ``[C, chunks]``. No FLOPs.
    ``activity=None``: every input non-zero (:func:`dense_activity`)."""
    act = activity if activity is not None else dense_activity(shape)
    n, c = shape.n, shape.cin
    traffic = {
        "read x": _b(n * c * shape.h * shape.w, x_dtype),
        "write active": INDEX_BYTES * n * c,
    }
    if write_events:
        chunks = spike_events_plan((n, c, shape.h, shape.w), (shape.kh, shape.kw), x_dtype, True)
        traffic["write events"] = round(INDEX_BYTES * act.weight_grad * c * n * shape.oh * shape.ow)
        traffic["write counts"] = INDEX_BYTES * c * chunks.grid[0]
    inputs = {"shape": shape, "x_dtype": str(x_dtype), "write_events": write_events}
    return LaunchWork("_spike_events_kernel", 0, traffic, inputs | _activity_inputs(activity))


def conv_fwd_work(
    shape: ConvShape,
    stats: MaskStats,
    x_dtype: torch.dtype,
    w_dtype: torch.dtype,
    bias: bool = False,
    activity: WorkFactors | None = None,
) -> LaunchWork:
    """``_conv_fwd_kernel``: read the reached input once, the kept weights and the CSR index
    (``col_idx`` per kept weight, ``row_ptr``, ``row_order``), the bias; write ``y`` once in the
    weight's dtype. FLOPs ``2·N·OH·OW·nnz``.

    ``activity`` (the input's :class:`WorkFactors`): the kernel skips the (position block,
    channel) pairs whose input maps are silent, so it reads only the fraction ``f_fwd =
    activity.forward`` of the reached input, plus ``active [N, C]`` int32, and executes
    ``f_fwd`` of the FLOPs. ``None`` keeps the dense-read model: every pair live, the activity
    read not counted (the bound of the forward without skipping, ``skip_silent=False``)."""
    nnz, oc = stats.nnz, shape.cout
    live = 1.0 if activity is None else activity.forward
    traffic = {
        "read x": _b(shape.n * stats.x_reached * live, x_dtype),
        "read kept weights": _b(nnz, w_dtype),
        "read col_idx": INDEX_BYTES * nnz,
        "read row_ptr + row_order": INDEX_BYTES * (2 * oc + 1),
        "read bias": _b(oc, w_dtype) if bias else 0,
        "write y": _b(shape.n * oc * shape.oh * shape.ow, w_dtype),
    }
    if activity is not None:
        traffic["read active"] = INDEX_BYTES * shape.n * shape.cin
    flops = round(2 * shape.n * shape.oh * shape.ow * nnz * live)
    inputs = _conv_inputs(shape, stats, x_dtype=x_dtype, w_dtype=w_dtype)
    if activity is not None:
        inputs |= _activity_inputs(activity)
    return LaunchWork("_conv_fwd_kernel", flops, traffic, inputs)


def conv_dgrad_work(
    shape: ConvShape, stats: MaskStats, grad_dtype: torch.dtype, w_dtype: torch.dtype
) -> LaunchWork:
    """``_conv_dgrad_kernel``: read the reached ``dY`` once, the kept weights and the transpose
    index (``t_row_idx`` per kept weight, ``col_ptr [cin·kh·kw + 1]``); write ``dX`` once.
    FLOPs ``2·N·OH·OW·nnz`` (at stride > 1 the kernel also issues masked-off FMAs for the input
    positions no output reaches: ``2·N·H·W·nnz`` in all, not counted). Spikes do not change it."""
    nnz, k = stats.nnz, shape.cin * shape.kh * shape.kw
    traffic = {
        "read dy": _b(shape.n * stats.dy_reached, grad_dtype),
        "read kept weights": _b(nnz, w_dtype),
        "read t_row_idx": INDEX_BYTES * nnz,
        "read col_ptr": INDEX_BYTES * (k + 1),
        "write dx": _b(shape.n * shape.cin * shape.h * shape.w, grad_dtype),
    }
    flops = 2 * shape.n * shape.oh * shape.ow * nnz
    inputs = _conv_inputs(shape, stats, grad_dtype=grad_dtype, w_dtype=w_dtype)
    return LaunchWork("_conv_dgrad_kernel", flops, traffic, inputs)


def wgrad_pairs(shape: ConvShape, stats: MaskStats, activity: WorkFactors | None = None) -> float:
    """Multiply-accumulates of the event-driven weight gradient, ``Σ_c kept_c·E_c``, for kept
    weights spread evenly over the input channels: ``nnz · E / C`` with ``E = f_wg·C·N·OH·OW``
    events (``activity=None``: an event at every usable position)."""
    act = activity if activity is not None else dense_activity(shape)
    return stats.nnz * act.weight_grad * shape.n * shape.oh * shape.ow


def conv_wgrad_work(
    shape: ConvShape,
    stats: MaskStats,
    grad_dtype: torch.dtype,
    saved_dtype: torch.dtype = torch.int8,
    activity: WorkFactors | None = None,
    cap: int | None = None,
) -> LaunchWork:
    """``_conv_wgrad_kernel``, event-driven: per (sample chunk, input channel) it multiplies each
    kept weight of the channel with each of the channel's events. Reads the events
    (``E = f_wg·C·N·OH·OW`` int32) and their counts, the saved input (int8 spikes) at the events,
    the CSC index (``col_ptr`` at the ``C + 1`` channel bounds, ``t_row_idx`` + ``t_col_idx`` per
    kept weight) and the ``dY`` elements the ``m`` (kept weight, event) pairs gather; writes the
    fp32 partial sums ``[chunks, cap]`` (``cap`` = nnz unless given; the launcher reduces and
    scatters them: :func:`wgrad_launcher_bytes`). FLOPs ``2·m``, ``m`` = :func:`wgrad_pairs`.

    Each pair gathers one ``dY`` element among the ``D = N·dy_reached`` the mask reaches; the HBM
    minimum reads each distinct one once: ``D·(1 − e^(−m/D))`` expected for pairs spread at random
    (≈ ``D`` for dense spikes, ≈ ``m`` for sparse ones). ``activity=None``: every input non-zero
    (:func:`dense_activity`; the FLOPs are then the dense count at stride 1)."""
    act = activity if activity is not None else dense_activity(shape)
    nnz, c = stats.nnz, shape.cin
    events = act.weight_grad * c * shape.n * shape.oh * shape.ow
    pairs = wgrad_pairs(shape, stats, act)
    reach = shape.n * stats.dy_reached
    gathered = reach * -math.expm1(-pairs / reach) if reach > 0 else 0.0
    cap = max(1, nnz) if cap is None else cap
    traffic = {
        "read events": round(INDEX_BYTES * events),
        "read counts": INDEX_BYTES * c * wgrad_chunks(shape, cap),
        "read saved x at events": _b(events, saved_dtype),
        "read dy (gathered at events)": _b(gathered, grad_dtype),
        "read col_ptr + t_row_idx + t_col_idx": INDEX_BYTES * (c + 1 + 2 * nnz),
        "write partials": 4 * wgrad_chunks(shape, cap) * cap,
    }
    inputs = _conv_inputs(shape, stats, grad_dtype=grad_dtype, saved_dtype=saved_dtype)
    inputs |= _activity_inputs(activity) | {"pairs": pairs, "cap": cap}
    return LaunchWork("_conv_wgrad_kernel", round(2 * pairs), traffic, inputs)


def conv_wgrad_positions_work(
    shape: ConvShape,
    stats: MaskStats,
    grad_dtype: torch.dtype,
    saved_dtype: torch.dtype = torch.int8,
) -> LaunchWork:
    """``_conv_wgrad_positions_kernel`` (the position-driven baseline, a sampled product at the
    kept positions): read the reached ``dY`` and the saved input (int8 spikes) once, the entry
    index (``entry_row`` + ``col_idx`` per kept weight, the count ``row_ptr[rows]``); write the
    ``nnz`` gradient values once. Spikes do not change it.

    That write is the minimum: the kernel writes fp32 partial sums ``[chunks, cap]`` instead,
    and the launcher reduces and scatters them into a dense gradient — see
    :func:`wgrad_launcher_bytes`. FLOPs ``2·N·OH·OW·nnz``."""
    nnz = stats.nnz
    traffic = {
        "read dy": _b(shape.n * stats.dy_reached, grad_dtype),
        "read saved x": _b(shape.n * stats.x_reached, saved_dtype),
        "read entry_row + col_idx + nnz": INDEX_BYTES * (2 * nnz + 1),
        "write kept gradients": _b(nnz, grad_dtype),
    }
    flops = 2 * shape.n * shape.oh * shape.ow * nnz
    inputs = _conv_inputs(shape, stats, grad_dtype=grad_dtype, saved_dtype=saved_dtype)
    return LaunchWork("_conv_wgrad_positions_kernel", flops, traffic, inputs)


def wgrad_chunks(shape: ConvShape, cap: int) -> int:
    """How many sample chunks the event-driven weight gradient splits each channel's events into
    (its plan's grid axis 0; the spike-events pass's chunks)."""
    launch = conv_wgrad_plan(
        (shape.n, shape.cin, shape.h, shape.w),
        (shape.cout, shape.cin, shape.kh, shape.kw),
        shape.stride,
        shape.padding,
        shape.dilation,
        cap,
        torch.float32,
        torch.int8,
    )
    return launch.grid[0]


def wgrad_positions_chunks(shape: ConvShape, cap: int) -> int:
    """How many position chunks the position-driven baseline splits its work into (its plan's
    grid axis 1)."""
    launch = conv_wgrad_positions_plan(
        (shape.n, shape.cin, shape.h, shape.w),
        (shape.cout, shape.cin, shape.kh, shape.kw),
        shape.stride,
        shape.padding,
        shape.dilation,
        cap,
        torch.float32,
        torch.int8,
    )
    return launch.grid[1]


def wgrad_launcher_bytes(
    shape: ConvShape, cap: int, grad_dtype: torch.dtype, positions: bool = False
) -> dict[str, int]:
    """Bytes the weight-gradient launcher's whole pipeline moves for its output (index buffers
    sized ``cap`` ≥ nnz), launch by launch; the minimum counts only ``nnz`` gradient values.
    ``positions``: the position-driven baseline's launcher (its chunks), else the event-driven one.

    zero-fill the fp32 partials ``[chunks, cap]``; the kernel writes them; ``sum(0)`` reads them
    and writes ``cap`` sums; zero-fill a dense fp32 gradient; scatter (``entry_flat`` int64, the
    sums); cast to ``grad_dtype`` unless fp32. (The event-driven launcher's spike-events pass is
    a launch of its own: :func:`spike_events_work`.)
    """
    chunks = wgrad_positions_chunks(shape, cap) if positions else wgrad_chunks(shape, cap)
    partial = 4 * chunks * cap
    dense = shape.weights
    out = {
        "zero partials": partial,
        "kernel writes partials": partial,
        "sum(0) reads partials, writes sums": partial + 4 * cap,
        "zero dense fp32 gradient": 4 * dense,
        "scatter (reads entry_flat + sums, writes)": (8 + 4 + 4) * cap,
    }
    if grad_dtype != torch.float32:
        out["cast to gradient dtype"] = dense * (4 + dtype_bytes(grad_dtype))
    return out


# LIF FLOPs per neuron-step, counting each arithmetic op, compare and select as one (loads,
# stores and casts not), for the models' neuron (LTH-SNN: decay_input, hard reset to 0,
# detach_reset, ATan) as the kernels write it. Forward: charge v + (x - v)/tau (3), fire
# where(h - v_th >= 0) (3), reset (1 - s)·h + s·v_reset (4). Backward: recompute s (3),
# grad_v·(1 - s) (2), xs = h - v_th (1), ATan z = scale·xs, 1/(1 + z·z)·coef·gs (6), add to
# grad_h (1), ·dh_dx (1), ·dh_dv (1). Other settings differ by a few ops; LIF is memory-bound by
# far either way.
LIF_FWD_FLOPS = 10
LIF_BWD_FLOPS = 15


def lif_fwd_work(T: int, neurons: int, dtype: torch.dtype, int8_spikes: bool = False) -> LaunchWork:
    """``_lif_fwd_kernel`` over ``x [T, neurons]``: read x and v0, write spikes (int8 or x's
    dtype), h (not with int8 spikes) and v_last."""
    steps = T * neurons
    traffic = {
        "read x": _b(steps, dtype),
        "read v0": _b(neurons, dtype),
        "write spikes": _b(steps, torch.int8 if int8_spikes else dtype),
        "write h": 0 if int8_spikes else _b(steps, dtype),
        "write v_last": _b(neurons, dtype),
    }
    inputs = {"T": T, "neurons": neurons, "dtype": str(dtype), "int8_spikes": int8_spikes}
    return LaunchWork("_lif_fwd_kernel", LIF_FWD_FLOPS * steps, traffic, inputs)


def lif_bwd_work(T: int, neurons: int, dtype: torch.dtype) -> LaunchWork:
    """``_lif_bwd_kernel`` over ``h [T, neurons]``: read grad_s, h and grad_v_last, write
    grad_x and grad_v0."""
    steps = T * neurons
    traffic = {
        "read grad_s": _b(steps, dtype),
        "read h": _b(steps, dtype),
        "read grad_v_last": _b(neurons, dtype),
        "write grad_x": _b(steps, dtype),
        "write grad_v0": _b(neurons, dtype),
    }
    inputs = {"T": T, "neurons": neurons, "dtype": str(dtype)}
    return LaunchWork("_lif_bwd_kernel", LIF_BWD_FLOPS * steps, traffic, inputs)


# ----------------------------------------------------------------------------- roofline


def roofline_ms(work: LaunchWork, peaks: GpuPeaks, compute: str = "fp32_cuda") -> float:
    """Lower bound in ms: ``max(bytes / bandwidth, FLOPs / peak)``."""
    return 1e3 * max(work.bytes_min / peaks.bytes_per_s, work.flops / peaks.flops_per_s(compute))


def memory_bound(work: LaunchWork, peaks: GpuPeaks, compute: str = "fp32_cuda") -> bool:
    """Whether the bandwidth term of :func:`roofline_ms` is the larger one."""
    return work.bytes_min / peaks.bytes_per_s >= work.flops / peaks.flops_per_s(compute)


def total_roofline_ms(
    works: Iterable[LaunchWork], peaks: GpuPeaks, compute: str = "fp32_cuda"
) -> float:
    """Bound of launches run one after another: the sum of their bounds."""
    return sum(roofline_ms(w, peaks, compute) for w in works)


def achieved_fraction(
    measured_ms: float, work: LaunchWork, peaks: GpuPeaks, compute: str = "fp32_cuda"
) -> float:
    """Fraction of the roofline a measured launch reaches: ``bound / measured`` (1 = at it)."""
    if measured_ms <= 0:
        raise ValueError(f"measured_ms must be positive, got {measured_ms!r}")
    return roofline_ms(work, peaks, compute) / measured_ms


def spike_skipping_flops(work: LaunchWork, rate: float) -> LaunchWork:
    """``work`` with its FLOPs scaled by the input spike rate: what a kernel skipping zero spikes
    would do (SPEC §6 ``snn``; forward and weight gradient only). Bytes unchanged: the spike
    maps are still read."""
    return LaunchWork(
        work.kernel, round(work.flops * rate), work.traffic, {**work.inputs, "rate": rate}
    )


# ----------------------------------------------------------------------------- SPEC §8 anchors


@dataclass(frozen=True)
class CudnnAnchor:
    """One row of SPEC §8's H100 table (B = 64, T = 5): *measured* times in ms."""

    layer: str
    cin: int
    cout: int
    hw: int
    fwd_bwd_fp32_ms: float
    fwd_bwd_tf32_ms: float
    fwd_bwd_bf16_ms: float
    fwd_bf16_ms: float
    csr_fwd_99_ms: float  # torch.sparse CSR forward at 99 % sparsity (density 0.01)
    csr_fwd_90_ms: float  # ... at 90 % (density 0.1)


# Measurements, copied from SPEC §8 ("anchors measured on one H100"), not model output.
SPEC_H100_ANCHORS: tuple[CudnnAnchor, ...] = (
    CudnnAnchor("conv2", 64, 64, 32, 2.45, 0.895, 0.467, 0.159, 0.267, 0.835),
    CudnnAnchor("conv4", 128, 128, 16, 2.05, 0.519, 0.488, 0.098, 0.210, 0.787),
    CudnnAnchor("conv6", 256, 256, 8, 1.585, 0.444, 0.245, 0.084, 0.131, 0.667),
    CudnnAnchor("conv9", 512, 512, 4, 3.815, 0.419, 0.2525, 0.080, 0.102, 0.633),
    CudnnAnchor("conv12", 512, 512, 2, 1.949, 0.276, 0.260, 0.054, 0.041, 0.172),
)
SPEC_BATCH, SPEC_T = 64, 5


def anchor_shape(anchor: CudnnAnchor, batch: int = SPEC_BATCH, T: int = SPEC_T) -> ConvShape:
    """The VGG-16 conv of an anchor row: 3×3, stride 1, pad 1, ``n = T·batch``."""
    return ConvShape(T * batch, anchor.cin, anchor.hw, anchor.hw, anchor.cout)


def vgg16_lif_sizes(image_size: int = 32) -> list[tuple[int, int]]:
    """``(channels, map side)`` of each LIF of the spiking VGG-16, in order (13 of them)."""
    sizes, side = [], image_size
    for c in CFG_D:
        if c == "M":
            side //= 2
        else:
            sizes.append((int(c), side))
    return sizes


# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class TableConfig:
    """Assumptions of the rendered tables: batch, timesteps, dtypes, densities, GPUs, and the
    spikes: i.i.d. at ``spike_rate`` in every layer input unless ``activity`` gives a layer's
    (e.g. measured, :func:`load_vgg16_spikes`) work factors, keyed by anchor layer (``conv2``…)."""

    batch: int = SPEC_BATCH
    T: int = SPEC_T
    dtype: torch.dtype = torch.bfloat16  # weights, outputs, gradients, LIF tensors
    spike_dtype: torch.dtype = torch.bfloat16  # conv forward input (float spikes while training)
    saved_dtype: torch.dtype = torch.int8  # spikes the forward saves for the weight gradient
    densities: tuple[float, ...] = (1.0, 0.1, 0.01)
    spike_rate: float = 0.1
    activity: Mapping[str, WorkFactors] | None = None
    activity_source: str = ""  # where ``activity`` comes from (printed in the assumptions)
    sweep_rates: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)  # i.i.d. rates of the sweep table
    sweep_density: float = 0.01
    gpus: tuple[str, ...] = ("h100", "h200")


@dataclass(frozen=True)
class Row:
    """One model row: a launch (or a sum of launches) and its bound per (GPU, compute kind)."""

    label: str
    bytes_min: int
    flops: int
    bounds_ms: dict[tuple[str, str], float]
    memory_bound: dict[tuple[str, str], bool]
    measured: str = "—"


def _row(
    label: str,
    works: Sequence[LaunchWork],
    cfg: TableConfig,
    kinds: Sequence[str] = COMPUTE_KINDS,
    **extra,
) -> Row:
    keys = [(g, c) for g in cfg.gpus for c in kinds]
    return Row(
        label=label,
        bytes_min=sum(w.bytes_min for w in works),
        flops=sum(w.flops for w in works),
        bounds_ms={(g, c): total_roofline_ms(works, PEAKS[g], c) for g, c in keys},
        memory_bound={(g, c): all(memory_bound(w, PEAKS[g], c) for w in works) for g, c in keys},
        **extra,
    )


def _us(ms: float) -> str:
    return f"{1e3 * ms:,.0f}" if ms >= 0.1 else f"{1e3 * ms:.1f}"


def _measured(anchor: CudnnAnchor, density: float, term: str) -> str:
    if term == "fwd+bwd":
        return (
            f"cuDNN dense: fp32 {_us(anchor.fwd_bwd_fp32_ms)} · tf32 {_us(anchor.fwd_bwd_tf32_ms)}"
            f" · bf16 {_us(anchor.fwd_bwd_bf16_ms)}"
        )
    if term != "fwd":
        return "—"
    dense = f"cuDNN dense bf16 {_us(anchor.fwd_bf16_ms)}"
    csr = {0.1: anchor.csr_fwd_90_ms, 0.01: anchor.csr_fwd_99_ms}.get(density)
    return dense if csr is None else f"torch.sparse CSR {_us(csr)} · {dense}"


def layer_activity(anchor: CudnnAnchor, cfg: TableConfig) -> WorkFactors:
    """The spike structure the tables assume for an anchor layer's input: ``cfg.activity``'s
    entry, else i.i.d. spikes at ``cfg.spike_rate`` (:func:`synthetic_activity`)."""
    if cfg.activity is not None and anchor.layer in cfg.activity:
        return cfg.activity[anchor.layer]
    return synthetic_activity(anchor_shape(anchor, cfg.batch, cfg.T), cfg.spike_rate)


#: the rows of :func:`conv_rows`, in order; the baseline rows are the library's kernels before
#: spike skipping (forward ``skip_silent=False``, the position-driven weight gradient)
CONV_ROW_LABELS: tuple[str, ...] = (
    "activity pass",
    "fwd",
    "dgrad",
    "events pass",
    "wgrad",
    "fwd+bwd",
    "baseline fwd (no skip)",
    "baseline wgrad (positions)",
    "baseline fwd+bwd",
)


def conv_launches(
    anchor: CudnnAnchor, density: float, cfg: TableConfig, activity: WorkFactors | None = None
) -> dict[str, LaunchWork]:
    """Every launch of one anchor layer's training step at one weight density, by
    :data:`CONV_ROW_LABELS` label (single launches only): the two spike-events passes (the
    forward's activity pass on the forward input, the weight gradient's events pass on the saved
    spikes), the three conv kernels, and the two baselines. ``activity``: the input's structure
    (default :func:`layer_activity`)."""
    shape = anchor_shape(anchor, cfg.batch, cfg.T)
    stats = expected_mask_stats(shape, density)
    act = layer_activity(anchor, cfg) if activity is None else activity
    return {
        "activity pass": spike_events_work(shape, cfg.spike_dtype, False, act),
        "fwd": conv_fwd_work(shape, stats, cfg.spike_dtype, cfg.dtype, bias=True, activity=act),
        "dgrad": conv_dgrad_work(shape, stats, cfg.dtype, cfg.dtype),
        "events pass": spike_events_work(shape, cfg.saved_dtype, True, act),
        "wgrad": conv_wgrad_work(shape, stats, cfg.dtype, cfg.saved_dtype, act),
        "baseline fwd (no skip)": conv_fwd_work(shape, stats, cfg.spike_dtype, cfg.dtype, True),
        "baseline wgrad (positions)": conv_wgrad_positions_work(
            shape, stats, cfg.dtype, cfg.saved_dtype
        ),
    }


def conv_rows(anchor: CudnnAnchor, density: float, cfg: TableConfig) -> list[Row]:
    """The :data:`CONV_ROW_LABELS` rows of one anchor layer at one weight density: each launch,
    the training step's sum (both passes, the three kernels) and the baseline step's sum."""
    work = conv_launches(anchor, density, cfg)
    step = ["activity pass", "fwd", "dgrad", "events pass", "wgrad"]
    baseline = ["baseline fwd (no skip)", "dgrad", "baseline wgrad (positions)"]
    terms = {key: [work[key]] for key in work}
    terms["fwd+bwd"] = [work[key] for key in step]
    terms["baseline fwd+bwd"] = [work[key] for key in baseline]
    measured = {"fwd": "fwd", "fwd+bwd": "fwd+bwd"}
    return [
        _row(label, terms[label], cfg, measured=_measured(anchor, density, measured.get(label, "")))
        for label in CONV_ROW_LABELS
    ]


def lif_rows(cfg: TableConfig) -> list[tuple[str, int, list[Row]]]:
    """Per distinct VGG-16 LIF size: ``(size label, layer count, rows)``; rows are the training
    forward (spikes + h), the int8-spike forward (no h) and the backward. Last, all LIFs of one
    training step (forward with h, backward) as ``("all", 13, [row])``."""
    out, step = [], []
    sizes = vgg16_lif_sizes()
    for c, side in dict.fromkeys(sizes):
        neurons = cfg.batch * c * side * side
        fwd, bwd = lif_fwd_work(cfg.T, neurons, cfg.dtype), lif_bwd_work(cfg.T, neurons, cfg.dtype)
        int8 = lif_fwd_work(cfg.T, neurons, cfg.dtype, int8_spikes=True)
        rows = [
            _row("fwd (spikes + h)", [fwd], cfg, _LIF_KINDS),
            _row("fwd (int8 spikes)", [int8], cfg, _LIF_KINDS),
            _row("bwd", [bwd], cfg, _LIF_KINDS),
        ]
        count = sizes.count((c, side))
        out.append((f"{c}@{side}×{side}", count, rows))
        step += [fwd, bwd] * count
    out.append(("all", len(sizes), [_row("fwd + bwd, one step", step, cfg, _LIF_KINDS)]))
    return out


# ----------------------------------------------------------------------------- markdown


def _sig(x: float) -> str:
    """About 3 significant digits, no exponent."""
    if x == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


_LIF_KINDS = ("fp32_cuda",)  # elementwise: tensor cores do not apply


def _bound_cell(row: Row, key: tuple[str, str]) -> str:
    return _us(row.bounds_ms[key]) + ("" if row.memory_bound[key] else "*")


def _columns(cfg: TableConfig, kinds: Sequence[str]) -> list[str]:
    short = {"fp32_cuda": "fp32 CUDA", "bf16_tensor": "bf16 TC"}
    if len(kinds) == 1:
        return [f"{PEAKS[g].name} µs" for g in cfg.gpus]
    return [f"{PEAKS[g].name} {short[c]} µs" for g in cfg.gpus for c in kinds]


def _table(
    rows: list[tuple[list[str], Row]],
    lead: list[str],
    cfg: TableConfig,
    kinds: Sequence[str],
    conv: bool,
) -> list[str]:
    head = [*lead, "MB", "GFLOP", "FLOP/B", *_columns(cfg, kinds)]
    if conv:
        head += ["**measured** H100 µs (SPEC §8)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lead_cells, row in rows:
        cells = [
            *lead_cells,
            _sig(row.bytes_min / 1e6),
            _sig(row.flops / 1e9),
            _sig(row.flops / row.bytes_min),
            *(_bound_cell(row, k) for k in row.bounds_ms),
        ]
        if conv:
            cells.append(row.measured)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _spikes_assumption(cfg: TableConfig) -> str:
    if cfg.activity:
        layers = ", ".join(sorted(cfg.activity, key=lambda k: int(k.removeprefix("conv"))))
        source = f" ({cfg.activity_source})" if cfg.activity_source else ""
        return (
            f"- spikes: the work factors given for {layers}{source}; i.i.d. spikes at rate "
            f"r = {cfg.spike_rate:g} in the other layers' inputs."
        )
    return (
        f"- spikes: every conv input i.i.d. binary at rate r = {cfg.spike_rate:g} (an explicit, "
        "documented rate, not a measurement; no silent-map structure beyond chance), the same for "
        "the forward's and the weight gradient's passes. Each layer's heading gives its work "
        "factors: f_fwd, the fraction of forward (position block, channel) lanes with a live input "
        "map, and f_wg, weight-gradient events per output position "
        "(`ndsnn_triton.kernels.work.WorkFactors`)."
    )


def _assumptions(cfg: TableConfig) -> list[str]:
    lines = ["## Assumptions", ""]
    for g in cfg.gpus:
        p = PEAKS[g]
        lines.append(
            f"- **{p.name}**: HBM {p.hbm_tb_s} TB/s, fp32 CUDA cores {p.fp32_cuda_tflops:g} TFLOP/s, "
            f"bf16 tensor cores {p.bf16_tensor_tflops:g} TFLOP/s dense — {p.source}."
        )
    n = cfg.batch * cfg.T
    lines += [
        f"- B = {cfg.batch}, T = {cfg.T} → N = T·B = {n} samples per launch; 3×3 convs, stride 1, "
        "pad 1, with bias.",
        f"- dtypes: weights, outputs, gradients and LIF tensors {_dtype_name(cfg.dtype)}; conv "
        f"forward input spikes {_dtype_name(cfg.spike_dtype)}; spikes saved for the weight gradient "
        f"{_dtype_name(cfg.saved_dtype)}; index entries and spike events int32.",
        _spikes_assumption(cfg),
        "- launches of one training step: the *activity pass* (spike-events kernel on the forward "
        "input: reads it once, writes the non-zero count of every (sample, channel) map, N·C "
        "int32), the *fwd* (skips a kept weight for a position block whose samples are all silent "
        "in its input channel), the *dgrad* (spikes do not change it), the *events pass* "
        "(spike-events kernel on the saved spikes: also writes each channel's events, the non-zero "
        "inputs at usable positions, one int32 each, and their counts) and the event-driven "
        "*wgrad* (each kept weight of an input channel × each event of that channel). *baseline*: "
        "the kernels before spike skipping, benchmarked beside them — forward with "
        "`skip_silent=False` (every lane live) and the position-driven weight gradient "
        "(`ndsnn_triton.kernels.position_wgrad`: every kept weight × every output position).",
        "- bytes: each input read once and each output written once (HBM), plus the kept weights and "
        "the sparse index the kernel walks. Gathers re-read from L1/L2, not counted: the forward reads "
        "the fraction f_fwd of the input some kept weight reaches, plus the activity; the wgrad "
        "reads its events, the saved input at the events and each distinct dY element its m (kept "
        "weight, event) pairs gather — D·(1 − e^(−m/D)) of the D = N·(dY elements the mask "
        "reaches) — and writes fp32 partial sums [chunks, nnz]. Input elements no kept weight "
        "reaches are not counted: expected value for a uniformly random mask, "
        "nnz = round(d·Cout·Cin·9).",
        "- FLOPs: 2 per executed MAC (`ndsnn_triton.kernels.work`; bias adds not counted): fwd "
        "2·N·OH·OW·nnz·f_fwd, dgrad and baseline wgrad 2·N·OH·OW·nnz, wgrad 2·Σ_c kept_c·E_c = "
        "2·N·OH·OW·nnz·f_wg (kept weights spread evenly over input channels), baseline fwd "
        "2·N·OH·OW·nnz; the passes none.",
        "- bound = max(bytes / HBM bandwidth, FLOPs / peak); `*` marks a compute-bound value "
        "(sums: a compute-bound launch in it; otherwise memory-bound). fwd+bwd is the sum of the "
        "five launches' bounds, baseline fwd+bwd of baseline fwd, dgrad and baseline wgrad. The "
        "library's kernels run on CUDA cores (fp32 accumulate): the fp32 CUDA column is their bound; "
        "the bf16 tensor-core column is the bound of a dense tensor-core kernel (cuDNN's).",
        "- Not in the bounds: launch overhead (a few µs per launch), bias gradient, the weight-"
        "gradient launcher's reduction (table below), index rebuilds on mask changes.",
    ]
    return lines


def _activity_note(anchor: CudnnAnchor, cfg: TableConfig) -> str:
    act = layer_activity(anchor, cfg)
    source = (
        "given"
        if cfg.activity is not None and anchor.layer in cfg.activity
        else f"i.i.d. r = {cfg.spike_rate:g}"
    )
    return (
        f"Spikes ({source}): rate {_sig(act.rate)}, f_fwd = {act.forward:.3f}, "
        f"f_wg = {act.weight_grad:.3f}."
    )


def render_markdown(cfg: TableConfig | None = None) -> str:
    """The roofline tables of SPEC §8's VGG-16 layers and the VGG-16 LIF sizes, as markdown."""
    cfg = cfg or TableConfig()
    lines = [
        "# Roofline lower bounds per kernel launch — model, not measurement",
        "",
        "> **Model, not measurement.** Bytes, FLOPs and µs bounds below are computed from shapes, "
        "dtypes, spike rates and published peak rates (`ndsnn_triton.profiler.roofline`). The only "
        "measured numbers are SPEC §8's H100 times, in the column marked **measured**.",
        "",
        f"Generated by `ndsnn roofline` (ndsnn_triton {__version__}); do not edit by hand.",
        "",
        *_assumptions(cfg),
        "",
        "## Conv layers of VGG-16 (SPEC §8 shapes), per launch",
    ]
    for anchor in SPEC_H100_ANCHORS:
        lines += ["", f"### {anchor.layer} {anchor.cin}→{anchor.cout} @{anchor.hw}×{anchor.hw}", ""]
        lines += [_activity_note(anchor, cfg), ""]
        rows = [
            ([f"{d:g}", row.label], row) for d in cfg.densities for row in conv_rows(anchor, d, cfg)
        ]
        lines += _table(rows, ["density", "launch"], cfg, COMPUTE_KINDS, conv=True)
    lines += ["", *_sweep_section(cfg), "", *_wgrad_extra_section(cfg), "", *_lif_section(cfg)]
    lines += ["", *_usage_section(), ""]
    return "\n".join(lines)


def _lif_section(cfg: TableConfig) -> list[str]:
    lif = [
        ([size, str(count), row.label], row) for size, count, rows in lif_rows(cfg) for row in rows
    ]
    return [
        "## LIF layers of VGG-16, per launch (T loop fused)",
        "",
        f"Neurons per launch B·C·H·W, T = {cfg.T}; memory-bound (fp32 CUDA-core compute). "
        "`layers`: how many LIFs of VGG-16 have this size.",
        "",
        *_table(lif, ["C@H×W", "layers", "launch"], cfg, _LIF_KINDS, conv=False),
    ]


def _sweep_section(cfg: TableConfig) -> list[str]:
    """Spike skipping against the baselines across i.i.d. spike rates, at one density."""
    first = PEAKS[cfg.gpus[0]]
    name = f"{first.name} fp32 CUDA µs"
    lines = [
        f"## Spike skipping across spike rates, density {cfg.sweep_density:g}",
        "",
        f"I.i.d. spikes at each rate r; bounds on {first.name}, fp32 CUDA cores. *fwd* and *wgrad* "
        "include their spike-events pass (activity pass, events pass); *baseline* is the kernel "
        "without skipping. f_fwd, f_wg: the work factors (Assumptions).",
        "",
        f"| layer | r | f_fwd | f_wg | fwd MB | fwd GFLOP | fwd {name} | baseline fwd {name} "
        f"| wgrad MB | wgrad GFLOP | wgrad FLOP/B | wgrad {name} | baseline wgrad MB "
        f"| baseline wgrad GFLOP | baseline wgrad {name} |",
        "|" + "---|" * 15,
    ]
    for anchor in SPEC_H100_ANCHORS:
        shape = anchor_shape(anchor, cfg.batch, cfg.T)
        for rate in cfg.sweep_rates:
            act = synthetic_activity(shape, rate)
            work = conv_launches(anchor, cfg.sweep_density, cfg, act)
            fwd = [work["activity pass"], work["fwd"]]
            wgrad = [work["events pass"], work["wgrad"]]
            base_fwd, base_wgrad = (
                work["baseline fwd (no skip)"],
                work["baseline wgrad (positions)"],
            )
            wg_bytes = sum(w.bytes_min for w in wgrad)

            def us(works: list[LaunchWork]) -> str:
                return _us(total_roofline_ms(works, first, "fp32_cuda"))

            lines.append(
                f"| {anchor.layer} | {rate:g} | {act.forward:.3f} | {act.weight_grad:.3f} "
                f"| {_sig(sum(w.bytes_min for w in fwd) / 1e6)} | {_sig(work['fwd'].flops / 1e9)} "
                f"| {us(fwd)} | {us([base_fwd])} | {_sig(wg_bytes / 1e6)} "
                f"| {_sig(work['wgrad'].flops / 1e9)} | {_sig(work['wgrad'].flops / wg_bytes)} "
                f"| {us(wgrad)} | {_sig(base_wgrad.bytes_min / 1e6)} "
                f"| {_sig(base_wgrad.flops / 1e9)} | {us([base_wgrad])} |"
            )
    return lines


def _wgrad_extra_section(cfg: TableConfig) -> list[str]:
    lines = [
        "## Weight-gradient launcher: bytes beyond the minimum",
        "",
        "The minimum writes nnz gradient values; each launcher zero-fills and writes fp32 partial "
        "sums [chunks, cap] (the event-driven kernel: sample chunks of the spike-events pass; the "
        "position-driven baseline: position chunks), reduces them, and scatters into a zero-filled "
        "dense fp32 gradient cast to the gradient dtype (5–6 launches). Bytes of that pipeline "
        "(cap = nnz):",
        "",
        "| layer | density | chunks | pipeline MB | baseline chunks | baseline pipeline MB "
        "| minimum write MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for anchor in SPEC_H100_ANCHORS:
        shape = anchor_shape(anchor, cfg.batch, cfg.T)
        for d in cfg.densities:
            nnz = max(1, expected_mask_stats(shape, d).nnz)
            events = sum(wgrad_launcher_bytes(shape, nnz, cfg.dtype).values())
            positions = sum(wgrad_launcher_bytes(shape, nnz, cfg.dtype, positions=True).values())
            lines.append(
                f"| {anchor.layer} | {d:g} | {wgrad_chunks(shape, nnz)} | {_sig(events / 1e6)} "
                f"| {wgrad_positions_chunks(shape, nnz)} | {_sig(positions / 1e6)} "
                f"| {_sig(nnz * dtype_bytes(cfg.dtype) / 1e6)} |"
            )
    return lines


def _usage_section() -> list[str]:
    return [
        "## Rating a measured kernel",
        "",
        "```python",
        "from ndsnn_triton.kernels.work import work_factors",
        "from ndsnn_triton.profiler.roofline import PEAKS, achieved_fraction, conv_fwd_work, mask_stats",
        "",
        "activity = work_factors(x, (3, 3), (1, 1), (1, 1), (1, 1), weight.shape[0])",
        "work = conv_fwd_work(shape, mask_stats(mask, shape), x.dtype, weight.dtype, activity=activity)",
        'fraction = achieved_fraction(measured_ms, work, PEAKS["h100"])  # goal: ≥ 0.5 at 99 %',
        "```",
        "",
        "Goals: ≥ 50 % of this bound for the sparse conv kernels at 99 % sparsity, ≥ 70 % of HBM "
        "bandwidth for LIF.",
    ]
