"""Lottery Ticket Hypothesis by iterative magnitude pruning with rewinding (Kim et al., ECCV 2022).

Round 0 trains dense for ``epochs`` epochs and saves the model after ``rewind_epoch`` epochs.
Each later round k first prunes ``prune_rate`` of the remaining weights by magnitude (global by
default), rewinds the surviving weights (and BN state) to the saved ones, and trains
``epochs − rewind_epoch`` epochs with a fresh optimizer and LR schedule. Densities are
``(1 − prune_rate)^k``; the last round lands exactly on the target density. The number of rounds is
the smallest K with ``(1 − prune_rate)^K <= density·(1 + tolerance)`` (99 % sparsity: 16 rounds),
unless ``rounds`` is given.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch

from ndsnn_triton.sparse.distribution import MIN_KEPT_PER_OUTPUT
from ndsnn_triton.sparse.methods.base import Phase, SparseMethod
from ndsnn_triton.sparse.validation import check_fraction, check_positive_int


class LTH(SparseMethod):
    """Iterative magnitude pruning with late rewinding.

    Args (beyond :class:`SparseMethod`; ``distribution`` defaults to ``global``):
        prune_rate: fraction of remaining weights pruned per round (0.25).
        rewind_epoch: epoch of round 0 whose weights later rounds rewind to (20; 0 = initial weights).
        rounds: number of pruning rounds K (default: derived from density and prune_rate).
        tolerance: relative slack when deriving K (0.01).
    """

    name: ClassVar[str] = "lth"

    def __init__(
        self,
        density: float = 0.01,
        distribution: str = "global",
        dense_first: bool = False,
        dense_last: bool = False,
        seed: int = 0,
        prune_rate: float = 0.25,
        rewind_epoch: int = 20,
        rounds: int | None = None,
        tolerance: float = 0.01,
        min_kept_per_output: float = MIN_KEPT_PER_OUTPUT,
    ) -> None:
        super().__init__(density, distribution, dense_first, dense_last, seed, min_kept_per_output)
        self.prune_rate = check_fraction(prune_rate, "prune_rate", allow_zero=False)
        if self.prune_rate >= 1.0:
            raise ValueError("lth: prune_rate must be below 1")
        if isinstance(rewind_epoch, bool) or not isinstance(rewind_epoch, int) or rewind_epoch < 0:
            raise ValueError(f"lth: rewind_epoch must be a non-negative int, got {rewind_epoch!r}")
        self.rewind_epoch = rewind_epoch
        self.tolerance = float(tolerance)
        self.rounds = (
            self._derive_rounds() if rounds is None else check_positive_int(rounds, "rounds")
        )
        self._rewind_state: dict[str, torch.Tensor] | None = None
        self.round = 0

    def _derive_rounds(self) -> int:
        if self.density >= 1.0:
            return 0
        keep = 1.0 - self.prune_rate
        k = math.ceil(math.log(self.density * (1.0 + self.tolerance)) / math.log(keep) - 1e-9)
        return max(k, 1)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "prune_rate": self.prune_rate,
            "rewind_epoch": self.rewind_epoch,
            "rounds": self.rounds,
        }

    def round_densities(self) -> list[float]:
        """Density of each round 0..K: ``(1 − prune_rate)^k``, the last one exactly ``density``."""
        keep = 1.0 - self.prune_rate
        densities = [max(keep**k, self.density) for k in range(self.rounds + 1)]
        densities[-1] = self.density if self.rounds else 1.0
        return densities

    def phases(self, epochs: int) -> list[Phase]:
        check_positive_int(epochs, "epochs")
        if self.rounds and self.rewind_epoch >= epochs:
            raise ValueError(
                f"lth: rewind_epoch={self.rewind_epoch} must be below the epochs per round ({epochs})"
            )
        return [Phase("round 0", epochs)] + [
            Phase(f"round {k}", epochs - self.rewind_epoch) for k in range(1, self.rounds + 1)
        ]

    def setup(self, model, steps_per_epoch: int, epochs: int) -> None:
        super().setup(model, steps_per_epoch, epochs)
        self.round = 0
        self._rewind_state = None
        if self.rewind_epoch == 0:
            self._save_rewind_state()

    def _save_rewind_state(self) -> None:
        state = self.model.state_dict()
        self._rewind_state = {
            k: v.detach().clone() for k, v in state.items() if not k.endswith("mask")
        }

    def on_epoch_end(self, phase: int, epoch_in_phase: int) -> None:
        if phase == 0 and epoch_in_phase == self.rewind_epoch:
            self._save_rewind_state()

    @torch.no_grad()
    def on_phase_end(self, phase: int) -> None:
        if phase >= self.rounds:
            return
        if self._rewind_state is None:
            raise RuntimeError(
                "lth: no rewind state was saved (round 0 ended before the rewind epoch)"
            )
        self.round = phase + 1
        self.prune_to(self.round_densities()[self.round])
        masks = {name: layer.mask.clone() for name, layer in self.layers()}
        self.model.load_state_dict({**self.model.state_dict(), **copy.deepcopy(self._rewind_state)})
        for name, layer in self.layers():
            layer.set_mask(masks[name])

    def rewind_state(self) -> dict[str, torch.Tensor] | None:
        """The saved weights later rounds start from (None before they are saved)."""
        return self._rewind_state

    def schedule(self):
        sched = self.new_schedule()
        densities = self.round_densities()
        if self.distribution == "global":
            splits = self.global_split(densities)
        else:
            splits = [self.layer_split(d) for d in densities]
        names = [n for n, _ in self.layers()]
        for (_, steps), split in zip(sched.phases, splits, strict=True):
            sched.append(steps, [split[n] for n in names], False)
        return sched

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "round": self.round, "rewind_state": self._rewind_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.round = int(state["round"])
        self._rewind_state = state["rewind_state"]
