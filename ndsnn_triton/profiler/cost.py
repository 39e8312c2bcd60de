"""Analytic training cost: FLOPs of one step per layer and term, integrated over a run.

Per weight layer l, with dense MACs per sample per timestep ``M_l`` (``OC·C·KH·KW·OH·OW``),
timesteps ``τ_l``, weight density ``d_l``, input spike rate ``r_l`` (1 for analog input) and batch
``B``, one training step costs (2 FLOPs per MAC):

=================  ==========================  ======================  ==========================
term               ``snn`` (spike-aware,       ``rigl`` (Evci et al.   ``kernel`` (what the sparse
                   ideal)                      2020, dense-equivalent) Triton kernels execute)
=================  ==========================  ======================  ==========================
forward            ``2·B·τ·M·d·r``             ``f = 2·B·τ·M·d``       ``2·B·τ·M·d·φ_fwd``
input gradient     ``2·B·τ·M·d`` (0 if the     ``f``                   ``2·B·τ·M·d·H·W/(OH·OW)``
                   layer's input needs no                              (0 as in ``snn``)
                   gradient: the first layer)
weight gradient    ``2·B·τ·M·d·r``;            ``f``; dense-gradient   ``2·B·τ·M·d·φ_wg``;
                   dense-gradient steps        steps ``f_D = 2·B·τ·M`` dense-gradient steps
                   ``2·B·τ·M·r``                                       ``2·B·τ·M`` (cuDNN, dense)
=================  ==========================  ======================  ==========================

The ``rigl`` convention gives RigL's published formulas: dense ``3 f_D``, static/SET ``3 f_S``,
RigL ``(3 f_S ΔT + 2 f_S + f_D)/(ΔT + 1)`` per step. Elementwise work (BN, LIF, pooling) is a
separate line in element-operations — forward one per element, backward two — never added to the
FLOPs above.

The ``kernel`` convention counts the multiply-accumulates of the library's sparse kernels by the
rule of :mod:`ndsnn_triton.kernels.work`, for a mask of density ``d`` spread evenly over input
channels. Its per-layer factors (:class:`KernelWork`, dimensionless, per dense output position)
are the measured spike structure of the layer input — ``φ_fwd`` = forward lanes run
(``Σ_c A_c / (C·N)`` with ``A_c`` the samples whose input map ``c`` holds a spike,
``r ≤ φ_fwd ≤ 1``; 1 on maps under 4 output positions, which are not skipped) and ``φ_wg`` = weight-gradient events (``Σ_c E_c / (C·N·OH·OW)``,
≈ ``r`` at stride 1, ≈ ``s²·r`` at stride ``s``) — plus the geometric input-gradient factor
``H·W/(OH·OW)``. They come from a measurement or from the i.i.d. spike model of
:mod:`ndsnn_triton.profiler.kernel_work`; pass them as ``kernel=`` or attach them to the table
(:func:`with_kernel_work`). ``snn`` is the ideal lower bound, ``rigl`` the dense equivalent and
``kernel`` the work really done. Layers with analog input (the image stem) are priced dense
(``2·B·τ·M`` per term, whatever ``d``): the default backend runs them on cuDNN, as it does
dense-gradient steps.

Energy (optional): ``4.6 pJ`` per MAC and ``0.9 pJ`` per accumulate (45 nm fp32, Horowitz 2014);
under ``snn`` and ``kernel``, the forward and weight-gradient work of spike-input layers is
accumulates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ndsnn_triton.profiler.layers import LayerTable
from ndsnn_triton.sparse.schedules import Schedule

CONVENTIONS: tuple[str, ...] = ("snn", "rigl", "kernel")
PJ_PER_MAC = 4.6
PJ_PER_AC = 0.9


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown cost convention {convention!r}; expected one of {CONVENTIONS}")
    return convention


@dataclass(frozen=True)
class KernelWork:
    """Per-layer factors of the ``kernel`` convention, in ``LayerTable`` order (dimensionless).

    ``forward`` and ``weight_grad`` are ``[L]`` (or ``[S, L]``, one row per schedule segment):
    forward lanes run and weight-gradient events per dense output position ``C·N·OH·OW`` of the
    layer input (:class:`ndsnn_triton.kernels.work.WorkFactors`); ``input_grad`` is ``[L]``:
    input positions per output position, ``H·W/(OH·OW)`` (1 for a linear layer or a stride-1
    "same" convolution). ``rate`` is the non-zero fraction of the input the factors were measured
    (or modelled) on, for the kernel/snn ratio of the same spikes. ``source`` says where they come
    from (a file and state, or the i.i.d. model and its rate), for reports.
    """

    forward: np.ndarray
    weight_grad: np.ndarray
    input_grad: np.ndarray
    rate: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("forward", "weight_grad", "input_grad", "rate"):
            value = np.asarray(getattr(self, name), dtype=float)
            if not np.isfinite(value).all() or (value < 0).any():
                raise ValueError(f"kernel work factors: {name} must be finite and >= 0")
            object.__setattr__(self, name, value)
        if self.input_grad.ndim != 1:
            raise ValueError("kernel work factors: input_grad must be one value per layer")
        layers = self.input_grad.shape[0]
        for name in ("forward", "weight_grad", "rate"):
            if getattr(self, name).shape[-1:] != (layers,):
                raise ValueError(
                    f"kernel work factors: {name} has shape {getattr(self, name).shape}, "
                    f"expected [{layers}] or [S, {layers}]"
                )


@dataclass
class WorkLayerTable(LayerTable):
    """A :class:`LayerTable` carrying its ``kernel`` convention factors, so that every function
    pricing the table (claim checks, method costs) can use the ``kernel`` convention without
    passing them along."""

    kernel: KernelWork | None = None


def with_kernel_work(table: LayerTable, kernel: KernelWork) -> WorkLayerTable:
    """``table`` (same layers, not copied) with ``kernel`` attached."""
    if kernel.input_grad.shape != (len(table.layers),):
        raise ValueError(
            f"kernel work factors cover {kernel.input_grad.shape[0]} layers, the table "
            f"{len(table.layers)}"
        )
    return WorkLayerTable(table.layers, table.elementwise, table.batch, kernel)


def kernel_work_of(table: LayerTable, kernel: KernelWork | None = None) -> KernelWork:
    """``kernel``, else the factors attached to ``table``; a clear error if there are none."""
    found = kernel if kernel is not None else getattr(table, "kernel", None)
    if found is None:
        raise ValueError(
            "cost convention 'kernel' needs each layer's measured work factors (forward lanes "
            "and weight-gradient events of its input): pass kernel=KernelWork(...) or a table "
            "from with_kernel_work(); ndsnn_triton.profiler.kernel_work builds them from a "
            "spike-structure file or from the i.i.d. spike model at an assumed rate"
        )
    if found.input_grad.shape != (len(table.layers),):
        raise ValueError(
            f"kernel work factors cover {found.input_grad.shape[0]} layers, the table "
            f"{len(table.layers)}"
        )
    return found


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
    kernel: KernelWork | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-term FLOPs for a batch of steps: ``densities``/``rates`` are ``[S, L]`` (or ``[L]``).

    ``kernel``: the ``kernel`` convention's factors (default: those attached to ``table``; its
    ``[S, L]`` rows, if any, go with the steps). Returns forward, input-gradient and
    weight-gradient FLOPs, each ``[S, L]`` (or ``[L]``).
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
    elif convention == "kernel":
        k = kernel_work_of(table, kernel)
        # analog-input layers (the image stem) run cuDNN's dense path under the default backend
        analog = np.array([not layer.spike_input for layer in table.layers])
        forward = np.where(analog, base, base * d * k.forward)
        input_grad = np.where(analog, base, base * d * k.input_grad) * needs_input
        weight_grad = np.where(dg | analog, base, base * d * k.weight_grad)
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
    kernel: KernelWork | None = None,
) -> StepCost:
    """FLOPs of one training step (see the module docstring for the formulas); ``kernel``: the
    ``kernel`` convention's factors (default: those attached to ``table``)."""
    f, i, w = step_terms(
        table,
        density_vector(table, densities),
        rate_vector(table, rates),
        batch,
        convention,
        dense_grad,
        kernel,
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
    if convention not in ("snn", "kernel"):
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
    kernel: KernelWork | None = None,
) -> RunCost:
    """Cost of runs of identical steps: ``steps [S]``, ``densities [S, L]``, ``dense_grad [S]``,
    ``rates [L]`` or ``[S, L]``, ``kernel`` factors (``kernel`` convention; default: the table's)
    ``[L]`` or ``[S, L]``. Linear in each, so a segment costs ``steps ×`` one step."""
    steps = np.asarray(steps, dtype=float)
    f, i, w = step_terms(table, densities, rates, batch, convention, dense_grad, kernel)
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
    kernel: KernelWork | None = None,
) -> RunCost:
    """Integrate the step cost over a method's schedule (``kernel``: the ``kernel``
    convention's ``[L]`` factors; default: those attached to ``table``)."""
    steps, d, flags = schedule_arrays(table, schedule)
    return integrate(
        table,
        steps,
        d,
        flags,
        rate_vector(table, rates),
        batch,
        convention,
        schedule.method,
        kernel,
    )


def dense_run_cost(
    table: LayerTable,
    steps: int,
    rates: float | Mapping[str, float],
    batch: int,
    convention: str,
    kernel: KernelWork | None = None,
) -> float:
    """FLOPs of a dense run of ``steps`` iterations (the unit of "× dense")."""
    d = np.ones((1, len(table.layers)))
    return integrate(
        table,
        np.array([steps]),
        d,
        np.array([False]),
        rate_vector(table, rates),
        batch,
        convention,
        kernel=kernel,
    ).total
