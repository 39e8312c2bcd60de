"""Activation memory of a spiking model, counted on real tensors.

Two places hold spikes:

* **what autograd saves** for the backward of one training forward: counted with
  ``torch.autograd.graph.saved_tensors_hooks`` (each storage once; the model's parameters and
  buffers are not activations and are left out). The ``ndsnn::`` ops save binary spike inputs as
  int8; the aten reference path (plain ``F.conv2d``/``F.linear``, what an ordinary PyTorch SNN runs)
  saves them in the compute dtype, so the two counts side by side measure the saving.
* **the spikes handed forward** from each LIF to the next layer: float in training (they carry the
  surrogate gradient), int8 in inference with compact spikes on (:func:`set_compact_spikes`).

:func:`saved_bytes_by_kind` sorts what autograd saves into kinds (float activations, 1-byte spikes
and codes, integer indices, copies of weights), and :func:`model_state_bytes` gives the model's own
parameter and buffer bytes, for a peer comparison of backpropagation-through-time memory
(``python -m bench.memory``).

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


def _saved_storages(
    model: nn.Module, forward: Callable[[], Tensor]
) -> tuple[dict[int, list[Tensor]], Tensor]:
    """Every storage autograd saves for the backward of ``forward()``, with its saved views.

    Returns ``({storage key: [saved views]}, forward's output)``; the caller keeps the output (and
    so the graph) alive while it reads the storages. ``model``'s parameters and buffers and empty
    storages are left out. The views are held here, so no storage is freed and reused mid-count.
    """
    excluded = {_storage_key(t) for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, list[Tensor]] = {}

    def pack(t: Tensor) -> Tensor:
        key = _storage_key(t)
        if key not in excluded and t.untyped_storage().nbytes():
            seen.setdefault(key, []).append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    return seen, out


def saved_tensor_bytes(model: nn.Module, forward: Callable[[], Tensor]) -> dict[str, int]:
    """Bytes autograd keeps for the backward of ``forward()``, by dtype, plus ``"total"``.

    Each storage counts once, at its full size; ``model``'s parameters and buffers are excluded.
    The graph stays alive while counting, so no storage is freed and reused mid-count.
    """
    seen, out = _saved_storages(model, forward)
    by_dtype: dict[str, int] = defaultdict(int)
    for views in seen.values():
        t = views[0]
        by_dtype[str(t.dtype).removeprefix("torch.")] += t.untyped_storage().nbytes()
    del out
    return {**dict(sorted(by_dtype.items())), "total": sum(by_dtype.values())}


#: the kinds :func:`saved_bytes_by_kind` sorts saved storages into, in report order
SAVED_KINDS: tuple[str, ...] = ("float activations", "int spikes", "indices", "weight copies")
_ONE_BYTE = (torch.int8, torch.uint8, torch.bool)


def _weight_references(model: nn.Module) -> dict[tuple[int, ...], list[Callable[[], Tensor]]]:
    """By shape: the values a copy of one of ``model``'s parameters may hold — the parameter
    itself and, where its module has a bool buffer of the same shape (a mask), ``param * mask``
    (built only when asked for)."""
    refs: dict[tuple[int, ...], list[Callable[[], Tensor]]] = defaultdict(list)
    for m in model.modules():
        masks = [b for b in m.buffers(recurse=False) if b.dtype == torch.bool]
        for p in m.parameters(recurse=False):
            refs[tuple(p.shape)].append(p.detach)
            for b in masks:
                if b.shape == p.shape:
                    refs[tuple(p.shape)].append(lambda p=p, b=b: p.detach() * b)
    return refs


def _is_weight_copy(
    views: list[Tensor], refs: dict[tuple[int, ...], list[Callable[[], Tensor]]]
) -> bool:
    """Whether one saved view covers the whole storage with a parameter's shape (or, 2-D, its
    transpose, as ``F.linear`` saves ``weight.t()``) and its values are that parameter's (or
    ``param * mask``) in the view's dtype."""
    nbytes = views[0].untyped_storage().nbytes()
    whole = [v for v in views if v.numel() * v.element_size() == nbytes]
    for v in whole + [v.t() for v in whole if v.dim() == 2]:
        for ref in refs.get(tuple(v.shape), ()):
            with torch.no_grad():
                if torch.equal(v.detach(), ref().to(v.dtype)):
                    return True
    return False


def saved_kind(views: list[Tensor], refs: dict[tuple[int, ...], list[Callable[[], Tensor]]]) -> str:
    """The kind (one of :data:`SAVED_KINDS`) of a saved storage, from the views saved of it.

    * ``"weight copies"``: floating, and one saved view covers the whole storage with the shape
      (a 2-D one: or its transpose) and the values of one of the model's parameters, in the
      view's dtype (a bf16 cast of a weight or bias, ``weight * mask``). They do not grow with
      the batch. Shape alone would not do: an activation ``[T*B, 512]`` has a
      ``Linear(512, 10)`` weight's shape when T·B = 10.
    * ``"float activations"``: any other floating (or complex) storage — including small
      batch-independent ones such as BatchNorm's per-channel batch mean and inverse std.
    * ``"int spikes"``: int8 / uint8 / bool (binary spikes, 1-byte max-pool codes).
    * ``"indices"``: any other integer dtype (int64 max-pool indices, int32 offsets).

    ``refs``: the model's parameter values by shape (``_weight_references(model)``).
    """
    t = views[0]
    if t.is_floating_point() or t.is_complex():
        return "weight copies" if _is_weight_copy(views, refs) else "float activations"
    return "int spikes" if t.dtype in _ONE_BYTE else "indices"


def saved_bytes_by_kind(model: nn.Module, forward: Callable[[], Tensor]) -> dict[str, int]:
    """Bytes autograd keeps for the backward of ``forward()``, by kind, plus ``"total"``.

    Keys: every kind of :data:`SAVED_KINDS` (0 where none is saved; see :func:`saved_kind`) and
    ``"total"``. Each storage counts once, at its full size, as in :func:`saved_tensor_bytes`
    (same total); ``model``'s parameters and buffers are excluded (see :func:`model_state_bytes`).
    Run ``forward`` in training mode, with a gradient recorded, to count a training step's saving.
    """
    refs = _weight_references(model)
    seen, out = _saved_storages(model, forward)
    by_kind = dict.fromkeys(SAVED_KINDS, 0)
    for views in seen.values():
        by_kind[saved_kind(views, refs)] += views[0].untyped_storage().nbytes()
    del out
    return {**by_kind, "total": sum(by_kind.values())}


def model_state_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of ``model``'s own tensors: ``"parameters"`` (weights, biases, BN affine),
    ``"buffers"`` (masks, BN running statistics and counters) and ``"total"``.

    Each storage counts once (a tied weight is not counted twice). This memory is held whatever
    the batch; the optimizer's state and the gradients come on top of it.
    """
    counted: set[int] = set()

    def bytes_of(tensors: list[Tensor]) -> int:
        total = 0
        for t in tensors:
            key = _storage_key(t)
            if key not in counted and t.untyped_storage().nbytes():
                counted.add(key)
                total += t.untyped_storage().nbytes()
        return total

    params = bytes_of(list(model.parameters()))
    buffers = bytes_of(list(model.buffers()))
    return {"parameters": params, "buffers": buffers, "total": params + buffers}


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
