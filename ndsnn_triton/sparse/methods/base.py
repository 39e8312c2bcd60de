"""The interface between a sparse-training method and the trainer.

A method owns its masks' schedule and updates. The trainer calls, per iteration ``step``
(counted over the whole run, all phases):

1. ``needs_dense_grad(step)``: run forward and backward with dense weight gradients?
2. ``before_optimizer_step(step)``: keep what growth needs from the dense gradients, then mask them;
3. ``optimizer.step()``;
4. ``after_optimizer_step(step, optimizer)``: re-apply masks to weights and optimizer state, and
   update the masks when ``step`` is an update step (changes take effect from ``step + 1``).

and ``on_epoch_end`` / ``on_phase_end`` at epoch and phase boundaries. A phase is a stretch of
training with its own optimizer and LR schedule (LTH's rounds); other methods have one phase.

``schedule()`` returns the run as data, built by the same functions that drive the updates.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ndsnn_triton.nn.layers import MaskedLayer, masked_layers
from ndsnn_triton.sparse.distribution import (
    MIN_KEPT_PER_OUTPUT,
    GlobalSplitter,
    check_distribution,
    check_min_kept,
    layer_densities,
    layer_floors,
)
from ndsnn_triton.sparse.masks import (
    boundary_layers,
    global_magnitude_masks,
    magnitude_masks,
    random_masks,
    topk_mask,
)
from ndsnn_triton.sparse.schedules import Schedule
from ndsnn_triton.sparse.validation import check_density, check_positive_int

_SPLITTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Phase:
    """A stretch of training with a fresh optimizer and LR schedule."""

    name: str
    epochs: int


class SparseMethod:
    """Base class: a dense run with no mask updates. Subclasses override the hooks they need.

    Args:
        density: final overall density of the non-dense maskable layers, in (0, 1].
        distribution: how density is shared among layers: ``uniform``, ``erk`` or ``global``.
        dense_first, dense_last: keep the first / last maskable layer dense.
        seed: seeds every random mask draw, per (seed, step, layer).
        min_kept_per_output: fewest weights each sparse layer keeps, per output unit (default 1;
            no method leaves a layer empty: see :mod:`ndsnn_triton.sparse.distribution`).
    """

    name: ClassVar[str] = "dense"
    gradient_growth: ClassVar[bool] = False

    def __init__(
        self,
        density: float = 1.0,
        distribution: str = "erk",
        dense_first: bool = False,
        dense_last: bool = False,
        seed: int = 0,
        min_kept_per_output: float = MIN_KEPT_PER_OUTPUT,
    ) -> None:
        self.density = check_density(density)
        self.distribution = check_distribution(distribution)
        self.dense_first, self.dense_last = bool(dense_first), bool(dense_last)
        self.seed = int(seed)
        self.min_kept_per_output = check_min_kept(min_kept_per_output)
        self.model: nn.Module | None = None
        self._layers: list[tuple[str, MaskedLayer]] = []
        self.steps_per_epoch = 0
        self.epochs = 0
        self.dense: set[str] = set()
        self._grow_scores: dict[str, Tensor] = {}
        self._grown: dict[str, Tensor] = {}  # positions grown during the current update

    # ------------------------------------------------------------------ configuration

    def config(self) -> dict[str, Any]:
        """The constructor arguments (logged, and checked on resume)."""
        return {
            "method": self.name,
            "density": self.density,
            "distribution": self.distribution,
            "dense_first": self.dense_first,
            "dense_last": self.dense_last,
            "seed": self.seed,
            "min_kept_per_output": self.min_kept_per_output,
        }

    def phases(self, epochs: int) -> list[Phase]:
        """The run's phases for a budget of ``epochs`` (one phase unless overridden)."""
        return [Phase("train", check_positive_int(epochs, "epochs"))]

    @property
    def total_steps(self) -> int:
        return sum(p.epochs for p in self.phases(self.epochs)) * self.steps_per_epoch

    # ------------------------------------------------------------------ lifecycle

    def setup(self, model: nn.Module, steps_per_epoch: int, epochs: int) -> None:
        """Bind to ``model`` and give it its initial masks."""
        self.model = model
        self.steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.epochs = check_positive_int(epochs, "epochs")
        if not masked_layers(model):
            raise ValueError(
                f"{self.name}: the model has no maskable layers (SpikeConv2d / SpikeLinear)"
            )
        self._layers = masked_layers(model)  # the model's structure is fixed from here on
        self.dense = boundary_layers(model, self.dense_first, self.dense_last)
        self.init_masks()

    def init_masks(self) -> None:
        for _, layer in self.layers():
            layer.keep_all()

    def layer_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, weight shape)`` of every maskable layer, in model order."""
        return [(name, tuple(layer.weight.shape)) for name, layer in self.layers()]

    def layers(self) -> list[tuple[str, MaskedLayer]]:
        """``(name, layer)`` of every maskable layer of the bound model, in model order."""
        assert self.model is not None, "call setup(model, ...) first"
        return self._layers

    def is_update_step(self, step: int) -> bool:
        """Whether the masks change after iteration ``step``."""
        return False

    def needs_dense_grad(self, step: int) -> bool:
        """Whether iteration ``step``'s backward must compute dense weight gradients."""
        return self.gradient_growth and self.is_update_step(step)

    def before_optimizer_step(self, step: int) -> None:
        """On dense-gradient steps keep |dL/dW| for growth, then zero the gradient off the mask."""
        if not self.needs_dense_grad(step):
            return
        self._grow_scores = {}
        for name, layer in self.layers():
            if layer.weight.grad is None:
                continue
            self._grow_scores[name] = layer.weight.grad.detach().abs().clone()
            layer.weight.grad.masked_fill_(~layer.mask, 0)

    @torch.no_grad()
    def after_optimizer_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """Re-apply masks to weights and optimizer state; update the masks on update steps.

        Every connection an update makes active starts with zero weight and zero optimizer state:
        positions inactive before the update, and positions pruned or dropped during it and grown
        back (NDSNN's prune-then-regrow, RigL's drop-then-regrow), as RigL and GraNet do.
        """
        if not self.is_update_step(step):
            reapply_masks([layer for _, layer in self.layers()], optimizer)
            return
        before = {name: layer.mask.clone() for name, layer in self.layers()}
        self._grown = {}
        self.update_masks(step)
        self._grow_scores = {}
        for name, layer in self.layers():
            fresh = ~before[name]
            if name in self._grown:
                fresh |= self._grown[name]
            zero_off_mask(layer.weight, layer.mask & ~fresh, optimizer)
        self._grown = {}

    def update_masks(self, step: int) -> None:
        """Change the masks after iteration ``step`` (called only on update steps)."""

    def on_epoch_end(self, phase: int, epoch_in_phase: int) -> None:
        """Called after each epoch (``epoch_in_phase`` counts from 1)."""

    def on_phase_end(self, phase: int) -> None:
        """Called after the last epoch of each phase."""

    # ------------------------------------------------------------------ helpers for subclasses

    def note_grown(self, name: str, grown: Tensor) -> None:
        """Record positions of layer ``name`` grown during the current update (they start at 0)."""
        previous = self._grown.get(name)
        self._grown[name] = grown if previous is None else previous | grown

    def sparse_layers(self) -> list[tuple[int, str, MaskedLayer]]:
        """``(index, name, layer)`` of the layers that may be pruned."""
        return [(i, n, m) for i, (n, m) in enumerate(self.layers()) if n not in self.dense]

    def random_initial_masks(self, density: float) -> None:
        if density >= 1.0:
            SparseMethod.init_masks(self)
        else:
            random_masks(
                self.model,
                density,
                self.distribution if self.distribution != "global" else "erk",
                self.dense,
                self.seed,
                self.min_kept_per_output,
            )

    def prune_to(self, density: float) -> None:
        """Magnitude-prune the non-dense layers to ``density`` by the method's distribution."""
        if self.distribution == "global":
            global_magnitude_masks(self.model, density, self.dense, self.min_kept_per_output)
        else:
            magnitude_masks(self.model, self.layer_split(density))

    def layer_split(self, density: float) -> dict[str, float]:
        """Per-layer densities of an overall ``density`` (uniform / ERK: exact; global: estimated
        from the current weights)."""
        if self.distribution == "global":
            return self.global_split([density])[0]
        return layer_densities(
            self.layer_shapes(),
            density,
            self.distribution,
            self.dense,
            self.min_kept_per_output,
        )

    def global_split(self, densities: Iterable[float]) -> list[dict[str, float]]:
        """Per-layer densities of global magnitude pruning of the current weights to each density.

        The sorted magnitudes are cached per model until a weight or mask changes, so the cost
        model can ask many methods about one freshly initialised model cheaply.
        """
        layers = self.layers()
        # A full mask is keyed as such, whatever its version: methods that start dense share one splitter.
        key = (
            tuple(sorted(self.dense)),
            self.min_kept_per_output,
            *(
                (id(m.weight), m.weight._version, "full" if bool(m.mask.all()) else m.mask._version)
                for _, m in layers
            ),
        )
        cached = _SPLITTERS.get(self.model)
        if cached is None or cached[0] != key:
            scores = {name: m.weight.detach().abs().masked_fill(~m.mask, 0.0) for name, m in layers}
            floors = layer_floors(self.layer_shapes(), self.min_kept_per_output, self.dense)
            cached = (key, GlobalSplitter(scores, self.dense, floors))
            _SPLITTERS[self.model] = cached
        return cached[1](list(densities))

    def current_densities(self) -> list[float]:
        return [layer.density for _, layer in self.layers()]

    def new_schedule(self) -> Schedule:
        names = [n for n, _ in self.layers()]
        sizes = [m.weight.numel() for _, m in self.layers()]
        phases = [(p.name, p.epochs * self.steps_per_epoch) for p in self.phases(self.epochs)]
        return Schedule(self.name, names, sizes, phases=phases, exact=self.distribution != "global")

    # ------------------------------------------------------------------ schedule and state

    def schedule(self) -> Schedule:
        """The whole run as data: per-iteration per-layer densities and dense-gradient flags."""
        sched = self.new_schedule()
        sched.append(self.total_steps, self.current_densities(), False)
        return sched

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("config") != self.config():
            raise ValueError(
                f"checkpoint was written by method {state.get('config')} but this run is {self.config()}"
            )


