"""Kernel launches of one training step, by phase and by component, counted on any machine.

A training step is given as named phases (callables run in order: forward, backward, optimizer,
masks, ...). Each runs under a :class:`~ndsnn_triton.profiler.device_ops.DeviceOpCounter`; every
aten op that reaches a device kernel and every Triton launch is attributed to its phase and, by
name, to a component (:data:`COMPONENTS`: sparse or dense convolution/linear work, LIF, BatchNorm,
pooling, loss, optimizer, mask re-application; the rest is ``other``, listed by name).

With ``run_triton=False`` the Triton launches are counted but not executed (their outputs keep
whatever their allocation held): the interpreter would take minutes for a VGG-16 step on a CPU,
and the count cannot change, because a step that makes no host synchronisation (the library's
ordinary step makes none, ``tests/test_host_sync.py``) cannot choose what to launch by the values
it computes. ``tests/test_step_launches.py`` checks the two modes agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ndsnn_triton.profiler.device_ops import DeviceOpCounter, DeviceOps

#: component -> the launches (aten op names, ``triton:<kernel>``) that belong to it
COMPONENTS: dict[str, frozenset[str]] = {
    "conv/linear": frozenset(
        {
            "triton:conv_fwd",
            "triton:conv_dgrad",
            "triton:conv_wgrad",
            "triton:wgrad_reduce",
            "triton:spike_prep",
            "convolution",
            "convolution_backward",
            "cudnn_convolution",
            "mm",
            "addmm",
            "bmm",
        }
    ),
    "LIF": frozenset({"triton:lif_fwd", "triton:lif_bwd", "new_full"}),
    "BatchNorm": frozenset(
        {
            "native_batch_norm",
            "native_batch_norm_backward",
            "_native_batch_norm_legit",
            "_native_batch_norm_legit_functional",
            "cudnn_batch_norm",
            "cudnn_batch_norm_backward",
        }
    ),
    "pooling": frozenset(
        {
            "max_pool2d_with_indices",
            "max_pool2d_with_indices_backward",
            "avg_pool2d",
            "avg_pool2d_backward",
            "_adaptive_avg_pool2d",
            "_adaptive_avg_pool2d_backward",
        }
    ),
    "loss": frozenset(
        {
            "_log_softmax",
            "_log_softmax_backward_data",
            "nll_loss_forward",
            "nll_loss_backward",
            "ones_like",
        }
    ),
    "optimizer": frozenset({"_fused_sgd_", "_fused_adam_", "_fused_adamw_"}),
}


def component_of(name: str) -> str:
    """The :data:`COMPONENTS` key of a launch name (``"other"`` if none)."""
    for component, names in COMPONENTS.items():
        if name in names:
            return component
    return "other"


@dataclass
class StepLaunches:
    """What one counted step launched, per phase (in the order the phases ran)."""

    phases: dict[str, DeviceOps] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Kernel launches of the whole step."""
        return sum(ops.total for ops in self.phases.values())

    def by_name(self) -> dict[str, int]:
        """Launches per name over the whole step (``triton:<kernel>`` for Triton's)."""
        total: Counter = Counter()
        for ops in self.phases.values():
            total.update(ops.summary())
        return dict(sorted(total.items()))

    def by_component(self) -> dict[str, int]:
        """Launches per component (:data:`COMPONENTS`, plus ``other``) over the whole step."""
        total: Counter = Counter()
        for name, count in self.by_name().items():
            total[component_of(name)] += count
        return {c: total[c] for c in (*COMPONENTS, "other") if total[c]}

    def to_dict(self) -> dict:
        """JSON-ready record: total, per phase, per component, per name."""
        return {
            "total": self.total,
            "phases": {p: ops.total for p, ops in self.phases.items()},
            "components": self.by_component(),
            "launches": self.by_name(),
        }


def count_step_launches(
    phases: dict[str, Callable[[], object]], run_triton: bool = False
) -> StepLaunches:
    """Run ``phases`` in order, each under its own counter, and return what they launched.

    The caller warms the step up first (an uncounted step: kernel choices, compressed indices,
    optimizer state), as a training run does before its steady state.
    """
    counted = StepLaunches()
    for name, phase in phases.items():
        with DeviceOpCounter(run_triton=run_triton) as ops:
            phase()
        counted.phases[name] = ops.result
    return counted
