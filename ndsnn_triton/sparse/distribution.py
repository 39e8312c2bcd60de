"""Layer-wise density: how an overall density is shared among maskable layers.

* ``uniform``: every sparse layer at the same density.
* ``erk`` (Erdős–Rényi-Kernel, Evci et al. 2020): ``p_l ∝ sum(dims_l) / prod(dims_l)``, scaled so
  ``Σ n_l p_l = d · Σ n_l`` over the sparse layers; a layer whose ``p_l`` would exceed 1 is made
  dense and the rest re-solved.
* ``global``: one magnitude threshold across layers (data-dependent; see
  :func:`global_magnitude_split`).

Layers named in ``dense`` stay at density 1 and are outside the budget (RigL's convention: the
nominal density is that of the layers that are pruned).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import torch

from ndsnn_triton.sparse.validation import check_density

DISTRIBUTIONS: tuple[str, ...] = ("uniform", "erk", "global")

LayerShapes = Sequence[tuple[str, tuple[int, ...]]]


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


def uniform_densities(
    layers: LayerShapes, density: float, dense: Collection[str] = ()
) -> dict[str, float]:
    """``density`` for every layer not in ``dense`` (which get 1.0)."""
    density = check_density(density)
    _split_dense(layers, dense)
    return {name: 1.0 if name in dense else density for name, _ in layers}


def erk_densities(
    layers: LayerShapes, density: float, dense: Collection[str] = ()
) -> dict[str, float]:
    """ERK densities: ``Σ n_l p_l = density · Σ n_l`` over the non-dense layers, all ``p_l <= 1``."""
    density = check_density(density)
    sparse = _split_dense(layers, dense)
    sizes = {name: math.prod(shape) for name, shape in sparse}
    raw = {name: sum(shape) / math.prod(shape) for name, shape in sparse}
    budget = density * sum(sizes.values())
    forced_dense: set[str] = set()
    while True:
        free = [n for n in sizes if n not in forced_dense]
        remaining = budget - sum(sizes[n] for n in forced_dense)
        divisor = sum(raw[n] * sizes[n] for n in free)
        eps = remaining / divisor if divisor > 0 else 0.0
        over = [n for n in free if eps * raw[n] > 1.0]
        if not over:
            break
        # Make the layer with the largest raw score dense, then re-solve (RigL's procedure).
        forced_dense.add(max(over, key=lambda n: raw[n]))
    out = {}
    for name, _ in layers:
        if name in dense or name in forced_dense:
            out[name] = 1.0
        else:
            out[name] = eps * raw[name]
    return out


def layer_densities(
    layers: LayerShapes, density: float, distribution: str, dense: Collection[str] = ()
) -> dict[str, float]:
    """Per-layer densities for ``uniform`` or ``erk`` (``global`` depends on weights: use
    :func:`global_magnitude_split`)."""
    check_distribution(distribution)
    if distribution == "uniform":
        return uniform_densities(layers, density, dense)
    if distribution == "erk":
        return erk_densities(layers, density, dense)
    raise ValueError("the 'global' distribution depends on the weights: use global_magnitude_split")


class GlobalSplitter:
    """Per-layer densities that one global magnitude threshold gives, for any overall density.

    Built once from ``scores`` (layer name -> magnitudes, 0 where pruned): one global sort and one
    sort per layer, after which each query costs a few searches.
    """

    def __init__(self, scores: Mapping[str, torch.Tensor], dense: Collection[str] = ()) -> None:
        self.names = list(scores)
        self.dense = set(dense)
        sparse = [n for n in self.names if n not in self.dense]
        self._per_layer = {
            n: torch.sort(scores[n].detach().flatten().float().cpu()).values for n in sparse
        }
        self._all_desc = torch.sort(
            torch.cat(list(self._per_layer.values())), descending=True
        ).values

    def __call__(self, densities: Sequence[float]) -> list[dict[str, float]]:
        out = []
        for d in densities:
            k = round(check_density(d) * self._all_desc.numel())
            threshold = self._all_desc[k - 1] if k > 0 else torch.tensor(float("inf"))
            split = {}
            for n in self.names:
                if n in self.dense:
                    split[n] = 1.0
                    continue
                s = self._per_layer[n]
                split[n] = (
                    s.numel() - int(torch.searchsorted(s, threshold, right=False))
                ) / s.numel()
            out.append(split)
        return out


def global_magnitude_split(
    scores: Mapping[str, torch.Tensor], densities: Sequence[float], dense: Collection[str] = ()
) -> list[dict[str, float]]:
    """Per-layer densities that one global threshold on ``scores`` gives, for each overall density.

    ``scores`` maps layer name to a tensor of magnitudes (0 where pruned). Layers in ``dense`` are
    at 1 and outside the budget.
    """
    return GlobalSplitter(scores, dense)(densities)
