"""The NDSNN-vs-LTH training-cost claim, under every accounting that public information allows.

The paper (Huang et al., DAC 2023) says NDSNN's training cost is 31.35 % (VGG-16) and 40.89 %
(ResNet-19) of LTH's on CIFAR-10; its body is not public, so how LTH was counted is unknown. The
LTH side is therefore a named **protocol**:

* ``full-imp``: round 0 dense for E epochs, then K rounds at ``0.75^k`` of E − rewind epochs each;
* ``dense-plus-retrain``: one dense run (E) plus one retrain at the target density (E − rewind);
* ``amortized``: one IMP run to the highest target, shared by the reported sparsity levels (its
  cost divided by their number), against one NDSNN run per level.

Every schedule comes from the methods' own ``schedule()`` (the code that drives training); the
cost integration is :mod:`ndsnn_triton.profiler.cost`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ndsnn_triton.models import build_model
from ndsnn_triton.profiler.cost import (
    CONVENTIONS,
    RunCost,
    check_convention,
    dense_run_cost,
    run_cost,
)
from ndsnn_triton.profiler.layers import LayerTable, trace_layers
from ndsnn_triton.sparse.distribution import (
    MIN_KEPT_PER_OUTPUT,
    check_distribution,
    check_min_kept,
)
from ndsnn_triton.sparse.methods import build_method
from ndsnn_triton.sparse.schedules import Schedule
from ndsnn_triton.sparse.validation import check_density

PROTOCOLS: tuple[str, ...] = ("full-imp", "dense-plus-retrain", "amortized")
PAPER_RATIO: dict[str, float] = {"vgg16": 0.3135, "resnet19": 0.4089}
TOLERANCE_POINTS = 3.0  # percentage points


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown LTH protocol {protocol!r}; expected one of {PROTOCOLS}")
    return protocol


@dataclass
class Assumptions:
    """Everything the cost comparison assumes (printed with every result)."""

    epochs: int = 300  # E: epochs of one training run (LTH: of round 0)
    rewind_epoch: int = 20  # LTH rounds after the first train E − rewind epochs
    prune_rate: float = 0.25  # LTH: fraction of remaining weights pruned per round
    batch: int = 128
    dataset_size: int = 50_000  # CIFAR-10 training images
    T: int = 5  # timesteps
    num_classes: int = 10
    image_size: int = 32
    spike_rate: float | dict[str, float] = (
        0.1  # input non-zero rate of every spike-input layer (snn)
    )
    d_init: float = 1.0  # NDSNN initial density
    t0_fraction: float = 0.0  # NDSNN: density decrease from ...
    t_end_fraction: float = 1.0  # ... to (fractions of the run): "cubic over the whole run"
    delta_t: int = 1000  # NDSNN mask-update interval (iterations)
    zeta: float = 0.5  # NDSNN drop fraction, cosine-decayed to zeta_end
    zeta_end: float = 0.005
    rigl_delta_t: int = 100  # SET / RigL update interval
    rigl_zeta: float = 0.3
    rigl_stop_fraction: float = 0.75
    min_kept_per_output: float = MIN_KEPT_PER_OUTPUT  # floor of each sparse layer's kept weights
    seed: int = 0  # model initialisation (the global-magnitude split depends on it)

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "batch",
            "dataset_size",
            "T",
            "num_classes",
            "image_size",
            "delta_t",
            "rigl_delta_t",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.rewind_epoch, int) or not 0 <= self.rewind_epoch < self.epochs:
            raise ValueError(f"rewind_epoch must lie in [0, epochs), got {self.rewind_epoch!r}")
        check_density(self.d_init, "d_init")
        check_min_kept(self.min_kept_per_output)
        rates = (
            self.spike_rate.values() if isinstance(self.spike_rate, Mapping) else [self.spike_rate]
        )
        if not all(isinstance(r, int | float) and 0 <= r <= 1 for r in rates):
            raise ValueError(f"spike rates must lie in [0, 1], got {self.spike_rate!r}")

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.dataset_size / self.batch)

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps_per_epoch"] = self.steps_per_epoch
        if isinstance(self.spike_rate, Mapping):
            d["spike_rate"] = (
                f"per layer (mean {sum(self.spike_rate.values()) / len(self.spike_rate):.3f})"
            )
        return d


@dataclass
class ModelSetup:
    """A model instance, its layer table, and a cache of method schedules on it.

    ``model`` keeps its initial weights and full masks: methods that start dense (LTH, NDSNN with
    d_init = 1) run their setup on it, and the global-magnitude split they need is computed once.
    Methods that draw random masks (which zero weights) run on ``scratch``, a copy reset to the
    initial weights before each use.
    """

    name: str
    model: torch.nn.Module
    table: LayerTable
    schedules: dict[tuple, Schedule] = field(default_factory=dict)
    scratch: torch.nn.Module | None = None
    paper_ratio: float | None = None  # the paper's NDSNN/LTH number (None: no published claim)
    source: dict[str, Any] | None = None  # a user's model: where it came from, its input

    def model_for(self, method: str, kwargs: dict[str, Any]) -> torch.nn.Module:
        starts_dense = method in ("dense", "lth") or (
            method == "ndsnn" and kwargs.get("d_init", 1.0) >= 1.0
        )
        if starts_dense:
            return self.model
        if self.scratch is None:
            self.scratch = copy.deepcopy(self.model)
        else:
            self.scratch.load_state_dict(self.model.state_dict())
        return self.scratch


def setup_model(name: str, a: Assumptions) -> ModelSetup:
    torch.manual_seed(a.seed)
    kwargs: dict[str, Any] = {"num_classes": a.num_classes, "T": a.T}
    if name == "vgg16":
        kwargs["image_size"] = a.image_size
    model = build_model(name, **kwargs)
    table = trace_layers(model, (1, 3, a.image_size, a.image_size))
    return ModelSetup(name, model, table, paper_ratio=PAPER_RATIO.get(name))


def method_kwargs(
    method: str, density: float, distribution: str | None, a: Assumptions
) -> dict[str, Any]:
    """Constructor arguments of ``method`` under the assumptions."""
    kw: dict[str, Any] = (
        {}
        if method == "dense"
        else {"density": density, "min_kept_per_output": a.min_kept_per_output}
    )
    if distribution is not None and method != "dense":
        kw["distribution"] = check_distribution(distribution)
    if method == "ndsnn":
        kw.update(
            d_init=max(a.d_init, density),
            t0_fraction=a.t0_fraction,
            t_end_fraction=a.t_end_fraction,
            delta_t=a.delta_t,
            zeta=a.zeta,
            zeta_end=a.zeta_end,
        )
    elif method == "lth":
        kw.update(prune_rate=a.prune_rate, rewind_epoch=a.rewind_epoch)
    elif method in ("set", "rigl"):
        kw.update(delta_t=a.rigl_delta_t, zeta=a.rigl_zeta, stop_fraction=a.rigl_stop_fraction)
    return kw


def schedule_of(
    setup: ModelSetup,
    method: str,
    a: Assumptions,
    density: float = 1.0,
    distribution: str | None = None,
    **extra: Any,
) -> Schedule:
    """The method's own schedule on the model (cached by the method's full configuration, so a
    default distribution and the same one named share one schedule)."""
    kw = {**method_kwargs(method, density, distribution, a), **extra}
    m = build_method(method, **kw)
    key = tuple(sorted(m.config().items()))
    if key not in setup.schedules:
        m.setup(setup.model_for(method, kw), a.steps_per_epoch, a.epochs)
        setup.schedules[key] = m.schedule()
    return setup.schedules[key]


def lth_cost(
    setup: ModelSetup,
    protocol: str,
    density: float,
    levels: Sequence[float],
    distribution: str,
    convention: str,
    a: Assumptions,
) -> float:
    """LTH's training FLOPs at ``density`` under ``protocol``."""
    sched, share = lth_schedule(setup, protocol, density, levels, distribution, a)
    return run_cost(setup.table, sched, a.spike_rate, a.batch, convention).total * share


