"""Layer-wise density: how an overall density is shared among maskable layers.

* ``uniform``: every sparse layer at the same density.
* ``erk`` (Erdős–Rényi-Kernel, Evci et al. 2020): ``p_l ∝ sum(dims_l) / prod(dims_l)``, scaled so
  ``Σ n_l p_l = d · Σ n_l`` over the sparse layers; a layer whose ``p_l`` would exceed 1 is made
  dense and the rest re-solved.
* ``global``: one magnitude threshold across layers (data-dependent; see
  :func:`global_magnitude_split`).

Layers named in ``dense`` stay at density 1 and are outside the budget (RigL's convention: the
nominal density is that of the layers that are pruned).

**No empty layer.** A layer without weights cannot pass a signal, so the network cannot learn;
global magnitude pruning of freshly initialised weights does that at 99 % (VGG-16's classifier,
initialised N(0, 0.01), is small beside Kaiming-initialised convolutions). Every distribution
therefore keeps at least ``ceil(min_kept_per_output · out_units)`` weights in each sparse layer
(:func:`layer_floors`; ``out_units`` = output channels or features, default
``MIN_KEPT_PER_OUTPUT = 1``: one weight per output unit on average; 0 turns the floor off). A
layer below its floor is held at it and the others share the rest of the same budget, so the
overall density is unchanged; where the floors alone exceed the budget they win.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence

import torch

from ndsnn_triton.sparse.ordering import sorted_values
from ndsnn_triton.sparse.validation import check_density

DISTRIBUTIONS: tuple[str, ...] = ("uniform", "erk", "global")

#: default floor of each sparse layer's kept weights, in weights per output unit
MIN_KEPT_PER_OUTPUT = 1.0

LayerShapes = Sequence[tuple[str, tuple[int, ...]]]


def check_min_kept(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"min_kept_per_output must be a finite number >= 0, got {value!r}")
    return float(value)


def layer_floors(
    layers: LayerShapes,
    min_kept_per_output: float = MIN_KEPT_PER_OUTPUT,
    dense: Collection[str] = (),
) -> dict[str, int]:
    """Fewest weights each non-dense layer keeps: ``ceil(min_kept_per_output · shape[0])``, at most
    the layer's size (``shape[0]``: output channels / features)."""
    per_output = check_min_kept(min_kept_per_output)
    return {
        name: min(math.prod(shape), math.ceil(per_output * shape[0]))
        for name, shape in layers
        if name not in dense
    }


def check_distribution(name: str) -> str:
    if name not in DISTRIBUTIONS:
        raise ValueError(
            f"unknown layer-wise distribution {name!r}; expected one of {DISTRIBUTIONS}"
        )
    return name


def _split_dense(layers: LayerShapes, dense: Collection[str]) -> list[tuple[str, tuple[int, ...]]]:
    unknown = set(dense) - {name for name, _ in layers}
    if unknown:
        raise ValueError(f"dense layer names {sorted(unknown)} are not maskable layers")
    return [(name, shape) for name, shape in layers if name not in dense]


def _proportional_densities(
    layers: LayerShapes,
    density: float,
    raw: Mapping[str, float],
    dense: Collection[str],
    min_kept_per_output: float,
) -> dict[str, float]:
    """``p_l = eps · raw_l`` with ``Σ n_l p_l = density · Σ n_l`` over the non-dense layers.

    A layer with ``p_l > 1`` is made dense (the one with the largest raw score first, RigL's
    procedure) and a layer below its floor is held at it; the rest is re-solved each time.
    """
    sparse = _split_dense(layers, dense)
    sizes = {name: math.prod(shape) for name, shape in sparse}
    floors = layer_floors(sparse, min_kept_per_output)
    budget = density * sum(sizes.values())
    fixed: dict[str, int] = {}  # kept weights of layers made dense or held at their floor
    while True:
        free = [n for n in sizes if n not in fixed]
        remaining = budget - sum(fixed.values())
        divisor = sum(raw[n] * sizes[n] for n in free)
        eps = remaining / divisor if divisor > 0 else 0.0
        over = [n for n in free if eps * raw[n] > 1.0]
        if over:
            dense_now = max(over, key=lambda n: raw[n])
            fixed[dense_now] = sizes[dense_now]
            continue
        under = [n for n in free if eps * raw[n] * sizes[n] < floors[n]]
        if not under:
            break
        fixed.update({n: floors[n] for n in under})
    out = {}
    for name, _ in layers:
        if name in dense:
            out[name] = 1.0
        elif name in fixed:
            out[name] = fixed[name] / sizes[name]
        else:
            out[name] = eps * raw[name]
    return out


def uniform_densities(
    layers: LayerShapes,
    density: float,
    dense: Collection[str] = (),
    min_kept_per_output: float = MIN_KEPT_PER_OUTPUT,
) -> dict[str, float]:
    """``density`` for every layer not in ``dense`` (which get 1.0), except that a layer below its
    floor (see the module docstring) is held at it and the others share the rest equally."""
    density = check_density(density)
    sparse = _split_dense(layers, dense)
    floors = layer_floors(sparse, min_kept_per_output)
    if all(density * math.prod(shape) >= floors[name] for name, shape in sparse):
        return {name: 1.0 if name in dense else density for name, _ in layers}
    raw = {name: 1.0 for name, _ in sparse}
    return _proportional_densities(layers, density, raw, dense, min_kept_per_output)


