"""Measured training cost: GPU step times integrated over each method's schedule.

The step benchmark (``pytest bench/test_bench_step.py --benchmark-only`` on a GPU) times one full
training step of a model at a grid of overall weight densities, for each configuration (backend
and precision, e.g. ``auto_bf16`` for the library's kernels, ``dense_bf16`` for cuDNN on masked
dense weights), both an ordinary step (``kind="train"``: weight gradient at mask positions) and a
mask-update step (``kind="update"``: dense weight gradient plus drop-and-grow). It writes::

    {"environment": {...}, "results": [
        {"model": "vgg16", "config": "auto_bf16", "kind": "train", "batch": 64, "T": 5,
         "density": 0.1, "median_ms": 12.3, ...}, ...]}

A run's GPU time is the sum over its schedule's segments of ``steps × t(d)``, where ``d`` is the
segment's overall density and ``t`` interpolates the measured medians linearly in density (held
constant outside the measured range), taken from the ``update`` grid on dense-gradient steps and
from the ``train`` grid otherwise. A schedule planned at batch ``B`` is priced ``× B / B_measured``
(step time taken as linear in the batch: a documented approximation). Per-layer densities enter
only through the overall density, so a grid measured with one layer-wise distribution prices
schedules of that distribution.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ndsnn_triton.profiler.claim import (
    PROTOCOLS,
    Assumptions,
    ModelSetup,
    lth_cost,
    lth_schedule,
    ndsnn_cost,
    schedule_of,
)
from ndsnn_triton.profiler.cost import run_cost
from ndsnn_triton.sparse.schedules import Schedule

KINDS = ("train", "update")
_REQUIRED = ("model", "config", "kind", "batch", "T", "density", "median_ms")


@dataclass(frozen=True)
class StepTimes:
    """Measured step times of one model and configuration, by overall density."""

    model: str
    config: str
    batch: int
    T: int
    grids: Mapping[str, tuple[np.ndarray, np.ndarray]]  # kind -> (densities ascending, median ms)
    distribution: str = "uniform"

    def step_ms(self, density: float, dense_grad: bool) -> float:
        """Interpolated milliseconds of one step at overall ``density``."""
        kind = "update" if dense_grad else "train"
        if kind not in self.grids:
            raise ValueError(
                f"step times for {self.model}/{self.config} have no '{kind}' measurements, but the "
                f"schedule has {'dense-gradient' if dense_grad else 'ordinary'} steps"
            )
        d, ms = self.grids[kind]
        return float(np.interp(density, d, ms))


def _row_error(path: str, i: int, message: str) -> ValueError:
    return ValueError(f"step-times file {path}: result {i}: {message}")


def parse_step_times(data: Any, source: str = "<data>") -> dict[tuple[str, str], StepTimes]:
    """``{(model, config): StepTimes}`` from a step-times document (see the module docstring)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("results"), list):
        raise ValueError(f"step-times file {source}: expected an object with a 'results' list")
    collected: dict[tuple[str, str], dict[str, Any]] = {}
    for i, row in enumerate(data["results"]):
        if not isinstance(row, Mapping):
            raise _row_error(source, i, "not an object")
        if "kind" in row and row["kind"] not in KINDS:
            continue  # other measurements (rebuild, memory) share the file
        missing = [k for k in _REQUIRED if k not in row]
        if missing:
            raise _row_error(source, i, f"missing {missing}")
        d, ms = row["density"], row["median_ms"]
        if not (isinstance(d, int | float) and 0 < d <= 1):
            raise _row_error(source, i, f"density must lie in (0, 1], got {d!r}")
        if not (isinstance(ms, int | float) and math.isfinite(ms) and ms > 0):
            raise _row_error(source, i, f"median_ms must be a positive number, got {ms!r}")
        key = (str(row["model"]), str(row["config"]))
        entry = collected.setdefault(
            key,
            {
                "batch": row["batch"],
                "T": row["T"],
                "distribution": row.get("distribution", "uniform"),
                "points": {},
            },
        )
        if (row["batch"], row["T"]) != (entry["batch"], entry["T"]):
            raise _row_error(source, i, f"{key} mixes batch/T settings")
        points = entry["points"].setdefault(row["kind"], {})
        if float(d) in points:
            raise _row_error(source, i, f"{key} has two '{row['kind']}' times at density {d}")
        points[float(d)] = float(ms)
    if not collected:
        raise ValueError(f"step-times file {source}: no 'train'/'update' step measurements")
    out = {}
    for (model, config), e in collected.items():
        grids = {
            kind: (np.array(sorted(p)), np.array([p[d] for d in sorted(p)]))
            for kind, p in e["points"].items()
        }
        out[(model, config)] = StepTimes(
            model, config, int(e["batch"]), int(e["T"]), grids, str(e["distribution"])
        )
    return out


