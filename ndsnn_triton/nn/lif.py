"""Stateful multi-step LIF neuron module and ``reset_net``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ndsnn_triton.backend import aten_reference_enabled
from ndsnn_triton.neuron_equations import lif_multistep_autograd_ref
from ndsnn_triton.nn.surrogate import Sigmoid, Surrogate
from ndsnn_triton.ops import check_lif_params, lif_multistep


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron (SpikingJelly ``LIFNode(step_mode='m')``).

    Input ``x_seq [T, B, ...]`` (membrane input current per step), output spikes of the same
    shape and dtype. The membrane potential ``v [B, ...]`` is kept between calls, like
    SpikingJelly's memory modules: call :meth:`reset` (or :func:`reset_net`) before each new
    sample batch. Defaults are SpikingJelly's; the models use the LTH-SNN ones
    (``tau=4/3, surrogate=ATan(2), detach_reset=True``).

    Args:
        tau: membrane time constant in steps (>= 1).
        v_threshold: firing threshold.
        v_reset: hard-reset value; ``None`` selects the soft reset (subtract the threshold).
        decay_input: whether the input is scaled by ``1/tau`` too.
        detach_reset: stop the gradient through the spike in the reset.
        surrogate: :class:`ATan` or :class:`Sigmoid` instance.
        compact_spikes: emit int8 spikes (1 byte each instead of the input dtype's 2–4) wherever
            no gradient flows back into the input — inference, evaluation, frozen stems. Spiking
            layers read them as they are; training passes keep float spikes, which carry the
            surrogate gradient. See also :func:`set_compact_spikes`.
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        decay_input: bool = True,
        detach_reset: bool = False,
        surrogate: Surrogate | None = None,
        compact_spikes: bool = False,
    ) -> None:
        super().__init__()
        surrogate = Sigmoid() if surrogate is None else surrogate
        if not isinstance(surrogate, Surrogate):
            raise TypeError(f"LIF: surrogate must be ATan(...) or Sigmoid(...), got {surrogate!r}")
        check_lif_params(tau, v_threshold, v_reset, surrogate.name, surrogate.alpha, "LIF")
        self.tau = float(tau)
        self.v_threshold = float(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.decay_input = bool(decay_input)
        self.detach_reset = bool(detach_reset)
        self.surrogate = surrogate
        self.compact_spikes = bool(compact_spikes)
        self.v: Tensor | float = self._v_rest

    @property
    def _v_rest(self) -> float:
        return 0.0 if self.v_reset is None else self.v_reset

    def __getstate__(self) -> dict:
        # A membrane potential left from a forward is part of an autograd graph, which deepcopy and
        # pickle cannot copy: keep its value, detached.
        state = self.__dict__.copy()
        if isinstance(state.get("v"), Tensor):
            state["v"] = state["v"].detach()
        return state

    def reset(self) -> None:
        """Forget the membrane potential: ``v = v_reset`` (hard reset) or 0 (soft reset)."""
        self.v = self._v_rest

    def forward(self, x_seq: Tensor) -> Tensor:
        if not isinstance(x_seq, Tensor) or x_seq.dim() < 2:
            shape = tuple(x_seq.shape) if isinstance(x_seq, Tensor) else type(x_seq).__name__
            raise ValueError(f"LIF: input must be time-first [T, B, ...], got {shape}")
        step_shape = x_seq.shape[1:]
        if isinstance(self.v, Tensor):
            if self.v.shape != step_shape:
                raise ValueError(
                    f"LIF: stored membrane potential has shape {tuple(self.v.shape)} but the input step "
                    f"has shape {tuple(step_shape)}; call reset() / reset_net(model) between batches"
                )
            v_init = self.v.to(x_seq.dtype)
        else:
            # One stored value for the whole step: the op may keep v_init for its backward.
            v_init = x_seq.new_full((), self.v).expand(step_shape)
        args = (
            x_seq,
            v_init,
            self.tau,
            self.v_threshold,
            self.v_reset,
            self.decay_input,
            self.detach_reset,
            self.surrogate.name,
            float(self.surrogate.alpha),
        )
        if aten_reference_enabled():
            spikes, self.v = lif_multistep_autograd_ref(*args)
            return spikes.to(torch.int8) if self._int8_output(x_seq, v_init) else spikes
        spikes, self.v = lif_multistep(*args, int8_spikes=self._int8_output(x_seq, v_init))
        return spikes

    def _int8_output(self, x_seq: Tensor, v_init: Tensor) -> bool:
        needs_grad = torch.is_grad_enabled() and (x_seq.requires_grad or v_init.requires_grad)
        return self.compact_spikes and not needs_grad

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau:.4g}, v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
            f"decay_input={self.decay_input}, detach_reset={self.detach_reset}, surrogate={self.surrogate!r}"
            + (", compact_spikes=True" if self.compact_spikes else "")
        )


def set_compact_spikes(model: nn.Module, enabled: bool = True) -> int:
    """Switch int8 spike output on or off for every :class:`LIF` of ``model``; returns how many.

    With it on, an inference forward hands 1-byte spikes from each neuron to the next spiking layer
    (SpikeConv2d/SpikeLinear, max pooling, residual adds); results are unchanged.
    """
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    for m in lifs:
        m.compact_spikes = bool(enabled)
    return len(lifs)


@contextlib.contextmanager
def compact_spikes(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Context manager: :func:`set_compact_spikes` for the block, then each :class:`LIF`'s own
    previous setting back. Yields how many neurons it switched."""
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    previous = [m.compact_spikes for m in lifs]
    for m in lifs:
        m.compact_spikes = bool(enabled)
    try:
        yield len(lifs)
    finally:
        for m, flag in zip(lifs, previous, strict=True):
            m.compact_spikes = flag


def reset_net(model: nn.Module) -> None:
    """Reset every stateful submodule (anything with a ``reset()`` method), as SpikingJelly does."""
    for module in model.modules():
        reset = getattr(module, "reset", None)
        if callable(reset):
            reset()
