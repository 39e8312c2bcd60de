"""The GPU time model of the sparse kernels as a report — calibration, predictions, ratings.

The model itself lives with the kernels (:mod:`ndsnn_triton.kernels.perf_model`: per launch the
minimum HBM bytes, FLOPs, load lanes and dependent round trips, and the predicted time
``max(bytes/BW, FLOPs/peak, lanes/load rate, chain·t_dep/concurrency) + launch``). This module

* fits the model's constants on recorded GPU runs and reports the error per case
  (:func:`fit_t_dep`: one dependent load, on the serial-gather forward the library shipped before,
  whose time was ``waves × kept weights per row × ~1 µs``; :func:`fit_dense`: cuDNN);
* predicts every launch of every spike-input layer of VGG-16 and ResNet-19 at the benchmark's
  shapes, densities and measured spike structure (:func:`layer_predictions`,
  :func:`benchmark_predictions`) — written down before a GPU measures the kernels, and compared
  with it after;
* rates a measured launch against its bound (:func:`achieved_fraction`);
* renders all of it as ``docs/roofline.md`` (:func:`render_markdown`, ``ndsnn roofline``).

Everything here is a *model*, not a measurement; the only measured numbers it shows are the
recorded GPU times it is fitted on or compared with, marked as such.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ndsnn_triton._version import __version__
from ndsnn_triton.kernels.perf_model import (
    CALIBRATION,
    DENSE_FITS,
    GPUS,
    PRIOR_RATE,
    Calibration,
    ConvShape,
    DenseFit,
    Gpu,
    Prediction,
    Spikes,
    concurrency,
    conv_train_costs,
    dense_us,
    flops_and_bytes,
    predict,
)
from ndsnn_triton.kernels.spike_conv import FWD_MAX_REGISTERS
from ndsnn_triton.kernels.triton_utils import cdiv

#: the recorded files the model is fitted on and the structure it predicts with
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
H200_KERNELS = RESULTS / "spike_skipping-NVIDIA_H200.json"
STRUCTURE = RESULTS / "spike_structure.json"
#: benchmark shapes: batch, timesteps, densities
BATCH, T = 64, 5
DENSITIES: tuple[float, ...] = (0.1, 0.05, 0.01)

# ----------------------------------------------------------------------------- synthetic spikes


def _structure_counts(
    n: int, c: int, hw: int, silent_maps: float, dead_channels: float
) -> tuple[int, int, int]:
    """``(dead channels, other silent maps, live maps)`` of :func:`synthetic_spikes`."""
    dead = min(c, max(0, round(dead_channels * c)))
    silent = min(n * c, max(0, round(silent_maps * n * c)))
    others = min((c - dead) * n, max(0, silent - dead * n))
    return dead, others, n * c - dead * n - others


def synthetic_structure(
    shape: ConvShape, rate: float, silent_maps: float | None = None, dead_channels: float = 0.0
) -> Spikes:
    """Expected :class:`~ndsnn_triton.kernels.perf_model.Spikes` of :func:`synthetic_spikes` on
    the input of ``shape``: i.i.d. at ``rate`` (a map silent by chance, ``(1 − r)^(H·W)``) when
    ``silent_maps`` is None, else the constructed fraction of silent maps."""
    n, c, hw = shape.n, shape.cin, shape.h * shape.w
    if silent_maps is None:
        return Spikes(rate, 1.0 - (1.0 - rate) ** hw)
    *_, live = _structure_counts(n, c, hw, silent_maps, dead_channels)
    achieved = max(rate * n * c * hw, live) / (n * c * hw) if live else 0.0
    return Spikes(achieved, live / (n * c))


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
    """Binary spikes ``[N, C, H, W]`` with the structure :func:`synthetic_structure` describes:
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


# ----------------------------------------------------------------------------- measured structure


@dataclass(frozen=True)
class ModelLayer:
    """One spike-input weight layer of a model at the benchmark's batch, with its measured input
    structure (a row of ``bench/results/spike_structure.json``)."""

    model: str
    name: str  # the model's module name, e.g. "features.1"
    label: str  # short name, e.g. "conv2"
    shape: ConvShape
    bias: bool
    rate: float
    silent_maps: float
    dead_channels: float

    @property
    def spikes(self) -> Spikes:
        """The measured structure as the model takes it (active maps = 1 − silent maps)."""
        return Spikes(self.rate, 1.0 - self.silent_maps)


