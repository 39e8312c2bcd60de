"""A dispatch mode that sees every device operation of the enclosed code: each aten op (also
those inside the ``ndsnn::`` custom ops, whose implementations it runs under itself) and each
Triton launch (:meth:`ndsnn_triton.kernels.launch.KernelLaunch.run`, wrapped while it is active).
The launch counter and the replay tape are built on it."""

from __future__ import annotations

from typing import Any

import torch
from torch._library.custom_ops import _maybe_get_opdef
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from ndsnn_triton.kernels import launch as _launch


class LaunchTracer(TorchDispatchMode):
    """Base class: override :meth:`on_aten` and :meth:`on_triton` (both run the operation by
    default). Re-entrant: the mode enters itself around each custom op's implementation."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._run: Any = None  # KernelLaunch.run as it was before entering
        self._tls: tuple | None = None  # dispatch keys of the code the mode was entered from

    def on_aten(self, func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
        """Called for each aten op; returns its result."""
        return func(*args, **kwargs)

    def on_triton(self, launch: _launch.KernelLaunch, args: tuple) -> None:
        """Called for each Triton launch; runs it (:meth:`run_launch`)."""
        self.run_launch(launch, args)

    def run_launch(self, launch: _launch.KernelLaunch, args: tuple) -> None:
        """Run a Triton launch (outside the mode: the interpreter's own copies are not ops)."""
        with _disable_current_modes():
            (self._run or _launch.KernelLaunch.run)(launch, *args)

    def __enter__(self) -> LaunchTracer:
        if self._depth == 0:
            tracer = self

            def run(launch: _launch.KernelLaunch, *args) -> None:
                tracer.on_triton(launch, args)

            self._run = _launch.KernelLaunch.run
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
            self._run = None
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "ndsnn":
            opdef = _maybe_get_opdef(func._schema.name)
            if opdef is not None:
                # As the dispatcher runs it: views made inside share their base's version counter
                # (the sparse-index cache keys on it), which the mode's own keys would not give.
                with self, torch._C._ForceDispatchKeyGuard(*self._tls):
                    return opdef._init_fn(*args, **kwargs)
        return self.on_aten(func, args, kwargs)
