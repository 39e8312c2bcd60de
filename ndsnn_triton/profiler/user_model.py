"""A user's model in the cost report: load it from a factory path, trace it, set it up.

``module.path:factory`` names any importable callable returning an ``nn.Module`` (``factory`` may
be dotted: ``module:Class.build``). The model is copied (the caller's instance is left
untouched); a model without maskable layers has its plain ``nn.Conv2d`` / ``nn.Linear`` made
maskable (:func:`ndsnn_triton.nn.to_masked`), so the sparse methods' schedules run on it. The
layer table comes from one forward pass of a zero input: ``[1, *input_shape]``, or
``[T, 1, *input_shape]`` for a model that takes its time steps first.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ndsnn_triton.nn import masked_layers, to_masked
from ndsnn_triton.profiler.claim import Assumptions, ModelSetup
from ndsnn_triton.profiler.layers import LayerTable, trace_layers

DEFAULT_INPUT_SHAPE: tuple[int, ...] = (3, 32, 32)
#: Assumptions fields that only build the built-in models (a user's model is built already).
BUILTIN_ONLY_FIELDS: tuple[str, ...] = ("num_classes", "image_size")


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"3,32,32"`` → ``(3, 32, 32)``: one sample's input shape, positive integers."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise ValueError(
            f"input shape must be comma-separated integers like 3,32,32, got {text!r}"
        ) from None
    return check_input_shape(shape)


def check_input_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as a tuple of positive integers (one sample, no batch or time dimension)."""
    shape = tuple(shape)
    if not shape or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ValueError(f"input shape must be positive integers like (3, 32, 32), got {shape!r}")
    return shape


def parse_model_kwargs(text: str) -> dict[str, Any]:
    """The factory's keyword arguments from a JSON object."""
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"model kwargs are not valid JSON ({err}): {text!r}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(
            f'model kwargs must be a JSON object like {{"width": 8}}, got {type(kwargs).__name__}'
        )
    return kwargs


def _split_spec(spec: str) -> tuple[str, list[str]]:
    module, sep, attr = spec.partition(":")
    parts = attr.split(".")
    if not sep or not module or not all(parts):
        raise ValueError(f"model must be given as module.path:factory, got {spec!r}")
    return module, parts


def _import(module: str) -> Any:
    """Import ``module``; a top-level module not found is looked for in the working directory too
    (a console script does not put it on ``sys.path``), which is put back as it was."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        cwd = os.getcwd()
        if err.name != module.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(cwd)


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable that ``module.path:factory`` names; ``ValueError`` saying what is wrong."""
    module_name, parts = _split_spec(spec)
    try:
        obj = _import(module_name)
    except Exception as err:
        raise ValueError(
            f"cannot import module {module_name!r} of {spec!r}: {type(err).__name__}: {err}"
        ) from None
    for i, part in enumerate(parts):
        if not hasattr(obj, part):
            where = ".".join([module_name, *parts[:i]])
            raise ValueError(f"{where!r} has no attribute {part!r} ({spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable: it is a {type(obj).__name__}")
    return obj


def build_from_factory(
    spec: str, kwargs: dict[str, Any] | None = None, seed: int | None = None
) -> nn.Module:
    """Call the factory ``spec`` names with ``kwargs`` (torch seeded with ``seed`` first)."""
    factory = load_factory(spec)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = factory(**(kwargs or {}))
    except Exception as err:
        raise ValueError(
            f"calling {spec}(**{kwargs or {}}) failed: {type(err).__name__}: {err}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def model_name(name: str) -> str:
    """``name`` made safe for file names (``layers_<name>.png``)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return safe or "model"


def example_shape(input_shape: Sequence[int], time_steps: int | None) -> tuple[int, ...]:
    """The traced input: ``[1, *input_shape]``, or ``[T, 1, *input_shape]`` (time first)."""
    shape = (1, *check_input_shape(input_shape))
    if time_steps is None:
        return shape
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise ValueError(f"time steps must be a positive integer, got {time_steps!r}")
    return (time_steps, *shape)


def prepare_model(model: nn.Module, name: str) -> nn.Module:
    """A CPU float copy of ``model`` with full masks; plain layers made maskable if it has none."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name}: expected a torch.nn.Module, got a {type(model).__name__}")
    model = copy.deepcopy(model).to("cpu", torch.float32)
    if not masked_layers(model):
        to_masked(model)
    if not masked_layers(model):
        raise ValueError(
            f"{name}: the model has no weight layer (nn.Conv2d, nn.Linear, SpikeConv2d or "
            "SpikeLinear), so there is no training cost to report"
        )
    for _, layer in masked_layers(model):
        layer.keep_all()
    return model


def trace_user_model(model: nn.Module, name: str, shape: tuple[int, ...]) -> LayerTable:
    """The layer table of one forward pass on a zero input of ``shape`` (batch 1)."""
    try:
        table = trace_layers(model, shape, batch=1)
    except Exception as err:
        raise ValueError(
            f"{name}: one forward pass on a zero input of shape {list(shape)} failed "
            f"({type(err).__name__}: {err}); give one sample's input shape (input_shape, "
            "--input-shape C,H,W) and, for a model that takes [T, B, ...] input, its time steps "
            "(time_steps, --time-first T)"
        ) from None
    return table


def traced_timesteps(table: LayerTable) -> int:
    """T as the model runs it: the most timesteps any weight layer runs per sample."""
    return max(layer.timesteps for layer in table.layers)


def setup_user_model(
    model: nn.Module,
    name: str,
    input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
    time_steps: int | None = None,
    source: dict[str, Any] | None = None,
) -> ModelSetup:
    """A :class:`ModelSetup` for any model: no published claim, ``source`` recorded."""
    name = model_name(name)
    shape = example_shape(input_shape, time_steps)
    prepared = prepare_model(model, name)
    table = trace_user_model(prepared, name, shape)
    info = {
        **(source or {}),
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "input_shape": list(check_input_shape(input_shape)),
        "time_first": time_steps,
        "timesteps": traced_timesteps(table),
        "converted_to_masked": not masked_layers(model),
    }
    return ModelSetup(name, prepared, table, paper_ratio=None, source=info)


def user_assumptions(a: Assumptions, setup: ModelSetup) -> Assumptions:
    """``a`` with T set to the timesteps the model runs (traced), as the report prints it."""
    return dataclasses.replace(a, T=setup.source["timesteps"])
