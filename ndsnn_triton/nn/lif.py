"""Stateful multi-step LIF neuron module and ``reset_net``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ndsnn_triton.backend import aten_reference_enabled
from ndsnn_triton.kernels.lif import lif_multistep_autograd_ref
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
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        decay_input: bool = True,
        detach_reset: bool = False,
        surrogate: Surrogate | None = None,
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
            v_init = torch.full(step_shape, self.v, dtype=x_seq.dtype, device=x_seq.device)
        run = lif_multistep_autograd_ref if aten_reference_enabled() else lif_multistep
        spikes, self.v = run(
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
        return spikes

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau:.4g}, v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
            f"decay_input={self.decay_input}, detach_reset={self.detach_reset}, surrogate={self.surrogate!r}"
        )


def reset_net(model: nn.Module) -> None:
    """Reset every stateful submodule (anything with a ``reset()`` method), as SpikingJelly does."""
    for module in model.modules():
        reset = getattr(module, "reset", None)
        if callable(reset):
            reset()