def lth_schedule(
    setup: ModelSetup,
    protocol: str,
    density: float,
    levels: Sequence[float],
    distribution: str,
    a: Assumptions,
) -> tuple[Schedule, float]:
    """The LTH run ``protocol`` charges to ``density``, and the share of it charged.

    ``full-imp``: every IMP round down to ``density`` (share 1); ``dense-plus-retrain``: the dense
    run plus one retrain at ``density`` (share 1); ``amortized``: one IMP run to the lowest of
    ``levels``, shared equally by the levels (share ``1 / len(levels)``).
    """
    check_protocol(protocol)
    if protocol == "full-imp":
        return schedule_of(setup, "lth", a, density, distribution), 1.0
    if protocol == "dense-plus-retrain":
        return schedule_of(setup, "lth", a, density, distribution, rounds=1), 1.0
    return schedule_of(setup, "lth", a, min(levels), distribution), 1.0 / len(levels)


def ndsnn_cost(
    setup: ModelSetup, density: float, distribution: str, convention: str, a: Assumptions
) -> RunCost:
    sched = schedule_of(setup, "ndsnn", a, density, distribution)
    return run_cost(setup.table, sched, a.spike_rate, a.batch, convention)


@dataclass(frozen=True)
class ClaimRow:
    model: str
    protocol: str
    convention: str
    distribution: str
    sparsity: float
    ndsnn_flops: float
    lth_flops: float
    ratio: float
    paper_ratio: float | None  # None: no published claim for this model

    @property
    def within_tolerance(self) -> bool:
        if self.paper_ratio is None:
            return False
        return abs(self.ratio - self.paper_ratio) * 100 <= TOLERANCE_POINTS


