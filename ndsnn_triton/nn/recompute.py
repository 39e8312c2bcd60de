"""Recompute spiking segments in backward instead of saving their activations.

Backpropagation through time keeps every timestep's activations; in a spiking conv → BN → LIF
block most of them are float: the conv output BN saves (4 bytes per neuron and step in fp32) and
the LIF's charged potential ``h`` (4 more). A sparse layer is cheap to run again: at density ``d``
its forward costs ``d`` of the dense one. So a *segment* — the modules from one spiking masked
layer up to the next (``conv → BN → LIF [→ pool]``), or a whole ResNet basic block — can keep only
its binary input, as int8 (1 byte per neuron; the conv keeps that much anyway), and rebuild
everything else in backward.

Two rules, both only while a gradient is recorded, the segment's neurons start from rest
(``reset_net`` was called, as for every new batch) and emit float spikes, recomputation is on
(threshold > 0), not under :func:`~ndsnn_triton.backend.aten_reference` (that path stands for an
ordinary PyTorch SNN) and not while ``torch.compile`` or ``torch.jit`` (fvcore) traces:

1. **Sparse segment** (``should_recompute``, ``run_segment``): every masked layer in it takes
   binary spikes (``spike_input=True``) at weight density at most the threshold
   ``get_recompute_density()`` (kept weights ``<= round(threshold * n)``; default
   :data:`~ndsnn_triton.backend.RECOMPUTE_MAX_DENSITY` = 0.1: the extra forward costs at most a
   tenth of the layer's dense one; 1 rebuilds every spiking segment). It keeps its int8 input only.
2. **Weightless tail** (``should_recompute_tail``, ``run_tail``), at any density: the conv runs
   as usual (keeping its int8 input), and the modules after it — BN → LIF [→ pool], or a ResNet
   block's ``LIF(BN(y) + shortcut)`` — keep only their inputs: the conv output, which BN keeps
   anyway, and the shortcut's spikes as int8. The LIF's ``h`` (4 bytes per neuron and step in
   fp32) and the pooling codes are rebuilt by rerunning BN and the LIF, elementwise work.

Exactness: the backward re-runs the same modules on the same values (the int8 input is exact for
binary spikes), with the forward's autocast state, backend and ``dense_weight_grad`` flags, BN on
the same batch statistics without touching its running statistics again, the neurons from the
same rest state and module hooks silenced (each forward is seen once). Then it backpropagates
through the rebuilt graph with the very ops the saving path uses, so the gradients are
bit-identical on the CPU torch backend (``tests/test_recompute.py``). The membrane potentials
left after the segment are outputs of the recomputed function, so a later call without
``reset_net`` still backpropagates into them.

Cost: one extra forward per training step of each recomputed segment (sparse conv, BN, LIF,
pool) or tail (BN, LIF, pool); peak memory in backward holds one segment's activations at a time.
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
from ndsnn_triton.companion import SpikeCompanion, attach, companion_of
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


def _switched_on(threshold: float) -> bool:
    """Recomputation on (``threshold > 0``), a gradient recorded, eager mode: checked first,
    before any module is looked at (under ``torch.compile`` or ``torch.jit`` tracing nothing else
    is touched)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return threshold > 0 and torch.is_grad_enabled() and not aten_reference_enabled()


def _replayable(inputs: Sequence[Tensor], sub: list[nn.Module]) -> bool:
    """The conditions both rules share besides :func:`_switched_on`: tensors in, neurons at rest
    emitting float spikes, and something that needs a gradient."""
    if not all(
        isinstance(x, Tensor) and (x.is_floating_point() or x.dtype in SPIKE_DTYPES) for x in inputs
    ):
        return False
    if any(isinstance(m.v, Tensor) or m.compact_spikes for m in sub if isinstance(m, LIF)):
        return False
    return any(x.requires_grad for x in inputs) or any(
        p.requires_grad for m in sub for p in m.parameters(False)
    )


