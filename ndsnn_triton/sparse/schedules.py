"""Closed-form schedules and the run schedule a method hands to the cost model.

A :class:`Schedule` lists, for every training iteration, each maskable layer's weight density in
that iteration's forward/backward and whether its backward computes the dense weight gradient.
Runs of identical iterations are stored once (:class:`Segment`), so a 300-epoch run is a few
hundred segments and integrating a cost over it is fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


def cubic_sparsity(t: float, s_i: float, s_f: float, t0: float, t_end: float) -> float:
    """Gradual-pruning target sparsity (Zhu & Gupta 2017; GraNet):
    ``θ_t = θ_f + (θ_i − θ_f)·(1 − (t − t0)/(t_end − t0))^3``, clamped to [t0, t_end]."""
    if t_end <= t0:
        return s_f if t >= t0 else s_i
    progress = min(max((t - t0) / (t_end - t0), 0.0), 1.0)
    return s_f + (s_i - s_f) * (1.0 - progress) ** 3


def cosine_decay(t: float, start: float, end: float, horizon: float) -> float:
    """``end + (start − end)·(1 + cos(π·t/horizon))/2``, held at ``end`` after ``horizon``."""
    if horizon <= 0:
        return end
    progress = min(max(t / horizon, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Segment:
    """``steps`` consecutive iterations with the same per-layer densities and gradient kind."""

    steps: int
    densities: tuple[float, ...]  # per layer, in Schedule.layer_names order
    dense_grad: bool  # backward computes the full dense weight gradient (growth steps)


@dataclass
class Schedule:
    """A method's whole run: per-iteration per-layer density and dense-gradient flags.

    ``exact`` is False where per-layer densities depend on weights the schedule cannot know in
    advance (global magnitude pruning); the overall density is always exact.
    """

    method: str
    layer_names: list[str]
    layer_sizes: list[int]
    segments: list[Segment] = field(default_factory=list)
    phases: list[tuple[str, int]] = field(default_factory=list)  # (phase name, iterations)
    exact: bool = True

    def append(self, steps: int, densities: Sequence[float], dense_grad: bool) -> None:
        """Add ``steps`` iterations, merging with the last segment when identical."""
        if steps <= 0:
            return
        densities = tuple(float(d) for d in densities)
        if (
            self.segments
            and self.segments[-1].densities == densities
            and self.segments[-1].dense_grad == dense_grad
        ):
            last = self.segments.pop()
            steps += last.steps
        self.segments.append(Segment(steps, densities, dense_grad))

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.segments)

    @property
    def dense_grad_steps(self) -> int:
        return sum(s.steps for s in self.segments if s.dense_grad)

    def overall_density(self, densities: Sequence[float]) -> float:
        total = sum(self.layer_sizes)
        return sum(d * n for d, n in zip(densities, self.layer_sizes, strict=True)) / total

    def window(self, start: int, stop: int) -> Schedule:
        """The iterations ``start .. stop - 1`` of the run as a schedule of their own (clipped
        to the run), e.g. the part of the plan that a run stopped early really trained."""
        if start < 0 or stop < start:
            raise ValueError(f"schedule window [{start}, {stop}) is not a range of iterations")
        part = Schedule(self.method, self.layer_names, self.layer_sizes, exact=self.exact)
        begin = 0
        for seg in self.segments:
            end = begin + seg.steps
            part.append(min(end, stop) - max(begin, start), seg.densities, seg.dense_grad)
            begin = end
        return part

    def iter_steps(self) -> Iterator[tuple[int, tuple[float, ...], bool]]:
        """Yield ``(step, densities, dense_grad)`` for every iteration (slow for long runs)."""
        step = 0
        for seg in self.segments:
            for _ in range(seg.steps):
                yield step, seg.densities, seg.dense_grad
                step += 1

    @classmethod
    def from_dict(cls, data: dict) -> Schedule:
        """Inverse of :meth:`to_dict` (e.g. a run folder's ``schedule.json``)."""
        try:
            sched = cls(
                data["method"],
                list(data["layer_names"]),
                list(data["layer_sizes"]),
                exact=bool(data["exact"]),
            )
            sched.phases = [tuple(p) for p in data.get("phases", [])]
            for seg in data["segments"]:
                sched.append(int(seg["steps"]), seg["densities"], bool(seg["dense_grad"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a schedule: {type(err).__name__}: {err}") from err
        return sched

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "layer_names": self.layer_names,
            "layer_sizes": self.layer_sizes,
            "exact": self.exact,
            "phases": self.phases,
            "segments": [
                {"steps": s.steps, "densities": list(s.densities), "dense_grad": s.dense_grad}
                for s in self.segments
            ],
        }
