"""Per-kernel benchmarks on every VGG-16 and ResNet-19 layer shape (B = 64, T = 5, 32×32 input).

Each conv case times, in one run and with synchronising ``triton.testing.do_bench`` medians and
quantiles over at least :data:`MIN_CALLS` calls, the library's sparse kernels as training runs them
— the forward reading the int8 spikes and map activity the LIF hands over, the input gradient,
the weight gradient with its reduce — and the named peers: cuDNN on the masked dense weight in the
same dtype (bf16; fp32 with TF32 off) and torch.sparse CSR (the unfolded input times a CSR weight,
fp32). Rows carry each kernel's time, the model's prediction (``ndsnn_triton.kernels.perf_model``)
and the fraction of its roofline bound the kernel reaches, the device operations of one forward +
backward, what ``auto`` picks per op and its resulting time, and the ratios the goals are stated
in (fwd+bwd / cuDNN bf16 fwd+bwd) → ``kernels-<device>.json``.

Spikes: synthetic, with the structure measured per layer input (rate, silent (sample, channel)
maps, dead channels: ``bench/results/spike_structure.json``, trained networks, train mode) —
``measured`` — plus sweeps at density 0.01: VGG-16 layers at half the maps silent (rate 0.05) and
90 % silent (rate 0.01); ResNet-19 layers, whose recorded structure comes from a network whose head
never fired, at i.i.d. rates 0.05 and 0.15.

Grid (:func:`conv_cases`, layers of equal shape taken once per quarter of silent maps): the
measured structure at densities 0.1, 0.05 and 0.01 in bf16, at 0.01 in fp32, and the sweeps in
bf16 at 0.01; plus the LIF forward (with the companion) and backward on the VGG-16 LIF shapes
(:data:`LIF_SHAPES`). GPU cases: 129 by default; ``NDSNN_BENCH_FULL=1``: 381 cases (every
structure at every density in both dtypes).
``tests/test_bench_results.py`` checks these counts against the grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import ndsnn_triton
from bench.conftest import BENCH_FULL, pinned_flags, record
from ndsnn_triton.kernels import dispatch
from ndsnn_triton.kernels import perf_model as pm
from ndsnn_triton.kernels.lif import lif_backward_triton, lif_forward_triton
from ndsnn_triton.kernels.spike_conv import (
    masked_conv2d_input_grad_ref,
    masked_conv2d_input_grad_triton,
    masked_conv2d_ref,
    masked_conv2d_triton,
    masked_conv2d_weight_grad_ref,
    masked_conv2d_weight_grad_triton,
)
from ndsnn_triton.kernels.spike_prep import spike_prep_triton
from ndsnn_triton.profiler.device_ops import DeviceOpCounter
from ndsnn_triton.profiler.roofline import ModelLayer, model_layers, synthetic_spikes

B, T = 64, 5
DENSITIES = (0.1, 0.05, 0.01)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
#: synthetic sweeps at density 0.01: (label, rate, silent maps or None for i.i.d.)
VGG_SWEEP = (("s0.5", 0.05, 0.5), ("s0.9", 0.01, 0.9))
RESNET_SWEEP = (("r0.05", 0.05, None), ("r0.15", 0.15, None))
LIF_SHAPES = [(64, 32, 32), (128, 16, 16), (512, 4, 4)]
QUANTILES = [0.5, 0.2, 0.8]
#: do_bench warm-up (ms); its measuring time covers at least MIN_CALLS calls of what it times
WARMUP_MS, REP_MS = (10, 50) if BENCH_FULL else (5, 25)
MIN_CALLS = 20


@dataclass(frozen=True)
class Case:
    """One conv case: a model layer, the spikes, a density and the compute dtype."""

    layer: ModelLayer
    spikes: str  # "measured" or a sweep label
    rate: float
    silent_maps: float | None  # None: i.i.d. spikes
    dead_channels: float
    density: float
    dtype: str  # "bf16" or "fp32"

    @property
    def id(self) -> str:
        return f"{self.layer.model}.{self.layer.label}-d{self.density:g}-{self.spikes}-{self.dtype}"


def distinct_layers(models=("vgg16", "resnet19")) -> list[ModelLayer]:
    """The spike-input layers of the models, each shape (and bias) once per quarter of silent
    maps: the first layer that has it, with its own measured structure (so VGG-16's conv12,
    71 % silent maps, is benchmarked beside conv11, 35 %, of the same shape)."""
    seen, out = set(), []
    for model in models:
        for layer in model_layers(model, batch=B, T=T):
            key = (model, layer.shape, layer.bias, int(layer.silent_maps * 4))
            if key not in seen:
                seen.add(key)
                out.append(layer)
    return out


def conv_cases(full: bool = BENCH_FULL) -> list[Case]:
    """Every conv case of the grid (see the module docstring)."""
    cases = []
    for layer in distinct_layers():
        sweep = VGG_SWEEP if layer.model == "vgg16" else RESNET_SWEEP
        specs = [("measured", layer.rate, layer.silent_maps, layer.dead_channels)]
        specs += [(label, rate, silent, 0.0) for label, rate, silent in sweep]
        for label, rate, silent, dead in specs:
            for density in DENSITIES:
                for dtype in DTYPES:
                    keep = full or (
                        (label == "measured" and (dtype == "bf16" or density == 0.01))
                        or (label != "measured" and dtype == "bf16" and density == 0.01)
                    )
                    if keep:
                        cases.append(Case(layer, label, rate, silent, dead, density, dtype))
    return cases


CONV_CASES = conv_cases()


def _bench(fn) -> list[float]:
    """do_bench [median, 20 %, 80 %] of ``fn`` in ms, measuring at least :data:`MIN_CALLS`
    calls (the measuring time grows with a slow ``fn``)."""
    import triton

    fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    rep = max(REP_MS, 1.5 * MIN_CALLS * start.elapsed_time(end))
    return [
        float(v)
        for v in triton.testing.do_bench(fn, quantiles=QUANTILES, warmup=WARMUP_MS, rep=rep)
    ]


def case_inputs(case: Case, device: str = "cuda", n: int = B * T) -> dict:
    """The case's tensors: spikes in the compute dtype with their companion (int8 copy, map
    activity), fp32 weight and bias, the mask, and an output gradient."""
    s = case.layer.shape
    g = torch.Generator(device=device).manual_seed(0)
    dtype = DTYPES[case.dtype]
    x = synthetic_spikes(
        (n, s.cin, s.h, s.w), case.rate, case.silent_maps, case.dead_channels, generator=g,
        device=device, dtype=dtype,
    )  # fmt: skip
    w = torch.randn(s.cout, s.cin, s.kh, s.kw, device=device, generator=g)
    mask = torch.rand(w.shape, device=device, generator=g) < case.density
    bias = torch.randn(s.cout, device=device, generator=g) if case.layer.bias else None
    geo = (list(s.stride), list(s.padding), list(s.dilation), 1)
    spikes, active, _ = spike_prep_triton(x, False)
    y = masked_conv2d_ref(x, w, mask, bias, *geo)
    return {
        "x": x, "spikes": spikes, "active": active if active.numel() else None, "w": w,
        "mask": mask, "bias": bias, "geo": geo, "dy": torch.randn_like(y),
    }  # fmt: skip


def sparse_calls(c: dict) -> dict:
    """The library's launches of one training step of the layer, as callables."""
    x, w, mask, bias, geo, dy = c["x"], c["w"], c["mask"], c["bias"], c["geo"], c["dy"]
    has_bias = bias is not None
    return {
        "fwd": lambda: masked_conv2d_triton(x, w, mask, bias, *geo, c["spikes"], c["active"]),
        "dgrad": lambda: masked_conv2d_input_grad_triton(dy, w, mask, list(x.shape), *geo),
        "wgrad": lambda: masked_conv2d_weight_grad_triton(
            dy, c["spikes"], mask, *geo, False, torch.float32, has_bias
        ),
    }


