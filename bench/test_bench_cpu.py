"""CPU benchmarks: what is real on a machine without a GPU (``pytest bench --benchmark-only``).

Times come from pytest-benchmark's own statistics (``benchmark.pedantic``, few rounds; median,
quartiles, min, mean, stddev in ms) and go to ``bench/results/<suite>-cpu.json``, whose
environment names the CPU model, logical cores, torch threads, versions, commit and flags:

* ``conv_ops``: two VGG-16 layer shapes at a reduced batch, B·T = 20 (B = 4, T = 5): vgg.conv2
  (64→64, 3×3, 32×32 map) and vgg.conv9 (512→512, 3×3, 4×4 map), spike rate 0.1, weight densities
  1, 0.1, 0.05, 0.01. Implementations: ``ref_fwd``/``ref_fwd_bwd`` — ``ndsnn_triton.masked_conv2d``
  on backend ``"torch"`` (the ops' reference path; x and weight require grad for the backward);
  ``dense_fwd``/``dense_fwd_bwd`` — ``F.conv2d`` on the masked dense weight; ``csr_fwd`` —
  torch.sparse CSR weight × im2col'd input (im2col outside the timing, as in the GPU suite).
  40 cases.
* ``lif_ops``: multi-step LIF forward + backward, T = 5, B = 4, [C, H, W] = [64, 32, 32] and
  [512, 4, 4]: the op's torch path (``lif_forward_ref`` + ``lif_backward_ref``) against the eager
  per-step loop through autograd (``lif_multistep_autograd_ref``). 4 cases.
* ``train_step``: one training step of the small model (B = 64, T = 5, 8×8 digits-sized input,
  backend ``"torch"``, fp32), densities 1 and 0.1, ordinary and mask-update steps (the index
  rebuild after an update is timed with ``time.perf_counter``); rows in the step-times format.
  4 cases.
* ``report_pipeline``: ``ndsnn report``'s pipeline (``build_report`` with the CLI's defaults) into
  a temporary folder, 1 round. 1 case.

Without ``--benchmark-only`` (plain ``pytest``, ``--benchmark-disable``) each case runs once as a
smoke test and writes nothing; the report case is skipped then (``tests/test_profiler.py`` runs
the report). On a CUDA machine the suite is skipped unless ``NDSNN_BENCH_CPU=1`` (it would spend
the GPU run's time on CPU numbers). The binary-spike input check is off in timed code.
"""

from __future__ import annotations

import inspect
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ndsnn_triton
from bench.conftest import record, timing_enabled
from bench.test_bench_step import StepCase, measure_case
from ndsnn_triton.kernels.lif import lif_backward_ref, lif_forward_ref
from ndsnn_triton.neuron_equations import lif_multistep_autograd_ref

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available() and os.environ.get("NDSNN_BENCH_CPU") != "1",
    reason="CPU benchmarks skip on a CUDA machine unless NDSNN_BENCH_CPU=1",
)

B, T = 4, 5  # B·T = 20 images per conv call
SPIKE_RATE = 0.1
# (name, Cin, Cout, k, stride, padding, input map), as in test_bench_kernels.py
CONV_LAYERS = [("vgg.conv2", 64, 64, 3, 1, 1, 32), ("vgg.conv9", 512, 512, 3, 1, 1, 4)]
DENSITIES = [1.0, 0.1, 0.05, 0.01]
CONV_IMPLS = ["ref_fwd", "ref_fwd_bwd", "dense_fwd", "dense_fwd_bwd", "csr_fwd"]
LIF_SHAPES = [(64, 32, 32), (512, 4, 4)]
LIF_IMPLS = ["ref_fwd_bwd", "eager_autograd_fwd_bwd"]
TAU = 4 / 3
STEP_B, STEP_T = 64, 5
STEP_B_SMOKE, STEP_T_SMOKE = 4, 2  # the step cases' size when nothing is recorded
STEP_DENSITIES = [1.0, 0.1]
QUARTILES = [0.5, 0.25, 0.75]  # the order of quantiles_ms in train_step rows
ROUNDS = 7


