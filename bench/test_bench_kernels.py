"""Per-kernel benchmarks on the VGG-16 and ResNet-19 layer shapes (B = 64, T = 5).

Each case times the sparse Triton kernels and, in the same run, cuDNN (fp32 with TF32 off, tf32,
bf16, ``cudnn.benchmark=True``; flags pinned per case and restored) and torch.sparse CSR, with
``triton.testing.do_bench`` medians and quantiles; pytest-benchmark times a synchronising call of
the Triton forward + backward.

GPU cases: 54 by default — 51 conv cases (13 layers × densities 1, 0.1, 0.01 at spike rate 0.1,
plus rates 0.05 and 0.2 on vgg.conv2 and vgg.conv9) and 3 LIF shapes; do_bench warm-up 5 ms,
rep 25 ms. ``NDSNN_BENCH_FULL=1``: 159 cases (every layer at densities 1, 0.1, 0.05, 0.01 and
rates 0.05, 0.1, 0.2), warm-up 10 ms, rep 50 ms. ``tests/test_bench_results.py`` checks these
counts against the grids below.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ndsnn_triton
from bench.conftest import BENCH_FULL, pinned_flags, record
from ndsnn_triton.kernels.lif import (
    lif_backward_ref,
    lif_backward_triton,
    lif_forward_ref,
    lif_forward_triton,
)
from ndsnn_triton.kernels.sparse_index import build_index
from ndsnn_triton.kernels.spike_conv import (
    masked_conv2d_input_grad_triton,
    masked_conv2d_triton,
    masked_conv2d_weight_grad_triton,
)
from ndsnn_triton.profiler.roofline import (
    PEAKS,
    ConvShape,
    achieved_fraction,
    conv_dgrad_work,
    conv_fwd_work,
    conv_wgrad_work,
    lif_bwd_work,
    lif_fwd_work,
    mask_stats,
    roofline_ms,
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


def _triton_times(c: dict) -> dict[str, list[float]]:
    """Triton forward (float and int8 spikes), input and weight gradients and their sum."""
    x, w, mask, geo, dy = c["x"], c["w"], c["mask"], c["geo"], c["dy"]
    x8 = x.to(torch.int8)
    times = {
        "triton_fwd": _bench(lambda: masked_conv2d_triton(x, w, mask, None, *geo)),
        # compact spikes as the forward input (what an inference pass with int8 LIF output hands on)
        "triton_fwd_int8_input": _bench(lambda: masked_conv2d_triton(x8, w, mask, None, *geo)),
        "triton_dgrad": _bench(
            lambda: masked_conv2d_input_grad_triton(dy, w, mask, list(x.shape), *geo)
        ),
        "triton_wgrad": _bench(lambda: masked_conv2d_weight_grad_triton(dy, x8, mask, *geo, False)),
    }
    parts = zip(times["triton_fwd"], times["triton_dgrad"], times["triton_wgrad"], strict=True)
    times["triton_fwd_bwd"] = [a + b + c for a, b, c in parts]
    return times


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
    """Published peaks of this GPU: H200's on an H200, else H100's."""
    return PEAKS["h200"] if "h200" in torch.cuda.get_device_name().lower() else PEAKS["h100"]


def _roofline_fractions(mask: torch.Tensor, geometry: tuple, times: dict) -> dict:
    """Each Triton launch's roofline bound (``ndsnn_triton.profiler.roofline``, fp32 weights,
    int8 saved spikes, float spike input) and the fraction of it the measured median reaches, on
    this device's peaks when known (H100/H200), else H100's."""
    n, cin, size, _, cout, k, s, p = geometry
    shape = ConvShape(n, cin, size, size, cout, k, k, (s, s), (p, p), (1, 1))
    stats = mask_stats(mask, shape)
    f32 = torch.float32
    works = {
        "triton_fwd": conv_fwd_work(shape, stats, f32, f32),
        "triton_fwd_int8_input": conv_fwd_work(shape, stats, torch.int8, f32),
        "triton_dgrad": conv_dgrad_work(shape, stats, f32, f32),
        "triton_wgrad": conv_wgrad_work(shape, stats, f32, torch.int8),
    }
    peaks = _device_peaks()
    return {
        "peaks": peaks.name,
        "bound_ms": {key: roofline_ms(w, peaks) for key, w in works.items()},
        "achieved_fraction": {
            key: achieved_fraction(times[key][0], w, peaks) for key, w in works.items()
        },
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
            "roofline": _roofline_fractions(
                c["mask"], (B * T, cin, size, size, cout, k, s, p), times
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


def test_backend_switch_smoke():
    """Runs everywhere (CPU smoke run): the benchmark's reference path works on this machine."""
    x = (torch.rand(2, 3, 5, 5) < 0.2).float()
    w = torch.randn(4, 3, 3, 3)
    with ndsnn_triton.use_backend("torch"):
        y = ndsnn_triton.masked_conv2d(x, w, torch.ones_like(w, dtype=torch.bool), padding=1)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1))
