"""Predicted time of the library's kernel launches and of the dense cuDNN path on a GPU — a *model*,
calibrated on recorded GPU measurements, never a measurement itself.

Per launch (:class:`LaunchCost`, from the launchers' own plans) the model counts

* ``bytes``: the minimum HBM traffic (every tensor read or written once, in its dtype);
* ``flops``: 2 per multiply-accumulate the kernel executes (:mod:`ndsnn_triton.kernels.work`);
* ``lanes``: the load lanes the program issues (gathers and streams, masked-off lanes included:
  an instruction is issued per warp whatever its mask);
* ``chain``: dependent global round trips, summed over programs — what a program must wait for
  one after another (loop iterations × loads that depend on each other).

and predicts ``max(bytes / bandwidth, flops / peak, lanes / load rate, chain · t_dep /
concurrency) + launch overhead`` (:func:`predict`), the *latency term* ``chain · t_dep /
concurrency`` standing beside the roofline's bytes and FLOPs: a kernel whose programs walk long
chains of dependent loads is latency-bound however few bytes it moves. ``concurrency`` is the
programs the GPU holds at once (SMs × resident warps / warps per program).

``t_dep`` — one dependent global load under load — is fitted on the recorded H200 forward times of
the kernels this library shipped before (:data:`CALIBRATION`; each walked a row's kept weights one
at a time, three dependent loads per weight); ``ndsnn_triton.profiler.roofline`` re-derives it
from ``bench/results/spike_skipping-NVIDIA_H200.json`` and reports the error per layer. The dense
path (cuDNN) is fitted the same way (:data:`DENSE_FITS`). Inputs the model cannot know at a call
(the spike rate the weight gradient meets) take documented priors. The ``auto`` backend picks
between the sparse kernels and the dense path with it (:mod:`ndsnn_triton.kernels.dispatch`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ndsnn_triton.kernels.launch import KernelLaunch
from ndsnn_triton.kernels.sparse_index import REDUCE_BLOCK
from ndsnn_triton.kernels.spike_conv import (
    conv_dgrad_plan,
    conv_fwd_plan,
    conv_wgrad_plan,
    wgrad_reduce_plan,
)
from ndsnn_triton.kernels.triton_utils import cdiv
from ndsnn_triton.kernels.work import out_hw, usable_rows

INDEX_BYTES = 4  # int32 index entries

# ----------------------------------------------------------------------------- GPUs


@dataclass(frozen=True)
class Gpu:
    """Peak rates of one GPU (datasheet): HBM in TB/s (10¹² B/s, read + write together), compute
    in TFLOP/s (fp32 on CUDA cores, dense bf16 on tensor cores), clock in GHz (boost), and the
    per-SM limits the latency term uses."""

    name: str
    sms: int
    clock_ghz: float
    hbm_tb_s: float
    fp32_tflops: float
    bf16_tflops: float
    max_warps_per_sm: int = 64
    registers_per_sm: int = 65536
    #: load lanes the L1 accepts per SM and cycle (one warp-wide load instruction per cycle): an
    #: assumption from the SM's load/store throughput, not fitted
    load_lanes_per_clk: int = 32
    source: str = ""

    @property
    def load_lanes_per_us(self) -> float:
        return self.sms * self.load_lanes_per_clk * self.clock_ghz * 1e3


#: NVIDIA H100 SXM5 80 GB and H200 SXM 141 GB datasheets (same GH100 compute; HBM3 vs HBM3e)
GPUS: dict[str, Gpu] = {
    "H100": Gpu("H100 SXM", 132, 1.98, 3.35, 67.0, 989.0, source="NVIDIA H100 datasheet (SXM5)"),
    "H200": Gpu("H200 SXM", 132, 1.98, 4.8, 67.0, 989.0, source="NVIDIA H200 datasheet (SXM)"),
}


def gpu_for(device_name: str) -> Gpu:
    """The :data:`GPUS` entry a CUDA device name matches (H200 before H100; default H100)."""
    upper = device_name.upper()
    return next((g for key, g in sorted(GPUS.items(), reverse=True) if key in upper), GPUS["H100"])


# ----------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """The model's fitted and assumed constants."""

    #: µs per dependent global load under load: fitted on the recorded H200 forward of the
    #: serial-gather kernels (8 VGG-16 layers at density 0.01, each within 11 % of the fit)
    t_dep_us: float = 0.330
    #: µs a launch costs beyond its work (assumed: back-to-back launches on one stream)
    launch_us: float = 2.0
    #: fraction of an SM's warps resident while a conv kernel without a register cap runs (its
    #: compiled code stays at or under 64 registers on 4 warps, tests/test_aot_compile.py); a
    #: capped kernel holds what its cap leaves room for
    occupancy: float = 0.5
    source: str = (
        "t_dep fitted on bench/results/spike_skipping-NVIDIA_H200.json (triton_fwd_noskip, "
        "kernels of commit 0686523); launch overhead and occupancy assumed"
    )