def dense_calls(c: dict) -> dict:
    """cuDNN on the masked dense weight in the case's dtype, as the ``auto`` fallback runs it."""
    x, w, mask, bias, geo, dy = c["x"], c["w"], c["mask"], c["bias"], c["geo"], c["dy"]
    has_bias = bias is not None
    return {
        "fwd": lambda: masked_conv2d_ref(x, w, mask, bias, *geo),
        "dgrad": lambda: masked_conv2d_input_grad_ref(dy, w, mask, list(x.shape), *geo),
        "wgrad": lambda: masked_conv2d_weight_grad_ref(
            dy, x, mask, *geo, False, torch.float32, has_bias
        ),
    }


def _first(t) -> torch.Tensor:
    return (t[0] if isinstance(t, tuple) else t).float()


def check_against_reference(c: dict) -> None:
    """The kernels give the references' results on this case, by FlashAttention's rule: error
    against an fp32 reference at most twice the error of the reference run in the case's own
    dtype, plus a small absolute tolerance (fp32 sums in another order)."""
    as_fp32 = {
        k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in c.items()
    }
    exact, same = dense_calls(as_fp32), dense_calls(c)
    for key, fn in sparse_calls(c).items():
        ref = _first(exact[key]())
        err = (_first(fn()) - ref).abs().max()
        allowed = 2 * (_first(same[key]()) - ref).abs().max() + 1e-5 * (1 + ref.abs().max())
        assert err <= allowed, (key, float(err), float(allowed))


