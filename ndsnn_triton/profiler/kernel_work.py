"""Work factors of the ``kernel`` cost convention: measured spike structure or the i.i.d. model.

The ``kernel`` convention (:mod:`ndsnn_triton.profiler.cost`) prices each layer with the
multiply-accumulates the sparse Triton kernels execute (:mod:`ndsnn_triton.kernels.work`). For a
mask of density ``d`` spread evenly over input channels these are ``d·M·N`` times a
mask-independent factor of the layer input (:class:`~ndsnn_triton.kernels.work.WorkFactors`):

* ``forward`` = ``Σ_c A_c·OH·OW / (C·N·OH·OW)``: output lanes the forward runs per dense output
  position — the fraction of live ``(sample, channel)`` input maps where the forward skips
  silent ones (output maps of 4 positions or more), 1 elsewhere;
* ``weight_grad`` = ``Σ_c E_c / (C·N·OH·OW)``: weight-gradient events (non-zero inputs at usable
  positions) per dense output position;
* the input gradient runs every kept weight over every input position: ``H·W/(OH·OW)``, from the
  layer geometry alone.

Two sources of the first two factors:

1. **Measured** (:func:`load_structure`): the per-layer factors recorded in a spike-structure file
   (``bench/results/spike_structure.json``), schema::

       {"dataset": ..., "environment": {...},
        "models": {"<model>": {"training": {...},
                               "states": {"<state>": {"<mode>": {"layers": [
                                   {"name": "features.1", "kind": "conv", "spike_input": true,
                                    "rate": 0.12, "work": {"forward": 0.4, "weight_grad": 0.12}},
                                   ...]}}}}}}

   ``state`` is ``init`` or ``trained``, ``mode`` ``train`` or ``eval``; layer names are module
   paths, as in :func:`ndsnn_triton.profiler.layers.trace_layers`. The benchmark result layout
   written by ``python -m bench.spike_structure`` is read too: ``{"environment": {...},
   "results": [{"model": ..., "dataset": ..., "batch": ..., "T": ..., ...,
   "structure": {"<state>": {"<mode>": [layer, ...]}}}, ...]}`` (the row's other fields are its
   training record).

2. **The i.i.d. model** (:func:`iid_factors`): every input element is a spike independently with
   probability ``r`` (analog input: ``r = 1``). An input map of ``H·W`` elements is silent with
   probability ``(1−r)^(H·W)``, so the expected forward factor is ``1 − (1−r)^(H·W)`` where the
   forward skips silent maps and 1 elsewhere. The weight-gradient factor is
   ``r · U/(OH·OW)`` with ``U`` the usable input positions (:func:`~ndsnn_triton.kernels.work.usable_rows`;
   ``U = H·W = OH·OW`` at stride 1 with "same" padding). Real spikes are correlated (whole silent
   channels), so measured forward factors are usually below the i.i.d. ones.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ndsnn_triton.backend import aten_reference
from ndsnn_triton.kernels import work
from ndsnn_triton.nn.lif import reset_net
from ndsnn_triton.profiler.cost import KernelWork
from ndsnn_triton.profiler.layers import LayerTable

#: the recorded spike structure of the built-in models (Fashion-MNIST padded to 32×32)
DEFAULT_STRUCTURE_FILE = (
    Path(__file__).resolve().parents[2] / "bench" / "results" / "spike_structure.json"
)
#: models whose structure the recorded file holds and ``ndsnn report`` uses by default
RECORDED_MODELS: tuple[str, ...] = ("vgg16", "resnet19")
DEFAULT_STATE = "trained/train"
#: ``--spike-structure`` value that forces the i.i.d. model
IID = "iid"
_SLACK = 1e-9  # rounding allowance on the factors' upper bounds


class StructureFileError(ValueError):
    """A spike-structure file is missing, not JSON, or lacks / misstates what is asked of it."""


@dataclass(frozen=True)
class LayerGeometry:
    """One weight layer's input and output geometry (a linear layer is a 1×1 map, 1×1 kernel)."""

    name: str
    kind: str  # "conv" or "linear"
    in_channels: int  # C (per group for a grouped convolution: as the kernels see one group)
    out_channels: int  # OC
    in_hw: tuple[int, int]  # H, W
    out_hw: tuple[int, int]  # OH, OW
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    timesteps: int  # τ: input rows per sample (N = τ·B)

    @property
    def in_positions(self) -> int:
        """``H·W``: input positions per sample and channel."""
        return self.in_hw[0] * self.in_hw[1]

    @property
    def out_positions(self) -> int:
        """``OH·OW``: output positions per sample and channel."""
        return self.out_hw[0] * self.out_hw[1]

    @property
    def usable_positions(self) -> int:
        """``U``: input positions that some kernel tap maps onto an output position."""
        rows = work.usable_rows(
            self.in_hw[0],
            self.out_hw[0],
            self.kernel_size[0],
            self.stride[0],
            self.padding[0],
            self.dilation[0],
        )
        cols = work.usable_rows(
            self.in_hw[1],
            self.out_hw[1],
            self.kernel_size[1],
            self.stride[1],
            self.padding[1],
            self.dilation[1],
        )
        return int(rows.sum()) * int(cols.sum())

    @property
    def input_grad_factor(self) -> float:
        """``H·W/(OH·OW)``: input-gradient MACs per dense MAC of a kept weight."""
        return self.in_positions / self.out_positions

    @property
    def weight_grad_bound(self) -> float:
        """``U/(OH·OW)``: the weight-gradient factor of an all-non-zero input (its maximum)."""
        return self.usable_positions / self.out_positions


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _conv_padding(module: nn.Conv2d) -> tuple[int, int]:
    explicit = getattr(module, "_padding_ints", None)
    if explicit is not None:
        return _pair(explicit)
    if module.padding == "valid":
        return (0, 0)
    if module.padding == "same":
        (dh, dw), (kh, kw) = _pair(module.dilation), _pair(module.kernel_size)
        return (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
    return _pair(module.padding)


def trace_geometry(
    model: nn.Module, example: Tensor | Sequence[int], batch: int | None = None
) -> dict[str, LayerGeometry]:
    """Each weight layer's :class:`LayerGeometry`, by module path (the names of
    :func:`~ndsnn_triton.profiler.layers.trace_layers`), from one forward of a zero input.

    ``example`` and ``batch`` as for ``trace_layers``; a CPU copy of ``model`` runs the forward as
    plain aten ops without autograd, so ``model`` is left untouched.
    """
    shape = tuple(example.shape) if isinstance(example, Tensor) else tuple(example)
    batch = batch or (shape[1] if len(shape) == 5 else shape[0])
    ghost = copy.deepcopy(model).to("cpu")
    reset_net(ghost)
    found: dict[str, LayerGeometry] = {}
    hooks = []

    def hook_for(name: str):
        def hook(mod: nn.Module, args: tuple, out: Tensor) -> None:
            x = args[0]
            if isinstance(mod, nn.Conv2d):
                rows = math.prod(x.shape[:-3])
                geometry = LayerGeometry(
                    name=name,
                    kind="conv",
                    in_channels=mod.in_channels // mod.groups,
                    out_channels=mod.out_channels,
                    in_hw=(int(x.shape[-2]), int(x.shape[-1])),
                    out_hw=(int(out.shape[-2]), int(out.shape[-1])),
                    kernel_size=_pair(mod.kernel_size),
                    stride=_pair(mod.stride),
                    padding=_conv_padding(mod),
                    dilation=_pair(mod.dilation),
                    timesteps=max(1, rows // batch),
                )
            else:
                rows = math.prod(x.shape[:-1])
                geometry = LayerGeometry(
                    name=name,
                    kind="linear",
                    in_channels=mod.in_features,
                    out_channels=mod.out_features,
                    in_hw=(1, 1),
                    out_hw=(1, 1),
                    kernel_size=(1, 1),
                    stride=(1, 1),
                    padding=(0, 0),
                    dilation=(1, 1),
                    timesteps=max(1, rows // batch),
                )
            found.setdefault(name, geometry)

        return hook

    for name, module in ghost.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            hooks.append(module.register_forward_hook(hook_for(name)))
    try:
        ghost.train()
        with torch.no_grad(), aten_reference():
            ghost(torch.zeros(shape))
    finally:
        for h in hooks:
            h.remove()
    return found


def iid_factors(geometry: LayerGeometry, rate: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(forward, weight_grad)`` factors of the i.i.d. Bernoulli(``rate``) spike model (see the
    module docstring) for a layer of ``geometry``; ``rate`` may be an array (the factors then
    have its shape)."""
    r = np.asarray(rate, dtype=float)
    if not np.isfinite(r).all() or ((r < 0) | (r > 1)).any():
        raise ValueError(f"layer {geometry.name}: spike rate must lie in [0, 1], got {rate!r}")
    if work.forward_skips_silent_maps(geometry.out_positions):
        forward = 1.0 - (1.0 - r) ** geometry.in_positions
    else:
        forward = np.ones_like(r)
    return forward, r * geometry.weight_grad_bound


@dataclass(frozen=True)
class MeasuredStructure:
    """One model's recorded per-layer spike structure in one state and mode."""

    path: str
    model: str
    state: str  # "init" or "trained"
    mode: str  # "train" or "eval"
    dataset: str
    layers: dict[str, work.WorkFactors]
    spike_input: dict[str, bool]
    training: dict[str, Any]  # the file's record of how the model was trained (may be empty)
    environment: dict[str, Any]

    def label(self) -> str:
        """Short provenance, e.g. ``spike_structure.json: vgg16 trained/train (fashion-mnist)``."""
        return (
            f"{Path(self.path).name}: {self.model} {self.state}/{self.mode} ({self.dataset or '?'})"
        )


def parse_state(state: str) -> tuple[str, str]:
    """``"trained/train"`` -> ``("trained", "train")``."""
    parts = state.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(
            f"spike-structure state must be STATE/MODE (e.g. trained/train), got {state!r}"
        )
    return parts[0], parts[1]


def read_structure_file(path: str | Path) -> dict[str, Any]:
    """The parsed JSON of a spike-structure file, in the ``{"models": {...}}`` layout (a
    benchmark result file's ``results`` rows are converted); clear errors for a missing or bad
    file."""
    path = Path(path)
    if not path.is_file():
        raise StructureFileError(f"spike-structure file {path} is missing")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StructureFileError(f"spike-structure file {path}: not valid JSON ({err})") from None
    if isinstance(doc, dict) and isinstance(doc.get("results"), list) and "models" not in doc:
        doc = _from_result_rows(doc, path)
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise StructureFileError(
            f"spike-structure file {path}: expected a JSON object with a 'models' object (or a "
            "benchmark result file with 'results' rows holding 'structure')"
        )
    return doc


def _from_result_rows(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """``{"environment", "results": [row]}`` (bench.spike_structure) -> the ``models`` layout."""
    models: dict[str, Any] = {}
    for i, row in enumerate(doc["results"]):
        if not isinstance(row, dict) or not isinstance(row.get("model"), str):
            raise StructureFileError(f"spike-structure file {path}: result #{i} has no 'model'")
        structure = row.get("structure")
        if not isinstance(structure, dict):
            raise StructureFileError(
                f"spike-structure file {path}: result of {row['model']} has no 'structure' object"
            )
        states = {
            state: {
                mode: {"layers": layers} if isinstance(layers, list) else layers
                for mode, layers in modes.items()
            }
            if isinstance(modes, dict)
            else modes
            for state, modes in structure.items()
        }
        training = {k: v for k, v in row.items() if k not in ("structure", "eval_history")}
        models[row["model"]] = {
            "training": training,
            "dataset": row.get("dataset", ""),
            "states": states,
        }
    return {"environment": doc.get("environment", {}), "models": models}


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StructureFileError(f"{where}: expected a number, got {value!r}")
    if not low - _SLACK <= value <= high + _SLACK:
        raise StructureFileError(f"{where} = {value!r} is out of range [{low:g}, {high:g}]")
    return float(value)


def load_structure(
    path: str | Path,
    model: str,
    state: str = DEFAULT_STATE,
    geometry: Mapping[str, LayerGeometry] | None = None,
    doc: Mapping[str, Any] | None = None,
) -> MeasuredStructure:
    """``model``'s per-layer work factors in ``state`` (``STATE/MODE``) from a spike-structure
    file, validated: rate and forward in [0, 1], weight_grad in [0, U/(OH·OW)] when ``geometry``
    is given (else [0, ∞)). ``doc``: the file's parsed content, if already read."""
    where = str(path)
    doc = read_structure_file(path) if doc is None else doc
    st, mode = parse_state(state)
    models = doc["models"]
    if model not in models:
        raise StructureFileError(
            f"spike-structure file {where} has no model {model!r} (it has {sorted(models)})"
        )
    entry = models[model]
    states = entry.get("states") if isinstance(entry, dict) else None
    if not isinstance(states, dict) or st not in states:
        have = sorted(states) if isinstance(states, dict) else []
        raise StructureFileError(
            f"spike-structure file {where}: model {model!r} has no state {st!r} (it has {have})"
        )
    modes = states[st]
    if not isinstance(modes, dict) or mode not in modes:
        have = sorted(modes) if isinstance(modes, dict) else []
        raise StructureFileError(
            f"spike-structure file {where}: model {model!r} state {st!r} has no mode {mode!r} "
            f"(it has {have})"
        )
    chosen = modes[mode]
    layers = chosen.get("layers") if isinstance(chosen, dict) else chosen
    if not isinstance(layers, list) or not layers:
        raise StructureFileError(
            f"spike-structure file {where}: {model} {st}/{mode} has no 'layers' list"
        )
    factors: dict[str, work.WorkFactors] = {}
    spike: dict[str, bool] = {}
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
            raise StructureFileError(
                f"spike-structure file {where}: {model} {st}/{mode} layer #{i} has no 'name'"
            )
        name = layer["name"]
        at = f"spike-structure file {where}: {model} {st}/{mode} layer {name}"
        w = layer.get("work")
        if not isinstance(w, dict) or "forward" not in w or "weight_grad" not in w:
            raise StructureFileError(f"{at}: no 'work' object with 'forward' and 'weight_grad'")
        if "rate" not in layer:
            raise StructureFileError(f"{at}: no 'rate'")
        bound = geometry[name].weight_grad_bound if geometry and name in geometry else math.inf
        factors[name] = work.WorkFactors(
            rate=_number(layer["rate"], f"{at}: rate", 0.0, 1.0),
            forward=_number(w["forward"], f"{at}: work.forward", 0.0, 1.0),
            weight_grad=_number(w["weight_grad"], f"{at}: work.weight_grad", 0.0, bound),
        )
        spike[name] = bool(layer.get("spike_input", True))
    return MeasuredStructure(
        path=where,
        model=model,
        state=st,
        mode=mode,
        dataset=str(entry.get("dataset") or doc.get("dataset") or ""),
        layers=factors,
        spike_input=spike,
        training=dict(entry.get("training") or {}),
        environment=dict(doc.get("environment") or {}),
    )


def _check_geometry(table: LayerTable, geometry: Mapping[str, LayerGeometry]) -> None:
    missing = [name for name in table.names if name not in geometry]
    if missing:
        raise ValueError(f"no traced geometry for layers {missing}")


def iid_work(
    table: LayerTable,
    geometry: Mapping[str, LayerGeometry],
    rates: np.ndarray,
    batch: int,
) -> KernelWork:
    """:class:`KernelWork` of the i.i.d. spike model at ``rates`` (``[L]`` or ``[S, L]``, table
    order; 1 for analog input, as :func:`~ndsnn_triton.profiler.cost.rate_vector` gives them)."""
    _check_geometry(table, geometry)
    r = np.asarray(rates, dtype=float)
    if r.shape[-1:] != (len(table.layers),):
        raise ValueError(f"expected {len(table.layers)} rates per row, got shape {r.shape}")
    forward = np.empty_like(r)
    weight_grad = np.empty_like(r)
    for j, layer in enumerate(table.layers):
        forward[..., j], weight_grad[..., j] = iid_factors(geometry[layer.name], r[..., j])
    input_grad = np.array([geometry[n].input_grad_factor for n in table.names])
    return KernelWork(forward, weight_grad, input_grad, r, _spike_rate_label(table, r))


def _spike_rate_label(table: LayerTable, r: np.ndarray) -> str:
    spike = [layer.spike_input for layer in table.layers]
    if not any(spike):
        return "i.i.d. model, analog input throughout (every element non-zero: r = 1)"
    values = np.unique(r[..., spike])
    if values.size == 1:
        return f"i.i.d. Bernoulli spikes at r = {float(values[0]):g}"
    return f"i.i.d. Bernoulli spikes at per-layer rates (mean {float(values.mean()):.3f})"


def measured_work(
    table: LayerTable,
    geometry: Mapping[str, LayerGeometry],
    structure: Mapping[str, work.WorkFactors] | MeasuredStructure,
    source: str | None = None,
) -> KernelWork:
    """:class:`KernelWork` of measured per-layer factors (every table layer must be named)."""
    _check_geometry(table, geometry)
    layers = structure.layers if isinstance(structure, MeasuredStructure) else structure
    where = structure.label() if isinstance(structure, MeasuredStructure) else "measured factors"
    missing = [name for name in table.names if name not in layers]
    if missing:
        raise StructureFileError(f"{where}: no work factors for layers {missing}")
    rows = [layers[name] for name in table.names]
    return KernelWork(
        forward=np.array([f.forward for f in rows]),
        weight_grad=np.array([f.weight_grad for f in rows]),
        input_grad=np.array([geometry[n].input_grad_factor for n in table.names]),
        rate=np.array([f.rate for f in rows]),
        source=source or f"measured ({where})",
    )


def factors_from_log(
    table: LayerTable, logged: Mapping[str, Any], fallback: KernelWork
) -> tuple[np.ndarray, np.ndarray]:
    """``(forward, weight_grad)`` ``[L]`` from one training-log record's ``work_factors``
    (``{layer: {"rate", "forward", "weight_grad"}}``); a layer the record lacks (or logs as
    non-finite) keeps ``fallback``'s ``[L]`` factors (e.g. :func:`iid_work` at its rate)."""
    forward = np.array(fallback.forward, dtype=float, copy=True)
    weight_grad = np.array(fallback.weight_grad, dtype=float, copy=True)
    for j, layer in enumerate(table.layers):
        f = logged.get(layer.name)
        if isinstance(f, Mapping) and _finite(f.get("forward")) and _finite(f.get("weight_grad")):
            forward[j], weight_grad[j] = float(f["forward"]), float(f["weight_grad"])
    return forward, weight_grad


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