def should_recompute(
    x: Tensor, modules: Sequence[nn.Module], max_density: float | None = None
) -> bool:
    """Whether the segment made of ``modules`` keeps only its int8 input ``x`` (rule 1).

    ``max_density``: the threshold (default :func:`~ndsnn_triton.backend.get_recompute_density`).
    """
    threshold = get_recompute_density() if max_density is None else max_density
    if not _switched_on(threshold):
        return False
    sub = _submodules(modules)
    masked = [m for m in sub if isinstance(m, MaskedLayer)]
    # Counts, as the mask makers round them: a layer pruned to round(d * n) weights is at d.
    if not masked or any(
        not m.spike_input or m.kept_weights > round(threshold * m.mask.numel()) for m in masked
    ):
        return False
    return _replayable([x], sub)


def should_recompute_tail(inputs: Sequence[Tensor], modules: Sequence[nn.Module]) -> bool:
    """Whether the weightless tail ``modules`` (BN, LIF, pooling, adds) keeps only its inputs and
    rebuilds its activations in backward (rule 2: any density, recomputation on)."""
    if not _switched_on(get_recompute_density()):
        return False
    sub = _submodules(modules)
    return not any(isinstance(m, MaskedLayer) for m in sub) and _replayable(inputs, sub)


@dataclass
class _Segment:
    """What the backward needs to replay a segment's forward exactly."""

    run: Callable[..., Tensor]
    modules: list[nn.Module]
    lifs: list[LIF]
    params: list[nn.Parameter]
    spikes: list[bool]  # per input: binary spikes, kept as int8
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
    """``(*inputs, *params) -> (y, *v_last)``: keeps only the inputs (spike inputs as int8); the
    backward reruns the segment."""

    @staticmethod
    def forward(ctx, segment: _Segment, n_inputs: int, *args: Tensor) -> tuple[Tensor, ...]:
        ctx.set_materialize_grads(False)
        inputs, params = args[:n_inputs], args[n_inputs:]
        segment.capture()
        companions = [
            companion_of(x) if spikes else None
            for x, spikes in zip(inputs, segment.spikes, strict=True)
        ]
        # Detached: the modules see no input that asks for a gradient in this no-grad forward
        # (global module hooks such as FlopCounterMode's tracker would try to hook its graph).
        # The spikes' companions go along, so the first layer reads them as it would have.
        y = segment.run(*(_with(x.detach(), c) for x, c in zip(inputs, companions, strict=True)))
        v_last = tuple(lif.v for lif in segment.lifs)
        ctx.segment, ctx.n_inputs = segment, n_inputs
        ctx.dtypes = [x.dtype for x in inputs]
        # Binary spikes are exact in int8 (the producer's copy where it made one); the layers
        # reading them checked them. Map activity, where known, is kept for the replay.
        kept = [
            (c.spikes if c is not None else x.to(torch.int8))
            if spikes and x.dtype not in SPIKE_DTYPES
            else x
            for x, spikes, c in zip(inputs, segment.spikes, companions, strict=True)
        ]
        ctx.active = [None if c is None else c.active for c in companions]
        ctx.save_for_backward(*kept, *params)
        return (y, *v_last)

    @staticmethod
    def backward(ctx, grad_y: Tensor | None, *grad_v: Tensor | None) -> tuple[Tensor | None, ...]:
        segment: _Segment = ctx.segment
        n = ctx.n_inputs
        saved = ctx.saved_tensors  # unpacked for autograd's in-place checks
        inputs = [
            x.detach().to(dtype).requires_grad_(need)
            for x, dtype, need in zip(
                saved[:n], ctx.dtypes, ctx.needs_input_grad[2 : 2 + n], strict=True
            )
        ]
        for x, kept, spikes, active in zip(
            inputs, saved[:n], segment.spikes, ctx.active, strict=True
        ):
            if spikes and kept.dtype == torch.int8:
                attach(x, SpikeCompanion(kept, active))
        needs_param = ctx.needs_input_grad[2 + n :]
        wanted = [p for p, need in zip(segment.params, needs_param, strict=True) if need]
        with torch.enable_grad(), segment.replay():
            # Views, not the leaves themselves: hooks on module inputs (FlopCounterMode's module
            # tracker) then attach to a node that this autograd.grad call may run.
            y = segment.run(*(x.view_as(x) if x.requires_grad else x for x in inputs))
            outputs = [y, *(lif.v for lif in segment.lifs)]
        pairs = [
            (o, g)
            for o, g in zip(outputs, (grad_y, *grad_v), strict=True)
            if g is not None and o.requires_grad
        ]
        sources = [x for x in inputs if x.requires_grad] + wanted
        grads: list[Tensor | None] = [None] * len(sources)
        if pairs and sources:
            grads = list(
                torch.autograd.grad(
                    [o for o, _ in pairs], sources, [g for _, g in pairs], allow_unused=True
                )
            )
        found = iter(grads)
        grad_inputs = [next(found) if x.requires_grad else None for x in inputs]
        grad_params = [next(found) if need else None for need in needs_param]
        return (None, None, *grad_inputs, *grad_params)