CALIBRATION = Calibration()


# ----------------------------------------------------------------------------- launch costs


@dataclass(frozen=True)
class ConvShape:
    """A convolution launch: ``x [n, cin, h, w]`` (n = T·B), ``weight [cout, cin, kh, kw]``."""

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
        """A linear layer ``[n, fin] -> [n, fout]`` as the 1×1 convolution the kernels run."""
        return cls(n, fin, 1, 1, fout, 1, 1, (1, 1), (0, 0), (1, 1))

    @property
    def oh(self) -> int:
        return out_hw(self.h, self.w, self.kh, self.kw, self.stride, self.padding, self.dilation)[0]

    @property
    def ow(self) -> int:
        return out_hw(self.h, self.w, self.kh, self.kw, self.stride, self.padding, self.dilation)[1]

    @property
    def weights(self) -> int:
        return self.cout * self.cin * self.kh * self.kw

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.cin, self.h, self.w)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.cout, self.cin, self.kh, self.kw)

    def usable_positions(self) -> int:
        """Input positions per map some tap maps onto an output (where events are kept)."""
        s, p, d = self.stride, self.padding, self.dilation
        rows = usable_rows(self.h, self.oh, self.kh, s[0], p[0], d[0])
        cols = usable_rows(self.w, self.ow, self.kw, s[1], p[1], d[1])
        return int(rows.sum()) * int(cols.sum())


@dataclass(frozen=True)
class Spikes:
    """What the model needs of a layer's spike input: the rate (non-zero fraction) and the
    fraction of ``(sample, channel)`` maps holding a spike. Defaults: dense input."""

    rate: float = 1.0
    active_maps: float = 1.0


#: the spike rate the ``auto`` choice assumes for a weight gradient it prices before the spikes
#: exist (the upper end of the measured VGG-16 layer rates, 0.08–0.23)
PRIOR_RATE = 0.15


@dataclass(frozen=True)
class LaunchCost:
    """What one launch must do (see the module docstring) and the plan it runs."""

    kernel: str
    bytes: float
    flops: float
    lanes: float
    chain: float
    programs: int
    warps: int
    traffic: dict[str, float] = field(default_factory=dict)
    #: the plan's register cap per thread (None: the kernel stays at or under 64 uncapped)
    max_registers: int | None = None


@functools.lru_cache(maxsize=4096)
def expected_chunks(total: int, density: float, block: int, at_least: int = 0) -> float:
    """``E[max(at_least, ceil(L / block))]`` for ``L ~ Binomial(total, density)``: gather
    iterations of a row (column) of ``total`` weights under a uniformly random mask (the
    pipelined kernels give an empty row one iteration: ``at_least=1``)."""
    if density >= 1.0:
        return float(max(at_least, cdiv(total, block)))
    if density <= 0.0 or total == 0:
        return float(at_least)
    k = torch.arange(total + 1, dtype=torch.float64)
    pmf = torch.distributions.Binomial(total, torch.tensor(density, dtype=torch.float64))
    probs = pmf.log_prob(k).exp()
    return float((probs * torch.ceil(k / block).clamp(min=at_least)).sum())