def claim_check(
    setups: Sequence[ModelSetup],
    a: Assumptions,
    sparsities: Sequence[float] = (0.9, 0.95, 0.98, 0.99),
    protocols: Sequence[str] = PROTOCOLS,
    conventions: Sequence[str] = CONVENTIONS,
    distributions: Sequence[str] = ("uniform", "erk", "global"),
) -> list[ClaimRow]:
    """NDSNN/LTH for every model × protocol × convention × distribution × sparsity."""
    levels = [1.0 - s for s in sparsities]
    for d in levels:
        check_density(d, "1 - sparsity")
    for p in protocols:
        check_protocol(p)
    for c in conventions:
        check_convention(c)
    rows = []
    for setup in setups:
        paper = setup.paper_ratio
        for protocol in protocols:
            for convention in conventions:
                for distribution in distributions:
                    for sparsity, density in zip(sparsities, levels, strict=True):
                        nd = ndsnn_cost(setup, density, distribution, convention, a).total
                        lt = lth_cost(setup, protocol, density, levels, distribution, convention, a)
                        rows.append(
                            ClaimRow(
                                setup.name,
                                protocol,
                                convention,
                                distribution,
                                sparsity,
                                nd,
                                lt,
                                nd / lt,
                                paper,
                            )
                        )
    return rows


def claim_verdict(rows: Sequence[ClaimRow]) -> dict[str, Any]:
    """Which settings come within ±3 points of each paper number, and whether one matches both
    (models without a published number take no part)."""
    near: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.within_tolerance:
            near.setdefault(r.model, []).append(
                {
                    "protocol": r.protocol,
                    "convention": r.convention,
                    "distribution": r.distribution,
                    "sparsity": r.sparsity,
                    "ratio": r.ratio,
                }
            )
    models = sorted({r.model for r in rows if r.paper_ratio is not None})
    keys = [
        {
            (n["protocol"], n["convention"], n["distribution"], n["sparsity"])
            for n in near.get(m, [])
        }
        for m in models
    ]
    both = sorted(set.intersection(*keys)) if keys else []
    return {
        "tolerance_points": TOLERANCE_POINTS,
        "near_paper": near,
        "settings_matching_all_models": [
            dict(zip(("protocol", "convention", "distribution", "sparsity"), k, strict=True))
            for k in both
        ],
        "vgg_below_resnet_settings": _vgg_below_resnet(rows),
    }


def _vgg_below_resnet(rows: Sequence[ClaimRow]) -> int:
    """How many settings give VGG-16 a lower ratio than ResNet-19, as the paper reports."""
    by = {(r.protocol, r.convention, r.distribution, r.sparsity, r.model): r.ratio for r in rows}
    count = 0
    for (p, c, d, s, m), ratio in by.items():
        if m == "vgg16" and (p, c, d, s, "resnet19") in by and ratio < by[(p, c, d, s, "resnet19")]:
            count += 1
    return count


def method_costs(
    setup: ModelSetup, a: Assumptions, density: float, convention: str
) -> dict[str, RunCost]:
    """Every method's run cost at ``density`` with its default layer-wise distribution."""
    out = {}
    for method in ("dense", "static", "set", "rigl", "ndsnn", "lth"):
        sched = schedule_of(setup, method, a, 1.0 if method == "dense" else density, None)
        out[method] = run_cost(setup.table, sched, a.spike_rate, a.batch, convention)
    return out


def dense_unit(setup: ModelSetup, a: Assumptions, convention: str) -> float:
    """FLOPs of one dense training run of E epochs (the unit of "× dense")."""
    return dense_run_cost(
        setup.table, a.epochs * a.steps_per_epoch, a.spike_rate, a.batch, convention
    )