def zero_off_mask(
    weight: nn.Parameter, keep: Tensor, optimizer: torch.optim.Optimizer | None
) -> None:
    """Set ``weight`` and its optimizer state (momentum, Adam moments) to zero where ``keep`` is False."""
    weight.masked_fill_(~keep, 0)
    if optimizer is None:
        return
    for value in optimizer.state.get(weight, {}).values():
        if isinstance(value, Tensor) and value.shape == weight.shape:
            value.masked_fill_(~keep, 0)


@torch.no_grad()
def reapply_masks(layers: list[MaskedLayer], optimizer: torch.optim.Optimizer | None) -> None:
    """Multiply every layer's weight and its weight-shaped optimizer state by its mask: what
    :func:`zero_off_mask` does for all layers at once, in one multi-tensor operation (a launch or
    two on a GPU, not two per tensor). Off-mask entries become zero (``-0.0`` for negative ones)."""
    tensors: list[Tensor] = []
    masks: list[Tensor] = []
    for layer in layers:
        state = optimizer.state.get(layer.weight, {}) if optimizer is not None else {}
        for value in (layer.weight, *state.values()):
            if isinstance(value, Tensor) and value.shape == layer.weight.shape:
                tensors.append(value)
                masks.append(layer.mask)
    if tensors:
        torch._foreach_mul_(tensors, masks)