def stats_ms(benchmark) -> dict[str, Any]:
    """pytest-benchmark's statistics of the last timed call, in ms."""
    st = benchmark.stats.stats
    out = {f"{k}_ms": getattr(st, k) * 1e3 for k in ("median", "q1", "q3", "min", "mean", "stddev")}
    return out | {"rounds": st.rounds}


def run_case(request, benchmark, fn: Callable[[], object], rounds: int = ROUNDS) -> dict | None:
    """Time ``fn`` (pytest-benchmark, one warm-up round) and return its statistics in ms when this
    run records timings; otherwise run it once through the fixture (a smoke test) and return None."""
    if not timing_enabled(request.config):
        benchmark.pedantic(fn, rounds=1, iterations=1)
        return None
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1 if rounds > 1 else 0, iterations=1)
    return stats_ms(benchmark)


def _leaf(t: torch.Tensor, grad: bool) -> torch.Tensor:
    """A fresh copy of ``t`` (never ``t`` itself), requiring grad if ``grad``."""
    return t.detach().clone().requires_grad_(grad)


def conv_fn(impl: str, layer: tuple, density: float) -> Callable[[], object]:
    """The timed call of one conv implementation on one layer shape and weight density."""
    _, cin, cout, k, s, p, size = layer
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(B * T, cin, size, size, generator=g) < SPIKE_RATE).float()
    w = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5
    mask = torch.rand(w.shape, generator=g) < density
    out = (size + 2 * p - k) // s + 1
    dy = torch.randn(B * T, cout, out, out, generator=g)
    backward = impl.endswith("fwd_bwd")
    xr, wr = _leaf(x, backward), _leaf(w, backward)
    wm = _leaf(w * mask, backward)
    if impl.startswith("ref"):

        def fwd():
            return ndsnn_triton.masked_conv2d(xr, wr, mask, stride=s, padding=p)

        inputs = (xr, wr)
    elif impl.startswith("dense"):

        def fwd():
            return F.conv2d(xr, wm, None, s, p)

        inputs = (xr, wm)
    else:
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            csr = (w * mask).reshape(cout, -1).to_sparse_csr()
        rhs = F.unfold(x, k, padding=p, stride=s).transpose(0, 1).reshape(cin * k * k, -1)
        rhs = rhs.contiguous()
        return lambda: torch.sparse.mm(csr, rhs)
    if not backward:
        return fwd
    return lambda: torch.autograd.grad(fwd(), inputs, dy)


CONV_CASES = [(layer, d, impl) for layer in CONV_LAYERS for d in DENSITIES for impl in CONV_IMPLS]


@pytest.mark.parametrize(
    ("layer", "density", "impl"),
    CONV_CASES,
    ids=[f"{layer[0]}-d{d:g}-{impl}" for layer, d, impl in CONV_CASES],
)
def test_conv_cpu(request, benchmark, layer, density, impl):
    name, cin, cout, k, s, p, size = layer
    fn = conv_fn(impl, layer, density)
    benchmark.group = f"conv {name} d={density:g}"
    with ndsnn_triton.use_backend("torch"), ndsnn_triton.use_spike_check(False):
        stats = run_case(request, benchmark, fn)
    if stats is None:
        return
    shape = {"B": B, "T": T, "cin": cin, "cout": cout, "k": k, "stride": s, "padding": p}
    row = {
        "case": f"{name}/d{density:g}/{impl}",
        "layer": name,
        "shape": shape | {"map": size},
        "density": density,
        "spike_rate": SPIKE_RATE,
        "impl": impl,
        **stats,
    }
    record("conv_ops", row, device="cpu")