def erk_densities(
    layers: LayerShapes,
    density: float,
    dense: Collection[str] = (),
    min_kept_per_output: float = MIN_KEPT_PER_OUTPUT,
) -> dict[str, float]:
    """ERK densities: ``Σ n_l p_l = density · Σ n_l`` over the non-dense layers, all ``p_l <= 1``,
    each layer at least at its floor."""
    density = check_density(density)
    sparse = _split_dense(layers, dense)
    raw = {name: sum(shape) / math.prod(shape) for name, shape in sparse}
    return _proportional_densities(layers, density, raw, dense, min_kept_per_output)


def layer_densities(
    layers: LayerShapes,
    density: float,
    distribution: str,
    dense: Collection[str] = (),
    min_kept_per_output: float = MIN_KEPT_PER_OUTPUT,
) -> dict[str, float]:
    """Per-layer densities for ``uniform`` or ``erk`` (``global`` depends on weights: use
    :func:`global_magnitude_split`)."""
    check_distribution(distribution)
    if distribution == "uniform":
        return uniform_densities(layers, density, dense, min_kept_per_output)
    if distribution == "erk":
        return erk_densities(layers, density, dense, min_kept_per_output)
    raise ValueError("the 'global' distribution depends on the weights: use global_magnitude_split")


def floored_counts(
    count_among: Callable[[set[str], int], dict[str, int]],
    floors: Mapping[str, int],
    total: int,
) -> dict[str, int]:
    """Kept weights per layer of one global ranking keeping ``total`` weights, no layer below its
    floor: layers below it are held there and the ranking re-run over the others with what is
    left. ``count_among(held, budget)``: per-layer counts of the top ``budget`` scores of the layers
    not in ``held``."""
    held: set[str] = set()
    while True:
        counts = count_among(held, total - sum(floors[n] for n in held))
        below = {n for n, c in counts.items() if c < floors[n]}
        if not below:
            return {**counts, **{n: floors[n] for n in held}}
        held |= below


class GlobalSplitter:
    """Per-layer densities that one global magnitude threshold gives, for any overall density,
    each sparse layer held at least at its floor (``floors``: kept weights; none by default).

    Built once from ``scores`` (layer name -> magnitudes, 0 where pruned): one global sort and one
    sort per layer, after which each query costs a few searches.
    """

    def __init__(
        self,
        scores: Mapping[str, torch.Tensor],
        dense: Collection[str] = (),
        floors: Mapping[str, int] | None = None,
    ) -> None:
        self.names = list(scores)
        self.dense = set(dense)
        sparse = [n for n in self.names if n not in self.dense]
        self.floors = {n: 0 for n in sparse} | dict(floors or {})
        self._per_layer = {n: sorted_values(scores[n].detach().cpu()) for n in sparse}
        self._all_desc = sorted_values(torch.cat(list(self._per_layer.values())), descending=True)

    def _counts_at(self, threshold: torch.Tensor, layers: Collection[str]) -> dict[str, int]:
        """Scores ``>= threshold`` per layer."""
        return {
            n: self._per_layer[n].numel()
            - int(torch.searchsorted(self._per_layer[n], threshold, right=False))
            for n in layers
        }

    def _count_among(self, held: set[str], budget: int) -> dict[str, int]:
        free = [n for n in self._per_layer if n not in held]
        if budget <= 0:
            return dict.fromkeys(free, 0)
        if not held:  # the plain global threshold: the budget-th largest score
            return self._counts_at(self._all_desc[budget - 1], free)
        # The smallest rank in the global order whose score keeps `budget` weights of the free
        # layers (their counts only grow with the rank).
        lo, hi = budget - 1, self._all_desc.numel() - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if sum(self._counts_at(self._all_desc[mid], free).values()) >= budget:
                hi = mid
            else:
                lo = mid + 1
        return self._counts_at(self._all_desc[lo], free)

    def __call__(self, densities: Sequence[float]) -> list[dict[str, float]]:
        out = []
        for d in densities:
            k = round(check_density(d) * self._all_desc.numel())
            counts = floored_counts(self._count_among, self.floors, k)
            out.append(
                {
                    n: 1.0 if n in self.dense else counts[n] / self._per_layer[n].numel()
                    for n in self.names
                }
            )
        return out


def global_magnitude_split(
    scores: Mapping[str, torch.Tensor],
    densities: Sequence[float],
    dense: Collection[str] = (),
    floors: Mapping[str, int] | None = None,
) -> list[dict[str, float]]:
    """Per-layer densities that one global threshold on ``scores`` gives, for each overall density.

    ``scores`` maps layer name to a tensor of magnitudes (0 where pruned). Layers in ``dense`` are
    at 1 and outside the budget; ``floors``: fewest kept weights per sparse layer
    (:func:`layer_floors`).
    """
    return GlobalSplitter(scores, dense, floors)(densities)
