"""BPTT activation memory, the library against SpikingJelly: ``python -m bench.memory``.

Counts the bytes autograd saves for the backward of one training forward (what a training step
holds from forward to backward), per sample, for the library's spiking VGG-16 and ResNet-19 and for
the same networks built from SpikingJelly 2.0's modules (:func:`spikingjelly_vgg16`,
:func:`spikingjelly_resnet19`: same layer shapes, LTH-SNN's LIF settings, the direct-coding stem
run once and expanded over T). Saved storages are sorted into kinds
(:func:`ndsnn_triton.profiler.memory.saved_bytes_by_kind`: float activations, 1-byte spikes and
codes, integer indices, copies of weights).

Each network is measured at two batch sizes: the difference divided by the batch difference is
the per-sample cost (what grows with the batch), the intercept the constant part (weight copies,
per-channel statistics), to which the model's own parameters and buffers are added. Both are in
bytes, counted on real tensors on the CPU, and depend on shapes only: they hold on any device.

The library runs with its ``torch`` backend at weight densities 1, 0.1 and 0.01 (uniform random
masks keeping ``round(d * n)`` weights of each masked layer:
:func:`ndsnn_triton.sparse.masks.random_masks`) and its default recompute threshold (:func:`ndsnn_triton.get_recompute_density`: segments at or below it keep only their
int8 input and recompute the rest in backward); SpikingJelly dense (its memory does not depend
on weight values). Compute dtype fp32, and bf16 under ``torch.autocast("cpu")``.

Writes ``bench/results/memory.json`` and ``bench/results/memory.png``; :func:`readme_table`
gives README's table of the recorded results.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import ndsnn_triton
from bench.environment import environment
from ndsnn_triton.models import build_model
from ndsnn_triton.models.common import LTH_SNN_LIF, init_weights
from ndsnn_triton.models.vgg import CFG_D
from ndsnn_triton.nn import reset_net
from ndsnn_triton.profiler.memory import SAVED_KINDS, model_state_bytes, saved_bytes_by_kind
from ndsnn_triton.sparse.masks import random_masks
from ndsnn_triton.testing import num_threads

RESULTS = Path(__file__).parent / "results"
OUT_JSON = RESULTS / "memory.json"
OUT_PNG = RESULTS / "memory.png"

MODELS: tuple[str, ...] = ("vgg16", "resnet19")
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
DENSITIES: tuple[float, ...] = (1.0, 0.1, 0.01)
BATCHES: tuple[int, int] = (2, 4)
T = 5
NUM_CLASSES = 10
IMAGE_SIZE = 32
SEED = 0
LIBRARY, PEER = "ndsnn_triton", "spikingjelly"
MIB = 2**20


# --------------------------------------------------------------------------------------------
# SpikingJelly peers: the library's VGG-16 and ResNet-19, built from SpikingJelly's modules
# --------------------------------------------------------------------------------------------


def spikingjelly_modules() -> tuple[Any, Any, Any]:
    """SpikingJelly's ``(layer, neuron, surrogate)`` modules; ImportError when it is missing."""
    base = "spikingjelly.activation_based"
    return tuple(importlib.import_module(f"{base}.{m}") for m in ("layer", "neuron", "surrogate"))


def spikingjelly_unavailable() -> str | None:
    """Why SpikingJelly cannot be used here (``None`` when it can)."""
    try:
        spikingjelly_modules()
        importlib.import_module("spikingjelly.activation_based.functional")
    except Exception as err:  # an import error, or a broken install
        return f"spikingjelly.activation_based is not importable: {type(err).__name__}: {err}"
    return None


def spikingjelly_lif() -> nn.Module:
    """SpikingJelly ``LIFNode`` with LTH-SNN's settings (:data:`LTH_SNN_LIF`), multi-step.

    SpikingJelly 2.0's ``LIFNode`` has no ``backend`` argument (it picks its implementation from
    the tensor's device; on the CPU its registered ``sj_lif`` op); older versions get
    ``backend='torch'``.
    """
    import inspect

    _, neuron, surrogate = spikingjelly_modules()
    kwargs: dict[str, Any] = {
        "tau": LTH_SNN_LIF["tau"],
        "v_threshold": LTH_SNN_LIF["v_threshold"],
        "v_reset": LTH_SNN_LIF["v_reset"],
        "decay_input": LTH_SNN_LIF["decay_input"],
        "detach_reset": LTH_SNN_LIF["detach_reset"],
        "surrogate_function": surrogate.ATan(alpha=float(LTH_SNN_LIF["surrogate"].alpha)),
        "step_mode": "m",
    }
    if "backend" in inspect.signature(neuron.LIFNode).parameters:
        kwargs["backend"] = "torch"
    return neuron.LIFNode(**kwargs)