def _bias_flags(model: str) -> dict[str, bool]:
    from ndsnn_triton.models import build_model
    from ndsnn_triton.nn import masked_layers

    return {n: m.bias is not None for n, m in masked_layers(build_model(model, num_classes=10))}


def model_layers(
    model: str,
    path: str | Path = STRUCTURE,
    *,
    batch: int = BATCH,
    T: int = T,
    stage: str = "trained",
    mode: str = "train",
) -> list[ModelLayer]:
    """Every spike-input layer of ``model`` (``vgg16`` or ``resnet19``) in the recorded structure
    file, as ``[T·batch, C, H, W]`` launches with that file's measured spikes (``stage`` ``init``
    or ``trained``, ``mode`` ``train`` or ``eval``). The recorded run used Fashion-MNIST at
    32×32, so every spike layer has CIFAR's shapes. ``ValueError`` without such a row."""
    doc = json.loads(Path(path).read_text())
    rows = [r for r in doc.get("results", []) if r.get("model") == model]
    if not rows:
        raise ValueError(f"{path}: no {model} row")
    bias = _bias_flags(model)
    out, convs = [], 0
    for r in rows[-1]["structure"][stage][mode]:
        if r["kind"] == "conv":
            convs += 1
        if not r["spike_input"]:
            continue
        c, h, w = r["input_shape"]
        oc = r["output_shape"][0]
        kh, kw = r["kernel_size"]
        shape = ConvShape(
            T * batch,
            c,
            h,
            w,
            oc,
            kh,
            kw,
            tuple(r["stride"]),
            tuple(r["padding"]),
            tuple(r["dilation"]),
        )
        label = f"conv{convs}" if r["kind"] == "conv" else r["name"]
        if model == "resnet19":
            label = r["name"].replace("layers.", "b").replace("shortcut.0", "sc")
        out.append(
            ModelLayer(
                model, r["name"], label, shape, bias.get(r["name"], False), r["rate"],
                r["silent_maps"], r["dead_channels"],
            )
        )  # fmt: skip
    return out


# ----------------------------------------------------------------------------- calibration

#: dependent loads per kept weight of the serial-gather forward the fit uses: the column index,
#: then the per-lane activity (reduced across the block and branched on), then the input
LEGACY_FORWARD_DEPTH = 3