def _b(elements: float, dtype: torch.dtype) -> float:
    return elements * dtype.itemsize


def _cost(
    launch: KernelLaunch, traffic: dict[str, float], flops: float, lanes: float, chain: float
):
    return LaunchCost(
        launch.name, sum(traffic.values()), flops, lanes, chain, launch.programs, launch.num_warps,
        traffic, launch.max_registers,
    )  # fmt: skip


def conv_fwd_cost(
    shape: ConvShape,
    nnz: int,
    x_dtype: torch.dtype,
    w_dtype: torch.dtype,
    y_dtype: torch.dtype,
    spikes: Spikes | None = None,
    bias: bool = False,
    skip: bool = True,
) -> LaunchCost:
    """``_conv_fwd_kernel``: per program one software-pipelined loop over its ``ROWS`` rows'
    chunks of ``BLOCK_K`` kept weights (``E[max(1, ceil(row / BLOCK_K))]`` per row): a chunk's
    column indices are loaded two iterations ahead and its weights and activity one ahead, so
    each iteration waits for one gather (chain 1 per item, plus 2 to fill the pipeline). Reads
    the input once (live maps only when skipping), the kept weights and the CSR index; writes
    ``y``."""
    spikes = spikes or Spikes()
    launch = conv_fwd_plan(
        shape.x_shape, shape.w_shape, shape.stride, shape.padding, shape.dilation, x_dtype,
        w_dtype, y_dtype, bias, skip, nnz,
    )  # fmt: skip
    c = launch.constexprs
    density = nnz / max(shape.weights, 1)
    per_row = expected_chunks(shape.cin * shape.kh * shape.kw, density, c["BLOCK_K"], 1)
    tiles = launch.grid[0]
    live = spikes.active_maps if c["SKIP"] else 1.0
    out = shape.n * shape.cout * shape.oh * shape.ow
    traffic = {
        "read x": _b(shape.n * shape.cin * shape.h * shape.w * live, x_dtype),
        "read kept weights + col_idx": _b(nnz, w_dtype) + INDEX_BYTES * nnz,
        "read row_ptr + row_order": INDEX_BYTES * (2 * shape.cout + 1),
        "read activity": shape.n * shape.cin if c["SKIP"] else 0,
        "write y": _b(out, y_dtype),
    }
    iterations = tiles * shape.cout * per_row
    lanes = iterations * c["BLOCK_K"] * (c["S"] * c["Q"] + (c["S"] if c["SKIP"] else 0) + 2)
    lanes += out  # the store
    flops = 2 * nnz * shape.n * shape.oh * shape.ow * live
    return _cost(launch, traffic, flops, lanes, iterations + 2 * launch.programs)


def conv_dgrad_cost(
    shape: ConvShape, nnz: int, dy_dtype: torch.dtype, w_dtype: torch.dtype
) -> LaunchCost:
    """``_conv_dgrad_kernel``: per program one software-pipelined loop over its ``CHANS`` input
    channels' chunks of ``BLOCK_K`` kept weights (``E[max(1, ceil(column / BLOCK_K))]`` per
    channel): a chunk's transpose-index entries are loaded one iteration ahead, so each waits
    for its weights and dY gather only (chain 1 per item, plus 1 to fill). Reads dY once,
    writes dX."""
    launch = conv_dgrad_plan(
        shape.x_shape, shape.w_shape, shape.stride, shape.padding, shape.dilation, dy_dtype,
        w_dtype, nnz,
    )  # fmt: skip
    c = launch.constexprs
    density = nnz / max(shape.weights, 1)
    per_chan = expected_chunks(shape.cout * shape.kh * shape.kw, density, c["BLOCK_K"], 1)
    iterations = launch.grid[0] * shape.cin * per_chan
    dx = shape.n * shape.cin * shape.h * shape.w
    traffic = {
        "read dy": _b(shape.n * shape.cout * shape.oh * shape.ow, dy_dtype),
        "read kept weights + t_row_idx + t_col_idx": _b(nnz, w_dtype) + 2 * INDEX_BYTES * nnz,
        "read col_ptr + group_order": INDEX_BYTES
        * (shape.cin * shape.kh * shape.kw + shape.cin + 1),
        "write dx": _b(dx, dy_dtype),
    }
    lanes = iterations * c["BLOCK_K"] * (c["S"] * c["Q"] + 3) + dx
    flops = 2 * nnz * shape.n * shape.h * shape.w
    return _cost(launch, traffic, flops, lanes, iterations + launch.programs)


