"""Analytic training cost: FLOPs of one step per layer and term, integrated over a run.

Per weight layer l, with dense MACs per sample per timestep ``M_l``, timesteps ``τ_l``, weight
density ``d_l``, input spike rate ``r_l`` (1 for analog input) and batch ``B``, one training step
costs (2 FLOPs per MAC; SPEC §6):

=================  =====================================  ==================================
term               ``snn`` (spike-aware)                  ``rigl`` (Evci et al. 2020)
=================  =====================================  ==================================
forward            ``2·B·τ·M·d·r``                        ``f = 2·B·τ·M·d``
input gradient     ``2·B·τ·M·d`` (0 if the layer's input  ``f``
                   needs no gradient: the first layer)
weight gradient    ``2·B·τ·M·d·r``;                       ``f``; dense-gradient steps
                   dense-gradient steps ``2·B·τ·M·r``     ``f_D = 2·B·τ·M``
=================  =====================================  ==================================

The ``rigl`` convention gives RigL's published formulas: dense ``3 f_D``, static/SET ``3 f_S``,
RigL ``(3 f_S ΔT + 2 f_S + f_D)/(ΔT + 1)`` per step. Elementwise work (BN, LIF, pooling) is a
separate line in element-operations — forward one per element, backward two — never added to the
FLOPs above.

Energy (optional): ``4.6 pJ`` per MAC and ``0.9 pJ`` per accumulate (45 nm fp32, Horowitz 2014);
under ``snn``, the forward and weight-gradient work of spike-input layers is accumulates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ndsnn_triton.profiler.layers import LayerTable
from ndsnn_triton.sparse.schedules import Schedule

CONVENTIONS: tuple[str, ...] = ("snn", "rigl")
PJ_PER_MAC = 4.6
PJ_PER_AC = 0.9


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown cost convention {convention!r}; expected one of {CONVENTIONS}")
    return convention


def check_batch(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    return batch


def rate_vector(table: LayerTable, rates: float | Mapping[str, float]) -> np.ndarray:
    """``r_l`` per layer: the given rate(s) for spike-input layers, 1 for analog input.

    ``rates`` is one number for every spike layer or a per-layer mapping (every spike layer named).
    """
    out = np.ones(len(table.layers))
    for i, layer in enumerate(table.layers):
        if not layer.spike_input:
            continue
        if isinstance(rates, Mapping):
            if layer.name not in rates:
                raise ValueError(f"no spike rate given for layer {layer.name}")
            r = rates[layer.name]
        else:
            r = rates
        if not (isinstance(r, int | float) and 0.0 <= r <= 1.0):
            raise ValueError(f"spike rate of layer {layer.name} must lie in [0, 1], got {r!r}")
        out[i] = float(r)
    return out


def density_vector(
    table: LayerTable, densities: Mapping[str, float] | Sequence[float] | None
) -> np.ndarray:
    """``d_l`` per layer from a mapping (absent layers: their traced density) or a sequence."""
    if densities is None:
        return np.array([layer.density for layer in table.layers])
    if isinstance(densities, Mapping):
        d = np.array(
            [densities.get(layer.name, layer.density) for layer in table.layers], dtype=float
        )
    else:
        d = np.asarray(densities, dtype=float)
        if d.shape != (len(table.layers),):
            raise ValueError(f"expected {len(table.layers)} densities, got {d.shape}")
    if ((d < 0) | (d > 1)).any():
        raise ValueError("densities must lie in [0, 1]")
    return d


@dataclass
class StepCost:
    """FLOPs of one training step, per layer (arrays in ``LayerTable`` order)."""

    forward: np.ndarray
    input_grad: np.ndarray
    weight_grad: np.ndarray
    elementwise: float  # element-operations, not FLOPs; not part of ``total``

    @property
    def per_layer(self) -> np.ndarray:
        return self.forward + self.input_grad + self.weight_grad

    @property
    def total(self) -> float:
        return float(self.per_layer.sum())


def _coefficients(table: LayerTable, batch: int) -> tuple[np.ndarray, np.ndarray]:
    base = np.array([2.0 * batch * layer.timesteps * layer.macs for layer in table.layers])
    needs_input = np.array([1.0 if layer.input_grad else 0.0 for layer in table.layers])
    return base, needs_input


def elementwise_ops(table: LayerTable, batch: int) -> float:
    """Element-operations of one training step: forward 1 + backward 2 per element processed."""
    return 3.0 * batch * sum(e.elements for e in table.elementwise)


def step_terms(
    table: LayerTable,
    densities: np.ndarray,
    rates: np.ndarray,
    batch: int,
    convention: str,
    dense_grad: np.ndarray | bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-term FLOPs for a batch of steps: ``densities``/``rates`` are ``[S, L]`` (or ``[L]``).

    Returns forward, input-gradient and weight-gradient FLOPs, each ``[S, L]`` (or ``[L]``).
    """
    check_convention(convention)
    base, needs_input = _coefficients(table, check_batch(batch))
    d = np.asarray(densities, dtype=float)
    r = np.asarray(rates, dtype=float)
    dg = np.asarray(dense_grad, dtype=bool)
    if d.ndim == 2 and dg.ndim == 1:
        dg = dg[:, None]
    w_density = np.where(dg, 1.0, d)
    if convention == "snn":
        forward = base * d * r
        input_grad = base * d * needs_input
        weight_grad = base * w_density * r
    else:
        forward = base * d
        input_grad = base * d
        weight_grad = base * w_density
    return forward, input_grad, weight_grad