class SpikingJellyDirectEncoder(nn.Module):
    """Direct coding of SpikingJelly layers: conv + BN once on ``[B, C, H, W]``, expanded over T."""

    def __init__(self, in_channels: int, out_channels: int, T: int, bias: bool) -> None:
        super().__init__()
        layer, _, _ = spikingjelly_modules()
        self.T = T
        self.conv = layer.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias, step_mode="m")
        self.bn = layer.BatchNorm2d(out_channels, step_mode="m")

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self.conv(x.unsqueeze(0)))  # [1, B, C, H, W]
        return y.expand(self.T, *y.shape[1:])


class SpikingJellyVGG(nn.Module):
    """VGG-16 (cfg D, BN, biased convs, 5 max pools, ``Linear(512, classes)``) of SpikingJelly
    layers, for 32×32 images: input ``[B, 3, 32, 32]``, output ``[T, B, classes]``."""

    def __init__(self, num_classes: int = 10, T: int = 5) -> None:
        super().__init__()
        layer, _, _ = spikingjelly_modules()
        first = CFG_D[0]
        assert isinstance(first, int)
        self.encoder = SpikingJellyDirectEncoder(3, first, T, bias=True)
        layers: list[nn.Module] = [spikingjelly_lif()]
        channels = first
        for c in CFG_D[1:]:
            if c == "M":
                layers.append(layer.MaxPool2d(2, 2, step_mode="m"))
            else:
                assert isinstance(c, int)
                layers += [
                    layer.Conv2d(channels, c, 3, padding=1, bias=True, step_mode="m"),
                    layer.BatchNorm2d(c, step_mode="m"),
                    spikingjelly_lif(),
                ]
                channels = c
        self.features = nn.Sequential(*layers)
        self.flatten = layer.Flatten(step_mode="m")
        self.classifier = layer.Linear(channels, num_classes, step_mode="m")
        init_weights(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.features(self.encoder(x))))


class SpikingJellyBasicBlock(nn.Module):
    """``lif2(bn2(conv2(lif1(bn1(conv1 x)))) + shortcut x)``; 1×1 conv + BN shortcut where the
    shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        layer, _, _ = spikingjelly_modules()
        self.conv1 = layer.Conv2d(in_planes, planes, 3, stride, 1, bias=False, step_mode="m")
        self.bn1 = layer.BatchNorm2d(planes, step_mode="m")
        self.lif1 = spikingjelly_lif()
        self.conv2 = layer.Conv2d(planes, planes, 3, 1, 1, bias=False, step_mode="m")
        self.bn2 = layer.BatchNorm2d(planes, step_mode="m")
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                layer.Conv2d(in_planes, planes, 1, stride, bias=False, step_mode="m"),
                layer.BatchNorm2d(planes, step_mode="m"),
            )
        self.lif2 = spikingjelly_lif()

    def forward(self, x: Tensor) -> Tensor:
        out = self.lif1(self.bn1(self.conv1(x)))
        return self.lif2(self.bn2(self.conv2(out)) + self.shortcut(x))


class SpikingJellyResNet19(nn.Module):
    """ResNet-19 of LTH-SNN ("kim": stem 3→64, BasicBlocks [3, 3, 2] at 128/256/512 with stride
    2 each, avgpool → fc1 512→256 → LIF → fc2) of SpikingJelly layers. ``[B, 3, H, W]`` →
    ``[T, B, classes]``."""

    def __init__(self, num_classes: int = 10, T: int = 5) -> None:
        super().__init__()
        layer, _, _ = spikingjelly_modules()
        self.encoder = SpikingJellyDirectEncoder(3, 64, T, bias=False)
        self.lif0 = spikingjelly_lif()
        blocks: list[nn.Module] = []
        in_planes = 64
        for n, width in zip((3, 3, 2), (128, 256, 512), strict=True):
            for i in range(n):
                blocks.append(SpikingJellyBasicBlock(in_planes, width, 2 if i == 0 else 1))
                in_planes = width
        self.layers = nn.Sequential(*blocks)
        self.avgpool = layer.AdaptiveAvgPool2d(1, step_mode="m")
        self.flatten = layer.Flatten(step_mode="m")
        self.fc1 = layer.Linear(in_planes, 256, step_mode="m")
        self.lif_fc = spikingjelly_lif()
        self.fc2 = layer.Linear(256, num_classes, step_mode="m")

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(self.avgpool(self.layers(self.lif0(self.encoder(x)))))
        return self.fc2(self.lif_fc(self.fc1(x)))


def spikingjelly_vgg16(num_classes: int = 10, T: int = 5) -> SpikingJellyVGG:
    """The library's ``vgg16`` (32×32 input) built from SpikingJelly 2.0 modules."""
    return SpikingJellyVGG(num_classes, T)


