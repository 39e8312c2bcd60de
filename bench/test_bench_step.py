"""End-to-end training-step benchmarks: VGG-16 and ResNet-19, B = 64, T = 5, 32×32.

One step is what the trainer runs (:func:`forward_backward` + :func:`sparse_optimizer_step`):
forward over T, ``mean_t`` cross-entropy, backward, SGD with momentum, masks re-applied to weights
and optimizer state. Per model, configuration and overall weight density (uniform layer-wise
split, random masks) it records

* ``kind="train"``: an ordinary step (weight gradient at mask positions only; a ``static`` method);
* ``kind="update"``: a mask-update step (dense weight gradient + RigL/NDSNN drop-and-grow with
  ζ = 0.3), then the compressed-index rebuild of every layer after that mask change
  (``kind="rebuild"``);

with ``triton.testing.do_bench`` medians and quantiles, the peak GPU memory of one step (library
caches freed and CUDA's cache emptied between cases) and the measured mean input spike rate, at
the default recompute threshold (:mod:`ndsnn_triton.nn.recompute`) and again saving every
activation (``saving_all_median_ms``, ``saving_all_peak_memory_bytes``: what recomputation buys
in peak memory and costs in time). Configurations: ``auto_*`` runs the ``ndsnn`` ops on backend
``auto`` (Triton where the time model predicts it faster, else cuDNN), ``dense_*`` the same model on backend ``dense``
(cuDNN/cuBLAS on the masked dense weight, the fused Triton LIF), each in bf16 autocast and in fp32.
Files recorded before the ``dense`` backend existed ran ``dense_*`` on backend ``torch`` (eager LIF).
Timed steps run with the binary-spike input check off (``use_spike_check(False)``: it is a
host-synchronising validation, not training work), ``cudnn.benchmark=True`` and TF32 off (fp32
means IEEE fp32; flags pinned per case and restored, and recorded in the file's environment).
``bench/results/step_times-<device>.json`` feeds ``ndsnn report --step-times``.

GPU cases: 64 by default (2 models × 4 configurations × densities 1, 0.1, 0.05, 0.01 × 2 kinds;
do_bench warm-up 5 ms, rep 25 ms). ``NDSNN_BENCH_FULL=1``: 80 cases (density 0.02 too; warm-up
3 ms, rep 60 ms). ``tests/test_bench_results.py`` checks these counts against the grid below.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import ndsnn_triton
from bench.conftest import BENCH_FULL, pinned_flags, record
from ndsnn_triton.kernels.sparse_index import build_index
from ndsnn_triton.models import build_model
from ndsnn_triton.nn import masked_layers, reset_net
from ndsnn_triton.profiler import SpikeRateMonitor
from ndsnn_triton.sparse.attach import Sparsifier
from ndsnn_triton.sparse.masks import model_density
from ndsnn_triton.sparse.methods import SparseMethod, build_method
from ndsnn_triton.train.trainer import forward_backward, sparse_optimizer_step

B, T = 64, 5
MODELS = ["vgg16", "resnet19"]
DENSITIES_FULL = [1.0, 0.1, 0.05, 0.02, 0.01]
DENSITIES_TRIMMED = [1.0, 0.1, 0.05, 0.01]
DENSITIES = DENSITIES_FULL if BENCH_FULL else DENSITIES_TRIMMED
KINDS = ["train", "update"]
#: config -> (backend, bf16 autocast)
CONFIGS = {
    "auto_bf16": ("auto", True),
    "auto_fp32": ("auto", False),
    "dense_bf16": ("dense", True),
    "dense_fp32": ("dense", False),
}
QUANTILES = [0.5, 0.2, 0.8]
#: do_bench warm-up and measuring time per timed function (ms)
WARMUP_MS, REP_MS = (3, 60) if BENCH_FULL else (5, 25)


class StepCase:
    """A model, its sparse method, an optimizer and one batch, ready to run training steps."""

    def __init__(
        self, model_name: str, density: float, kind: str, device: str, batch: int, steps_T: int
    ):
        torch.manual_seed(0)
        self.model_name = model_name
        self.requested_density = density
        kwargs = {"num_classes": 10, "T": steps_T}
        size, channels = (8, 1) if model_name == "small" else (32, 3)
        self.model = build_model(model_name, **kwargs).to(device)
        if kind == "update":  # every step after the first updates the masks
            self.method: SparseMethod = build_method(
                "rigl", density=density, distribution="uniform", delta_t=1, stop_fraction=1.0
            )
        elif density < 1.0:
            self.method = build_method("static", density=density, distribution="uniform")
        else:
            self.method = build_method("dense")
        self.method.setup(self.model, steps_per_epoch=10**6, epochs=1)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4
        )
        self.sparsifier = Sparsifier(self.method, self.optimizer)
        g = torch.Generator().manual_seed(1)
        self.x = torch.rand(batch, channels, size, size, generator=g).to(device)
        self.y = torch.randint(0, 10, (batch,), generator=g).to(device)
        self.kind = kind
        self.step = 1  # step 0 is never an update step

    def run(self, amp: bool) -> None:
        self.sparsifier.seek(self.step)  # a train case repeats one ordinary step
        dense_grad = self.sparsifier.dense_grad
        forward_backward(self.model, self.model, self.optimizer, self.x, self.y, dense_grad, amp)
        sparse_optimizer_step(self.sparsifier, self.optimizer)
        reset_net(self.model)
        if self.kind == "update":  # the next step is an update step too
            self.step += 1

    def spike_rate(self) -> float:
        """Mean input non-zero rate of the spike-input layers on this batch."""
        with torch.no_grad(), SpikeRateMonitor(self.model) as monitor:
            self.model(self.x)
        reset_net(self.model)
        rates = [s.input_rate for s in monitor.stats() if s.spike_input]
        return sum(rates) / len(rates)

    def case_id(self, config: str, kind: str) -> str:
        """The identity of a row of this case in the result file."""
        batch, steps_T = self.x.shape[0], self.model.T
        return f"{self.model_name}/{config}/B{batch}T{steps_T}/d{self.requested_density:g}/{kind}"

    def size_indices(self) -> None:
        """Count every layer's kept weights on the host (the buffer sizes), outside any timing."""
        self._caps = [int(layer.mask.sum()) for _, layer in masked_layers(self.model)]

    def rebuild_all(self) -> None:
        """Rebuild every layer's compressed index from its current mask (what a mask change costs),
        into buffers of a known size as the kernels do (no host synchronisation)."""
        if not hasattr(self, "_caps"):
            self.size_indices()
        for (_, layer), cap in zip(masked_layers(self.model), self._caps, strict=True):
            build_index(layer.mask.reshape(layer.mask.shape[0], -1), cap)