def launches(c: dict) -> dict[str, int]:
    """Device operations of each launch (Triton launches plus aten kernels)."""
    out = {}
    for key, fn in sparse_calls(c).items():
        with DeviceOpCounter() as ops:
            fn()
        out[key] = ops.result.total
    return out


def predictions(case: Case, c: dict) -> dict[str, tuple[float, float]]:
    """``(predicted µs, roofline bound µs)`` of each launcher of this case (its synthesized
    structure); the weight-gradient launcher's sums its two launches."""
    s = case.layer.shape
    nnz = int(c["mask"].sum())
    x = c["x"]
    live = float((x.flatten(2) != 0).any(-1).float().mean())
    spikes = pm.Spikes(float((x != 0).float().mean()), live)
    dtype = DTYPES[case.dtype]
    costs = pm.conv_train_costs(s, nnz, dtype, torch.float32, spikes, case.layer.bias)
    gpu = pm.gpu_for(torch.cuda.get_device_name())
    p = {k: pm.predict(v, gpu) for k, v in costs.items()}
    out = {k: (p[k].total_us, p[k].roofline_us) for k in ("fwd", "dgrad")}
    out["wgrad"] = (
        p["wgrad"].total_us + p["reduce"].total_us,
        p["wgrad"].roofline_us + p["reduce"].roofline_us,
    )
    return out


def csr_forward(c: dict, layer: ModelLayer):
    """torch.sparse CSR peer: the unfolded fp32 input times the CSR weight (im2col outside)."""
    s = layer.shape
    csr = (c["w"] * c["mask"]).reshape(s.cout, -1).to_sparse_csr()
    rhs = F.unfold(c["x"].float(), (s.kh, s.kw), padding=s.padding, stride=s.stride)
    rhs = rhs.transpose(0, 1).reshape(s.cin * s.kh * s.kw, -1).contiguous()
    return lambda: torch.sparse.mm(csr, rhs)