def spikingjelly_resnet19(num_classes: int = 10, T: int = 5) -> SpikingJellyResNet19:
    """The library's ``resnet19`` (``variant="kim"``) built from SpikingJelly 2.0 modules."""
    return SpikingJellyResNet19(num_classes, T)


PEERS: dict[str, Callable[..., nn.Module]] = {
    "vgg16": spikingjelly_vgg16,
    "resnet19": spikingjelly_resnet19,
}


def copy_peer_state(peer: nn.Module, ours: nn.Module) -> None:
    """Copy a peer network's parameters and buffers, in registration order, into the library's
    network (whose extra ``mask`` buffers are left as they are). Raises ValueError on any
    mismatch of count or shape."""
    our_buffers = [b for n, b in ours.named_buffers() if n.rpartition(".")[2] != "mask"]
    pairs = [
        *zip(list(peer.parameters()), list(ours.parameters()), strict=False),
        *zip(list(peer.buffers()), our_buffers, strict=False),
    ]
    counts = (len(list(peer.parameters())), len(list(ours.parameters())))
    counts += (len(list(peer.buffers())), len(our_buffers))
    if counts[0] != counts[1] or counts[2] != counts[3]:
        raise ValueError(f"copy_peer_state: parameter/buffer counts differ: {counts}")
    with torch.no_grad():
        for src, dst in pairs:
            if src.shape != dst.shape:
                raise ValueError(f"copy_peer_state: shape {tuple(src.shape)} != {tuple(dst.shape)}")
            dst.copy_(src)


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def library_network(model: str, density: float, T: int = T, seed: int = SEED) -> nn.Module:
    """The library's ``model`` at weight ``density`` (see :func:`random_masks`), train mode."""
    torch.manual_seed(seed)
    net = build_model(model, num_classes=NUM_CLASSES, T=T)
    if density < 1:
        random_masks(net, density, "uniform", seed=seed)
    return net.train()


def peer_network(model: str, T: int = T, seed: int = SEED) -> nn.Module:
    """SpikingJelly's ``model`` (dense), train mode."""
    torch.manual_seed(seed)
    return PEERS[model](num_classes=NUM_CLASSES, T=T).train()


@contextlib.contextmanager
def _compute_dtype(dtype: str) -> Iterator[None]:
    cast = DTYPES[dtype]
    if cast is None:
        yield
    else:
        with torch.autocast("cpu", dtype=cast):
            yield


def _recomputed_segments(out: Tensor) -> int:
    """How many recomputed segments (``_RecomputedSegment`` nodes) the graph of ``out`` holds."""
    seen, stack, count = set(), [out.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += "RecomputedSegment" in node.name()
        stack += [n for n, _ in node.next_functions]
    return count


def saved_by_kind(
    net: nn.Module, reset: Callable[[nn.Module], None], batch: int, dtype: str, seed: int = SEED
) -> tuple[dict[str, int], int]:
    """Bytes saved for backward by one training forward of ``net`` on a ``batch`` of images, by
    kind; and the number of recomputed segments in its graph."""
    images = torch.rand(
        batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed)
    )
    segments = 0

    def forward() -> Tensor:
        nonlocal segments
        reset(net)
        with _compute_dtype(dtype):
            out = net(images)
        segments = _recomputed_segments(out)
        return out

    with torch.enable_grad():
        counted = saved_bytes_by_kind(net, forward)
    reset(net)
    return counted, segments


