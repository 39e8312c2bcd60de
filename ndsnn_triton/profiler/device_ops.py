"""Device operations of a piece of code: every kernel launch it makes, counted on any machine.

A GPU runs one kernel per aten operation that computes, fills, copies or casts (a view, a
reshape of contiguous data or an allocation launches none), plus one per Triton launch. On a
CPU the same code makes the same calls (the Triton kernels run in the interpreter), so the count
is the number of launches the code would make on a GPU.

:class:`DeviceOpCounter` is a :class:`~ndsnn_triton.kernels.tracing.LaunchTracer`: it sees every
aten op, also those the ``ndsnn::`` custom ops run inside, and every Triton launch (whose
interpreter bookkeeping it does not count).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from ndsnn_triton.kernels.tracing import LaunchTracer

#: aten ops that launch no kernel: views and reshapes of existing storage, allocations, and the
#: composite conversions whose copy, where one is needed, is seen as an op of its own
#: (``to`` → ``_to_copy``, ``contiguous``/``reshape`` → ``clone``)
NO_KERNEL = frozenset(
    {
        "alias",
        "contiguous",
        "_record_function_enter_new",  # profiler markers
        "_record_function_exit",
        "scalar_tensor",  # a Python number as a 0-d tensor: made on the host
        "flatten",
        "reshape",
        "to",
        "view_as",
        "as_strided",
        "detach",
        "empty",
        "empty_like",
        "empty_strided",
        "expand",
        "lift_fresh",
        "new_empty",
        "new_empty_strided",
        "permute",
        "select",
        "slice",
        "split",
        "squeeze",
        "t",
        "transpose",
        "unbind",
        "unflatten",
        "unsqueeze",
        "view",
        "_reshape_alias",
        "_unsafe_view",
    }
)


def _name(func: torch._ops.OpOverload) -> str:
    return func._schema.name.split("::")[-1]


@dataclass
class DeviceOps:
    """What a :class:`DeviceOpCounter` saw: aten kernels and Triton launches, by name, in order."""

    aten: list[str] = field(default_factory=list)
    triton: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Kernel launches in all: aten kernels plus Triton launches."""
        return len(self.aten) + len(self.triton)

    def summary(self) -> dict[str, int]:
        """Launches per name (``triton:<kernel>`` for Triton's)."""
        return dict(Counter(self.aten) + Counter(f"triton:{n}" for n in self.triton))


class DeviceOpCounter(LaunchTracer):
    """Context manager counting the device operations the enclosed code launches:

    >>> with DeviceOpCounter() as ops:
    ...     loss.backward()
    >>> ops.result.total, ops.result.summary()

    ``run_triton=False`` counts Triton launches without running them (their outputs are left as
    allocated): for code whose launches do not depend on computed values, see
    :mod:`ndsnn_triton.profiler.step_launches`.
    """

    def __init__(self, run_triton: bool = True) -> None:
        super().__init__()
        self.result = DeviceOps()
        self.run_triton = bool(run_triton)

    def on_triton(self, launch, args: tuple) -> None:
        if launch.programs:
            self.result.triton.append(launch.name)
        if self.run_triton:
            self.run_launch(launch, args)

    def on_aten(self, func, args: tuple, kwargs: dict):
        name = _name(func)
        if name not in NO_KERNEL:
            self.result.aten.append(name)
        return func(*args, **kwargs)