def summarize(case: Case, times: dict, predicted: dict, ops: dict, auto: dict) -> dict:
    """The recorded row: medians, quantiles, predictions, roofline fractions, launches, ratios."""
    med = {k: v[0] for k, v in times.items()}
    ours = med["fwd"] + med["dgrad"] + med["wgrad"]
    dense = med["cudnn_fwd"] + med["cudnn_bwd"]
    auto_ms = sum(
        med[k] if auto[k] == "sparse" else med[f"cudnn_{k}"] for k in ("fwd", "dgrad", "wgrad")
    )
    return {
        "case": case.id,
        "model": case.layer.model,
        "layer": case.layer.label,
        "module": case.layer.name,
        "shape": {"B": B, "T": T, **case.layer.shape.__dict__},
        "density": case.density,
        "dtype": f"{case.dtype} compute, fp32 weights (as under autocast), fp32 accumulation",
        "spikes": {
            "label": case.spikes,
            "rate": case.rate,
            "silent_maps": case.silent_maps,
            "dead_channels": case.dead_channels,
        },
        "do_bench": {"warmup_ms": WARMUP_MS, "min_calls": MIN_CALLS},
        "median_ms": med,
        "quantiles_ms": times,
        "predicted_us": {k: round(p[0], 2) for k, p in predicted.items()},
        "roofline_bound_us": {k: round(p[1], 2) for k, p in predicted.items()},
        "roofline_fraction": {k: p[1] / (med[k] * 1e3) for k, p in predicted.items()},
        "launches": ops,
        "auto_choice": auto,
        "ratios": {
            "fwd_bwd_vs_cudnn": ours / dense,
            "auto_vs_cudnn": auto_ms / dense,
            "csr_vs_fwd": med["csr_fwd"] / med["fwd"],
        },
    }


@pytest.mark.gpu
@pytest.mark.parametrize("case", CONV_CASES, ids=[c.id for c in CONV_CASES])
def test_conv_layer(benchmark, case):
    with pinned_flags(cudnn_benchmark=True, tf32=False), torch.no_grad():
        c = case_inputs(case)
        check_against_reference(c)
        ours, peers = sparse_calls(c), dense_calls(c)
        times = {k: _bench(fn) for k, fn in ours.items()}
        times["prep"] = _bench(lambda: spike_prep_triton(c["x"], False))
        times["cudnn_fwd"] = _bench(peers["fwd"])
        times["cudnn_bwd"] = _bench(lambda: (peers["dgrad"](), peers["wgrad"]()))
        times["cudnn_dgrad"] = _bench(peers["dgrad"])
        times["cudnn_wgrad"] = _bench(peers["wgrad"])
        times["csr_fwd"] = _bench(csr_forward(c, case.layer))
        auto = {}
        for key, op in (
            ("fwd", "ndsnn::masked_conv2d"),
            ("dgrad", "ndsnn::masked_conv2d_input_grad"),
            ("wgrad", "ndsnn::masked_conv2d_weight_grad"),
        ):
            chosen = dispatch.choose(op, ours[key], peers[key], _op_args(op, c))
            auto[key] = "sparse" if chosen is ours[key] else "dense"
        row = summarize(case, times, predictions(case, c), launches(c), auto)
        benchmark.extra_info.update(row)
        benchmark.group = f"{case.layer.model}.{case.layer.label}"
        record("kernels", row)

        def fwd_bwd():
            for fn in ours.values():
                fn()
            torch.cuda.synchronize()

        benchmark.pedantic(fwd_bwd, rounds=3, iterations=1, warmup_rounds=1)


def _op_args(op: str, c: dict) -> tuple:
    """The arguments the op's body hands its implementation (what ``auto`` prices)."""
    x, w, mask, bias, geo, dy = c["x"], c["w"], c["mask"], c["bias"], c["geo"], c["dy"]
    if op == "ndsnn::masked_conv2d":
        return (x, w, mask, bias, *geo, c["spikes"], c["active"])
    if op == "ndsnn::masked_conv2d_input_grad":
        return (dy, w, mask, list(x.shape), *geo)
    return (dy, c["spikes"], mask, *geo, False, torch.float32, bias is not None)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", LIF_SHAPES, ids=["c64m32", "c128m16", "c512m4"])
