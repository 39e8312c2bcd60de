"""Per-kernel benchmarks on the VGG-16 and ResNet-19 layer shapes (B = 64, T = 5).

Each conv case times the sparse Triton kernels — the spike-skipping forward, the input gradient,
the event-driven weight gradient, and on their own the two spike-events passes their launchers
run (the forward's activity pass, the weight gradient's events pass) — and, in the same run, the
baseline kernels before spike skipping (forward with ``skip_silent=False``, the position-driven
weight gradient of ``ndsnn_triton.kernels.position_wgrad``), cuDNN (dense conv on the masked
weights: fp32 with TF32 off, tf32, bf16, ``cudnn.benchmark=True``; flags pinned per case and
restored) and torch.sparse CSR, with ``triton.testing.do_bench`` medians and quantiles;
pytest-benchmark times a synchronising call of the Triton forward + backward. Rows carry the
input's spike structure (rate, silent maps, the kernels' work factors and executed MACs) and each
launch's roofline bound (``ndsnn_triton.profiler.roofline``) → ``kernels-<device>.json``.

Conv and LIF grids (i.i.d. spikes) — GPU cases: 54 by default — 51 conv cases (13 layers ×
densities 1, 0.1, 0.01 at spike rate 0.1, plus rates 0.05 and 0.2 on vgg.conv2 and vgg.conv9) and
3 LIF shapes; do_bench warm-up 5 ms, rep 25 ms. ``NDSNN_BENCH_FULL=1``: 159 cases (every layer at
densities 1, 0.1, 0.05, 0.01 and rates 0.05, 0.1, 0.2), warm-up 10 ms, rep 50 ms.
``tests/test_bench_results.py`` checks these counts against the grids below.

Spike-skipping grid (``test_spike_skipping``, also under ``NDSNN_BENCH_FULL=1``): the 8 VGG-16
layers at densities 0.1 and 0.01 on synthetic spikes with a measured structure — per layer input
the spike rate, the silent (sample, channel) maps and the channels silent in every sample of
``bench/results/spike_structure.json`` (trained VGG-16, train mode) — or, while that file is
absent, i.i.d. spikes at the documented rates 0.02 and 0.1; and on every layer a sweep of
silent-map fractions (:data:`SILENT_SWEEP`: half the maps silent at overall rate 0.05, 90 % at
0.01): 48 cases with the file, 64 without; see :func:`skip_cases`.
→ ``spike_skipping-<device>.json``.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import pytest
import torch
import torch.nn.functional as F

import ndsnn_triton
from bench.conftest import BENCH_FULL, RESULTS_DIR, pinned_flags, record
from ndsnn_triton.kernels.lif import (
    lif_backward_ref,
    lif_backward_triton,
    lif_forward_ref,
    lif_forward_triton,
)
from ndsnn_triton.kernels.position_wgrad import masked_conv2d_weight_grad_positions_triton
from ndsnn_triton.kernels.sparse_index import build_index
from ndsnn_triton.kernels.spike_conv import (
    masked_conv2d_input_grad_triton,
    masked_conv2d_triton,
    masked_conv2d_weight_grad_triton,
)
from ndsnn_triton.kernels.spike_events import spike_events_triton
from ndsnn_triton.kernels.work import WorkFactors, executed_macs, map_activity, work_factors
from ndsnn_triton.profiler.roofline import (
    PEAKS,
    ConvShape,
    LaunchWork,
    LayerSpikes,
    achieved_fraction,
    conv_dgrad_work,
    conv_fwd_work,
    conv_wgrad_positions_work,
    conv_wgrad_work,
    lif_bwd_work,
    lif_fwd_work,
    load_vgg16_spikes,
    mask_stats,
    roofline_ms,
    spike_events_work,
    synthetic_spikes,
    total_roofline_ms,
)

B, T = 64, 5
# (name, Cin, Cout, k, stride, padding, input map)
LAYERS = [
    ("vgg.conv2", 64, 64, 3, 1, 1, 32),
    ("vgg.conv3", 64, 128, 3, 1, 1, 16),
    ("vgg.conv4", 128, 128, 3, 1, 1, 16),
    ("vgg.conv5", 128, 256, 3, 1, 1, 8),
    ("vgg.conv6", 256, 256, 3, 1, 1, 8),
    ("vgg.conv8", 256, 512, 3, 1, 1, 4),
    ("vgg.conv9", 512, 512, 3, 1, 1, 4),
    ("vgg.conv12", 512, 512, 3, 1, 1, 2),
    ("resnet.l1.conv1", 64, 128, 3, 2, 1, 32),
    ("resnet.l1.conv2", 128, 128, 3, 1, 1, 16),
    ("resnet.l1.short", 64, 128, 1, 2, 0, 32),
    ("resnet.l2.conv2", 256, 256, 3, 1, 1, 8),
    ("resnet.l3.conv2", 512, 512, 3, 1, 1, 4),
]
DENSITIES_FULL = [1.0, 0.1, 0.05, 0.01]
DENSITIES_TRIMMED = [1.0, 0.1, 0.01]  # dense, 90 % and 99 % sparse
RATES = [0.05, 0.1, 0.2]
#: trimmed grid: every spike rate on these layers, 0.1 on the others
RATE_LAYERS = ("vgg.conv2", "vgg.conv9")
LIF_SHAPES = [(64, 32, 32), (128, 16, 16), (512, 4, 4)]
QUANTILES = [0.5, 0.2, 0.8]
#: do_bench warm-up and measuring time per timed function (ms)
WARMUP_MS, REP_MS = (10, 50) if BENCH_FULL else (5, 25)


def conv_cases(full: bool = BENCH_FULL) -> list[tuple[tuple, float, float]]:
    """(layer, density, spike rate) of every conv case of the grid."""
    densities = DENSITIES_FULL if full else DENSITIES_TRIMMED
    return [
        (layer, density, rate)
        for layer in LAYERS
        for density in densities
        for rate in RATES
        if full or rate == 0.1 or layer[0] in RATE_LAYERS
    ]


CONV_CASES = conv_cases()

# ----------------------------------------------------------------------------- spike-skipping grid

#: the spike structure the spike-skipping grid reproduces (``python -m bench.spike_structure``)
STRUCTURE_FILE = RESULTS_DIR / "spike_structure.json"
SKIP_LAYERS = [layer for layer in LAYERS if layer[0].startswith("vgg.")]
SKIP_DENSITIES = (0.1, 0.01)
#: i.i.d. spike rates of the spike-skipping grid while no measured structure is recorded: a
#: sparse (2 %) and a busy (10 %) layer input, no silent-map structure beyond chance
DOCUMENTED_RATES = (0.02, 0.1)
#: a sweep of silent-map fractions on every layer, whatever was measured: (overall rate, silent
#: (sample, channel) maps) — how the forward's skipping pays as whole maps fall silent
SILENT_SWEEP = ((0.05, 0.5), (0.01, 0.9))


@dataclass(frozen=True)
class SpikeSpec:
    """The spikes of a spike-skipping case: i.i.d. at ``rate`` (``silent_maps`` None) or with
    that many silent (sample, channel) maps and channels silent in every sample
    (:func:`ndsnn_triton.profiler.roofline.synthetic_spikes`)."""

    label: str  # the case id's last part
    rate: float
    silent_maps: float | None
    dead_channels: float
    source: str
    measured_work: dict[str, float] | None = None  # the kernels' work factors on the real input


def measured_structure(path=STRUCTURE_FILE) -> dict[str, LayerSpikes]:
    """The trained VGG-16's layer inputs (train mode) of the spike-structure file, keyed
    ``conv1``…; empty (with a warning if the file is there but unusable) without one."""
    if not path.exists():
        return {}
    try:
        return load_vgg16_spikes(path, "trained", "train")
    except (ValueError, KeyError, TypeError) as err:
        warnings.warn(f"{path} not used ({err}); documented spike rates instead", stacklevel=1)
        return {}


MEASURED = measured_structure()


def spike_specs(layer_name: str, measured: dict[str, LayerSpikes] | None = None) -> list[SpikeSpec]:
    """The spike structures a VGG-16 layer (``vgg.convK``) is benchmarked at: the measured one
    when the structure file has it, else i.i.d. spikes at each documented rate."""
    measured = MEASURED if measured is None else measured
    spikes = measured.get(layer_name.removeprefix("vgg."))
    sweep = [
        SpikeSpec(f"s{silent:g}", rate, silent, 0.0, "synthetic: silent-map sweep")
        for rate, silent in SILENT_SWEEP
    ]
    if spikes is not None:
        return [
            *sweep,
            SpikeSpec(
                "measured",
                spikes.rate,
                spikes.silent_maps,
                spikes.dead_channels,
                f"{STRUCTURE_FILE.name}: vgg16 trained, train mode, {spikes.name}",
                {"forward": spikes.work.forward, "weight_grad": spikes.work.weight_grad},
            ),
        ]
    return sweep + [
        SpikeSpec(f"r{rate:g}", rate, None, 0.0, "documented rate, i.i.d. spikes")
        for rate in DOCUMENTED_RATES
    ]


def skip_cases(
    measured: dict[str, LayerSpikes] | None = None,
) -> list[tuple[tuple, float, SpikeSpec]]:
    """(layer, density, spikes) of every spike-skipping case."""
    return [
        (layer, density, spec)
        for layer in SKIP_LAYERS
        for density in SKIP_DENSITIES
        for spec in spike_specs(layer[0], measured)
    ]


def skip_case_id(layer: tuple, density: float, spec: SpikeSpec) -> str:
    """The pytest id of a spike-skipping case, e.g. ``vgg.conv9-d0.01-measured``."""
    return f"{layer[0]}-d{density:g}-{spec.label}"


SKIP_CASES = skip_cases()


def _bench(fn) -> list[float]:
    """do_bench [median, 20 %, 80 %] quantiles of ``fn`` in ms."""
    import triton

    return [
        float(v)
        for v in triton.testing.do_bench(fn, quantiles=QUANTILES, warmup=WARMUP_MS, rep=REP_MS)
    ]


def _sync(fn):
    def run():
        fn()
        torch.cuda.synchronize()

    return run


def _conv_inputs(layer: tuple, density: float, rate: float) -> dict:
    """Spikes, weight, mask, geometry and an output gradient of one case, on CUDA."""
    _, cin, cout, k, s, p, size = layer
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.rand(B * T, cin, size, size, device="cuda", generator=g) < rate).float()
    w = torch.randn(cout, cin, k, k, device="cuda", generator=g)
    mask = torch.rand(w.shape, device="cuda", generator=g) < density
    geo = ([s, s], [p, p], [1, 1], 1)
    y = masked_conv2d_triton(x, w, mask, None, *geo)
    return {"x": x, "w": w, "mask": mask, "geo": geo, "dy": torch.randn_like(y)}


def _sum(*series: list[float]) -> list[float]:
    """Element-wise sum of do_bench [median, 20 %, 80 %] lists (a sequence of launches)."""
    return [sum(v) for v in zip(*series, strict=True)]


def _triton_times(c: dict, int8_forward: bool = True) -> dict[str, list[float]]:
    """Triton forward (float and, if ``int8_forward``, int8 spikes), input and weight gradients
    and their sum; each spike-events pass alone; the baselines (forward without skipping, the
    position-driven weight gradient) and their sum."""
    x, w, mask, geo, dy = c["x"], c["w"], c["mask"], c["geo"], c["dy"]
    stride, padding, dilation, _ = geo
    kernel = tuple(w.shape[2:])
    x8 = x.to(torch.int8)
    times = {
        # the passes the launchers below run first (included in their times)
        "spike_events_activity": _bench(
            lambda: spike_events_triton(x, kernel, stride, padding, dilation, False)
        ),
        "spike_events_wgrad": _bench(
            lambda: spike_events_triton(x8, kernel, stride, padding, dilation, True)
        ),
        "triton_fwd": _bench(lambda: masked_conv2d_triton(x, w, mask, None, *geo)),
        "triton_fwd_noskip": _bench(
            lambda: masked_conv2d_triton(x, w, mask, None, *geo, skip_silent=False)
        ),
        "triton_dgrad": _bench(
            lambda: masked_conv2d_input_grad_triton(dy, w, mask, list(x.shape), *geo)
        ),
        "triton_wgrad": _bench(lambda: masked_conv2d_weight_grad_triton(dy, x8, mask, *geo, False)),
        "triton_wgrad_positions": _bench(
            lambda: masked_conv2d_weight_grad_positions_triton(dy, x8, mask, *geo, False)
        ),
    }
    if int8_forward:
        # compact spikes as the forward input (what an inference pass with int8 LIF output hands on)
        times["triton_fwd_int8_input"] = _bench(
            lambda: masked_conv2d_triton(x8, w, mask, None, *geo)
        )
    times["triton_fwd_bwd"] = _sum(
        times["triton_fwd"], times["triton_dgrad"], times["triton_wgrad"]
    )
    times["triton_fwd_bwd_baseline"] = _sum(
        times["triton_fwd_noskip"], times["triton_dgrad"], times["triton_wgrad_positions"]
    )
    return times


def _speedups(times: dict[str, list[float]]) -> dict[str, float]:
    """Median ratios ``other / new`` (> 1: the spike-skipping kernels are faster): against the
    baselines and cuDNN bf16 / tf32 / fp32 (and torch.sparse CSR when timed)."""
    med = {key: v[0] for key, v in times.items()}
    out = {
        "fwd_vs_noskip": med["triton_fwd_noskip"] / med["triton_fwd"],
        "wgrad_vs_positions": med["triton_wgrad_positions"] / med["triton_wgrad"],
        "fwd_bwd_vs_baseline": med["triton_fwd_bwd_baseline"] / med["triton_fwd_bwd"],
    }
    for label in ("cudnn_bf16", "cudnn_tf32", "cudnn_fp32"):
        out[f"fwd_vs_{label}"] = med[f"{label}_fwd"] / med["triton_fwd"]
        out[f"fwd_bwd_vs_{label}"] = med[f"{label}_fwd_bwd"] / med["triton_fwd_bwd"]
    if "torch_csr_fwd" in med:
        out["fwd_vs_csr"] = med["torch_csr_fwd"] / med["triton_fwd"]
    return out


def _structure(x: torch.Tensor, mask: torch.Tensor, layer: tuple) -> dict:
    """The spike structure of a case's input as the kernels see it (one host sync): rate, silent
    maps, channels silent in every sample, work factors, executed and dense MACs."""
    _, _, cout, k, s, p, size = layer
    geo = ((s, s), (p, p), (1, 1))
    factors = work_factors(x, (k, k), *geo, cout)
    active = map_activity(x)
    done = executed_macs(x, mask, *geo)
    macs = torch.stack([done.forward, done.input_grad, done.weight_grad]).tolist()
    oh = (size + 2 * p - k) // s + 1
    return {
        "rate": factors.rate,
        "silent_maps": float((~active).float().mean()),
        "dead_channels": float((~active.any(0)).float().mean()),
        "work_factors": {"forward": factors.forward, "weight_grad": factors.weight_grad},
        "executed_macs": dict(zip(("forward", "input_grad", "weight_grad"), macs, strict=True)),
        "dense_macs": int(mask.sum()) * x.shape[0] * oh * oh,
    }


def _cudnn_times(c: dict, s: int, p: int) -> dict[str, list[float]]:
    """cuDNN forward and forward+backward on the masked dense weight: fp32 (TF32 off), tf32, bf16.

    Inputs are copies (``to(dtype, copy=True)``): ``x.to(float32)`` would return ``x`` itself and
    leave it requiring grad for the later timings."""
    wm = c["w"] * c["mask"]
    times = {}
    for label, dtype, tf32 in (
        ("cudnn_fp32", torch.float32, False),
        ("cudnn_tf32", torch.float32, True),
        ("cudnn_bf16", torch.bfloat16, True),
    ):
        xd = c["x"].to(dtype, copy=True).requires_grad_()
        wd = wm.to(dtype, copy=True).requires_grad_()
        gd = c["dy"].to(dtype)
        with pinned_flags(tf32=tf32):
            times[f"{label}_fwd"] = _bench(lambda xd=xd, wd=wd: F.conv2d(xd, wd, None, s, p))
            times[f"{label}_fwd_bwd"] = _bench(
                lambda xd=xd, wd=wd, gd=gd: torch.autograd.grad(
                    F.conv2d(xd, wd, None, s, p), (xd, wd), gd
                )
            )
    return times


def _device_peaks():
    """Published peaks of this GPU: H200's on an H200, else (or without a GPU) H100's."""
    try:
        name = torch.cuda.get_device_name()
    except (AssertionError, RuntimeError):  # no CUDA: the CPU smoke tests
        name = ""
    return PEAKS["h200"] if "h200" in name.lower() else PEAKS["h100"]


def _roofline_fractions(
    mask: torch.Tensor, geometry: tuple, times: dict, x: torch.Tensor | None = None
) -> dict:
    """Each timed Triton launch's roofline bound (``ndsnn_triton.profiler.roofline``, fp32 weights,
    int8 saved spikes, float spike input) and the fraction of it the measured median reaches, on
    this device's peaks when known (H100/H200), else H100's. A launcher's bound covers the kernels
    it runs: the forward its activity pass, the event-driven weight gradient its events pass.
    ``x``: the case's spikes, whose work factors the skipping kernels' models take (without it,
    the dense model: every lane live, every input an event)."""
    n, cin, size, _, cout, k, s, p = geometry
    shape = ConvShape(n, cin, size, size, cout, k, k, (s, s), (p, p), (1, 1))
    stats = mask_stats(mask, shape)
    act = None if x is None else work_factors(x, (k, k), (s, s), (p, p), (1, 1), cout)
    f32, i8 = torch.float32, torch.int8
    activity = {dt: spike_events_work(shape, dt, False, act) for dt in (f32, i8)}
    events = spike_events_work(shape, i8, True, act)
    launches: dict[str, list[LaunchWork]] = {
        "spike_events_activity": [activity[f32]],
        "spike_events_wgrad": [events],
        "triton_fwd": [activity[f32], conv_fwd_work(shape, stats, f32, f32, activity=act)],
        "triton_fwd_int8_input": [activity[i8], conv_fwd_work(shape, stats, i8, f32, activity=act)],
        "triton_fwd_noskip": [conv_fwd_work(shape, stats, f32, f32)],
        "triton_dgrad": [conv_dgrad_work(shape, stats, f32, f32)],
        "triton_wgrad": [events, conv_wgrad_work(shape, stats, f32, i8, act)],
        "triton_wgrad_positions": [conv_wgrad_positions_work(shape, stats, f32, i8)],
    }
    launches = {key: works for key, works in launches.items() if key in times}
    peaks = _device_peaks()
    bounds = {key: total_roofline_ms(works, peaks) for key, works in launches.items()}
    return {
        "peaks": peaks.name,
        "activity": None if act is None else asdict(act),
        "bytes_min": {key: sum(w.bytes_min for w in works) for key, works in launches.items()},
        "flops": {key: sum(w.flops for w in works) for key, works in launches.items()},
        "bound_ms": bounds,
        "achieved_fraction": {key: bounds[key] / times[key][0] for key in launches},
    }


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("layer", "density", "rate"),
    CONV_CASES,
    ids=[f"{layer[0]}-d{density:g}-r{rate:g}" for layer, density, rate in CONV_CASES],
)
def test_conv_layer(benchmark, layer, density, rate):
    name, cin, cout, k, s, p, size = layer
    with pinned_flags(cudnn_benchmark=True, tf32=False):
        c = _conv_inputs(layer, density, rate)
        times = _triton_times(c) | _cudnn_times(c, s, p)
        csr = (c["w"] * c["mask"]).reshape(cout, -1).to_sparse_csr()
        # im2col is done once outside the timing (in the CSR baseline's favour): only the sparse
        # product is timed.
        rhs = F.unfold(c["x"], k, padding=p, stride=s).transpose(0, 1).reshape(cin * k * k, -1)
        rhs = rhs.contiguous()
        times["torch_csr_fwd"] = _bench(lambda: torch.sparse.mm(csr, rhs))
        mask2d = c["mask"].reshape(cout, -1)
        nnz = int(mask2d.sum())  # sized on the host outside the timing, as the kernels do
        index_build = _bench(lambda: build_index(mask2d, nnz))
        row = {
            "case": f"{name}/d{density:g}/r{rate:g}",
            "layer": name,
            "shape": {
                "B": B,
                "T": T,
                "cin": cin,
                "cout": cout,
                "k": k,
                "stride": s,
                "padding": p,
                "map": size,
            },
            "density": density,
            "spike_rate": rate,
            "dtype_triton": "float32 weights, fp32 accumulate, int8 saved spikes",
            "do_bench_ms": {"warmup": WARMUP_MS, "rep": REP_MS},
            "median_ms": {key: v[0] for key, v in times.items()},
            "quantiles_ms": dict(times),
            "index_rebuild_ms": index_build[0],
            "speedup_fwd_vs_cudnn_bf16": times["cudnn_bf16_fwd"][0] / times["triton_fwd"][0],
            "speedup_fwd_bwd_vs_cudnn_bf16": times["cudnn_bf16_fwd_bwd"][0]
            / times["triton_fwd_bwd"][0],
            "speedup_fwd_vs_csr": times["torch_csr_fwd"][0] / times["triton_fwd"][0],
            "speedup": _speedups(times),
            "spike_structure": _structure(c["x"], c["mask"], layer),
            "roofline": _roofline_fractions(
                c["mask"], (B * T, cin, size, size, cout, k, s, p), times, c["x"]
            ),
        }
        benchmark.extra_info.update(row)
        benchmark.group = name
        record("kernels", row)
        x, w, mask, geo, dy = c["x"], c["w"], c["mask"], c["geo"], c["dy"]
        x8 = x.to(torch.int8)

        def fwd_bwd():
            masked_conv2d_triton(x, w, mask, None, *geo)
            masked_conv2d_input_grad_triton(dy, w, mask, list(x.shape), *geo)
            masked_conv2d_weight_grad_triton(dy, x8, mask, *geo, False)

        benchmark.pedantic(_sync(fwd_bwd), rounds=3, iterations=1, warmup_rounds=1)


def _skip_inputs(
    layer: tuple, density: float, spec: SpikeSpec, n: int = B * T, device: str = "cuda"
) -> dict:
    """A spike-skipping case's inputs (``n`` samples): synthetic spikes with ``spec``'s structure,
    weight, mask, geometry, forward output and an output gradient."""
    _, cin, cout, k, s, p, size = layer
    g = torch.Generator(device=device).manual_seed(0)
    x = synthetic_spikes(
        (n, cin, size, size), spec.rate, spec.silent_maps, spec.dead_channels,
        generator=g, device=device,
    )  # fmt: skip
    w = torch.randn(cout, cin, k, k, device=device, generator=g)
    mask = torch.rand(w.shape, device=device, generator=g) < density
    geo = ([s, s], [p, p], [1, 1], 1)
    y = masked_conv2d_triton(x, w, mask, None, *geo)
    return {"x": x, "w": w, "mask": mask, "geo": geo, "dy": torch.randn_like(y), "y": y}


def _check_against_baselines(c: dict) -> None:
    """The spike-skipping kernels give the baselines' results on this case (fp32 sums in another
    order: close, not equal)."""
    x, w, mask, geo, dy = c["x"], c["w"], c["mask"], c["geo"], c["dy"]
    x8 = x.to(torch.int8)
    noskip = masked_conv2d_triton(x, w, mask, None, *geo, skip_silent=False)
    torch.testing.assert_close(c["y"], noskip, rtol=1e-4, atol=1e-4)
    events = masked_conv2d_weight_grad_triton(dy, x8, mask, *geo, False)
    positions = masked_conv2d_weight_grad_positions_triton(dy, x8, mask, *geo, False)
    torch.testing.assert_close(events, positions, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("layer", "density", "spikes"),
    SKIP_CASES,
    ids=[skip_case_id(*case) for case in SKIP_CASES],
)
def test_spike_skipping(benchmark, layer, density, spikes):
    """The spike-skipping kernels against the baselines and cuDNN on a VGG-16 layer input with a
    measured (or documented) spike structure."""
    name, cin, cout, k, s, p, size = layer
    with pinned_flags(cudnn_benchmark=True, tf32=False):
        c = _skip_inputs(layer, density, spikes)
        _check_against_baselines(c)
        times = _triton_times(c, int8_forward=False) | _cudnn_times(c, s, p)
        row = {
            "case": f"skip/{name}/d{density:g}/{spikes.label}",
            "layer": name,
            "shape": {
                "B": B,
                "T": T,
                "cin": cin,
                "cout": cout,
                "k": k,
                "stride": s,
                "padding": p,
                "map": size,
            },
            "density": density,
            "spike_rate": spikes.rate,
            "spikes": {
                "label": spikes.label,
                "source": spikes.source,
                "target": {
                    "rate": spikes.rate,
                    "silent_maps": spikes.silent_maps,
                    "dead_channels": spikes.dead_channels,
                    "measured_work_factors": spikes.measured_work,
                },
                "synthesized": _structure(c["x"], c["mask"], layer),
            },
            "dtype_triton": "float32 weights, fp32 accumulate, float spike input, int8 saved spikes",
            "do_bench_ms": {"warmup": WARMUP_MS, "rep": REP_MS},
            "median_ms": {key: v[0] for key, v in times.items()},
            "quantiles_ms": dict(times),
            "speedup": _speedups(times),
            "roofline": _roofline_fractions(
                c["mask"], (B * T, cin, size, size, cout, k, s, p), times, c["x"]
            ),
        }
        benchmark.extra_info.update(row)
        benchmark.group = f"skip/{name}"
        record("spike_skipping", row)
        x, w, mask, geo, dy = c["x"], c["w"], c["mask"], c["geo"], c["dy"]
        x8 = x.to(torch.int8)

        def fwd_bwd():
            masked_conv2d_triton(x, w, mask, None, *geo)
            masked_conv2d_input_grad_triton(dy, w, mask, list(x.shape), *geo)
            masked_conv2d_weight_grad_triton(dy, x8, mask, *geo, False)

        benchmark.pedantic(_sync(fwd_bwd), rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", LIF_SHAPES, ids=["c64m32", "c128m16", "c512m4"])
def test_lif(benchmark, shape):
    c, h, w = shape
    x = torch.randn(T, B, c, h, w, device="cuda")
    v0 = torch.zeros(B, c, h, w, device="cuda")
    s, _, hs = lif_forward_triton(x, v0, 4 / 3, 1.0, 0.0, True)
    gs = torch.randn_like(s)
    gv = torch.zeros_like(v0)
    times = {
        "triton_fwd": _bench(lambda: lif_forward_triton(x, v0, 4 / 3, 1.0, 0.0, True)),
        "triton_fwd_int8_no_h": _bench(
            lambda: lif_forward_triton(x, v0, 4 / 3, 1.0, 0.0, True, int8_spikes=True)
        ),
        "triton_bwd": _bench(
            lambda: lif_backward_triton(gs, gv, hs, 4 / 3, 1.0, 0.0, True, True, "atan", 2.0)
        ),
        "eager_fwd": _bench(lambda: lif_forward_ref(x, v0, 4 / 3, 1.0, 0.0, True)),
        "eager_bwd": _bench(
            lambda: lif_backward_ref(gs, gv, hs, 4 / 3, 1.0, 0.0, True, True, "atan", 2.0)
        ),
    }
    # bytes: forward reads x, writes s and h (+ v); backward reads grad_s and h, writes grad_x
    n = x.numel() * 4
    bytes_moved = 3 * n + 3 * n
    ms = times["triton_fwd"][0] + times["triton_bwd"][0]
    peaks = _device_peaks()
    neurons = B * c * h * w
    works = {
        "triton_fwd": lif_fwd_work(T, neurons, torch.float32),
        "triton_fwd_int8_no_h": lif_fwd_work(T, neurons, torch.float32, int8_spikes=True),
        "triton_bwd": lif_bwd_work(T, neurons, torch.float32),
    }
    row = {
        "case": f"lif/T{T}B{B}C{c}H{h}W{w}",
        "kernel": "lif",
        "shape": {"T": T, "B": B, "C": c, "H": h, "W": w},
        "median_ms": {k: v[0] for k, v in times.items()},
        "quantiles_ms": times,
        "do_bench_ms": {"warmup": WARMUP_MS, "rep": REP_MS},
        "bandwidth_gb_s": bytes_moved / (ms * 1e-3) / 1e9,
        "speedup_vs_eager": (times["eager_fwd"][0] + times["eager_bwd"][0]) / ms,
        # LIF is memory-bound: the fraction of the HBM roofline is the fraction of bandwidth
        "roofline": {
            "peaks": peaks.name,
            "bound_ms": {key: roofline_ms(wk, peaks) for key, wk in works.items()},
            "achieved_fraction": {
                key: achieved_fraction(times[key][0], wk, peaks) for key, wk in works.items()
            },
        },
    }
    benchmark.extra_info.update(row)
    benchmark.group = "lif"
    record("lif", row)
    benchmark.pedantic(
        _sync(lambda: lif_forward_triton(x, v0, 4 / 3, 1.0, 0.0, True)),
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )


def test_spike_skipping_grid_and_row_fields():
    """Runs everywhere (CPU, Triton interpreter): the spike-skipping grid follows the structure
    file, and a small case's inputs, baseline check, structure and roofline fields are sound."""
    sweep = len(SILENT_SWEEP)
    assert len(SKIP_CASES) == len(SKIP_LAYERS) * len(SKIP_DENSITIES) * (
        sweep + (1 if MEASURED else 2)
    )
    measured = {
        "conv9": LayerSpikes(
            "features.25", (512, 4, 4), 0.03, 0.6, 0.2, WorkFactors(0.03, 0.5, 0.03)
        )
    }
    cases = skip_cases(measured)
    ids = [skip_case_id(*case) for case in cases]
    assert "vgg.conv9-d0.01-measured" in ids and "vgg.conv2-d0.01-r0.02" in ids
    assert "vgg.conv9-d0.01-s0.9" in ids
    per_layer = len(SKIP_DENSITIES) * (sweep + 2)
    assert len(ids) == len(set(ids)) == len(SKIP_LAYERS) * per_layer - len(SKIP_DENSITIES)
    spec = spike_specs("vgg.conv9", measured)[-1]
    assert (spec.rate, spec.silent_maps, spec.dead_channels) == (0.03, 0.6, 0.2)
    layer = ("vgg.tiny", 4, 6, 3, 1, 1, 4)
    c = _skip_inputs(layer, 0.5, spec, n=8, device="cpu")
    _check_against_baselines(c)
    structure = _structure(c["x"], c["mask"], layer)
    assert structure["silent_maps"] == pytest.approx(0.6, abs=1 / 32)
    assert structure["dead_channels"] >= 0.25  # round(0.2 · 4) = 1 channel silent throughout
    assert structure["executed_macs"]["weight_grad"] <= structure["dense_macs"]
    keys = (
        "spike_events_activity", "spike_events_wgrad", "triton_fwd", "triton_fwd_noskip",
        "triton_dgrad", "triton_wgrad", "triton_wgrad_positions",
    )  # fmt: skip
    times = {key: [0.5, 0.4, 0.6] for key in keys}
    out = _roofline_fractions(c["mask"], (8, 4, 4, 4, 6, 3, 1, 1), times, c["x"])
    assert set(out["bound_ms"]) == set(keys)
    assert out["activity"]["rate"] == pytest.approx(structure["rate"])
    assert out["flops"]["triton_wgrad"] < out["flops"]["triton_wgrad_positions"]
    assert out["bound_ms"]["triton_fwd"] > out["bound_ms"]["spike_events_activity"]


def test_backend_switch_smoke():
    """Runs everywhere (CPU smoke run): the benchmark's reference path works on this machine."""
    x = (torch.rand(2, 3, 5, 5) < 0.2).float()
    w = torch.randn(4, 3, 3, 3)
    with ndsnn_triton.use_backend("torch"):
        y = ndsnn_triton.masked_conv2d(x, w, torch.ones_like(w, dtype=torch.bool), padding=1)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1))
