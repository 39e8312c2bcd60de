"""Convert a SpikingJelly (``activation_based``, multi-step) network to this library's layers.

:func:`from_spikingjelly` swaps, in place, SpikingJelly's ``layer.Conv2d`` / ``Linear`` /
``BatchNorm2d`` / ``MaxPool2d`` / ``AvgPool2d`` / ``AdaptiveAvgPool2d`` / ``Flatten`` /
``SeqToANNContainer(...)`` and ``neuron.LIFNode`` (surrogate ``ATan`` or ``Sigmoid``) for
:class:`SpikeConv2d`, :class:`SpikeLinear`, :class:`SeqToANNContainer` and :class:`LIF`, copying
weights, buffers and neuron state. SpikingJelly is never imported: its modules are recognised by
their class's module path and name, and read through their attributes. The conversion is
all-or-nothing: every module it cannot convert is named in one ``ValueError`` before anything
changes.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ndsnn_triton.nn.convert import MaskedConv2d, MaskedLinear
from ndsnn_triton.nn.layers import MaskedLayer, SpikeConv2d, SpikeLinear
from ndsnn_triton.nn.lif import LIF
from ndsnn_triton.nn.pool import SpikeMaxPool2d
from ndsnn_triton.nn.seq import SeqToANNContainer
from ndsnn_triton.nn.surrogate import ATan, Sigmoid, Surrogate
from ndsnn_triton.ops import check_lif_params

_SJ = "spikingjelly.activation_based"
_SURROGATES: dict[str, type[Surrogate]] = {"ATan": ATan, "Sigmoid": Sigmoid}
#: SpikingJelly neurons with no exact form here, and why
_NO_EQUIVALENT = {
    "IFNode": "no leak (H = V + X): the library's LIF needs a finite tau, so it is not exact",
    "ParametricLIFNode": "learnable tau (parameter w): the library has no learnable-tau neuron",
}
#: modules that pass spikes on unchanged in kind (for the spike_input rule)
_PASS_THROUGH = ("MaxPool1d", "MaxPool2d", "Flatten", "Dropout", "Identity", "SpikeMaxPool2d")


class _Unconvertible(Exception):
    """Why one module cannot be converted (collected, never raised to the caller)."""


@dataclass
class _Plan:
    """Replacements by path, the weight layers among them, and the problems found."""

    swaps: dict[str, nn.Module] = field(default_factory=dict)
    weights: list[tuple[str, nn.Module, MaskedLayer]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _sj_name(m: nn.Module) -> str | None:
    """The class name of a SpikingJelly ``activation_based`` module, else None."""
    return type(m).__name__ if type(m).__module__.startswith(_SJ) else None


def _sj_family(m: nn.Module) -> str:
    """``'layer'``, ``'neuron'``, ... : the ``activation_based`` subpackage of a SpikingJelly class."""
    return type(m).__module__[len(_SJ) + 1 :].split(".")[0]


def _is_unit(m: nn.Module) -> bool:
    """A module converted (or judged) as a whole: a leaf, or a SpikingJelly layer or neuron
    (a neuron holds its surrogate as a child)."""
    known = _sj_name(m) is not None and _sj_family(m) in ("layer", "neuron")
    return known or not any(True for _ in m.children())


def _require_multistep(m: nn.Module) -> None:
    if getattr(m, "step_mode", None) != "m":
        raise _Unconvertible(
            f"step_mode={getattr(m, 'step_mode', None)!r}; only multi-step ('m') modules convert"
        )


def _copy_params(old: nn.Module, new: nn.Module) -> nn.Module:
    """Copy weight/bias values and their requires_grad flags from ``old`` into ``new``."""
    with torch.no_grad():
        for name, p in old.named_parameters(recurse=False):
            getattr(new, name).copy_(p)
            getattr(new, name).requires_grad_(p.requires_grad)
    return new


def _conv(m: nn.Conv2d, cls: type[SpikeConv2d]) -> SpikeConv2d:
    try:
        new = cls(
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            m.stride,
            m.padding,
            m.dilation,
            m.groups,
            m.bias is not None,
            m.padding_mode,
            m.weight.device,
            m.weight.dtype,
            spike_input=True,
        )
    except ValueError as err:
        raise _Unconvertible(str(err)) from None
    return _copy_params(m, new)


def _linear(m: nn.Linear, cls: type[SpikeLinear]) -> SpikeLinear:
    new = cls(
        m.in_features,
        m.out_features,
        m.bias is not None,
        m.weight.device,
        m.weight.dtype,
        spike_input=True,
    )
    return _copy_params(m, new)


def _batch_norm(m: nn.BatchNorm2d) -> nn.BatchNorm2d:
    ref = m.weight if m.weight is not None else m.running_mean
    new = nn.BatchNorm2d(
        m.num_features,
        m.eps,
        m.momentum,
        m.affine,
        m.track_running_stats,
        None if ref is None else ref.device,
        None if ref is None else ref.dtype,
    )
    new.load_state_dict(m.state_dict())
    return _copy_params(m, new)


def _max_pool(m: nn.MaxPool2d) -> SpikeMaxPool2d:
    if m.return_indices:
        raise _Unconvertible("return_indices=True is not supported")
    return SpikeMaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, False, m.ceil_mode)


def _avg_pool(m: nn.AvgPool2d) -> nn.AvgPool2d:
    return nn.AvgPool2d(
        m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override
    )


#: SpikingJelly's stateless multi-step layers: the library module each becomes (before time folding)
_STATELESS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "BatchNorm2d": _batch_norm,
    "MaxPool2d": _max_pool,
    "AvgPool2d": _avg_pool,
    "AdaptiveAvgPool2d": lambda m: nn.AdaptiveAvgPool2d(m.output_size),
    "Flatten": lambda m: nn.Flatten(m.start_dim, m.end_dim),
}


def _surrogate(sg: object) -> Surrogate:
    """The library surrogate equal to a SpikingJelly ``ATan`` / ``Sigmoid`` (same alpha)."""
    name = type(sg).__name__
    if type(sg).__module__ != f"{_SJ}.surrogate" or name not in _SURROGATES:
        raise _Unconvertible(
            f"surrogate {type(sg).__module__}.{name}; only SpikingJelly ATan and Sigmoid convert"
        )
    if not getattr(sg, "spiking", True):
        raise _Unconvertible(f"surrogate {name}(spiking=False) is not a spike function")
    alpha = getattr(sg, "alpha", None)
    try:
        return _SURROGATES[name](float(alpha))
    except (TypeError, ValueError):
        raise _Unconvertible(f"surrogate {name} alpha={alpha!r} is not a positive number") from None


def _lif(m: nn.Module) -> LIF:
    """The :class:`LIF` equal to a SpikingJelly ``LIFNode(step_mode='m')``, state included."""
    name = type(m).__name__
    if name in _NO_EQUIVALENT:
        raise _Unconvertible(_NO_EQUIVALENT[name])
    if name != "LIFNode":
        raise _Unconvertible("neuron type not supported (only LIFNode converts)")
    _require_multistep(m)
    if getattr(m, "backend", "torch") != "torch":
        raise _Unconvertible(f"backend={m.backend!r} cannot be honoured (only 'torch')")
    if getattr(m, "_neuron_precision", None) is not None:
        raise _Unconvertible("an explicit neuron precision cannot be honoured")
    if getattr(m, "store_v_seq", False):
        raise _Unconvertible("store_v_seq=True: the library's LIF keeps no v_seq")
    if any(True for _ in m.parameters()):
        raise _Unconvertible("has learnable parameters the library's LIF cannot hold")
    surrogate = _surrogate(m.surrogate_function)
    v_reset = None if m.v_reset is None else float(m.v_reset)
    try:
        check_lif_params(
            float(m.tau), float(m.v_threshold), v_reset, surrogate.name, surrogate.alpha, "LIF"
        )
    except (TypeError, ValueError) as err:
        raise _Unconvertible(str(err)) from None
    new = LIF(float(m.tau), float(m.v_threshold), v_reset, m.decay_input, m.detach_reset, surrogate)
    v = getattr(m, "v", new.v)
    new.v = v.detach().clone() if isinstance(v, Tensor) else float(v)
    return new


def _seq_child(m: nn.Module, path: str, plan: _Plan) -> nn.Module:
    """A copy of a plain torch module run inside ``SeqToANNContainer`` (on ``[T*B, ...]``), its
    convs/linears masked and max pooling spike-aware; recorded in ``plan``."""
    name = _sj_name(m)
    if name is not None:
        raise _Unconvertible(f"SpikingJelly {name} inside SeqToANNContainer is not supported")
    if type(m) is nn.Conv2d:
        new = _conv(m, MaskedConv2d)
    elif type(m) is nn.Linear:
        new = _linear(m, MaskedLinear)
    elif type(m) is nn.MaxPool2d:
        return _max_pool(m)
    else:
        new_m = copy.deepcopy(m)
        for child_name, child in m.named_children():
            setattr(new_m, child_name, _seq_child(child, f"{path}.{child_name}", plan))
        return new_m
    plan.weights.append((path, m, new))
    return new


def _convert_one(m: nn.Module, name: str, path: str, plan: _Plan) -> nn.Module:
    """The library module replacing SpikingJelly module ``m`` (recorded in ``plan``)."""
    family = _sj_family(m)
    if family == "neuron":
        return _lif(m)
    if family != "layer":
        raise _Unconvertible(f"SpikingJelly {family} modules are not supported")
    if name == "SeqToANNContainer":
        return SeqToANNContainer(
            *(_seq_child(c, f"{path}.{n}", plan) for n, c in m.named_children())
        )
    _require_multistep(m)
    if name in ("Conv2d", "Linear"):
        new = _conv(m, SpikeConv2d) if name == "Conv2d" else _linear(m, SpikeLinear)
        plan.weights.append((path, m, new))
        return new
    if name in _STATELESS:
        return SeqToANNContainer(_STATELESS[name](m))
    raise _Unconvertible("layer type not supported")


def _plan(model: nn.Module, path: str = "", plan: _Plan | None = None) -> _Plan:
    """Walk ``model``: build (without changing it) every replacement, or note why not."""
    plan = _Plan() if plan is None else plan
    name = _sj_name(model)
    if name is not None and _is_unit(model):
        try:
            plan.swaps[path] = _convert_one(model, name, path, plan)
        except _Unconvertible as why:
            plan.problems.append(f"{path or '<model>'} ({type(model).__module__}.{name}): {why}")
        return plan
    for child_name, child in model.named_children():
        _plan(child, f"{path}.{child_name}" if path else child_name, plan)
    return plan


def _spike_evidence(x: object) -> bool | None:
    """True: binary with a 1; None: all zeros (says nothing); False: anything else."""
    if not isinstance(x, Tensor) or not bool(((x == 0) | (x == 1)).all()):
        return False
    return True if bool(x.any()) else None


@contextlib.contextmanager
def _probing(model: nn.Module) -> Iterator[None]:
    """No grad, in the model's own mode; buffers (BatchNorm statistics), the random number
    generators and SpikingJelly neuron state are put back afterwards."""
    buffers = [(b, b.clone()) for b in model.buffers()]
    memories = [
        (m, dict(m._memories), m.__dict__.get("v_seq"))
        for m in model.modules()
        if isinstance(getattr(m, "_memories", None), dict)
    ]
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for m, saved, v_seq in memories:
            m._memories.clear()
            m._memories.update(saved)
            if "v_seq" in m.__dict__:
                m.__dict__["v_seq"] = v_seq


def _observed_spike_inputs(model: nn.Module, plan: _Plan, example_input: object) -> list[bool]:
    """Per weight layer of ``plan``: was every input it saw in one example forward binary?"""
    seen: dict[int, list[bool | None]] = {}

    def hook(index: int) -> Callable:
        def record(_module: nn.Module, args: tuple) -> None:
            seen.setdefault(index, []).append(_spike_evidence(args[0]) if args else False)

        return record

    handles = [m.register_forward_pre_hook(hook(i)) for i, (_, m, _) in enumerate(plan.weights)]
    try:
        with _probing(model):
            inputs = example_input if isinstance(example_input, tuple) else (example_input,)
            model(*inputs)
    except Exception as err:
        raise ValueError(
            f"from_spikingjelly: the forward pass on example_input failed ({err}); nothing was changed"
        ) from err
    finally:
        for h in handles:
            h.remove()
    # Spikes only on evidence: every input binary and one of them not all zeros. A layer the
    # example never reached or only fed zeros stays analog: exact, only without spike kernels.
    return [
        False not in seen.get(i, [None]) and True in seen.get(i, [])
        for i in range(len(plan.weights))
    ]


def _ruled_spike_inputs(model: nn.Module, plan: _Plan) -> list[bool]:
    """Per weight layer of ``plan``: does the last leaf registered before it, skipping pooling-
    and shape-only modules, emit spikes (a spiking neuron)?"""
    index = {id(m): i for i, (_, m, _) in enumerate(plan.weights)}
    result = [False] * len(plan.weights)
    after_neuron = False
    for m in model.modules():
        if not _is_unit(m) or type(m).__module__ == f"{_SJ}.surrogate":
            continue
        if id(m) in index:
            result[index[id(m)]] = after_neuron
            after_neuron = False
        elif type(m).__name__ not in _PASS_THROUGH:
            after_neuron = _sj_name(m) is not None and _sj_family(m) == "neuron"
    return result


def _swap(model: nn.Module, swaps: dict[str, nn.Module]) -> nn.Module:
    """Put each replacement at its path; returns the (possibly replaced) root."""
    for path, new in swaps.items():
        if not path:
            return new
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, new)
    return model


def _no_conversion_error(model: nn.Module) -> ValueError:
    if any(isinstance(m, MaskedLayer | LIF) for m in model.modules()):
        return ValueError(
            "from_spikingjelly: the model is already converted (it holds library layers and no "
            "SpikingJelly module); nothing was changed"
        )
    return ValueError(
        "from_spikingjelly: the model has no SpikingJelly (activation_based) layer or neuron to "
        "convert; nothing was changed"
    )


def from_spikingjelly(model: nn.Module, example_input: object = None) -> nn.Module:
    """Swap (in place) a SpikingJelly multi-step network's layers and neurons for this library's.

    Converts ``layer.Conv2d`` → :class:`SpikeConv2d`, ``layer.Linear`` → :class:`SpikeLinear`,
    ``layer.BatchNorm2d`` / ``MaxPool2d`` / ``AvgPool2d`` / ``AdaptiveAvgPool2d`` / ``Flatten`` →
    the torch (or :class:`SpikeMaxPool2d`) module in :class:`SeqToANNContainer`,
    ``layer.SeqToANNContainer(...)`` → :class:`SeqToANNContainer` (inner ``nn.Conv2d`` /
    ``nn.Linear`` masked), and ``neuron.LIFNode`` with an ``ATan`` / ``Sigmoid`` surrogate →
    :class:`LIF`, copying weights, buffers and membrane state. Other containers are kept, their
    children converted. All inputs stay time-first ``[T, B, ...]``.

    ``spike_input`` of each conv/linear: with ``example_input`` (a tensor, or a tuple of
    positional arguments), one forward without grad, in the model's mode (BatchNorm statistics,
    random and neuron state restored afterwards), marks spike layers: every input binary and not
    all zeros; layers it does not reach, or fed only zeros, are analog. Without
    it, a layer takes spikes when the last leaf module registered before it — skipping max
    pooling, flatten, dropout — is a spiking neuron (so the first layer, fed the data, is
    analog). Analog is always exact; a spike layer fed non-binary input raises a ValueError.

    Raises ``ValueError`` listing every module it cannot convert (single-step mode, IFNode,
    ParametricLIFNode, other neurons or surrogates, explicit precision, ``store_v_seq``), or when
    there is nothing to convert (already converted, or no SpikingJelly module) — before changing
    anything. Returns ``model`` (the replacement, if ``model`` itself is a SpikingJelly layer).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"from_spikingjelly: model must be a torch.nn.Module, got {type(model).__name__}"
        )
    plan = _plan(model)
    if plan.problems:
        raise ValueError(
            f"from_spikingjelly: cannot convert {len(plan.problems)} module(s); nothing was "
            "changed:\n  " + "\n  ".join(plan.problems)
        )
    if not plan.swaps:
        raise _no_conversion_error(model)
    if example_input is None:
        spikes = _ruled_spike_inputs(model, plan)
    else:
        spikes = _observed_spike_inputs(model, plan, example_input)
    for (_, _, new), spike_input in zip(plan.weights, spikes, strict=True):
        new.spike_input = spike_input
    return _swap(model, plan.swaps)


__all__ = ["from_spikingjelly"]
