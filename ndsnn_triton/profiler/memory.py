"""Activation memory of a spiking model, counted on real tensors.

Two places hold spikes:

* **what autograd saves** for the backward of one training forward: counted with
  ``torch.autograd.graph.saved_tensors_hooks`` (each storage once; the model's parameters and
  buffers are not activations and are left out). The ``ndsnn::`` ops save binary spike inputs as
  int8; the aten reference path (plain ``F.conv2d``/``F.linear``, what an ordinary PyTorch SNN runs)
  saves them in the compute dtype, so the two counts side by side measure the saving.
* **the spikes handed forward** from each LIF to the next layer: float in training (they carry the
  surrogate gradient), int8 in inference with compact spikes on (:func:`set_compact_spikes`).

Counts are bytes; they scale linearly with the batch and are the same on any device.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ndsnn_triton.backend import aten_reference
from ndsnn_triton.nn.lif import LIF, reset_net, set_compact_spikes


def _storage_key(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def saved_tensor_bytes(model: nn.Module, forward: Callable[[], Tensor]) -> dict[str, int]:
    """Bytes autograd keeps for the backward of ``forward()``, by dtype, plus ``"total"``.

    Each storage counts once, at its full size; ``model``'s parameters and buffers are excluded.
    The graph stays alive while counting, so no storage is freed and reused mid-count.
    """
    excluded = {_storage_key(t) for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, Tensor] = {}

    def pack(t: Tensor) -> Tensor:
        key = _storage_key(t)
        if key not in excluded and key not in seen and t.untyped_storage().nbytes():
            seen[key] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    by_dtype: dict[str, int] = defaultdict(int)
    for t in seen.values():
        by_dtype[str(t.dtype).removeprefix("torch.")] += t.untyped_storage().nbytes()
    del out
    return {**dict(sorted(by_dtype.items())), "total": sum(by_dtype.values())}


def spike_handoff_bytes(model: nn.Module, forward: Callable[[], Tensor]) -> int:
    """Bytes of the spike tensors the model's LIF neurons output during ``forward()``."""
    total = 0

    def count(_m: nn.Module, _args: tuple, out: Tensor) -> None:
        nonlocal total
        total += out.numel() * out.element_size()

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, LIF)]
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    return total


def spike_memory(model: nn.Module, images: Tensor) -> dict[str, dict]:
    """Training-saved and inference hand-off spike memory of ``model`` on ``images``, in bytes.

    Returns a dict with

    * ``train_saved``: saved-tensor bytes by dtype for the ``ndsnn`` ops and for the eager
      ``aten_reference`` path (float spike inputs, LIF unrolled step by step under autograd);
    * ``saved_spike_inputs``: the int8 bytes the ndsnn ops keep of their spike inputs, and the
      same tensors' bytes in the compute dtype (what a float copy would take);
    * ``inference_handoff``: LIF output bytes in an inference forward, float vs compact.

    The model's state (BN statistics,
    membrane potentials, train/eval mode, compact-spike setting) is restored afterwards.
    """
    state = copy.deepcopy(model.state_dict())
    was_training = model.training
    compact_before = [m.compact_spikes for m in model.modules() if isinstance(m, LIF)]

    def run() -> Tensor:
        reset_net(model)
        return model(images)

    model.train()
    set_compact_spikes(model, False)
    ndsnn = saved_tensor_bytes(model, run)
    with aten_reference():
        reference = saved_tensor_bytes(model, run)
    model.eval()
    with torch.no_grad():
        as_float = spike_handoff_bytes(model, run)
        set_compact_spikes(model, True)
        compact = spike_handoff_bytes(model, run)
    model.load_state_dict(state)
    model.train(was_training)
    for m, flag in zip(
        [m for m in model.modules() if isinstance(m, LIF)], compact_before, strict=True
    ):
        m.compact_spikes = flag
    reset_net(model)
    float_size = torch.empty((), dtype=images.dtype).element_size()
    return {
        "train_saved": {"ndsnn": ndsnn, "aten_reference": reference},
        "saved_spike_inputs": {
            "int8": ndsnn.get("int8", 0),
            f"as_{str(images.dtype).removeprefix('torch.')}": ndsnn.get("int8", 0) * float_size,
        },
        "inference_handoff": {"float": as_float, "compact": compact},
    }