def _with(x: Tensor, companion: SpikeCompanion | None) -> Tensor:
    return x if companion is None else attach(x, companion)


def _apply(
    run: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    spikes: Sequence[bool],
    modules: Sequence[nn.Module],
) -> Tensor:
    sub = _submodules(modules)
    lifs = [m for m in sub if isinstance(m, LIF)]
    params = list({id(p): p for m in sub for p in m.parameters(False) if p.requires_grad}.values())
    segment = _Segment(run, sub, lifs, params, list(spikes))
    y, *v_last = _RecomputedSegment.apply(segment, len(inputs), *inputs, *params)
    for lif, v in zip(lifs, v_last, strict=True):
        lif.v = v
    return y


def run_segment(
    run: Callable[[Tensor], Tensor],
    x: Tensor,
    modules: Sequence[nn.Module],
    otherwise: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """``run(x)``, keeping only ``x`` as int8 and recomputing the rest in backward when
    :func:`should_recompute` says so; else ``otherwise(x)`` (default: plain ``run(x)``), e.g. a
    forward that rebuilds only its weightless tails.

    ``modules``: every module ``run`` uses (their parameters get gradients; their neurons' state
    and BN statistics are handled). ``x``: binary spikes ``[T, B, ...]``.
    """
    if not should_recompute(x, modules):
        return (run if otherwise is None else otherwise)(x)
    return _apply(run, [x], [True], modules)


def run_tail(
    run: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    modules: Sequence[nn.Module],
    spikes: Sequence[bool] | None = None,
) -> Tensor:
    """``run(*inputs)`` for a weightless tail (BN → LIF [→ pool], or ``LIF(BN(y) + shortcut)``),
    keeping only ``inputs`` — float as they are, those flagged in ``spikes`` as int8 — when
    :func:`should_recompute_tail` says so (else plain ``run(*inputs)``). The BN's input is what
    BN keeps anyway; the LIF's ``h`` and the pooling code are rebuilt in backward."""
    spikes = [False] * len(inputs) if spikes is None else list(spikes)
    if not should_recompute_tail(inputs, modules):
        return run(*inputs)
    return _apply(run, inputs, spikes, modules)


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
            part, head, tail = layers[start:stop], layers[start], layers[start + 1 : stop]
            if not (isinstance(head, MaskedLayer) and head.spike_input):
                x = _chain(part)(x)
            else:
                x = run_segment(
                    _chain(part),
                    x,
                    part,
                    otherwise=lambda x, head=head, tail=tail: (
                        run_tail(_chain(tail), [head(x)], tail) if tail else head(x)
                    ),
                )
        return x