def conv_wgrad_cost(
    shape: ConvShape,
    nnz: int,
    dy_dtype: torch.dtype,
    spikes: Spikes | None = None,
    bias: bool = False,
) -> LaunchCost:
    """``_conv_wgrad_kernel``: per (chunk, input channel) program and block of the channel's kept
    weights, one loop over the chunk's compaction tiles with the next tile's input prefetched: a
    tile costs its block scan (half a round trip, barriers included) and, if it holds events,
    the scratch round trip and one dY gather per block of ``BLOCK_Q`` events. Reads the input
    once and dY at the events (each distinct element once), writes the ``[cap, chunks]`` partial
    sums; the bias programs stream dY once. FLOPs ``2·nnz·E/C`` with ``E`` the events."""
    spikes = spikes or Spikes()
    launch = conv_wgrad_plan(
        shape.x_shape, shape.w_shape, shape.stride, shape.padding, shape.dilation, nnz, dy_dtype,
        torch.int8, bias,
    )  # fmt: skip
    c, v = launch.constexprs, launch.values
    chunks, spc = v["CHUNKS"], v["SPC"]
    density = nnz / max(shape.weights, 1)
    entry_blocks = expected_chunks(shape.cout * shape.kh * shape.kw, density, c["BLOCK_E"])
    tile = c["TS"] * c["TQ"]
    tiles = cdiv(spc, c["TS"]) * cdiv(shape.h * shape.w, c["TQ"])
    usable = shape.usable_positions() / (shape.h * shape.w)
    events_per_tile = spikes.rate * usable * tile
    # a tile holds events unless its maps are silent or, in a live map, its positions are
    live_rate = spikes.rate / max(spikes.active_maps, 1e-9)
    live = spikes.active_maps * -math.expm1(tile * usable * math.log1p(-min(live_rate, 1.0 - 1e-9)))
    blocks = max(1.0, math.ceil(events_per_tile / max(live, 1e-9) / c["BLOCK_Q"]))
    programs = chunks * shape.cin
    chain = programs * entry_blocks * (tiles * (0.5 + live * (1 + blocks)) + 1)
    events = spikes.rate * shape.n * shape.cin * shape.usable_positions()
    pairs = nnz * events / max(shape.cin, 1)
    lanes = (
        programs
        * entry_blocks
        * tiles
        * (2 * tile + live * blocks * (c["BLOCK_E"] + 1) * c["BLOCK_Q"])
    )
    dy_total = shape.n * shape.cout * shape.oh * shape.ow
    gathered = dy_total * -math.expm1(-pairs / dy_total) if dy_total else 0.0
    traffic = {
        "read x (int8)": shape.n * shape.cin * shape.h * shape.w,
        "read dy at events": _b(gathered, dy_dtype),
        "read CSC index": INDEX_BYTES * (shape.cin * shape.kh * shape.kw + 1 + 3 * nnz),
        "write partials": 4 * nnz * chunks,
    }
    if bias:
        traffic["read dy (bias)"] = _b(dy_total, dy_dtype)
        lanes += dy_total
        chain += chunks * shape.cout * cdiv(spc * shape.oh * shape.ow, c["BS"] * c["BQ"])
    return _cost(launch, traffic, 2 * pairs, lanes, chain)


