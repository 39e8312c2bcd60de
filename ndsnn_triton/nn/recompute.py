"""Recompute sparse spiking segments in backward instead of saving their activations.

Backpropagation through time keeps every timestep's activations; in a spiking conv → BN → LIF
block most of them are float: the conv output BN saves (4 bytes per neuron and step in fp32) and
the LIF's charged potential ``h`` (4 more). A sparse layer is cheap to run again: at density ``d``
its forward costs ``d`` of the dense one. So a *segment* — the modules from one spiking masked
layer up to the next (``conv → BN → LIF [→ pool]``), or a whole ResNet basic block — can keep only
its binary input, as int8 (1 byte per neuron; the conv keeps that much anyway), and rebuild
everything else in backward.

Rule (``should_recompute``): a segment is recomputed when a gradient is being recorded, every
masked layer in it takes binary spikes (``spike_input=True``) at weight density at most the
threshold ``get_recompute_density()`` (kept weights ``<= round(threshold * n)``; default
:data:`~ndsnn_triton.backend.RECOMPUTE_MAX_DENSITY` = 0.1, i.e. the recompute costs at most a
tenth of the layer's dense forward; 0 turns it off, 1 recomputes every spiking segment), and its neurons start from rest (``reset_net`` was called, as
for every new batch) and emit float spikes. Dense layers keep saving. Not under
:func:`~ndsnn_triton.backend.aten_reference` (that path stands for an ordinary PyTorch SNN) nor
while ``torch.compile`` traces.

Exactness: the backward re-runs the same modules on the same values (the int8 input is exact for
binary spikes), with the forward's autocast state, backend and ``dense_weight_grad`` flags, BN on
the same batch statistics without touching its running statistics again, the neurons from the
same rest state and module hooks silenced (each forward is seen once). Then it backpropagates
through the rebuilt graph with the very ops the saving path uses, so the gradients are
bit-identical on the CPU torch backend (``tests/test_recompute.py``). The membrane potentials
left after the segment are outputs of the recomputed function, so a later call without
``reset_net`` still backpropagates into them.

Cost: one extra forward of each recomputed segment per training step (sparse conv, BN, LIF,
pool); peak memory in backward holds one segment's activations at a time.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ndsnn_triton.backend import aten_reference_enabled, get_backend, get_recompute_density
from ndsnn_triton.backend import use_backend as _use_backend
from ndsnn_triton.nn.layers import MaskedLayer
from ndsnn_triton.nn.lif import LIF
from ndsnn_triton.ops import SPIKE_DTYPES

_AUTOCAST_DEVICES = ("cpu", "cuda")


def _submodules(modules: Sequence[nn.Module]) -> list[nn.Module]:
    """Every module under ``modules`` (each once, in order)."""
    seen: dict[int, nn.Module] = {}
    for root in modules:
        for m in root.modules():
            seen.setdefault(id(m), m)
    return list(seen.values())


def should_recompute(
    x: Tensor, modules: Sequence[nn.Module], max_density: float | None = None
) -> bool:
    """Whether the segment made of ``modules`` recomputes its activations for input ``x``.

    ``max_density``: the threshold (default :func:`~ndsnn_triton.backend.get_recompute_density`).
    """
    threshold = get_recompute_density() if max_density is None else max_density
    if threshold <= 0 or not torch.is_grad_enabled() or aten_reference_enabled():
        return False
    if torch.compiler.is_compiling() or not isinstance(x, Tensor):
        return False
    if not (x.is_floating_point() or x.dtype in SPIKE_DTYPES):
        return False
    sub = _submodules(modules)
    masked = [m for m in sub if isinstance(m, MaskedLayer)]
    # Counts, as the mask makers round them: a layer pruned to round(d * n) weights is at d.
    if not masked or any(
        not m.spike_input or m.kept_weights > round(threshold * m.mask.numel()) for m in masked
    ):
        return False
    if any(isinstance(m.v, Tensor) or m.compact_spikes for m in sub if isinstance(m, LIF)):
        return False
    return x.requires_grad or any(p.requires_grad for m in sub for p in m.parameters(False))


@dataclass
class _Segment:
    """What the backward needs to replay a segment's forward exactly."""

    run: Callable[[Tensor], Tensor]
    modules: list[nn.Module]
    lifs: list[LIF]
    params: list[nn.Parameter]
    training: list[bool] = field(default_factory=list)
    dense_grads: list[bool] = field(default_factory=list)
    autocast: dict[str, tuple[bool, torch.dtype]] = field(default_factory=dict)
    backend: str = "auto"
    v_rest: list[float | Tensor] = field(default_factory=list)

    def capture(self) -> None:
        """Record the state the forward runs in (called at its start)."""
        self.training = [m.training for m in self.modules]
        self.dense_grads = [m.dense_weight_grad for m in self.modules if isinstance(m, MaskedLayer)]
        self.autocast = {
            d: (torch.is_autocast_enabled(d), torch.get_autocast_dtype(d))
            for d in _AUTOCAST_DEVICES
        }
        self.backend = get_backend()
        self.v_rest = [lif.v for lif in self.lifs]

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Within the block the modules run as in the forward, minus its side effects."""
        masked = [m for m in self.modules if isinstance(m, MaskedLayer)]
        bns = [m for m in self.modules if isinstance(m, _BatchNorm)]
        saved = (
            [m.training for m in self.modules],
            [m.dense_weight_grad for m in masked],
            [m.track_running_stats for m in bns],
            [lif.v for lif in self.lifs],
            [(m._forward_pre_hooks, m._forward_hooks) for m in self.modules],
        )
        try:
            for m, flag in zip(self.modules, self.training, strict=True):
                m.training = flag
            for m, flag in zip(masked, self.dense_grads, strict=True):
                m.dense_weight_grad = flag
            for m in bns:  # batch statistics, as before; running statistics updated once only
                m.track_running_stats = False
            for lif, v in zip(self.lifs, self.v_rest, strict=True):
                lif.v = v
            for m in self.modules:
                m._forward_pre_hooks, m._forward_hooks = (
                    type(m._forward_hooks)(),
                    type(m._forward_hooks)(),
                )
            with contextlib.ExitStack() as stack:
                for device, (enabled, dtype) in self.autocast.items():
                    if enabled or torch.is_autocast_enabled(device):
                        stack.enter_context(torch.autocast(device, dtype=dtype, enabled=enabled))
                stack.enter_context(_use_backend(self.backend))
                yield
        finally:
            training, dense, tracking, vs, hooks = saved
            for m, flag in zip(self.modules, training, strict=True):
                m.training = flag
            for m, flag in zip(masked, dense, strict=True):
                m.dense_weight_grad = flag
            for m, flag in zip(bns, tracking, strict=True):
                m.track_running_stats = flag
            for lif, v in zip(self.lifs, vs, strict=True):
                lif.v = v
            for m, (pre, post) in zip(self.modules, hooks, strict=True):
                m._forward_pre_hooks, m._forward_hooks = pre, post


class _RecomputedSegment(torch.autograd.Function):
    """``(x, *params) -> (y, *v_last)``: saves only ``x`` as int8; the backward reruns the segment."""

    @staticmethod
    def forward(ctx, segment: _Segment, x: Tensor, *params: Tensor) -> tuple[Tensor, ...]:
        ctx.set_materialize_grads(False)
        segment.capture()
        y = segment.run(x)
        v_last = tuple(lif.v for lif in segment.lifs)
        ctx.segment = segment
        ctx.x_dtype = x.dtype
        # Binary spikes are exact in int8; the segment's first layer checked them.
        ctx.save_for_backward(x if x.dtype in SPIKE_DTYPES else x.to(torch.int8), *params)
        return (y, *v_last)

    @staticmethod
    def backward(ctx, grad_y: Tensor | None, *grad_v: Tensor | None) -> tuple[Tensor | None, ...]:
        segment: _Segment = ctx.segment
        saved_x, *_params = ctx.saved_tensors  # unpacked for autograd's in-place checks
        x = saved_x.to(ctx.x_dtype).requires_grad_(ctx.needs_input_grad[1])
        wanted = [
            p for p, need in zip(segment.params, ctx.needs_input_grad[2:], strict=True) if need
        ]
        with torch.enable_grad(), segment.replay():
            y = segment.run(x)
            outputs = [y, *(lif.v for lif in segment.lifs)]
        pairs = [
            (o, g)
            for o, g in zip(outputs, (grad_y, *grad_v), strict=True)
            if g is not None and o.requires_grad
        ]
        inputs = ([x] if x.requires_grad else []) + wanted
        grads: list[Tensor | None] = [None] * len(inputs)
        if pairs and inputs:
            grads = list(
                torch.autograd.grad(
                    [o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True
                )
            )
        grad_x = grads.pop(0) if x.requires_grad else None
        by_param = iter(grads)
        grad_params = [next(by_param) if need else None for need in ctx.needs_input_grad[2:]]
        return (None, grad_x, *grad_params)


def run_segment(run: Callable[[Tensor], Tensor], x: Tensor, modules: Sequence[nn.Module]) -> Tensor:
    """``run(x)``, recomputed in backward when :func:`should_recompute` says so.

    ``modules``: every module ``run`` uses (their parameters get gradients; their neurons' state
    and BN statistics are handled). ``x``: binary spikes ``[T, B, ...]``.
    """
    if not should_recompute(x, modules):
        return run(x)
    sub = _submodules(modules)
    lifs = [m for m in sub if isinstance(m, LIF)]
    params = list({id(p): p for m in sub for p in m.parameters(False) if p.requires_grad}.values())
    segment = _Segment(run, sub, lifs, params)
    y, *v_last = _RecomputedSegment.apply(segment, x, *params)
    for lif, v in zip(lifs, v_last, strict=True):
        lif.v = v
    return y


def sequential_segments(modules: Sequence[nn.Module]) -> list[tuple[int, int]]:
    """``(start, stop)`` index ranges cutting ``modules`` before each spiking masked layer.

    The first range (which may be empty) holds what precedes the first spiking layer; each later
    one starts at a spiking layer and runs up to the next.
    """
    cuts = [i for i, m in enumerate(modules) if isinstance(m, MaskedLayer) and m.spike_input]
    bounds = [0, *cuts, len(modules)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _chain(modules: Sequence[nn.Module]) -> Callable[[Tensor], Tensor]:
    def run(x: Tensor) -> Tensor:
        for m in modules:
            x = m(x)
        return x

    return run


class SpikingSequential(nn.Sequential):
    """``nn.Sequential`` that runs each spiking segment through :func:`run_segment`.

    Same children, indices and state-dict keys as ``nn.Sequential``; only the saved activations
    differ: a segment from one spiking masked layer to the next (``conv → BN → LIF [→ pool]``)
    keeps just its int8 input when its layers are sparse enough (see the module docstring).
    """

    def forward(self, x: Tensor) -> Tensor:
        layers = list(self)
        for start, stop in sequential_segments(layers):
            part = layers[start:stop]
            spiking = isinstance(part[0], MaskedLayer) and part[0].spike_input
            x = run_segment(_chain(part), x, part) if spiking else _chain(part)(x)
        return x
