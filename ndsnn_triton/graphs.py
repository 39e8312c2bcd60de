"""Capture a training step once and replay it: CUDA graphs, and a CPU stand-in with their rules.

A :class:`StepGraph` wraps a step function ``fn(*inputs) -> outputs``. Its first call copies the
inputs into static buffers, captures ``fn`` on them and runs it once; each later call copies new
inputs of the same shapes into those buffers and replays what was captured. What a replay does is
what the capture recorded, with the memory and arguments fixed then:

* a Python number the step passed to a kernel is baked in (a learning rate that the host changes
  between steps must live in a tensor the step reads: ``torch.optim.SGD(lr=torch.tensor(...))``);
* Python code in the step does not run again (counters, hooks): whoever replays does that part;
* the outputs are the same tensors at every replay, overwritten by the next one;
* nothing may read a device value on the host during the capture (``.item()``, ``nonzero``...).

On CUDA the capture is a ``torch.cuda.CUDAGraph``. On other devices it is a :class:`ReplayTape`:
every aten op and Triton launch the step makes is recorded with its arguments and replayed on
the same tensors, with a host read during the capture an error, as on a GPU. It is no faster than
running the step; it exists so that a CPU can check a step obeys the rules above (the tests run
the CLI trainer and an :func:`~ndsnn_triton.sparse.attach` loop through it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten

from ndsnn_triton.kernels.tracing import LaunchTracer

#: aten ops that read device data on the host: a CUDA stream capture fails on them
HOST_READS = frozenset(
    {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal", "_unique2", "item"}
)
#: aten ops whose result need not be recomputed at a replay: fresh, uninitialised memory
ALLOCATIONS = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"})


class GraphCaptureError(RuntimeError):
    """The step did something a captured graph cannot replay (a host read during capture)."""


class ReplayTape(LaunchTracer):
    """Records the device work of a block (aten ops and Triton launches, with the tensors they
    touched) and replays it on the same tensors: a CUDA graph's semantics on any device."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple] = []

    def capture(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` once, recording it; returns its result."""
        self.entries.clear()
        with self:
            return fn()

    def replay(self) -> None:
        """Redo every recorded op into the tensors it wrote at the capture."""
        # below autograd, as the ops ran when the mode saw them
        with torch._C._AutoDispatchBelowADInplaceOrView():
            for entry in self.entries:
                if entry[0] == "triton":
                    self.run_launch(entry[1], entry[2])
                    continue
                _, func, args, kwargs, out = entry
                result = func(*args, **kwargs)
                if func._schema.is_mutable:
                    continue  # it wrote its arguments in place
                for old, new in zip(tree_flatten(out)[0], tree_flatten(result)[0], strict=True):
                    if isinstance(old, Tensor):
                        old.copy_(new)

    def on_triton(self, launch, args: tuple) -> None:
        self.entries.append(("triton", launch, args))
        self.run_launch(launch, args)

    def on_aten(self, func, args: tuple, kwargs: dict) -> Any:
        name = func._overloadpacket.__name__
        if name in HOST_READS:
            raise GraphCaptureError(
                f"aten.{name} reads a device value on the host during graph capture; a captured "
                "step must not synchronise (move the read out of the step)"
            )
        out = func(*args, **kwargs)
        if not func.is_view and name not in ALLOCATIONS:
            self.entries.append(("aten", func, args, kwargs, out))
        return out


class _CudaCapture:
    """A ``torch.cuda.CUDAGraph`` behind the tape's interface."""

    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()

    def capture(self, fn: Callable[[], Any]) -> Any:
        torch.cuda.synchronize()
        # thread_local: a data loader's thread may allocate while this thread captures
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            out = fn()
        self.graph.replay()  # the capture ran nothing: this is the step's one run
        return out

    def replay(self) -> None:
        self.graph.replay()


def _signature(inputs: tuple[Tensor, ...]) -> tuple:
    return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)


class StepGraph:
    """``fn`` captured at the first call and replayed at the later ones (module docstring).

    Args:
        fn: the step, ``fn(*inputs) -> outputs`` (tensors, or tuples/lists/dicts of them).
        device: where the step runs: a CUDA graph on ``cuda``, a :class:`ReplayTape` elsewhere.

    Returns of a call: the step's outputs, the same tensors at every call (clone what you keep).
    """

    def __init__(self, fn: Callable[..., Any], device: torch.device | str) -> None:
        self.fn = fn
        self.device = torch.device(device)
        self._backend: ReplayTape | _CudaCapture | None = None
        self._static: tuple[Tensor, ...] = ()
        self._outputs: Any = None
        self.replays = 0

    @property
    def captured(self) -> bool:
        return self._backend is not None

    def accepts(self, *inputs: Tensor) -> bool:
        """Whether a replay can take ``inputs`` (the captured shapes, dtypes and devices)."""
        return self.captured and _signature(inputs) == _signature(self._static)

    def __call__(self, *inputs: Tensor) -> Any:
        if not self.captured:
            self._static = tuple(x.detach().clone() for x in inputs)
            backend = _CudaCapture() if self.device.type == "cuda" else ReplayTape()
            self._outputs = backend.capture(lambda: self.fn(*self._static))
            self._backend = backend
            return self._outputs
        if not self.accepts(*inputs):
            raise ValueError(
                f"StepGraph: inputs {_signature(inputs)} differ from the captured "
                f"{_signature(self._static)}; run such a step eagerly"
            )
        for static, x in zip(self._static, inputs, strict=True):
            static.copy_(x, non_blocking=True)
        self._backend.replay()
        self.replays += 1
        return self._outputs

    def release(self) -> None:
        """Drop the captured graph and its memory; the next call captures again."""
        self._backend = None
        self._static = ()
        self._outputs = None