def wgrad_reduce_cost(
    shape: ConvShape, nnz: int, chunks: int, grad_dtype: torch.dtype, bias: bool = False
) -> LaunchCost:
    """``_wgrad_reduce_kernel``: per (column tile, row) program a chain of 3 (mask → partials →
    store); reads the mask and the partials, writes the dense gradient in its dtype."""
    launch = wgrad_reduce_plan(shape.w_shape, chunks, grad_dtype, bias)
    k = shape.cin * shape.kh * shape.kw
    traffic = {
        "read mask": shape.weights,
        "read tile_base + row_ptr": INDEX_BYTES * (shape.cout * cdiv(k, REDUCE_BLOCK) + shape.cout),
        "read partials": 4 * nnz * chunks,
        "write gradient": _b(shape.weights, grad_dtype),
    }
    lanes = 2 * shape.weights + nnz * chunks
    return _cost(
        launch, traffic, 0.0, lanes, launch.programs * (2 + cdiv(chunks, launch.constexprs["CB"]))
    )


def conv_train_costs(
    shape: ConvShape,
    nnz: int,
    dtype: torch.dtype,
    w_dtype: torch.dtype = torch.float32,
    spikes: Spikes | None = None,
    bias: bool = False,
) -> dict[str, LaunchCost]:
    """The four launches of one spiking conv layer in training (the companion given: int8
    input, activity): forward, input gradient, weight gradient and its reduce."""
    wgrad = conv_wgrad_cost(shape, nnz, dtype, spikes, bias)
    chunks = conv_wgrad_plan(
        shape.x_shape, shape.w_shape, shape.stride, shape.padding, shape.dilation, nnz, dtype,
        torch.int8, bias,
    ).values["CHUNKS"]  # fmt: skip
    return {
        "fwd": conv_fwd_cost(shape, nnz, torch.int8, w_dtype, dtype, spikes, bias),
        "dgrad": conv_dgrad_cost(shape, nnz, dtype, w_dtype),
        "wgrad": wgrad,
        "reduce": wgrad_reduce_cost(shape, nnz, chunks, w_dtype, bias),
    }


# ----------------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class Prediction:
    """Predicted µs of a launch: each term and their combination."""

    hbm_us: float
    flop_us: float
    load_us: float
    latency_us: float
    launch_us: float

    @property
    def total_us(self) -> float:
        return max(self.hbm_us, self.flop_us, self.load_us, self.latency_us) + self.launch_us

    @property
    def bound(self) -> str:
        terms = {
            "hbm": self.hbm_us,
            "flops": self.flop_us,
            "loads": self.load_us,
            "latency": self.latency_us,
        }
        return max(terms, key=terms.get)

    @property
    def roofline_us(self) -> float:
        """The classic roofline bound: ``max(bytes / bandwidth, flops / peak)``."""
        return max(self.hbm_us, self.flop_us)


def concurrency(
    gpu: Gpu, warps: int, calib: Calibration = CALIBRATION, max_registers: int | None = None
) -> int:
    """Programs of ``warps`` warps the GPU holds at once (at least one per SM): the assumed
    occupancy, or what a register cap of ``max_registers`` per thread leaves room for."""
    per_sm = int(gpu.max_warps_per_sm * calib.occupancy) // max(warps, 1)
    if max_registers is not None:
        per_sm = gpu.registers_per_sm // (max_registers * warps * 32)
    return gpu.sms * max(1, min(32, per_sm))