def read_step_times_file(path: str | Path) -> dict[str, Any]:
    """The JSON document of a step-times file; ``ValueError`` if missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"step-times file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"step-times file {path} is not valid JSON: {err}") from None


def load_step_times(path: str | Path) -> dict[tuple[str, str], StepTimes]:
    """Read a step-times JSON file; ``ValueError`` naming the problem if it is not one."""
    return parse_step_times(read_step_times_file(path), str(path))


@dataclass(frozen=True)
class MeasuredRun:
    """GPU time of one run priced from measured step times."""

    method: str
    steps: int
    seconds: float
    update_steps: int
    update_seconds: float  # part of ``seconds`` spent on dense-gradient (mask-update) steps


def measured_run(schedule: Schedule, times: StepTimes, batch: int | None = None) -> MeasuredRun:
    """Price ``schedule`` with ``times``; ``batch``: the schedule's batch (default: measured)."""
    scale = 1.0 if batch is None else batch / times.batch
    total = update = 0.0
    for seg in schedule.segments:
        seconds = seg.steps * times.step_ms(schedule.overall_density(seg.densities), seg.dense_grad)
        seconds *= scale / 1e3
        total += seconds
        if seg.dense_grad:
            update += seconds
    return MeasuredRun(
        schedule.method, schedule.total_steps, total, schedule.dense_grad_steps, update
    )


def interpolation_note(times: StepTimes, densities: Sequence[float]) -> str | None:
    """A warning if any of ``densities`` lies outside the measured train grid (prices clamp there)."""
    d = times.grids["train"][0]
    outside = sorted({x for x in densities if x < d[0] - 1e-12 or x > d[-1] + 1e-12})
    if not outside:
        return None
    return (
        f"{times.model}/{times.config}: densities {outside} lie outside the measured range "
        f"[{d[0]:g}, {d[-1]:g}]; they are priced at the nearest measured point"
    )


# ----------------------------------------------------------------------------- wall-clock claim


@dataclass(frozen=True)
class MeasuredClaimRow:
    """NDSNN/LTH in measured GPU seconds next to the analytic FLOP ratio (``snn`` convention)."""

    model: str
    config: str
    protocol: str
    distribution: str
    sparsity: float
    ndsnn_seconds: float
    lth_seconds: float
    ratio_seconds: float
    ratio_flops: float
    paper_ratio: float | None  # None: no published claim for this model


def measured_claim(
    setups: Sequence[ModelSetup],
    a: Assumptions,
    times: Mapping[tuple[str, str], StepTimes],
    sparsities: Sequence[float] = (0.9, 0.95, 0.98, 0.99),
    protocols: Sequence[str] | None = None,
) -> list[MeasuredClaimRow]:
    """For every model with measured times, each configuration, protocol and sparsity: the
    NDSNN/LTH ratio of GPU seconds and of FLOPs, both on the schedules of the measured
    layer-wise distribution."""
    levels = [1.0 - s for s in sparsities]
    rows = []
    for setup in setups:
        for (model, config), t in times.items():
            if model != setup.name:
                continue
            dist = t.distribution
            for protocol in protocols or PROTOCOLS:
                for sparsity, density in zip(sparsities, levels, strict=True):
                    nd = measured_run(schedule_of(setup, "ndsnn", a, density, dist), t, a.batch)
                    sched, share = lth_schedule(setup, protocol, density, levels, dist, a)
                    lt = measured_run(sched, t, a.batch).seconds * share
                    flops = ndsnn_cost(setup, density, dist, "snn", a).total / lth_cost(
                        setup, protocol, density, levels, dist, "snn", a
                    )
                    rows.append(
                        MeasuredClaimRow(
                            model,
                            config,
                            protocol,
                            dist,
                            sparsity,
                            nd.seconds,
                            lt,
                            nd.seconds / lt,
                            flops,
                            setup.paper_ratio,
                        )
                    )
    return rows


def measured_method_costs(
    setup: ModelSetup, a: Assumptions, times: StepTimes, density: float, methods: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per method at ``density`` (measured distribution): FLOPs (``snn``) and GPU seconds, each
    also relative to one dense run, plus the seconds spent on mask-update steps."""
    out = {}
    unit_flops = unit_seconds = None
    for method in ("dense", *[m for m in methods if m != "dense"]):
        d = 1.0 if method == "dense" else density
        sched = schedule_of(setup, method, a, d, None if method == "dense" else times.distribution)
        flops = run_cost(setup.table, sched, a.spike_rate, a.batch, "snn").total
        run = measured_run(sched, times, a.batch)
        if method == "dense":
            unit_flops, unit_seconds = flops, run.seconds
        out[method] = {
            "flops": flops,
            "seconds": run.seconds,
            "update_seconds": run.update_seconds,
            "flops_x_dense": flops / unit_flops,
            "seconds_x_dense": run.seconds / unit_seconds,
        }
    return {m: out[m] for m in methods}