def measure_case(
    case: StepCase,
    config: str,
    timer: Callable[[Callable[[], None]], list[float]],
    quantiles: list[float] = QUANTILES,
    backend: str | None = None,
) -> list[dict]:
    """Rows for one case: the step itself and, after a mask update, the index rebuild.

    ``timer(fn)`` returns ``fn``'s times in ms at ``quantiles`` (the median first). ``backend``
    replaces the configuration's (CPU runs: ``"torch"``, not Triton kernels in the interpreter)."""
    config_backend, amp = CONFIGS[config]
    backend = backend or config_backend
    cuda = case.x.device.type == "cuda"

    def peak_and_times() -> tuple[int | None, list[float]]:
        case.run(amp)  # warm-up: autotuning, the auto dispatch's timing, index builds
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        case.run(amp)
        peak = torch.cuda.max_memory_allocated() if cuda else None
        return peak, timer(lambda: case.run(amp))

    with ndsnn_triton.use_backend(backend), ndsnn_triton.use_spike_check(False):
        peak, times = peak_and_times()
        # the same step saving every activation: what recomputation buys (peak) and costs (time)
        with ndsnn_triton.use_recompute_density(0.0):
            saving_peak, saving_times = peak_and_times()
    base = {
        "model": case.model_name,
        "config": config,
        "backend": backend,
        "amp_bf16": amp,
        "batch": case.x.shape[0],
        "T": case.model.T,
        "distribution": "uniform",
        "density": round(model_density(case.model), 6),
        "spike_rate": case.spike_rate(),
    }
    rows = [
        {
            "case": case.case_id(config, case.kind),
            **base,
            "kind": case.kind,
            "median_ms": times[0],
            "quantiles": quantiles,
            "quantiles_ms": times,
            "peak_memory_bytes": peak,
            "recompute_density": ndsnn_triton.get_recompute_density(),
            "saving_all_median_ms": saving_times[0],
            "saving_all_peak_memory_bytes": saving_peak,
        }
    ]
    if case.kind == "update":
        case.size_indices()
        rebuild = timer(case.rebuild_all)
        rows.append(
            {
                "case": case.case_id(config, "rebuild"),
                **base,
                "kind": "rebuild",
                "median_ms": rebuild[0],
                "quantiles": quantiles,
                "quantiles_ms": rebuild,
            }
        )
    return rows


def _do_bench(fn: Callable[[], None]) -> list[float]:
    """do_bench [median, 20 %, 80 %] quantiles of ``fn`` in ms."""
    import triton

    return [
        float(v)
        for v in triton.testing.do_bench(fn, quantiles=QUANTILES, warmup=WARMUP_MS, rep=REP_MS)
    ]


@pytest.fixture
def gpu_step_flags():
    """cuDNN autotuning on, TF32 off (IEEE fp32 for the fp32 configurations); restored after."""
    with pinned_flags(cudnn_benchmark=True, tf32=False):
        yield


@pytest.mark.gpu
@pytest.mark.usefixtures("gpu_step_flags")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("model", MODELS)
def test_training_step(benchmark, model, config, density, kind):
    case = StepCase(model, density, kind, "cuda", B, T)
    rows = measure_case(case, config, _do_bench)
    for row in rows:
        record("step_times", row)
    benchmark.extra_info.update(rows[0])
    benchmark.group = f"{model} {kind}"
    backend, amp = CONFIGS[config]

    def step():
        with ndsnn_triton.use_backend(backend), ndsnn_triton.use_spike_check(False):
            case.run(amp)
        torch.cuda.synchronize()

    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)


def test_step_case_smoke(tmp_path):
    """CPU smoke run of the same code on the small model: rows in the format the report reads,
    drawn by the plot script."""

    import json
    import time

    from bench.plot import plot_steps
    from ndsnn_triton.profiler.measured import parse_step_times

    def once(fn):
        start = time.perf_counter()
        fn()
        ms = (time.perf_counter() - start) * 1e3
        return [ms, ms, ms]

    rows = []
    for kind in ("train", "update"):
        for density in (1.0, 0.1):
            case = StepCase("small", density, kind, "cpu", 4, 2)
            rows += measure_case(case, "dense_fp32", once, backend="torch")
    times = parse_step_times({"results": rows})[("small", "dense_fp32")]
    assert list(times.grids["train"][0]) == pytest.approx([0.1, 1.0], abs=1e-3)
    assert sorted(r["kind"] for r in rows).count("rebuild") == 2
    assert all(0 < r["spike_rate"] < 1 for r in rows)
    path = tmp_path / "step_times-cpu.json"
    path.write_text(json.dumps({"results": rows}))
    assert plot_steps([path], tmp_path / "steps.png").stat().st_size > 0