def predict(cost: LaunchCost, gpu: Gpu, calib: Calibration = CALIBRATION) -> Prediction:
    """:class:`Prediction` of one launch (fp32 CUDA-core FLOPs: the sparse kernels use no
    tensor cores)."""
    if cost.programs == 0:
        return Prediction(0.0, 0.0, 0.0, 0.0, 0.0)
    held = concurrency(gpu, cost.warps, calib, cost.max_registers)
    # a program's chain cannot be shared out: at least one program's worth of latency
    per_program = cost.chain / cost.programs
    latency = max(cost.chain / held, per_program) * calib.t_dep_us
    return Prediction(
        hbm_us=cost.bytes / (gpu.hbm_tb_s * 1e6),
        flop_us=cost.flops / (gpu.fp32_tflops * 1e6),
        load_us=cost.lanes / gpu.load_lanes_per_us,
        latency_us=latency,
        launch_us=calib.launch_us,
    )


# ----------------------------------------------------------------------------- the dense path


@dataclass(frozen=True)
class DenseFit:
    """cuDNN time of a convolution, ``overhead + FLOPs / rate + bytes / bandwidth`` (µs, with
    GFLOP and MB), fitted per GPU, compute dtype and direction on recorded measurements."""

    overhead_us: float
    us_per_gflop: float
    us_per_mb: float

    def us(self, gflop: float, mb: float) -> float:
        return self.overhead_us + self.us_per_gflop * gflop + self.us_per_mb * mb


#: ``(gpu key, compute, direction)`` -> fit; compute is ``fp32``, ``tf32`` or ``bf16``, direction
#: ``fwd`` or ``bwd`` (input and weight gradient together). Fitted by
#: ``ndsnn_triton.profiler.roofline.fit_dense`` on the cuDNN columns of
#: ``bench/results/spike_skipping-NVIDIA_H200.json`` (8 VGG-16 layers, B 64, T 5; errors per
#: layer in docs/roofline.md, up to ±36 %: cuDNN's backward barely follows FLOPs or bytes); a
#: test keeps these numbers equal to a fresh fit. Other GPUs use the H200 fit scaled by bandwidth.
DENSE_FITS: dict[tuple[str, str, str], DenseFit] = {
    ("H200", "fp32", "fwd"): DenseFit(167.3848, 19.5493, 0.0),
    ("H200", "fp32", "bwd"): DenseFit(314.9146, 26.4552, 2.0282),
    ("H200", "tf32", "fwd"): DenseFit(34.3206, 1.7501, 0.7302),
    ("H200", "tf32", "bwd"): DenseFit(278.2006, 0.0, 0.9722),
    ("H200", "bf16", "fwd"): DenseFit(35.075, 0.9925, 0.7682),
    ("H200", "bf16", "bwd"): DenseFit(313.8617, 0.0, 0.0),
}

#: the recorded cuDNN medians themselves (µs, H200, B 64, T 5, 3×3 stride 1 pad 1), used for
#: these shapes instead of the fit: ``shape -> {compute: (fwd, fwd + bwd)}``; kept equal to the
#: file by a test
_H200_MEASURED_ROWS = {
    (64, 32, 64): {"fp32": (591.8, 2358.0), "tf32": (244.9, 822.8), "bf16": (147.2, 428.9)},
    (64, 16, 128): {"fp32": (357.0, 974.1), "tf32": (91.0, 352.4), "bf16": (63.3, 373.1)},
    (128, 16, 128): {"fp32": (666.5, 1680.5), "tf32": (132.1, 474.9), "bf16": (89.7, 387.7)},
    (128, 8, 256): {"fp32": (368.3, 1286.0), "tf32": (68.7, 480.1), "bf16": (51.4, 543.1)},
    (256, 8, 256): {"fp32": (642.6, 1582.7), "tf32": (107.7, 417.7), "bf16": (71.5, 403.7)},
    (256, 4, 512): {"fp32": (411.4, 1067.4), "tf32": (70.4, 355.0), "bf16": (57.9, 350.9)},
    (512, 4, 512): {"fp32": (812.5, 2020.5), "tf32": (109.2, 401.1), "bf16": (79.9, 344.8)},
    (512, 2, 512): {"fp32": (326.5, 864.0), "tf32": (65.8, 503.3), "bf16": (55.3, 501.9)},
}
DENSE_MEASURED: dict[tuple[str, ConvShape], dict[str, tuple[float, float]]] = {
    ("H200", ConvShape(320, cin, hw, hw, cout)): row
    for (cin, hw, cout), row in _H200_MEASURED_ROWS.items()
}