def _exact(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def fit(counts: dict[int, dict[str, int]]) -> tuple[dict, dict]:
    """Per-sample slope and intercept, by key, of counts at two batch sizes."""
    (b0, low), (b1, high) = sorted(counts.items())
    slope = {k: _exact((high[k] - low[k]) / (b1 - b0)) for k in low}
    intercept = {k: _exact(low[k] - slope[k] * b0) for k in low}
    return slope, intercept


def _row(
    model: str,
    dtype: str,
    library: str,
    density: float,
    net: nn.Module,
    reset: Callable[[nn.Module], None],
    batches: tuple[int, int],
) -> dict[str, Any]:
    measured, segments = {}, {}
    for b in batches:
        measured[b], segments[b] = saved_by_kind(net, reset, b, dtype)
    per_sample, intercept = fit(measured)
    state = model_state_bytes(net)
    constant = {
        "saved": intercept,
        "parameters": state["parameters"],
        "buffers": state["buffers"],
        "total": _exact(intercept["total"] + state["total"]),
    }
    row: dict[str, Any] = {
        "model": model,
        "dtype": dtype,
        "library": library,
        "density": density,
        "measured": {str(b): measured[b] for b in batches},
        "per_sample_bytes": per_sample,
        "constant_bytes": constant,
    }
    if library == LIBRARY:
        row["recomputed_segments"] = segments[batches[-1]]
    return row


def measure(
    models: tuple[str, ...] = MODELS,
    dtypes: tuple[str, ...] = tuple(DTYPES),
    densities: tuple[float, ...] = DENSITIES,
    batches: tuple[int, int] = BATCHES,
    T: int = T,
) -> list[dict[str, Any]]:
    """Rows of per-sample and constant saved bytes: per model × dtype, the library at each
    density, then SpikingJelly (or a row saying why it is absent), with per-sample ratios
    library / SpikingJelly. Runs the library's ``torch`` backend at the current recompute
    threshold."""
    absent = spikingjelly_unavailable()
    rows: list[dict[str, Any]] = []
    with ndsnn_triton.use_backend("torch"):
        for model in models:
            nets = {d: library_network(model, d, T) for d in densities}
            peer = None if absent else peer_network(model, T)
            for dtype in dtypes:
                group = [
                    _row(model, dtype, LIBRARY, d, nets[d], reset_net, batches) for d in densities
                ]
                if peer is None:
                    group.append(
                        {
                            "model": model,
                            "dtype": dtype,
                            "library": PEER,
                            "density": 1.0,
                            "absent": absent,
                        }
                    )
                else:
                    from spikingjelly.activation_based import functional

                    group.append(_row(model, dtype, PEER, 1.0, peer, functional.reset_net, batches))
                peer_total = None if peer is None else group[-1]["per_sample_bytes"]["total"]
                for r in group[:-1]:
                    ratio = r["per_sample_bytes"]["total"] / peer_total if peer_total else None
                    r["ratio_to_spikingjelly"] = None if ratio is None else round(ratio, 4)
                rows += group
    return rows


def recompute_flops(
    models: tuple[str, ...] = MODELS,
    densities: tuple[float, ...] = DENSITIES,
    batch: int = BATCHES[0],
    T: int = T,
) -> list[dict[str, Any]]:
    """The price of recomputation in FLOPs: ``FlopCounterMode``'s count of one fp32 training step
    (forward, ``mean_t`` cross-entropy, backward; the ``ndsnn::`` ops' formulas, which count kept
    weights and non-zero spikes) with recomputation off and at the default threshold. Elementwise
    work (BN, LIF, pooling, which the tails rebuild) counts 0 there."""
    from torch.utils.flop_counter import FlopCounterMode

    from ndsnn_triton.nn import temporal_cross_entropy

    rows = []
    g = torch.Generator().manual_seed(SEED)
    images = torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    threshold = ndsnn_triton.get_recompute_density()
    with ndsnn_triton.use_backend("torch"):
        for model in models:
            for density in densities:
                net = library_network(model, density, T)
                counts = {}
                for name, t in (("saving", 0.0), ("default", threshold)):
                    reset_net(net)
                    with (
                        ndsnn_triton.use_recompute_density(t),
                        FlopCounterMode(display=False) as counter,
                    ):
                        temporal_cross_entropy(net(images), labels).backward()
                    counts[name] = int(counter.get_total_flops())
                reset_net(net)
                rows.append(
                    {
                        "model": model,
                        "density": density,
                        "batch": batch,
                        "flops_saving": counts["saving"],
                        "flops_recomputing": counts["default"],
                        "overhead": round(counts["default"] / counts["saving"] - 1, 6),
                    }
                )
    return rows


def readme_recompute_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: training-step FLOPs added by recomputation, per model and density."""
    densities = sorted({r["density"] for r in rows}, reverse=True)
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["model"], r["density"]): r for r in rows}
    head = "| training-step FLOPs added | " + " | ".join(f"d = {d:g}" for d in densities) + " |"
    lines = [head, "|---|" + "---:|" * len(densities)]
    for m in models:
        cells = [f"+{100 * by[(m, d)]['overhead']:.1f} %" for d in densities]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def settings(batches: tuple[int, int] = BATCHES, T: int = T) -> dict[str, Any]:
    """What the measurement assumed (written into the JSON beside the results)."""
    try:
        from importlib.metadata import version

        sj_version: str | None = version("spikingjelly")
    except Exception:
        sj_version = None
    return {
        "T": T,
        "batches": list(batches),
        "image": [3, IMAGE_SIZE, IMAGE_SIZE],
        "num_classes": NUM_CLASSES,
        "densities": list(DENSITIES),
        "masks": "uniform random per masked layer, round(d * n) weights kept (sparse.masks.random_masks)",
        "recompute_density": ndsnn_triton.get_recompute_density(),
        "backend": "torch",
        "dtypes": {"fp32": "float32", "bf16": 'torch.autocast("cpu", dtype=torch.bfloat16)'},
        "kinds": {
            "float activations": "floating tensors other than weight copies",
            "int spikes": "int8 / uint8 / bool (spikes, 1-byte max-pool codes)",
            "indices": "other integer dtypes (int64 max-pool indices)",
            "weight copies": "floating tensors holding a parameter's values (bf16 casts)",
        },
        "per_sample": f"slope of saved bytes between batch {batches[0]} and {batches[1]}",
        "constant": "intercept of saved bytes at batch 0 + parameter and buffer bytes",
        "counting": "storages autograd saves for backward (saved_tensors_hooks), each once; "
        "parameters and buffers excluded; byte counts on the CPU",
        "device_independence": "the library's counts hold on any device (same ops and saved "
        "tensors); SpikingJelly's LIF is device dependent: on the CPU its sj_lif op (a "
        "torch.library.triton_op) runs its Python step loop under autograd, saving h - v_threshold "
        "and 1 - spike per step in the compute dtype; on CUDA its fused op saves h (fp32) and its "
        "inputs instead (from its autograd registration; not measured here)",
        "spikingjelly": sj_version,
        "spikingjelly_lif": "LIFNode(step_mode='m', tau=4/3, v_threshold=1, v_reset=0, "
        "decay_input=True, detach_reset=True, ATan(alpha=2)); SpikingJelly 2.0's LIFNode has no "
        "backend argument",
        "seed": SEED,
    }


# --------------------------------------------------------------------------------------------
# Table and plot
# --------------------------------------------------------------------------------------------


def _mib(v: float, digits: int = 2) -> str:
    return f"{v / MIB:.{digits}f}"


def readme_table(results: list[dict[str, Any]]) -> str:
    """README's Markdown table of recorded ``results``: per model and dtype, MiB per sample of
    SpikingJelly and of the library at each density (with its ratio to SpikingJelly), and the
    constant MiB (parameters, buffers and batch-independent saved tensors) of each."""
    densities = sorted({r["density"] for r in results if r["library"] == LIBRARY}, reverse=True)
    listed = " / ".join(f"{d:g}" for d in densities)
    head = ["model", "dtype", "SpikingJelly MiB/sample"]
    head += [f"ndsnn_triton d = {d:g} MiB/sample (× SJ)" for d in densities]
    head += [f"constant MiB: ndsnn_triton d = {listed}; SJ"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    groups = dict.fromkeys((r["model"], r["dtype"]) for r in results)
    for model, dtype in groups:
        rows = [r for r in results if (r["model"], r["dtype"]) == (model, dtype)]
        peer = next(r for r in rows if r["library"] == PEER)
        ours = {r["density"]: r for r in rows if r["library"] == LIBRARY}
        present = "absent" not in peer
        cells = [model, dtype, _mib(peer["per_sample_bytes"]["total"]) if present else "—"]
        for d in densities:
            r = ours[d]
            ratio = r.get("ratio_to_spikingjelly")
            cells.append(
                _mib(r["per_sample_bytes"]["total"])
                + (f" ({ratio:.2f}×)" if ratio is not None else "")
            )
        constant = " / ".join(_mib(ours[d]["constant_bytes"]["total"], 1) for d in densities)
        constant += "; " + (_mib(peer["constant_bytes"]["total"], 1) if present else "—")
        cells.append(constant)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_COLORS = {
    "float activations": "#4C72B0",
    "int spikes": "#DD8452",
    "indices": "#C44E52",
    "weight copies": "#55A868",
}
_SHORT = {
    "float activations": "float",
    "int spikes": "spikes",
    "indices": "idx",
    "weight copies": "w",
}


def _bar_label(r: dict[str, Any]) -> str:
    if r["library"] == PEER:
        return "SpikingJelly 2.0"
    return f"ndsnn_triton d={r['density']:g}"


def plot(doc: dict[str, Any], out: Path = OUT_PNG) -> Path:
    """Stacked horizontal bars of saved bytes per sample by kind, one panel per model × dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, s = doc["results"], doc["settings"]
    groups = list(dict.fromkeys((r["model"], r["dtype"]) for r in results))
    cols = 2
    nrows = -(-len(groups) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(13, 3.3 * nrows + 1.4), squeeze=False)
    for ax, (model, dtype) in zip(axes.flat, groups, strict=False):
        rows = [r for r in results if (r["model"], r["dtype"]) == (model, dtype)]
        labels = [_bar_label(r) for r in rows]
        xmax = max((r.get("per_sample_bytes", {}).get("total", 0) for r in rows), default=1)
        for y, r in enumerate(rows):
            if "absent" in r:
                ax.text(0, y, "  SpikingJelly not installed", va="center", fontsize=8)
                continue
            left = 0.0
            parts = []
            for kind in SAVED_KINDS:
                v = r["per_sample_bytes"][kind] / MIB
                if v <= 0:
                    continue
                ax.barh(y, v, left=left, color=_COLORS[kind], edgecolor="white", linewidth=0.5)
                left += v
                parts.append(f"{_SHORT[kind]} {v:.2f}" if v >= 0.005 else f"{_SHORT[kind]} <0.01")
            ratio = r.get("ratio_to_spikingjelly")
            text = f" {left:.2f} MiB" + (f" ({ratio:.2f}× SJ)" if ratio is not None else "")
            ax.text(left, y - 0.12, text, va="center", fontsize=8, fontweight="bold")
            ax.text(left, y + 0.22, " " + " · ".join(parts), va="center", fontsize=7)
        ax.set_yticks(range(len(rows)), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.45 * xmax / MIB)
        ax.set_title(f"{model}, {dtype}", fontsize=10)
        ax.set_xlabel("saved for backward per sample (MiB)")
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    shown = [
        k for k in SAVED_KINDS if any(r.get("per_sample_bytes", {}).get(k, 0) > 0 for r in results)
    ]
    handles = [plt.Rectangle((0, 0), 1, 1, color=_COLORS[k]) for k in shown]
    legend = [f"{k} ({_SHORT[k]})" for k in shown]
    fig.legend(handles, legend, loc="lower center", ncol=max(1, len(shown)), fontsize=9)
    densities = ", ".join(f"{d:g}" for d in s["densities"])
    fig.suptitle(
        "Activation memory autograd saves for backpropagation through time, per sample: "
        "ndsnn_triton vs SpikingJelly 2.0\n"
        f"T = {s['T']}, 32×32 images, train mode; per sample = slope between batch "
        f"{s['batches'][0]} and {s['batches'][1]}; weight densities {densities} (random masks)\n"
        f"library: segments at density ≤ {s['recompute_density']:g} rebuilt in backward from int8 "
        "inputs, BN → LIF tails from conv outputs at any density\n"
        "byte counts on the CPU: the library's hold on any device, SpikingJelly's LIF is its CPU "
        "path; constant bytes (weights, masks, bf16 weight copies) are in memory.json",
        fontsize=9.5,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_JSON)
    parser.add_argument("--png", type=Path, default=OUT_PNG)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (byte counts do not depend on it; 1 is ~12 s and immune to other "
        "processes holding the cores)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with num_threads(args.threads):
        rows = measure()
        doc = {
            "environment": environment(),
            "settings": settings(),
            "results": rows,
            "recompute_flops": recompute_flops(),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    plot(doc, args.png)
    print(readme_table(rows))
    print(readme_recompute_table(doc["recompute_flops"]))
    print(f"measured in {time.perf_counter() - start:.1f} s; wrote {args.out} and {args.png}")
    return args.out


if __name__ == "__main__":
    main()