def lif_fn(impl: str, shape: tuple[int, int, int]) -> Callable[[], object]:
    """Forward + backward of one LIF implementation over T steps of a [B, C, H, W] layer."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, *shape, generator=g)
    v0 = torch.zeros(B, *shape)
    grad_s = torch.randn(T, B, *shape, generator=g)
    grad_v = torch.zeros(B, *shape)
    if impl == "ref_fwd_bwd":

        def ref():
            _, _, h, _, _ = lif_forward_ref(x, v0, TAU, 1.0, 0.0, True)
            return lif_backward_ref(grad_s, grad_v, h, TAU, 1.0, 0.0, True, True, "atan", 2.0)

        return ref
    xr = _leaf(x, True)

    def eager():
        s, v = lif_multistep_autograd_ref(xr, v0, TAU, 1.0, 0.0, True, True, "atan", 2.0)
        return torch.autograd.grad((s, v), (xr,), (grad_s, grad_v))

    return eager


LIF_CASES = [(shape, impl) for shape in LIF_SHAPES for impl in LIF_IMPLS]


@pytest.mark.parametrize(
    ("shape", "impl"),
    LIF_CASES,
    ids=[f"c{s[0]}m{s[1]}-{impl}" for s, impl in LIF_CASES],
)
def test_lif_cpu(request, benchmark, shape, impl):
    c, h, w = shape
    benchmark.group = f"lif c{c}m{h}"
    stats = run_case(request, benchmark, lif_fn(impl, shape))
    if stats is None:
        return
    row = {
        "case": f"lif/T{T}B{B}C{c}H{h}W{w}/{impl}",
        "kernel": "lif",
        "shape": {"T": T, "B": B, "C": c, "H": h, "W": w},
        "impl": impl,
        **stats,
    }
    record("lif_ops", row, device="cpu")


def _perf_quartiles(fn: Callable[[], None], rounds: int = ROUNDS) -> list[float]:
    """[median, q1, q3] of ``fn`` in ms over ``rounds`` calls after one warm-up (perf_counter)."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return [median, q1, q3]


@pytest.mark.parametrize("kind", ["train", "update"])
@pytest.mark.parametrize("density", STEP_DENSITIES)
def test_train_step_cpu(request, benchmark, density, kind):
    timed = timing_enabled(request.config)
    batch, steps_T = (STEP_B, STEP_T) if timed else (STEP_B_SMOKE, STEP_T_SMOKE)
    case = StepCase("small", density, kind, "cpu", batch, steps_T)
    stats: dict[str, Any] = {}
    calls: list[Callable[[], None]] = []

    def timer(fn: Callable[[], None]) -> list[float]:
        """The step through pytest-benchmark; later calls (the step saving every activation,
        the index rebuild) by perf_counter."""
        calls.append(fn)
        if len(calls) > 1:
            if timed:
                return _perf_quartiles(fn)
            fn()
            return [0.0, 0.0, 0.0]
        stats.update(run_case(request, benchmark, fn) or {})
        return [stats.get(k, 0.0) for k in ("median_ms", "q1_ms", "q3_ms")]

    benchmark.group = f"train step small {kind}"
    rows = measure_case(case, "dense_fp32", timer, QUARTILES, backend="torch")  # the CPU path
    if not timed:
        return
    rows[0] |= stats
    for row in rows:
        record("train_step", row, device="cpu")


def test_report_pipeline_cpu(request, benchmark, tmp_path):
    from ndsnn_triton.profiler.report import build_report

    if not timing_enabled(request.config):
        pytest.skip("timed only under --benchmark-only (tests/test_profiler.py runs the report)")
    out = tmp_path / "report"
    benchmark.group = "ndsnn report"
    stats = run_case(request, benchmark, lambda: build_report(out), rounds=1)
    defaults = inspect.signature(build_report).parameters
    row = {
        "case": "report/defaults",
        "command": "ndsnn report --out DIR (build_report with the CLI's defaults)",
        "models": list(defaults["models"].default),
        "sparsities": list(defaults["sparsities"].default),
        "figures": len(list(out.glob("*.png"))),
        **stats,
    }
    record("report_pipeline", row, device="cpu")
