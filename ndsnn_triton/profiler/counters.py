"""Measured FLOP counts: FlopCounterMode (with the ``ndsnn::`` formulas) and fvcore.

* ``FlopCounterMode`` counts 2 FLOPs per MAC, forward and backward, and ignores bias. The
  ``ndsnn::`` ops register mask- and spike-aware formulas (:mod:`ndsnn_triton.ops`); under
  :func:`ndsnn_triton.backend.aten_reference` the layers run as plain aten ops and
  FlopCounterMode's own dense formulas count them.
* fvcore's ``FlopCountAnalysis`` counts **1 per MAC, forward only**, from a JIT trace, which holds
  shapes but no values: its ``ndsnn::`` handles therefore count dense MACs (every weight, every
  input), what a dense SNN library executes. BatchNorm and pooling, which fvcore counts by
  default, are switched off so the count is conv + linear only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ndsnn_triton.backend import use_recompute_density
from ndsnn_triton.nn import reset_net, temporal_cross_entropy


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    return get_shape(value)


def _conv_macs(inputs: list, outputs: list) -> int:
    return math.prod(_shape(outputs[0])) * math.prod(_shape(inputs[1])[1:])


def _linear_macs(inputs: list, outputs: list) -> int:
    return math.prod(_shape(outputs[0])) * _shape(inputs[1])[1]


def _zero(inputs: list, outputs: list) -> int:
    return 0


#: fvcore op handles for the ndsnn ops (None: not counted).
FVCORE_HANDLES: dict[str, Callable | None] = {
    "ndsnn::masked_conv2d": _conv_macs,
    "ndsnn::masked_linear": _linear_macs,
    "ndsnn::lif_multistep": None,
}
_FVCORE_ELEMENTWISE = (
    "aten::batch_norm",
    "aten::adaptive_avg_pool2d",
    "aten::max_pool2d",
    "aten::avg_pool2d",
)


def fvcore_forward_macs(model: nn.Module, inputs: Tensor) -> int:
    """fvcore's conv + linear forward count (1 per MAC) of one forward of ``model``."""
    from fvcore.nn import FlopCountAnalysis

    reset_net(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, inputs)
        for name, handle in FVCORE_HANDLES.items():
            analysis.set_op_handle(name, handle)
        for name in _FVCORE_ELEMENTWISE:
            # a None handle does not replace fvcore's default one: count these as 0 instead
            analysis.set_op_handle(name, _zero)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        total = analysis.total()
    reset_net(model)
    return int(total)


def flop_counter_training_step(
    model: nn.Module, images: Tensor, labels: Tensor
) -> tuple[int, dict[str, int]]:
    """FlopCounterMode's total FLOPs of one training step (forward + ``mean_t CE`` + backward).

    Returns the total and the per-op counts. Weight gradients are left in ``.grad``.
    Recomputation (:mod:`ndsnn_triton.nn.recompute`) is off here: it trades memory for one more
    forward of the recomputed segments, an implementation choice the cost formulas leave out.
    """
    reset_net(model)
    with use_recompute_density(0.0), FlopCounterMode(display=False) as counter:
        loss = temporal_cross_entropy(model(images), labels)
        loss.backward()
    reset_net(model)
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    return int(counter.get_total_flops()), per_op


__all__ = ["FVCORE_HANDLES", "flop_counter_training_step", "fvcore_forward_macs"]