def drop_and_grow(
    layer: MaskedLayer, count: int, grow_scores: Tensor | None, generator: torch.Generator
) -> Tensor:
    """Drop the ``count`` smallest-magnitude active weights, then grow ``count`` inactive positions.

    Growth takes the largest ``grow_scores`` (|dense gradient|; RigL) or, with ``None``, uniformly
    random positions drawn from ``generator`` (SET). Positions just dropped may be regrown, as in
    RigL: they count as new connections. Returns the bool mask of grown positions (the caller
    zeroes their weights and optimizer state).
    """
    mask = layer.mask
    active = layer.kept_weights
    count = max(0, min(count, active))
    if count == 0:
        return torch.zeros_like(mask)
    magnitude = layer.weight.detach().abs().masked_fill(~mask, float("inf"))
    drop = topk_mask(-magnitude, count)  # smallest magnitudes among the active
    after_drop = mask & ~drop
    if grow_scores is None:
        scores = torch.rand(mask.shape, generator=generator).to(mask.device)
    else:
        scores = grow_scores.to(mask.device, torch.float32).clone()
    scores = scores.masked_fill(after_drop, float("-inf"))
    grow = topk_mask(scores, count)
    layer.set_mask(after_drop | grow)
    return grow


__all__ = ["Phase", "SparseMethod", "drop_and_grow", "zero_off_mask"]