def legacy_forward(shape: ConvShape, nnz: int) -> tuple[float, int, int]:
    """``(chain, programs, warps)`` of the serial-gather forward the H200 file measured: one
    program per output channel and ``BLOCK_P`` positions of the flattened ``(n, oh, ow)``
    (``BLOCK_P`` the largest of 128, 64, 32, 16 still giving 264 programs), walking the row's
    kept weights one after another: chain = Σ over programs of the row's kept count."""
    positions = shape.n * shape.oh * shape.ow
    block = 128
    while block > 16 and cdiv(positions, block) * shape.cout < 264:
        block //= 2
    blocks = cdiv(positions, block)
    return (
        float(nnz * blocks * LEGACY_FORWARD_DEPTH),
        blocks * shape.cout,
        max(1, min(4, block // 32)),
    )


@dataclass(frozen=True)
class FitRow:
    """One recorded case beside its fitted prediction."""

    case: str
    measured_us: float
    predicted_us: float

    @property
    def error(self) -> float:
        """Relative error of the prediction, ``predicted / measured − 1``."""
        return self.predicted_us / self.measured_us - 1.0


def _recorded_cases(path: str | Path) -> list[dict]:
    """One row per recorded layer: its first case's fields, with ``median_ms`` the median over
    the layer's cases of each column (the cuDNN columns and the no-skip forward do not depend
    on the spikes; the cases differ only in their spike structure)."""
    doc = json.loads(Path(path).read_text())
    by_layer: dict[str, list[dict]] = {}
    for r in doc["results"]:
        by_layer.setdefault(r["layer"], []).append(r)
    out = []
    for cases in by_layer.values():
        columns = cases[0]["median_ms"]
        medians = {
            k: float(torch.tensor([c["median_ms"][k] for c in cases]).median()) for k in columns
        }
        out.append({**cases[0], "median_ms": medians})
    return out


def _case_shape(r: dict) -> ConvShape:
    s = r["shape"]
    n = s["B"] * s["T"]
    return ConvShape(
        n,
        s["cin"],
        s["map"],
        s["map"],
        s["cout"],
        s["k"],
        s["k"],
        (s["stride"],) * 2,
        (s["padding"],) * 2,
    )


def fit_t_dep(
    path: str | Path = H200_KERNELS, gpu: Gpu = GPUS["H200"], calib: Calibration = CALIBRATION
) -> tuple[float, list[FitRow]]:
    """Fit ``t_dep`` (µs per dependent load) on the recorded serial-gather forward
    (``triton_fwd_noskip``, pure kernel time) of each layer: ``time = chain·t_dep/concurrency +
    launch``, least squares in relative error. Returns ``(t_dep, rows)``."""
    a, m, cases = [], [], []
    for r in _recorded_cases(path):
        shape = _case_shape(r)
        nnz = round(r["density"] * shape.weights)
        chain, _, warps = legacy_forward(shape, nnz)
        # the serial kernels used ≤ 34 registers: full occupancy (64 warps per SM)
        held = concurrency(gpu, warps, Calibration(occupancy=1.0))
        a.append(chain / held)
        m.append(r["median_ms"]["triton_fwd_noskip"] * 1e3)
        cases.append(r["layer"])
    num = sum(ai / mi * (1 - calib.launch_us / mi) for ai, mi in zip(a, m, strict=True))
    den = sum((ai / mi) ** 2 for ai, mi in zip(a, m, strict=True))
    t_dep = num / den
    rows = [
        FitRow(case, mi, ai * t_dep + calib.launch_us)
        for case, ai, mi in zip(cases, a, m, strict=True)
    ]
    return t_dep, rows


def _fit_relative(xs: list[list[float]], ys: list[float]) -> list[float]:
    """Non-negative least squares in relative error (``Σ ((x·β − y)/y)²``) by active-set
    elimination: a coefficient that comes out negative is fixed at 0 and the rest refitted."""
    active = list(range(len(xs[0])))
    while True:
        a = torch.tensor(
            [[x[j] / y for j in active] for x, y in zip(xs, ys, strict=True)], dtype=torch.float64
        )
        b = torch.ones(len(ys), dtype=torch.float64)
        beta = torch.linalg.lstsq(a, b[:, None]).solution[:, 0].tolist()
        if min(beta) >= 0 or len(active) == 1:
            out = [0.0] * len(xs[0])
            for j, v in zip(active, beta, strict=True):
                out[j] = max(v, 0.0)
            return out
        active.pop(min(range(len(beta)), key=beta.__getitem__))


#: the cuDNN columns of the recorded file per (compute, direction): ``bwd`` = fwd+bwd − fwd
_DENSE_COLUMNS = {
    ("fp32", "fwd"): ("cudnn_fp32_fwd", None),
    ("fp32", "bwd"): ("cudnn_fp32_fwd_bwd", "cudnn_fp32_fwd"),
    ("tf32", "fwd"): ("cudnn_tf32_fwd", None),
    ("tf32", "bwd"): ("cudnn_tf32_fwd_bwd", "cudnn_tf32_fwd"),
    ("bf16", "fwd"): ("cudnn_bf16_fwd", None),
    ("bf16", "bwd"): ("cudnn_bf16_fwd_bwd", "cudnn_bf16_fwd"),
}
_DENSE_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}


def fit_dense(
    path: str | Path = H200_KERNELS, gpu_key: str = "H200"
) -> dict[tuple[str, str, str], tuple[DenseFit, list[FitRow]]]:
    """Fit :class:`~ndsnn_triton.kernels.perf_model.DenseFit` (overhead, µs per GFLOP, µs per
    MB; non-negative, relative least squares) per compute and direction on the recorded cuDNN
    times of each layer."""
    cases = _recorded_cases(path)
    out = {}
    for (compute, direction), (col, minus) in _DENSE_COLUMNS.items():
        xs, ys, names = [], [], []
        for r in cases:
            gflop, mb = flops_and_bytes(_case_shape(r), _DENSE_DTYPES[compute])
            med = r["median_ms"]
            y = (med[col] - (med[minus] if minus else 0.0)) * 1e3
            xs.append([1.0, gflop, mb])
            ys.append(y)
            names.append(r["layer"])
        beta = _fit_relative(xs, ys)
        fit = DenseFit(*(round(b, 4) for b in beta))
        rows = [FitRow(nm, y, fit.us(x[1], x[2])) for nm, x, y in zip(names, xs, ys, strict=True)]
        out[(gpu_key, compute, direction)] = (fit, rows)
    return out


# ----------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class LayerPrediction:
    """Predicted µs of one layer's training launches and of cuDNN's dense path."""

    kernels: dict[str, Prediction]  # fwd, dgrad, wgrad, reduce
    dense_fwd_us: float
    dense_bwd_us: float

    @property
    def fwd_bwd_us(self) -> float:
        return sum(p.total_us for p in self.kernels.values())

    @property
    def dense_fwd_bwd_us(self) -> float:
        return self.dense_fwd_us + self.dense_bwd_us


def layer_predictions(
    shape: ConvShape,
    density: float,
    spikes: Spikes,
    dtype: torch.dtype = torch.bfloat16,
    gpu: Gpu = GPUS["H200"],
    bias: bool = False,
) -> LayerPrediction:
    """Predictions of the four sparse launches of one spiking layer in training (companion
    given, weights fp32) and of the dense path in ``dtype`` (TF32 off for fp32)."""
    nnz = max(1, round(density * shape.weights))
    costs = conv_train_costs(shape, nnz, dtype, torch.float32, spikes, bias)
    return LayerPrediction(
        {k: predict(c, gpu) for k, c in costs.items()},
        dense_us(shape, dtype, "fwd", gpu),
        dense_us(shape, dtype, "bwd", gpu),
    )


def achieved_fraction(measured_us: float, prediction: Prediction) -> float:
    """Fraction of its roofline bound (``max(bytes/BW, FLOPs/peak)``) a measured launch reaches:
    ``bound / measured`` (1 = at the bound)."""
    if measured_us <= 0:
        raise ValueError(f"measured_us must be positive, got {measured_us!r}")
    return prediction.roofline_us / measured_us


def benchmark_predictions(
    gpu_key: str = "H200",
    densities: Iterable[float] = DENSITIES,
    dtypes: Iterable[torch.dtype] = (torch.bfloat16, torch.float32),
    models: Iterable[str] = ("vgg16", "resnet19"),
) -> list[dict]:
    """A row per (model layer, density, dtype) with the measured structure: each launch's
    predicted µs, bound and terms, the fwd+bwd sum and the dense path's (JSON-ready)."""
    gpu = GPUS[gpu_key]
    rows = []
    for model in models:
        for layer in model_layers(model):
            for density in densities:
                for dtype in dtypes:
                    p = layer_predictions(
                        layer.shape, density, layer.spikes, dtype, gpu, layer.bias
                    )
                    rows.append(
                        {
                            "model": model,
                            "layer": layer.label,
                            "module": layer.name,
                            "shape": asdict(layer.shape),
                            "bias": layer.bias,
                            "density": density,
                            "dtype": str(dtype).removeprefix("torch."),
                            "spikes": {"rate": layer.rate, "active_maps": 1 - layer.silent_maps},
                            "kernels": {
                                k: {
                                    "us": round(v.total_us, 2),
                                    "bound": v.bound,
                                    "roofline_us": round(v.roofline_us, 2),
                                    "terms_us": {
                                        "hbm": round(v.hbm_us, 2),
                                        "flops": round(v.flop_us, 2),
                                        "loads": round(v.load_us, 2),
                                        "latency": round(v.latency_us, 2),
                                    },
                                }
                                for k, v in p.kernels.items()
                            },
                            "fwd_bwd_us": round(p.fwd_bwd_us, 2),
                            "dense_fwd_bwd_us": round(p.dense_fwd_bwd_us, 2),
                            "ratio_to_dense": round(p.fwd_bwd_us / p.dense_fwd_bwd_us, 3),
                        }
                    )
    return rows


def predictions_document(gpu_key: str = "H200") -> dict:
    """The predictions of every benchmark case with the model's constants and provenance
    (``bench/results/kernel_predictions-<gpu>.json``: written before a GPU measures the kernels,
    compared with the measurement after)."""
    import platform

    import triton

    return {
        "what": (
            "predicted µs of each launch of the sparse kernels (model, not measurement): "
            "ndsnn_triton.kernels.perf_model, for the spike-input layers of VGG-16 and ResNet-19 "
            f"at B {BATCH}, T {T}, with the measured spike structure"
        ),
        "gpu": asdict(GPUS[gpu_key]),
        "model": {
            "t_dep_us": CALIBRATION.t_dep_us,
            "launch_us": CALIBRATION.launch_us,
            "occupancy": CALIBRATION.occupancy,
            "prior_rate": PRIOR_RATE,
            "source": CALIBRATION.source,
        },
        "environment": {
            "ndsnn_triton": __version__,
            "torch": torch.__version__.split("+")[0],
            "triton": triton.__version__,
            "python": platform.python_version(),
        },
        "rows": benchmark_predictions(gpu_key),
    }


# ----------------------------------------------------------------------------- markdown


def _fmt(us: float) -> str:
    if us >= 100:
        return f"{us:,.0f}"
    return f"{us:.1f}"


def _fit_table(rows: list[FitRow]) -> list[str]:
    out = ["| case | measured µs | model µs | error |", "|---|---|---|---|"]
    out += [
        f"| {r.case} | {_fmt(r.measured_us)} | {_fmt(r.predicted_us)} | {r.error:+.0%} |"
        for r in rows
    ]
    return out


def _measured_dense(path: Path, label: str) -> float | None:
    """The recorded cuDNN bf16 fwd+bwd µs of a VGG-16 layer, if the H200 file has it."""
    for r in _recorded_cases(path):
        if r["layer"] == f"vgg.{label}":
            return r["median_ms"]["cudnn_bf16_fwd_bwd"] * 1e3
    return None


def _prediction_table(model: str, gpu: Gpu, dtype: torch.dtype) -> list[str]:
    out = [
        "| layer | shape | rate | active maps | density | fwd | dgrad | wgrad | reduce | fwd+bwd | "
        "bound of the slowest | cuDNN fwd+bwd (model) | ratio | cuDNN bf16 measured (H200) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layer in model_layers(model):
        s = layer.shape
        measured = _measured_dense(H200_KERNELS, layer.label) if model == "vgg16" else None
        for density in DENSITIES:
            p = layer_predictions(s, density, layer.spikes, dtype, gpu, layer.bias)
            slowest = max(p.kernels.items(), key=lambda kv: kv[1].total_us)
            out.append(
                f"| {layer.label} | {s.cin}→{s.cout} @{s.h}, s{s.stride[0]} k{s.kh} | {layer.rate:.3f} "
                f"| {1 - layer.silent_maps:.2f} | {density:g} | "
                + " | ".join(
                    _fmt(p.kernels[k].total_us) for k in ("fwd", "dgrad", "wgrad", "reduce")
                )
                + f" | **{_fmt(p.fwd_bwd_us)}** | {slowest[0]}: {slowest[1].bound} | "
                f"{_fmt(p.dense_fwd_bwd_us)} | {p.fwd_bwd_us / p.dense_fwd_bwd_us:.2f} | "
                f"{_fmt(measured) if measured else '—'} |"
            )
    return out


def render_markdown(gpu_key: str = "H200", dtype: torch.dtype = torch.bfloat16) -> str:
    """``docs/roofline.md``: the model, its calibration with per-case errors, and its predictions
    for every spike-input layer of VGG-16 and ResNet-19."""
    gpu = GPUS[gpu_key]
    t_dep, t_rows = fit_t_dep()
    dense = fit_dense()
    dtype_name = str(dtype).removeprefix("torch.")
    lines = [
        "# GPU time model of the sparse kernels — model, not measurement",
        "",
        "> **Model, not measurement.** Every µs below not marked *measured* is predicted by "
        "`ndsnn_triton.kernels.perf_model` from shapes, dtypes, the mask's density, the spike "
        "structure and published peak rates, with constants fitted on recorded GPU runs.",
        "",
        f"Generated by `ndsnn roofline` (ndsnn_triton {__version__}); do not edit by hand.",
        "",
        "## The model",
        "",
        "Per launch it counts the minimum HBM bytes (each tensor once), the FLOPs (2 per executed "
        "multiply-accumulate, `ndsnn_triton.kernels.work`), the load lanes the program issues "
        "(masked-off lanes included) and the *chain* — dependent global round trips, summed over "
        "programs — and predicts",
        "",
        "`time = max(bytes / HBM bandwidth, FLOPs / fp32 peak, lanes / load rate, chain · t_dep / "
        "concurrency) + launch`",
        "",
        f"with concurrency = SMs × resident programs ({CALIBRATION.occupancy:.0%} of "
        f"{gpu.max_warps_per_sm} warps per SM for a kernel that compiles to ≤ 64 registers; for "
        f"one whose plan caps its registers, what {gpu.registers_per_sm:,} registers per SM leave "
        f"room for: the forward at {FWD_MAX_REGISTERS}, "
        f"{gpu.registers_per_sm // (FWD_MAX_REGISTERS * 128)} programs of 4 warps; "
        "tests/test_aot_compile.py checks "
        "the compiled kernels against both), a "
        f"load rate of {gpu.load_lanes_per_clk} lanes per SM and cycle (assumed), "
        f"{CALIBRATION.launch_us:g} µs per launch (assumed) and t_dep fitted below. "
        f"{gpu.name}: {gpu.sms} SMs at {gpu.clock_ghz} GHz, HBM {gpu.hbm_tb_s} TB/s, fp32 "
        f"{gpu.fp32_tflops:g} TFLOP/s ({gpu.source}). The classic roofline bound is the first two "
        "terms; a kernel's *achieved fraction* is that bound over its measured time.",
        "",
        "## Calibration: one dependent load (t_dep)",
        "",
        "Fitted on the recorded H200 forward of the serial-gather kernel the library shipped before "
        "(`bench/results/spike_skipping-NVIDIA_H200.json`, `triton_fwd_noskip`, density 0.01, "
        "B 64, T 5): a program per output channel and 16–128 positions walked its row's kept "
        f"weights one at a time, {LEGACY_FORWARD_DEPTH} dependent loads each (index, activity "
        "reduced across the block, input), at full occupancy. "
        f"**t_dep = {t_dep:.3f} µs** (the model uses {CALIBRATION.t_dep_us:.3f}), i.e. "
        f"{LEGACY_FORWARD_DEPTH * t_dep:.2f} µs per kept weight and wave:",
        "",
        *_fit_table(t_rows),
        "",
        "## Calibration: cuDNN (the dense path `auto` compares with)",
        "",
        "`time = overhead + GFLOP · a + MB · b` (MB: input, output and weights once), "
        "non-negative relative least squares on the recorded cuDNN columns of the same file "
        "(cuDNN benchmark mode, TF32 off for fp32; bwd = fwd+bwd − fwd):",
        "",
        "| compute | direction | overhead µs | µs / GFLOP | µs / MB | worst error |",
        "|---|---|---|---|---|---|",
    ]
    for (g, compute, direction), (fit, rows) in dense.items():
        worst = max(rows, key=lambda r: abs(r.error))
        lines.append(
            f"| {compute} | {direction} | {fit.overhead_us:g} | {fit.us_per_gflop:g} | "
            f"{fit.us_per_mb:g} | {worst.error:+.0%} ({worst.case}) |"
        )
        if DENSE_FITS.get((g, compute, direction)) != fit:
            lines.append(
                f"| | | *stale: the model holds {DENSE_FITS.get((g, compute, direction))}* | | | |"
            )
    lines += [
        "",
        f"## Predictions: VGG-16 and ResNet-19 layers ({gpu.name}, {dtype_name})",
        "",
        f"B {BATCH}, T {T}; weights fp32 (read as stored), compute {dtype_name}, int8 spikes with "
        "their map activity (as the library's LIF hands them over); spikes: the rate and the "
        "fraction of active maps measured per layer input after NDSNN training to 99 % "
        "(`bench/results/spike_structure.json`; ResNet-19's was recorded on a network whose head "
        "never fired); masks uniformly random at each density. µs per launch; fwd+bwd is the sum "
        "of the four launches; *ratio* = fwd+bwd / the cuDNN model's fwd+bwd in "
        f"{dtype_name} (the goal is ≤ 0.2 on VGG-16, ≤ 0.3 on ResNet-19 at density 0.01).",
        "",
        "### VGG-16",
        "",
        *_prediction_table("vgg16", gpu, dtype),
        "",
        "### ResNet-19",
        "",
        *_prediction_table("resnet19", gpu, dtype),
        "",
        "## What the model cannot know",
        "",
        f"* The spike rate the weight gradient meets, when `auto` prices it before the spikes "
        f"exist: it assumes {PRIOR_RATE} (the upper end of the measured rates).",
        "* Cache behaviour: gathers are assumed to hit L1/L2 (only each tensor's first read "
        "reaches HBM) and the load rate to be the SM's; both are checked when a GPU measures the "
        "kernels (`python -m bench.gpu_check`, which records the measured beside these predictions).",
        "* Skipping of silent maps needs whole warps of silent lanes to save load slots; the "
        "model counts every issued lane.",
        "",
    ]
    return "\n".join(lines)
