"""Device operations of a piece of code: every kernel launch it makes, counted on any machine.

A GPU runs one kernel per aten operation that computes, fills, copies or casts (a view, a
reshape of contiguous data or an allocation launches none), plus one per Triton launch. On a
CPU the same code makes the same calls (the Triton kernels run in the interpreter), so the count
is the number of launches the code would make on a GPU.

:class:`DeviceOpCounter` is a ``TorchDispatchMode`` that sees every aten op, also those the
``ndsnn::`` custom ops run inside (it re-enters their implementations under itself), and wraps
:meth:`ndsnn_triton.kernels.launch.KernelLaunch.run` to see every Triton launch (whose interpreter
bookkeeping it does not count).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch._library.custom_ops import _maybe_get_opdef
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from ndsnn_triton.kernels import launch as _launch

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


class DeviceOpCounter(TorchDispatchMode):
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
        self._run = None
        self._depth = 0  # the mode is re-entered around each custom op's implementation
        self._tls: tuple | None = None  # dispatch keys of the code the mode was entered from

    def __enter__(self) -> DeviceOpCounter:
        if self._depth == 0:
            counter = self
            original = _launch.KernelLaunch.run

            def run(launch: _launch.KernelLaunch, *args) -> None:
                if launch.programs:
                    counter.result.triton.append(launch.name)
                if not counter.run_triton:
                    return
                with _disable_current_modes():  # the interpreter's own copies launch nothing
                    original(launch, *args)

            self._run = original
            _launch.KernelLaunch.run = run
        self._depth += 1
        entered = super().__enter__()
        if self._depth == 1:
            self._tls = (
                torch._C._dispatch_tls_local_include_set(),
                torch._C._dispatch_tls_local_exclude_set(),
            )
        return entered

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            _launch.KernelLaunch.run = self._run
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "ndsnn":
            # run the custom op's own implementation under this mode, to see what it launches
            opdef = _maybe_get_opdef(func._schema.name)
            if opdef is not None:
                # As the dispatcher runs it: views made inside share their base's version counter
                # (the sparse-index cache keys on it), which the mode's own keys would not give.
                with self, torch._C._ForceDispatchKeyGuard(*self._tls):
                    return opdef._init_fn(*args, **kwargs)
        name = _name(func)
        if name not in NO_KERNEL:
            self.result.aten.append(name)
        return func(*args, **kwargs)
