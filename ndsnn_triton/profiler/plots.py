"""Plots of training cost (matplotlib, Agg). Each function writes a PNG and returns its path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ndsnn_triton.profiler.cost import RunCost
from ndsnn_triton.profiler.layers import LayerTable
from ndsnn_triton.sparse.schedules import Schedule

MODEL_TITLES = {"vgg16": "VGG-16", "resnet19": "ResNet-19"}
METHOD_STYLE = {
    "dense": ("black", "-"),
    "static": ("tab:gray", "--"),
    "set": ("tab:green", "-."),
    "rigl": ("tab:orange", "-"),
    "ndsnn": ("tab:red", "-"),
    "lth": ("tab:blue", "-"),
}


def _title(model: str) -> str:
    return MODEL_TITLES.get(model, model)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cumulative_cost(
    runs: Mapping[str, Mapping[str, RunCost]],
    dense_unit: Mapping[str, float],
    steps_per_epoch: int,
    sparsity: float,
    convention: str,
    path: Path,
) -> Path:
    """Cumulative training FLOPs (in dense runs) vs epoch, one panel per model."""
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.2), squeeze=False)
    for ax, (model, methods) in zip(axes[0], runs.items(), strict=True):
        for name, run in methods.items():
            color, style = METHOD_STYLE.get(name, (None, "-"))
            x = np.concatenate([[0], run.segment_ends]) / steps_per_epoch
            y = np.concatenate([[0], run.cumulative]) / dense_unit[model]
            ax.plot(x, y, style, color=color, label=f"{name} ({y[-1]:.2f}×)")
        ax.set_title(
            f"{_title(model)}: cumulative training cost, {sparsity:.0%} sparsity ({convention})"
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel("FLOPs / one dense training run")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def density_curves(
    schedules: Mapping[str, Mapping[str, Schedule]],
    steps_per_epoch: int,
    sparsity: float,
    path: Path,
) -> Path:
    """Overall weight density vs epoch per method, one panel per model."""
    fig, axes = plt.subplots(1, len(schedules), figsize=(6 * len(schedules), 4.2), squeeze=False)
    for ax, (model, methods) in zip(axes[0], schedules.items(), strict=True):
        for name, sched in methods.items():
            color, style = METHOD_STYLE.get(name, (None, "-"))
            xs, ys, start = [], [], 0
            for seg in sched.segments:
                d = sched.overall_density(seg.densities)
                xs += [start / steps_per_epoch, (start + seg.steps) / steps_per_epoch]
                ys += [d, d]
                start += seg.steps
            ax.plot(xs, ys, style, color=color, label=name)
        ax.set_yscale("log")
        ax.set_title(f"{_title(model)}: weight density during training (target {1 - sparsity:.0%})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("overall weight density (log)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return _save(fig, path)


def layer_breakdown(
    table: LayerTable,
    sparse: Mapping[str, np.ndarray],
    dense: Mapping[str, np.ndarray],
    model: str,
    title: str,
    path: Path,
) -> Path:
    """Per-layer FLOPs of one training step: stacked sparse terms, dense total as markers."""
    names = table.names
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(names)), 4.5))
    bottom = np.zeros(len(names))
    for term, color in (
        ("forward", "tab:blue"),
        ("input_grad", "tab:orange"),
        ("weight_grad", "tab:green"),
    ):
        ax.bar(
            x, sparse[term], bottom=bottom, color=color, label=f"{term.replace('_', ' ')} (sparse)"
        )
        bottom += sparse[term]
    dense_total = dense["forward"] + dense["input_grad"] + dense["weight_grad"]
    ax.plot(x, dense_total, "k_", markersize=14, mew=2, label="dense step total")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("FLOPs per training step (log)")
    ax.set_title(f"{_title(model)}: {title}")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def ratio_vs_sparsity(
    ratios: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    paper: Mapping[str, float],
    convention: str,
    distribution: str,
    path: Path,
) -> Path:
    """NDSNN/LTH (%) vs target sparsity per protocol, one panel per model, paper's numbers marked."""
    fig, axes = plt.subplots(1, len(ratios), figsize=(6 * len(ratios), 4.2), squeeze=False)
    for ax, (model, protocols) in zip(axes[0], ratios.items(), strict=True):
        for protocol, points in protocols.items():
            xs, ys = zip(*points, strict=True)
            ax.plot(
                [100 * x for x in xs],
                [100 * y for y in ys],
                "o-",
                label=f"LTH protocol: {protocol}",
            )
        if model in paper:
            ax.axhline(
                100 * paper[model],
                color="crimson",
                ls="--",
                label=f"paper: {100 * paper[model]:.2f}%",
            )
            ax.axhspan(100 * paper[model] - 3, 100 * paper[model] + 3, color="crimson", alpha=0.08)
        ax.set_title(f"{_title(model)}: NDSNN cost / LTH cost ({convention}, {distribution})")
        ax.set_xlabel("target sparsity (%)")
        ax.set_ylabel("NDSNN / LTH training FLOPs (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def flops_vs_seconds(rows: Sequence[Mapping], sparsity: float, path: Path) -> Path:
    """Each method's run cost in FLOPs (x) against measured GPU seconds (y), both × one dense run;
    one panel per model, one marker per measured configuration. ``rows``: dicts with ``model``,
    ``config``, ``method``, ``flops_x_dense``, ``seconds_x_dense``."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    markers = "osD^vP*X"
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.6), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        top = 0.0
        for ci, config in enumerate(configs):
            for r in rows:
                if r["model"] != model or r["config"] != config:
                    continue
                color = METHOD_STYLE.get(r["method"], ("tab:purple", "-"))[0]
                ax.scatter(
                    r["flops_x_dense"], r["seconds_x_dense"], color=color, marker=markers[ci % 8]
                )
                ax.annotate(
                    r["method"], (r["flops_x_dense"], r["seconds_x_dense"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points",
                )  # fmt: skip
                top = max(top, r["flops_x_dense"], r["seconds_x_dense"])
            ax.scatter([], [], color="gray", marker=markers[ci % 8], label=config)
        ax.plot([0, top], [0, top], color="gray", lw=0.8, ls=":", label="seconds = FLOPs")
        ax.set_title(f"{_title(model)}: cost × dense run, {sparsity:.0%} sparsity")
        ax.set_xlabel("training FLOPs (snn convention) × dense")
        ax.set_ylabel("measured GPU seconds × dense (same config)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