def dense_compute(dtype: torch.dtype, allow_tf32: bool) -> str:
    """The cuDNN compute a dtype runs in: ``bf16`` (bf16/fp16), ``tf32`` or ``fp32``."""
    if dtype in (torch.bfloat16, torch.float16):
        return "bf16"
    return "tf32" if allow_tf32 else "fp32"


def dense_traffic_mb(shape: ConvShape, dtype: torch.dtype) -> float:
    """MB a dense convolution streams: input, output and weight once each, in ``dtype``."""
    elems = shape.n * (shape.cin * shape.h * shape.w + shape.cout * shape.oh * shape.ow)
    return (elems + shape.weights) * dtype.itemsize / 1e6


def dense_us(
    shape: ConvShape, dtype: torch.dtype, direction: str, gpu: Gpu, allow_tf32: bool = False
) -> float:
    """Predicted cuDNN µs of one dense convolution of ``shape`` (``fwd``, or ``bwd``: both
    gradients) in ``dtype``."""
    compute = dense_compute(dtype, allow_tf32)
    if shape.h == shape.w == shape.kh == shape.kw == 1:  # a linear layer: cuBLAS
        return _gemm_us(shape, dtype, direction, gpu, compute)
    key = next((k for k in GPUS if k in gpu.name.upper()), "H200")
    measured = DENSE_MEASURED.get((key, shape))
    if measured is not None:
        fwd, fwd_bwd = measured[compute]
        return fwd if direction == "fwd" else fwd_bwd - fwd
    gflop = 2 * shape.weights * shape.n * shape.oh * shape.ow / 1e9
    fit = DENSE_FITS.get((key, compute, direction))
    scale = 1.0
    if fit is None:
        fit = DENSE_FITS[("H200", compute, direction)]
        scale = GPUS["H200"].hbm_tb_s / gpu.hbm_tb_s
    return fit.us(gflop, dense_traffic_mb(shape, dtype)) * scale


#: fraction of peak a cuBLAS GEMM of a spiking network's small linear layers reaches (assumed)
GEMM_EFFICIENCY = 0.5


def _gemm_us(shape: ConvShape, dtype: torch.dtype, direction: str, gpu: Gpu, compute: str) -> float:
    """cuBLAS on a linear layer's GEMMs (one forward, two backward): roofline at
    :data:`GEMM_EFFICIENCY` of peak, plus a launch each — no cuBLAS measurement is recorded."""
    gemms = 1 if direction == "fwd" else 2
    gflop, mb = flops_and_bytes(shape, dtype)
    peak = (
        gpu.bf16_tflops if compute == "bf16" else gpu.fp32_tflops * (8 if compute == "tf32" else 1)
    )
    per = max(mb / (gpu.hbm_tb_s * 1e6) * 1e6, gflop / (peak * GEMM_EFFICIENCY) * 1e3)
    return gemms * (per + CALIBRATION.launch_us)


def flops_and_bytes(shape: ConvShape, dtype: torch.dtype) -> tuple[float, float]:
    """``(GFLOP, MB)`` of a dense forward of ``shape`` (the fit's regressors)."""
    return 2 * shape.weights * shape.n * shape.oh * shape.ow / 1e9, dense_traffic_mb(shape, dtype)


def shape_of(
    x_shape: Sequence[int], w_shape: Sequence[int], stride, padding, dilation
) -> ConvShape:
    """A :class:`ConvShape` from tensor shapes and the convolution's geometry."""
    n, c, h, w = (int(v) for v in x_shape)
    oc, _, kh, kw = (int(v) for v in w_shape)
    return ConvShape(n, c, h, w, oc, kh, kw, tuple(stride), tuple(padding), tuple(dilation))
