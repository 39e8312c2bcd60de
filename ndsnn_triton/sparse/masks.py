"""Finding, applying, saving and comparing masks of models built from masked layers.

The frontend half of torchao's contract: masks are bool tensors, one per maskable layer, keyed by
the layer's module name; the layers (and kernels) only run what they are given.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ndsnn_triton.nn.layers import masked_layers
from ndsnn_triton.sparse.distribution import (
    MIN_KEPT_PER_OUTPUT,
    check_distribution,
    floored_counts,
    layer_densities,
    layer_floors,
)
from ndsnn_triton.sparse.ordering import argsort_descending
from ndsnn_triton.sparse.validation import check_density


def layer_generator(seed: int, step: int, layer: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, step, layer)``: the same draw on every rank and after resume."""
    g = torch.Generator()
    g.manual_seed(((seed * 1_000_003 + step) * 10_007 + layer) % 2**63)
    return g


def layer_shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, weight shape)`` of every maskable layer, in model order."""
    return [(name, tuple(layer.weight.shape)) for name, layer in masked_layers(model)]


def boundary_layers(
    model: nn.Module, dense_first: bool = False, dense_last: bool = False
) -> set[str]:
    """Names of the first and/or last maskable layer, to keep dense."""
    names = [name for name, _ in masked_layers(model)]
    chosen = set()
    if names and dense_first:
        chosen.add(names[0])
    if names and dense_last:
        chosen.add(names[-1])
    return chosen


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """Bool mask (scores' shape) of the ``k`` largest scores; ties broken by position, deterministically."""
    flat = scores.flatten()
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        order = torch.argsort(flat, descending=True, stable=True)
        mask[order[:k]] = True
    return mask.view_as(scores)


def get_masks(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every maskable layer's mask."""
    return {name: layer.mask.detach().clone() for name, layer in masked_layers(model)}


def set_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Give each named layer its mask (zeroing newly pruned weights); every layer must be named."""
    layers = dict(masked_layers(model))
    missing, extra = set(layers) - set(masks), set(masks) - set(layers)
    if missing or extra:
        raise ValueError(
            f"masks do not match the model's maskable layers: missing {sorted(missing)}, unknown {sorted(extra)}"
        )
    for name, layer in layers.items():
        layer.set_mask(masks[name].to(layer.mask.device))


def densities_of(model: nn.Module) -> dict[str, float]:
    """Per-layer kept fraction (counts recorded by ``set_mask``: no host synchronisation unless a
    mask was changed some other way)."""
    return {name: layer.density for name, layer in masked_layers(model)}


def overall_density(model: nn.Module, densities: Mapping[str, float] | None = None) -> float:
    """Kept fraction of all maskable weights, from per-layer ``densities`` (measured if not given)."""
    densities = densities_of(model) if densities is None else densities
    sizes = {name: layer.mask.numel() for name, layer in masked_layers(model)}
    return sum(densities[name] * size for name, size in sizes.items()) / sum(sizes.values())


def model_density(model: nn.Module) -> float:
    """Kept fraction of all maskable weights."""
    return overall_density(model)


_PREFIXES: OrderedDict[tuple[int, int, int], Tensor] = OrderedDict()
_PREFIX_CACHE_SIZE = 128


def _random_positions(n: int, k: int, seed: int, layer: int) -> Tensor:
    """The first ``k`` positions of a random permutation of ``n`` drawn from the generator of
    (seed, 0, layer): ``k`` of ``n`` positions without replacement, int32, read-only.

    The permutation depends on ``(n, seed, layer)`` only, so draws of fewer positions are
    prefixes of draws of more: the longest prefix drawn so far is kept (a few MB for a VGG-16 at
    10 % density), and the cost report's many random masks of one model cost one draw per layer.
    """
    key = (n, seed, layer)
    prefix = _PREFIXES.get(key)
    if prefix is None or prefix.numel() < k:
        perm = torch.randperm(n, generator=layer_generator(seed, 0, layer))
        prefix = perm[:k].to(torch.int32)
        _PREFIXES[key] = prefix
    _PREFIXES.move_to_end(key)
    while len(_PREFIXES) > _PREFIX_CACHE_SIZE:
        _PREFIXES.popitem(last=False)
    return prefix[:k]


@torch.no_grad()
def random_masks(
    model: nn.Module,
    density: float,
    distribution: str = "uniform",
    dense: Collection[str] = (),
    seed: int = 0,
    min_kept_per_output: float = MIN_KEPT_PER_OUTPUT,
) -> dict[str, float]:
    """Uniformly random masks with ``round(p_l · n_l)`` kept weights per layer.

    ``distribution`` is ``uniform`` or ``erk`` (``global`` keeps the largest initial weights instead,
    as :func:`global_magnitude_masks`); no layer keeps fewer than its floor
    (:func:`~ndsnn_triton.sparse.distribution.layer_floors`). Returns the realised per-layer
    densities.
    """
    density = check_density(density)
    if check_distribution(distribution) == "global":
        return global_magnitude_masks(model, density, dense, min_kept_per_output)
    targets = layer_densities(
        layer_shapes(model), density, distribution, dense, min_kept_per_output
    )
    realised = {}
    for index, (name, layer) in enumerate(masked_layers(model)):
        n = layer.weight.numel()
        k = round(targets[name] * n)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[_random_positions(n, k, seed, index)] = True
        layer.set_mask(mask.view_as(layer.mask).to(layer.mask.device))
        realised[name] = k / n
    return realised


@torch.no_grad()
def magnitude_masks(model: nn.Module, densities: Mapping[str, float]) -> None:
    """Per layer, keep the ``round(p_l · n_l)`` largest-magnitude kept weights (a prune: never grows)."""
    for name, layer in masked_layers(model):
        k = min(round(densities[name] * layer.weight.numel()), layer.kept_weights)
        scores = layer.weight.abs().masked_fill(~layer.mask, -1.0)
        layer.set_mask(topk_mask(scores, k))


@torch.no_grad()
def global_magnitude_masks(
    model: nn.Module,
    density: float,
    dense: Collection[str] = (),
    min_kept_per_output: float = MIN_KEPT_PER_OUTPUT,
) -> dict[str, float]:
    """One magnitude threshold across the non-dense layers keeping ``density`` of their weights.

    Weights already pruned stay pruned (so this never grows). A layer the threshold would leave
    below its floor (:func:`~ndsnn_triton.sparse.distribution.layer_floors`, at most its active
    weights) keeps its largest weights up to the floor, and the threshold is re-drawn over the
    other layers with the rest of the budget. Layers in ``dense`` get full masks. Returns the
    realised per-layer densities.
    """
    density = check_density(density)
    layers = dict(masked_layers(model))
    names = [n for n in layers if n not in dense]
    # Pruned positions score -1 so that they lose every tie against kept weights (|w| >= 0).
    per_layer = [
        layers[n].weight.detach().abs().masked_fill(~layers[n].mask, -1.0).flatten().float().cpu()
        for n in names
    ]
    scores = torch.cat(per_layer)
    sizes = torch.tensor([t.numel() for t in per_layer])
    active = [layers[n].kept_weights for n in names]
    floors = layer_floors(layer_shapes(model), min_kept_per_output, dense)
    floors = {n: min(floors[n], a) for n, a in zip(names, active, strict=True)}
    # One stable sort (ties by position); the top `budget` among the layers not held at a floor.
    order = argsort_descending(scores)
    layer_of = torch.repeat_interleave(torch.arange(len(names)), sizes)[order]
    chosen: list[Tensor] = []

    def count_among(held: set[str], budget: int) -> dict[str, int]:
        in_free = torch.tensor([n not in held for n in names])[layer_of]
        chosen[:] = [order[in_free][: max(budget, 0)]]
        counts = torch.bincount(layer_of[in_free][: max(budget, 0)], minlength=len(names))
        return {n: int(c) for n, c in zip(names, counts.tolist(), strict=True) if n not in held}

    counts = floored_counts(count_among, floors, min(round(density * scores.numel()), sum(active)))
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[chosen[0]] = True
    realised, offset = {}, 0
    for n, layer_scores in zip(names, per_layer, strict=True):
        size = layer_scores.numel()
        chunk = keep[offset : offset + size]
        if counts[n] != int(chunk.sum()):  # held at its floor: its own largest weights
            chunk = topk_mask(layer_scores, counts[n])
        layers[n].set_mask(chunk.view_as(layers[n].mask).to(layers[n].mask.device))
        realised[n] = counts[n] / size
        offset += size
    for n in dense:
        layers[n].keep_all()
        realised[n] = 1.0
    return {n: realised[n] for n in layers}


def save_masks(model: nn.Module, path: str | os.PathLike) -> None:
    """Write every layer's mask to ``path`` (a torch file), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {"format": "ndsnn-masks-v1", "masks": {k: v.cpu() for k, v in get_masks(model).items()}},
        tmp,
    )
    os.replace(tmp, path)


def load_masks(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read masks written by :func:`save_masks`; a foreign or corrupt file raises ``ValueError``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{path}: not a readable mask file ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict) or data.get("format") != "ndsnn-masks-v1":
        raise ValueError(f"{path}: not an ndsnn mask file (missing format tag 'ndsnn-masks-v1')")
    masks = data["masks"]
    if not all(isinstance(m, Tensor) and m.dtype == torch.bool for m in masks.values()):
        raise ValueError(f"{path}: mask file holds non-bool tensors")
    return masks


@dataclass(frozen=True)
class MaskComparison:
    """Two masks of one layer: their densities and how much they share."""

    density_a: float
    density_b: float
    intersection: int  # positions kept in both
    jaccard: float  # |a ∧ b| / |a ∨ b| (1 when both are empty)


def compare_masks(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> dict[str, MaskComparison]:
    """Per-layer comparison of two mask sets with the same layer names and shapes."""
    if set(a) != set(b):
        raise ValueError(f"mask sets name different layers: {sorted(set(a) ^ set(b))}")
    out = {}
    for name in a:
        ma, mb = a[name].bool().cpu(), b[name].bool().cpu()
        if ma.shape != mb.shape:
            raise ValueError(
                f"layer {name}: mask shapes differ {tuple(ma.shape)} vs {tuple(mb.shape)}"
            )
        inter = int((ma & mb).sum())
        union = int((ma | mb).sum())
        out[name] = MaskComparison(
            density_a=float(ma.float().mean()),
            density_b=float(mb.float().mean()),
            intersection=inter,
            jaccard=inter / union if union else 1.0,
        )
    return out


__all__ = [
    "MaskComparison",
    "boundary_layers",
    "compare_masks",
    "densities_of",
    "get_masks",
    "global_magnitude_masks",
    "layer_generator",
    "layer_shapes",
    "load_masks",
    "magnitude_masks",
    "model_density",
    "random_masks",
    "save_masks",
    "set_masks",
    "topk_mask",
]