def step_cost(
    table: LayerTable,
    densities: Mapping[str, float] | Sequence[float] | None = None,
    rates: float | Mapping[str, float] = 1.0,
    batch: int = 1,
    convention: str = "snn",
    dense_grad: bool = False,
) -> StepCost:
    """FLOPs of one training step (see the module docstring for the formulas)."""
    f, i, w = step_terms(
        table,
        density_vector(table, densities),
        rate_vector(table, rates),
        batch,
        convention,
        dense_grad,
    )
    return StepCost(f, i, w, elementwise_ops(table, batch))


@dataclass
class RunCost:
    """A whole run's cost."""

    method: str
    convention: str
    steps: int
    forward: np.ndarray  # per layer, FLOPs summed over the run
    input_grad: np.ndarray
    weight_grad: np.ndarray
    elementwise: float  # element-operations (separate line)
    cumulative: np.ndarray  # FLOPs after each segment
    segment_ends: np.ndarray  # iteration index after each segment
    energy_j: float  # optional energy estimate (joules), snn convention
    dense_grad_steps: int

    @property
    def per_layer(self) -> np.ndarray:
        return self.forward + self.input_grad + self.weight_grad

    @property
    def total(self) -> float:
        return float(self.per_layer.sum())


def _energy(
    table: LayerTable,
    forward: np.ndarray,
    input_grad: np.ndarray,
    weight_grad: np.ndarray,
    convention: str,
) -> float:
    spike = np.array([layer.spike_input for layer in table.layers])
    if convention != "snn":
        spike = np.zeros_like(spike)
    macs = (np.where(spike, 0.0, forward + weight_grad) + input_grad).sum() / 2
    acs = np.where(spike, forward + weight_grad, 0.0).sum() / 2
    return float(macs * PJ_PER_MAC + acs * PJ_PER_AC) * 1e-12


def integrate(
    table: LayerTable,
    steps: np.ndarray,
    densities: np.ndarray,
    dense_grad: np.ndarray,
    rates: np.ndarray,
    batch: int,
    convention: str,
    method: str = "",
) -> RunCost:
    """Cost of runs of identical steps: ``steps [S]``, ``densities [S, L]``, ``dense_grad [S]``,
    ``rates [L]`` or ``[S, L]``. Linear in each, so a segment costs ``steps ×`` one step."""
    steps = np.asarray(steps, dtype=float)
    f, i, w = step_terms(table, densities, rates, batch, convention, dense_grad)
    weight = steps[:, None]
    per_segment = (f + i + w).sum(axis=1) * steps
    forward, input_grad, weight_grad = (f * weight).sum(0), (i * weight).sum(0), (w * weight).sum(0)
    return RunCost(
        method=method,
        convention=convention,
        steps=int(steps.sum()),
        forward=forward,
        input_grad=input_grad,
        weight_grad=weight_grad,
        elementwise=elementwise_ops(table, batch) * float(steps.sum()),
        cumulative=np.cumsum(per_segment),
        segment_ends=np.cumsum(steps).astype(int),
        energy_j=_energy(table, forward, input_grad, weight_grad, convention),
        dense_grad_steps=int(steps[np.asarray(dense_grad, dtype=bool)].sum()),
    )


def schedule_arrays(
    table: LayerTable, schedule: Schedule
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps [S], densities [S, L], dense_grad [S])`` of a schedule, in table order.

    Table layers the schedule does not name (plain, unmasked layers) keep their traced density.
    """
    index = {name: i for i, name in enumerate(schedule.layer_names)}
    missing = [layer.name for layer in table.layers if layer.maskable and layer.name not in index]
    if missing:
        raise ValueError(f"schedule of {schedule.method} has no densities for layers {missing}")
    steps = np.array([seg.steps for seg in schedule.segments], dtype=float)
    planned = np.array([seg.densities for seg in schedule.segments], dtype=float).reshape(
        len(schedule.segments), len(schedule.layer_names)
    )
    d = np.empty((len(schedule.segments), len(table.layers)))
    for j, layer in enumerate(table.layers):
        d[:, j] = planned[:, index[layer.name]] if layer.name in index else layer.density
    flags = np.array([seg.dense_grad for seg in schedule.segments], dtype=bool)
    return steps, d, flags


def run_cost(
    table: LayerTable,
    schedule: Schedule,
    rates: float | Mapping[str, float] = 1.0,
    batch: int = 128,
    convention: str = "snn",
) -> RunCost:
    """Integrate the step cost over a method's schedule."""
    steps, d, flags = schedule_arrays(table, schedule)
    return integrate(
        table, steps, d, flags, rate_vector(table, rates), batch, convention, schedule.method
    )


def dense_run_cost(
    table: LayerTable, steps: int, rates: float | Mapping[str, float], batch: int, convention: str
) -> float:
    """FLOPs of a dense run of ``steps`` iterations (the unit of "× dense")."""
    d = np.ones((1, len(table.layers)))
    return integrate(
        table, np.array([steps]), d, np.array([False]), rate_vector(table, rates), batch, convention
    ).total
