"""Launch plans: what a Triton launcher decides before it launches, as data.

Every launcher builds a :class:`KernelLaunch` from shapes and dtypes alone (no tensor needed),
then runs it. The same plan functions feed the ahead-of-time compiler
(:mod:`ndsnn_triton.kernels.aot`), so the configurations compiled for real GPU targets in CI are,
by construction, the ones the launchers choose: block sizes, ``num_warps``/``num_stages``,
floating-point fusion and pointer dtypes.

A plan also checks the launch against CUDA's limits before anything runs: grid axis 0 up to
2³¹ − 1 programs, axes 1 and 2 up to 65,535; tensors whose element offsets pass the int32 range
the kernels index with are refused with :class:`LaunchLimitError` (a ``ValueError``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ndsnn_triton.kernels.triton_utils import cdiv

#: CUDA's grid limits per axis (x, y, z)
GRID_LIMITS = (2**31 - 1, 65_535, 65_535)
#: largest element count a tensor may have: the kernels compute element offsets in int32, and a
#: program's block may run past the last element before its mask applies (headroom of 2¹⁶)
MAX_INT32_ELEMENTS = 2**31 - 1 - 2**16
#: programs a launch should offer to fill a GPU: two per SM of a 132-SM H100/H200, so one slow
#: program does not leave an SM idle for the rest of the launch
FILL_PROGRAMS = 264

_POINTER_TYPES = {
    torch.float32: "*fp32",
    torch.float16: "*fp16",
    torch.bfloat16: "*bf16",
    torch.float64: "*fp64",
    torch.int8: "*i8",
    torch.uint8: "*u8",
    torch.int32: "*i32",
    torch.int64: "*i64",
}


class LaunchLimitError(ValueError):
    """A shape the kernels cannot launch on (int32 offsets or CUDA grid limits)."""


@dataclass(frozen=True)
class KernelLaunch:
    """One kernel launch: the kernel, its grid, and every compile-time choice.

    ``pointers`` maps each pointer argument to its element dtype; ``scalars`` maps each scalar
    argument to ``"i32"`` or ``"fp32"``; ``constexprs`` holds the ``tl.constexpr`` arguments.
    Together they are the kernel's signature in argument order (``signature()``).
    """

    name: str
    kernel: Any  # triton.JITFunction (or the interpreter's wrapper)
    grid: tuple[int, ...]
    pointers: Mapping[str, torch.dtype]
    scalars: Mapping[str, str]
    constexprs: Mapping[str, int | bool]
    num_warps: int
    num_stages: int
    enable_fp_fusion: bool = True
    #: scalar argument values the plan computed (e.g. a chunk length), for the launcher to pass
    values: Mapping[str, int] = field(default_factory=dict)
    threads_per_warp: int = 32
    #: register cap per thread handed to ptxas (``maxnreg``); None: ptxas chooses
    max_registers: int | None = None

    @property
    def programs(self) -> int:
        n = 1
        for g in self.grid:
            n *= g
        return n

    @property
    def threads_per_block(self) -> int:
        return self.num_warps * self.threads_per_warp

    def signature(self) -> dict[str, str]:
        """Triton's signature dict in the kernel's argument order (for ``ASTSource``)."""
        sig = {}
        for name in self.kernel.arg_names:
            if name in self.pointers:
                sig[name] = _POINTER_TYPES[self.pointers[name]]
            elif name in self.scalars:
                sig[name] = self.scalars[name]
            elif name in self.constexprs:
                sig[name] = "constexpr"
            else:
                raise KeyError(f"{self.name}: the plan does not describe argument {name!r}")
        return sig

    def options(self) -> dict[str, Any]:
        """Compile options, as launch keywords and as ``triton.compile(options=...)``."""
        options = {
            "num_warps": self.num_warps,
            "num_stages": self.num_stages,
            "enable_fp_fusion": self.enable_fp_fusion,
        }
        if self.max_registers is not None:
            options["maxnreg"] = self.max_registers
        return options

    def specialization(self) -> tuple:
        """What makes two launches compile to the same binary (the grid does not)."""
        return (
            self.name,
            tuple(sorted(self.signature().items())),
            tuple(sorted(self.constexprs.items())),
            tuple(sorted(self.options().items())),
        )

    def run(self, *args: Any) -> None:
        """Launch with ``args`` (pointers and scalars, in the kernel's order, constexprs excluded)."""
        if self.programs == 0:
            return
        self.kernel[self.grid](*args, **self.constexprs, **self.options())


def check_grid(name: str, grid: tuple[int, ...]) -> None:
    """Raise :class:`LaunchLimitError` if ``grid`` exceeds CUDA's per-axis limits."""
    for axis, (size, limit) in enumerate(zip(grid, GRID_LIMITS, strict=False)):
        if size > limit:
            raise LaunchLimitError(
                f"{name}: grid axis {axis} needs {size:,} programs, over CUDA's limit of {limit:,}"
            )


def check_elements(name: str, **numels: int) -> None:
    """Raise :class:`LaunchLimitError` naming the first tensor too large for int32 offsets."""
    for tensor, numel in numels.items():
        if numel > MAX_INT32_ELEMENTS:
            raise LaunchLimitError(
                f"{name}: {tensor} has {numel:,} elements; the Triton kernels index with int32 "
                f"offsets (at most {MAX_INT32_ELEMENTS:,}); split the batch or use backend 'torch'"
            )


def pow2_block(work: int, smallest: int, largest: int, others: int = 1) -> int:
    """The largest power-of-two block in [smallest, largest] that still gives at least
    :data:`FILL_PROGRAMS` programs (``others`` = programs along the other grid axes); the
    smallest one if even that cannot fill the GPU, and never larger than ``work`` needs."""
    block = largest
    while block > smallest and cdiv(work, block) * others < FILL_PROGRAMS:
        block //= 2
    return fit_block(work, smallest, block)


def fit_block(work: int, smallest: int, largest: int) -> int:
    """``largest``, halved (not below ``smallest``) while half of it still covers ``work``."""
    block = largest
    while block > smallest and block // 2 >= work:
        block //= 2
    return block


#: every plan function, by kernel name: the single list the AOT compiler enumerates
PLANS: dict[str, Callable[..., KernelLaunch]] = {}


def plan(name: str) -> Callable[[Callable[..., KernelLaunch]], Callable[..., KernelLaunch]]:
    """Decorator registering a plan function under its kernel's name.

    Plans are memoised on their arguments (lists passed as tuples): a training step launches the
    same shapes every iteration, so the launch path pays a dictionary lookup, not the planning.
    A plan that raises (a launch limit) is not memoised.
    """

    def register(fn: Callable[..., KernelLaunch]) -> Callable[..., KernelLaunch]:
        cached = functools.lru_cache(maxsize=4096)(fn)

        @functools.wraps(fn)
        def planned(*args: Any) -> KernelLaunch:
            return cached(*(tuple(a) if isinstance(a, list) else a for a in args))

        PLANS[name] = planned
        return planned

    return register
