"""Dynamic sparse training: SET, RigL and NDSNN (drop-and-grow; NDSNN also shrinks the density).

Shared update rule, per non-dense layer every ``delta_t`` iterations: drop the ``ζ_t`` fraction
of active weights with the smallest magnitude and grow as many at inactive positions — at random
(SET) or where the dense gradient is largest (RigL, NDSNN). Grown weights and their optimizer
state start at zero. Random draws use a generator seeded from (seed, step, layer).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ndsnn_triton.sparse.distribution import MIN_KEPT_PER_OUTPUT
from ndsnn_triton.sparse.masks import layer_generator
from ndsnn_triton.sparse.methods.base import SparseMethod, drop_and_grow
from ndsnn_triton.sparse.schedules import cosine_decay, cubic_sparsity
from ndsnn_triton.sparse.validation import check_density, check_fraction, check_positive_int


class DropAndGrow(SparseMethod):
    """Fixed-density drop-and-grow (the SET / RigL skeleton).

    Args (beyond :class:`SparseMethod`):
        delta_t: iterations between mask updates (ΔT).
        zeta: initial drop fraction ζ_0, cosine-annealed to 0 at the stop iteration.
        stop_fraction: fraction of the run after which masks stop changing.
    """

    name: ClassVar[str] = "drop-and-grow"

    def __init__(
        self,
        density: float = 0.1,
        distribution: str = "erk",
        dense_first: bool = False,
        dense_last: bool = False,
        seed: int = 0,
        delta_t: int = 100,
        zeta: float = 0.3,
        stop_fraction: float = 0.75,
        min_kept_per_output: float = MIN_KEPT_PER_OUTPUT,
    ) -> None:
        super().__init__(density, distribution, dense_first, dense_last, seed, min_kept_per_output)
        self.delta_t = check_positive_int(delta_t, "delta_t")
        self.zeta0 = check_fraction(zeta, "zeta")
        self.stop_fraction = check_fraction(stop_fraction, "stop_fraction")

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "delta_t": self.delta_t,
            "zeta": self.zeta0,
            "stop_fraction": self.stop_fraction,
        }

    @property
    def stop_step(self) -> int:
        return int(self.stop_fraction * self.total_steps)

    def init_masks(self) -> None:
        self.random_initial_masks(self.density)

    def is_update_step(self, step: int) -> bool:
        return step > 0 and step % self.delta_t == 0 and step < self.stop_step

    def zeta(self, step: int) -> float:
        """Drop fraction at ``step``: ``ζ_0·(1 + cos(π·step/stop))/2``."""
        return cosine_decay(step, self.zeta0, 0.0, self.stop_step)

    def update_masks(self, step: int) -> None:
        self.drop_and_grow_all(step, self.zeta(step))

    def drop_and_grow_all(self, step: int, zeta: float) -> None:
        for index, name, layer in self.sparse_layers():
            count = int(zeta * layer.kept_weights)
            scores = self._grow_scores.get(name) if self.gradient_growth else None
            if self.gradient_growth and scores is None:
                continue  # no gradient reached this layer on this step: nothing to rank growth by
            grown = drop_and_grow(layer, count, scores, layer_generator(self.seed, step, index))
            self.note_grown(name, grown)

    def schedule(self):
        # Density is fixed; only the dense-gradient flags of update steps vary.
        sched = self.new_schedule()
        densities = self.current_densities()
        previous = 0
        for step in range(self.delta_t, self.total_steps, self.delta_t):
            if self.is_update_step(step):
                sched.append(step - previous, densities, False)
                sched.append(1, densities, self.needs_dense_grad(step))
                previous = step + 1
        sched.append(self.total_steps - previous, densities, False)
        return sched


class SET(DropAndGrow):
    """SET (Mocanu et al. 2018): random regrowth at fixed density, from a random ERK mask."""

    name: ClassVar[str] = "set"
    gradient_growth: ClassVar[bool] = False


class RigL(DropAndGrow):
    """RigL (Evci et al. 2020): regrowth where the dense gradient is largest; ζ=0.3 cosine, ΔT=100,
    updates stop at 75 % of training. Dense weight gradients are computed on update steps only."""

    name: ClassVar[str] = "rigl"
    gradient_growth: ClassVar[bool] = True


class Static(SparseMethod):
    """A fixed random mask (``distribution``) for the whole run."""

    name: ClassVar[str] = "static"

    def __init__(self, density: float = 0.1, **kwargs: Any) -> None:
        super().__init__(density, **kwargs)

    def init_masks(self) -> None:
        self.random_initial_masks(self.density)


class NDSNN(DropAndGrow):
    """NDSNN (Huang et al., DAC 2023) *(inferred: GraNet-style gradual pruning with regeneration)*.

    Starts from a random ERK mask at ``d_init`` (dense when 1). Every ``delta_t`` iterations from
    ``t0`` on: until ``t_end`` prune by magnitude (``distribution``, default ``global``) to the
    cubic target ``d_t = 1 − θ_t``, ``θ_t = θ_f + (θ_i − θ_f)(1 − (t − t0)/(t_end − t0))^3``; then,
    in each layer, drop ``ζ_t`` of the active weights (smallest magnitude) and regrow as many where
    the dense gradient is largest. ``ζ_t`` cosine-decays from ``zeta`` (0.5) to ``zeta_end``
    (0.005) over the run. After ``t_end`` drop-and-grow continues at the final density.

    Args (beyond :class:`SparseMethod`):
        density: final density d_f. d_init: initial density d_i (default 1.0).
        t0_fraction, t_end_fraction: start and end of the density decrease, as fractions of the run
            (defaults 0 and 0.75). Masks change only on the ΔT grid ``t0 + k·ΔT``; the clamped
            cubic reaches d_f at the first update at or after ``t_end``. Where no update follows
            ``t_end`` (e.g. ``t_end_fraction=1``), the decrease ends at the last update instead, so
            every run ends at d_f. A run whose decrease is shorter than ΔT uses that length as
            ΔT (one update, at ``t_end``).
        delta_t: iterations between updates (default 1000). zeta, zeta_end: drop-fraction range.
    """

    name: ClassVar[str] = "ndsnn"
    gradient_growth: ClassVar[bool] = True

    def __init__(
        self,
        density: float = 0.01,
        distribution: str = "global",
        dense_first: bool = False,
        dense_last: bool = False,
        seed: int = 0,
        d_init: float = 1.0,
        t0_fraction: float = 0.0,
        t_end_fraction: float = 0.75,
        delta_t: int = 1000,
        zeta: float = 0.5,
        zeta_end: float = 0.005,
        min_kept_per_output: float = MIN_KEPT_PER_OUTPUT,
    ) -> None:
        super().__init__(
            density,
            distribution,
            dense_first,
            dense_last,
            seed,
            delta_t,
            zeta,
            1.0,
            min_kept_per_output,
        )
        self.d_init = check_density(d_init, "d_init")
        if self.d_init < self.density:
            raise ValueError(
                f"ndsnn: d_init={self.d_init} must be >= the final density {self.density}"
            )
        self.t0_fraction = check_fraction(t0_fraction, "t0_fraction")
        self.t_end_fraction = check_fraction(t_end_fraction, "t_end_fraction")
        if self.t_end_fraction < self.t0_fraction:
            raise ValueError(
                f"ndsnn: t_end_fraction={t_end_fraction} is before t0_fraction={t0_fraction}"
            )
        self.zeta_end = check_fraction(zeta_end, "zeta_end")

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        del cfg["stop_fraction"]
        return {
            **cfg,
            "d_init": self.d_init,
            "t0_fraction": self.t0_fraction,
            "t_end_fraction": self.t_end_fraction,
            "zeta_end": self.zeta_end,
        }

    @property
    def t0(self) -> int:
        return int(self.t0_fraction * self.total_steps)

    @property
    def update_interval(self) -> int:
        """ΔT, capped at the length of the density decrease (from t0 to ``t_end_fraction`` of the
        run, at most its last iteration): a run shorter than ΔT still prunes, once, at its end."""
        span = min(int(self.t_end_fraction * self.total_steps), self.total_steps - 1) - self.t0
        return min(self.delta_t, span) if span > 0 else self.delta_t

    @property
    def last_update_step(self) -> int | None:
        """The last iteration of the update grid ``t0 + k·ΔT`` inside the run (None: no update)."""
        interval = self.update_interval
        last = self.t0 + (self.total_steps - 1 - self.t0) // interval * interval
        return last if last > 0 and last >= self.t0 else None

    @property
    def t_end(self) -> int:
        """End of the density decrease: ``t_end_fraction`` of the run, or the last update if that
        comes earlier (so the cubic target reaches d_f on an update)."""
        requested = int(self.t_end_fraction * self.total_steps)
        last = self.last_update_step
        return requested if last is None else min(requested, last)

    def setup(self, model, steps_per_epoch: int, epochs: int) -> None:
        super().setup(model, steps_per_epoch, epochs)
        if self.d_init > self.density and self.last_update_step is None:
            raise ValueError(
                f"ndsnn: no mask update falls inside the run ({self.total_steps} iterations, "
                f"delta_t={self.delta_t}, t0={self.t0}), so the density cannot fall from "
                f"d_init={self.d_init} to {self.density}; lower delta_t or train longer"
            )

    def init_masks(self) -> None:
        self.random_initial_masks(self.d_init)

    def is_update_step(self, step: int) -> bool:
        if step < self.t0 or step <= 0 or step >= self.total_steps:
            return False
        return (step - self.t0) % self.update_interval == 0

    def target_density(self, step: int) -> float:
        """Overall density after the update at ``step``: ``1 − θ_t`` (cubic), ``d_f`` after ``t_end``."""
        return 1.0 - cubic_sparsity(
            step, 1.0 - self.d_init, 1.0 - self.density, self.t0, self.t_end
        )

    def zeta(self, step: int) -> float:
        return cosine_decay(step, self.zeta0, self.zeta_end, self.total_steps)

    def update_masks(self, step: int) -> None:
        target = self.target_density(step)
        if self._sparse_density() > target + 1e-12:
            self.prune_to(target)
        self.drop_and_grow_all(step, self.zeta(step))

    def _sparse_density(self) -> float:
        layers = self.sparse_layers()
        return sum(m.kept_weights for _, _, m in layers) / sum(m.mask.numel() for _, _, m in layers)

    def update_steps(self) -> list[int]:
        """Every iteration after which the masks change, in order."""
        interval = self.update_interval
        first = self.t0 if self.t0 > 0 else interval
        return [s for s in range(first, self.total_steps, interval) if self.is_update_step(s)]

    def schedule(self):
        sched = self.new_schedule()
        updates = self.update_steps()
        # Per-layer split of each distinct target; the global split is one sort for all targets.
        targets = [self.target_density(s) for s in updates]
        distinct = sorted(set(targets), reverse=True)
        splits = (
            dict(zip(distinct, self.global_split(distinct), strict=True))
            if self.distribution == "global"
            else {d: self.layer_split(d) for d in distinct}
        )
        names = [n for n, _ in self.layers()]
        current = self.current_densities()
        previous = 0
        for step, target in zip(updates, targets, strict=True):
            sched.append(step - previous, current, False)
            sched.append(1, current, self.needs_dense_grad(step))
            previous = step + 1
            if self.overall(current) > target + 1e-12:
                current = [splits[target][n] for n in names]
        sched.append(self.total_steps - previous, current, False)
        return sched

    def overall(self, densities: list[float]) -> float:
        sizes = [(n, m.weight.numel()) for n, m in self.layers()]
        num = sum(
            d * size for d, (n, size) in zip(densities, sizes, strict=True) if n not in self.dense
        )
        den = sum(size for n, size in sizes if n not in self.dense)
        return num / den