def test_lif(benchmark, shape):
    """The LIF forward with the companion it hands the next layer, and its backward, in bf16
    (training under autocast): time and the fraction of HBM bandwidth reached."""
    ch, h, w = shape
    x = torch.randn(T, B, ch, h, w, device="cuda", dtype=torch.bfloat16)
    v0 = torch.zeros((), device="cuda", dtype=torch.bfloat16).expand(B, ch, h, w)
    s, _, hs, _, _ = lif_forward_triton(x, v0, 4 / 3, 1.0, 0.0, True, False, h * w)
    gs = torch.randn_like(s)
    times = {
        "fwd": _bench(lambda: lif_forward_triton(x, v0, 4 / 3, 1.0, 0.0, True, False, h * w)),
        "bwd": _bench(
            lambda: lif_backward_triton(gs, None, hs, 4 / 3, 1.0, 0.0, True, True, "atan", 2.0)
        ),
    }
    n = x.numel()
    moved = {  # bytes: x, spikes, int8 copy, h, activity | grad_s, h, grad_x
        "fwd": n * (2 + 2 + 1 + 2) + n // (h * w),
        "bwd": n * (2 + 2 + 2),
    }
    gpu = pm.gpu_for(torch.cuda.get_device_name())
    row = {
        "case": f"lif/T{T}B{B}C{ch}H{h}W{w}",
        "shape": {"T": T, "B": B, "C": ch, "H": h, "W": w},
        "dtype": "bfloat16",
        "median_ms": {k: v[0] for k, v in times.items()},
        "quantiles_ms": times,
        "bytes": moved,
        "bandwidth_fraction": {
            k: moved[k] / (times[k][0] * 1e-3) / (gpu.hbm_tb_s * 1e12) for k in times
        },
    }
    benchmark.extra_info.update(row)
    benchmark.group = "lif"
    record("lif", row)
    benchmark.pedantic(
        lambda: (lif_forward_triton(x, v0, 4 / 3, 1.0, 0.0, True, False, h * w), torch.cuda.synchronize()),
        rounds=3, iterations=1, warmup_rounds=1,
    )  # fmt: skip


# ----------------------------------------------------------------------------- CPU checks


def test_grid_covers_every_layer_shape_and_structure():
    """Runs everywhere: the grid holds every distinct VGG-16 and ResNet-19 spike layer at the
    three densities in bf16 on its measured structure, fp32 at 0.01, and the sweeps."""
    layers = distinct_layers()
    assert {layer.model for layer in layers} == {"vgg16", "resnet19"}
    assert (
        len(layers) == 21
    )  # 10 of VGG-16 (conv12 beside conv11: 71 % vs 35 % silent), 11 of ResNet-19
    ids = [c.id for c in CONV_CASES]
    assert len(ids) == len(set(ids)) == len(layers) * (3 + 1 + 2)
    assert "vgg16.conv2-d0.01-measured-bf16" in ids and "vgg16.conv2-d0.01-measured-fp32" in ids
    assert "resnet19.b0.conv1-d0.01-r0.15-bf16" in ids and "vgg16.conv9-d0.01-s0.9-bf16" in ids
    assert len(conv_cases(full=True)) == len(layers) * 3 * 3 * 2


def test_a_small_case_runs_through_the_row(monkeypatch):
    """Runs everywhere (the interpreter on CPU): a small case's inputs, the reference check, the
    launch count and the row's fields, with fake times."""
    layer = ModelLayer(
        "vgg16", "features.1", "tiny", pm.ConvShape(8, 4, 6, 6, 6), True, 0.1, 0.5, 0.0
    )
    case = Case(layer, "measured", 0.1, 0.5, 0.0, 0.1, "bf16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with ndsnn_triton.use_backend("triton"):
        c = case_inputs(case, device=device, n=8)
        check_against_reference(c)
        ops = launches(c)
    assert ops == {"fwd": 1, "dgrad": 1, "wgrad": 2}  # the weight gradient's reduce is a launch
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    predicted = predictions(case, c)
    keys = (
        "fwd",
        "dgrad",
        "wgrad",
        "prep",
        "cudnn_fwd",
        "cudnn_bwd",
        "cudnn_dgrad",
        "cudnn_wgrad",
        "csr_fwd",
    )
    times = {k: [0.5, 0.4, 0.6] for k in keys}
    row = summarize(
        case, times, predicted, ops, {"fwd": "sparse", "dgrad": "dense", "wgrad": "sparse"}
    )
    assert row["ratios"]["fwd_bwd_vs_cudnn"] == pytest.approx(1.5)
    assert row["ratios"]["auto_vs_cudnn"] == pytest.approx(1.5)
    assert set(row["predicted_us"]) == {"fwd", "dgrad", "wgrad"}
    assert all(f > 0 and math.isfinite(f) for f in row["roofline_fraction"].values())
