"""Plots of training cost (matplotlib, Agg). Each function writes a PNG and returns its path.

Every figure carries a caption with the assumptions behind it (drawn under the panels and stored
as the PNG's ``Description``). Lines that coincide are drawn so that each stays visible: a wide
translucent band underneath, thin dashes or dots on top, and a direct label at the line's end that
says which methods coincide and what they cost.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from ndsnn_triton.profiler.cost import RunCost
from ndsnn_triton.profiler.layers import LayerTable
from ndsnn_triton.sparse.schedules import Schedule

MODEL_TITLES = {"vgg16": "VGG-16", "resnet19": "ResNet-19"}
METHOD_LABELS = {
    "dense": "dense",
    "static": "static",
    "set": "SET",
    "rigl": "RigL",
    "ndsnn": "NDSNN",
    "lth": "LTH",
}
METHOD_STYLE = {
    "dense": ("black", "-"),
    "static": ("tab:gray", "--"),
    "set": ("tab:green", "-."),
    "rigl": ("tab:orange", "-"),
    "ndsnn": ("tab:red", "-"),
    "lth": ("tab:blue", "-"),
}
# Drawing order and line style chosen so that coinciding curves stay visible: LTH (whose round 0
# is the dense run) and static (which SET and RigL follow at the same density) are wide
# translucent bands; dense, SET and RigL are thin dashes or dots on top of them.
_LINE = {
    "lth": {"lw": 6.0, "alpha": 0.35, "ls": "-", "zorder": 2},
    "static": {"lw": 6.0, "alpha": 0.35, "ls": "-", "zorder": 2},
    "dense": {"lw": 1.6, "ls": (0, (5, 3)), "zorder": 5},
    "set": {"lw": 1.8, "ls": (0, (6, 3)), "zorder": 4},
    "rigl": {"lw": 2.0, "ls": (0, (1, 2)), "zorder": 5},
    "ndsnn": {"lw": 2.0, "ls": "-", "zorder": 6},
}
TERMS = (("forward", "tab:blue"), ("input_grad", "tab:orange"), ("weight_grad", "tab:green"))
CAPTION_SIZE = 8
DPI = 100
LABEL_SIZE = 8


def _title(model: str) -> str:
    return MODEL_TITLES.get(model, model)


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _style(method: str) -> dict:
    color = METHOD_STYLE.get(method, ("tab:purple", "-"))[0]
    return {"color": color, **_LINE.get(method, {"lw": 1.6, "ls": "-", "zorder": 3})}


def _pct(fraction: float) -> str:
    """``0.99`` → ``99%``, ``0.995`` → ``99.5%``."""
    return f"{100 * fraction:.4g}%"


def _times(v: float) -> str:
    """A cost in units of one dense run: ``1.00×``, ``0.361×``, ``0.0244×``."""
    return f"{v:.2f}×" if v >= 0.1 else f"{v:.3f}×" if v >= 0.01 else f"{v:.2g}×"


def display_names(model_name: str, module_names: Sequence[str]) -> list[str]:
    """Short layer names a reader maps to the model, in the order of ``module_names``.

    Plain feature stacks (VGG, the small CNN): the encoder conv and ``features.N`` become ``conv1``,
    ``conv2``, …; a single ``classifier`` is ``fc``. ResNets (``layers.I.…`` blocks): the encoder
    conv is ``stem`` and a block's layers are ``s{stage}b{block}.conv1`` / ``.conv2`` /
    ``.shortcut``, where a block with a shortcut conv starts a new stage. Any other module keeps
    its path, as does every name that would otherwise not be unique.
    """
    names = list(module_names)
    block_re = re.compile(r"^layers\.(\d+)\.(.+)$")
    resnet = model_name.startswith("resnet") or any(block_re.match(n) for n in names)
    blocks: dict[int, bool] = {}  # block index -> has a shortcut conv
    for n in names:
        if m := block_re.match(n):
            has = blocks.get(int(m.group(1)), False)
            blocks[int(m.group(1))] = has or m.group(2).startswith("shortcut")
    where: dict[int, tuple[int, int]] = {}
    stage = block = 0
    for i in sorted(blocks):
        if stage == 0 or blocks[i]:
            stage, block = stage + 1, 0
        block += 1
        where[i] = (stage, block)
    classifiers = [n for n in names if n == "classifier" or n.startswith("classifier.")]
    out, conv = [], 0
    for n in names:
        if n == "encoder.conv" and resnet:
            out.append("stem")
        elif n == "encoder.conv" or re.fullmatch(r"features\.\d+", n):
            conv += 1
            out.append(f"conv{conv}")
        elif n in classifiers:
            out.append("fc" if len(classifiers) == 1 else f"fc{classifiers.index(n) + 1}")
        elif m := block_re.match(n):
            s, b = where[int(m.group(1))]
            part = re.sub(r"^shortcut(\.\d+)?$", "shortcut", m.group(2))
            out.append(f"s{s}b{b}.{part}")
        else:
            out.append(n)
    counts = {d: out.count(d) for d in out}
    return [d if counts[d] == 1 else n for d, n in zip(out, names, strict=True)]


def _save(
    fig: plt.Figure, path: Path, title: str, caption: str, legend: list[Line2D] | None = None
) -> Path:
    """Title on top, the legend (if any) and the wrapped caption under the panels; save and close.

    The caption is also stored in the PNG as its ``Description``, the title as its ``Title``.
    """
    fig.set_dpi(DPI)  # lay out at the resolution it is saved at: text widths depend on it
    width, height = fig.get_size_inches()
    chars = int(width * 72 / (CAPTION_SIZE * 0.56))
    wrap = textwrap.TextWrapper(chars, break_on_hyphens=False)
    lines = [w for para in caption.split("\n") for w in wrap.wrap(para) or [""]]
    line_in = CAPTION_SIZE * 1.3 / 72
    caption_in = len(lines) * line_in + 0.12
    fig.text(
        0.008, 0.06 / height, "\n".join(lines), fontsize=CAPTION_SIZE, ha="left", va="bottom",
        linespacing=1.3, color="0.2",
    )  # fmt: skip
    legend_in = 0.0
    if legend:
        # as many columns as fit the figure's width
        entry_in = max((5.2 + 0.56 * len(h.get_label())) * LABEL_SIZE / 72 for h in legend)
        ncol = max(1, min(len(legend), int(0.96 * width / entry_in)))
        legend_in = -(-len(legend) // ncol) * LABEL_SIZE * 1.9 / 72 + 0.1
        fig.legend(
            handles=legend, loc="lower center", ncol=ncol, fontsize=LABEL_SIZE,
            bbox_to_anchor=(0.5, caption_in / height), frameon=False, handlelength=3.2,
        )  # fmt: skip
    fig.suptitle(
        "\n".join(textwrap.wrap(title, int(width * 72 / (12 * 0.55)), break_on_hyphens=False)),
        fontsize=12, y=1 - 0.06 / height, va="top",
    )  # fmt: skip
    fig.tight_layout(rect=(0, (caption_in + legend_in) / height, 1, 1))
    fig.savefig(path, dpi=DPI, metadata={"Title": title, "Description": caption})
    plt.close(fig)
    return path


def _spread(ys: Sequence[float], gap: float, lo: float, hi: float) -> list[float]:
    """Positions (axes fraction) moved apart to at least ``gap`` and kept within [lo, hi]."""
    order = np.argsort(ys, kind="stable")
    p = np.asarray(ys, dtype=float)[order]
    for i in range(1, len(p)):
        p[i] = max(p[i], p[i - 1] + gap)
    if len(p) and p[-1] > hi:
        p[-1] = hi
        for i in range(len(p) - 2, -1, -1):
            p[i] = min(p[i], p[i + 1] - gap)
    p = np.maximum(p, lo + gap * np.arange(len(p)))
    out = np.empty_like(p)
    out[order] = p
    return out.tolist()


def _end_labels(
    ax: plt.Axes, entries: Sequence[tuple[float, float, str, str]], x_text: float
) -> None:
    """Direct labels for line ends: ``entries`` = (x, y, text, color) in data coordinates; the text
    goes at ``x_text`` (axes fraction), spread vertically so that no two labels overlap, with a
    thin leader line to the point."""
    if not entries:
        return
    to_axes = ax.transData + ax.transAxes.inverted()
    pts = [to_axes.transform((x, y)) for x, y, _, _ in entries]
    lines = [text.count("\n") + 1 for _, _, text, _ in entries]
    height_in = ax.get_position().height * ax.figure.get_size_inches()[1]
    gap = (max(lines) * LABEL_SIZE * 1.3 + 4) / 72 / height_in  # a little more than a line
    ys = _spread([p[1] for p in pts], gap, 0.6 * gap, 1.0 - 0.6 * gap)
    for (x, y, text, color), y_text in zip(entries, ys, strict=True):
        ax.annotate(
            text, (x, y), xytext=(x_text, y_text), textcoords="axes fraction", fontsize=LABEL_SIZE,
            color=color, va="center", ha="left", annotation_clip=False,
            arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6, "alpha": 0.7,
                        "shrinkA": 1, "shrinkB": 2},
        )  # fmt: skip


def _legend_handles(methods: Sequence[str]) -> list[Line2D]:
    handles = []
    for m in methods:
        s = _style(m)
        handles.append(
            Line2D([], [], color=s["color"], lw=min(s["lw"], 4), alpha=s.get("alpha", 1.0),
                   ls=s["ls"], label=_label(m))
        )  # fmt: skip
    return handles


def _coinciding(curves: Mapping[str, np.ndarray]) -> list[list[str]]:
    """Groups of methods whose curves are equal (to 1e-9 relative) on the plotted range."""
    groups: list[list[str]] = []
    for name, y in curves.items():
        for g in groups:
            first = curves[g[0]]
            if first.shape == y.shape and np.allclose(first, y, rtol=1e-9, atol=0.0):
                g.append(name)
                break
        else:
            groups.append([name])
    return groups


def _group_label(group: Sequence[str], aliases: Mapping[str, str]) -> str:
    return " = ".join(aliases.get(m, _label(m)) for m in group)


def _epochs_of_one_run(steps: Mapping[str, int], steps_per_epoch: int) -> float:
    """E: the dense run's length in epochs, else the shortest run's."""
    return steps.get("dense", min(steps.values())) / steps_per_epoch


def cumulative_cost(
    runs: Mapping[str, Mapping[str, RunCost]],
    dense_unit: Mapping[str, float],
    steps_per_epoch: int,
    sparsity: float,
    convention: str,
    path: Path,
    caption: str = "",
    epochs: int | None = None,
) -> Path:
    """Cumulative training FLOPs (in dense runs of E epochs) vs epoch; one row per model.

    Left: the first E epochs, every method, log y, a direct label at each line's end with its final
    cost (methods whose curves coincide share one label). Right: the whole run of the longest
    method (LTH's IMP rounds) on its full axis, linear y, the others for reference.
    ``epochs`` (E) defaults to the dense run's length.
    """
    n = len(runs)
    fig, axes = plt.subplots(
        n, 2, figsize=(13.5, 4.1 * n + 1.3), squeeze=False, gridspec_kw={"width_ratios": [1, 1.15]}
    )
    for (ax_e, ax_all), (model, methods) in zip(axes, runs.items(), strict=True):
        unit = dense_unit[model]
        e = epochs or _epochs_of_one_run({m: r.steps for m, r in methods.items()}, steps_per_epoch)
        knots = {
            name: (
                np.concatenate([[0], run.segment_ends]) / steps_per_epoch,
                np.concatenate([[0], run.cumulative]) / unit,
            )
            for name, run in methods.items()
        }
        # Left: first E epochs. The cost is linear within a segment, so interpolation is exact.
        grid = np.linspace(0, e, 901)[1:]
        curves = {name: np.interp(grid, x, y) for name, (x, y) in knots.items()}
        finals = {name: float(c[-1]) for name, c in curves.items()}
        for name, c in curves.items():
            ax_e.plot(grid, c, **_style(name))
        low = min(v for v in finals.values() if v > 0) / 40
        ax_e.set_yscale("log")
        ax_e.set_ylim(low, max(finals.values()) * 2.2)
        ax_e.set_xlim(0, e)
        longer = {name for name, r in methods.items() if r.steps / steps_per_epoch > e * 1.0001}
        aliases = {name: f"{_label(name)} round 0" for name in longer if name == "lth"}
        entries = []
        for group in _coinciding(curves):
            text = f"{_group_label(group, aliases)}  {_times(finals[group[0]])}"
            if len(group) > 1:
                text += " (identical)"
            color = _style(group[-1])["color"]
            entries.append((e, finals[group[0]], text, color))
        _end_labels(ax_e, entries, 1.02)
        ax_e.set_title(f"{_title(model)}: the first E = {e:g} epochs (log scale)", fontsize=10)
        ax_e.set_xlabel("epoch")
        ax_e.set_ylabel("cumulative FLOPs / one dense run of E epochs")
        ax_e.grid(alpha=0.3, which="major")
        ax_e.grid(alpha=0.1, which="minor", axis="y")
        # Right: the whole run of every method on one linear axis.
        end = max(float(x[-1]) for x, _ in knots.values())
        for name, (x, y) in knots.items():
            ax_all.plot(x, y, **_style(name))
            ax_all.plot(x[-1], y[-1], "o", color=_style(name)["color"], ms=4, zorder=7)
            if name in longer:
                ax_all.plot(x[1:-1], y[1:-1], "|", color=_style(name)["color"], ms=7, zorder=7)
        top = max(float(y[-1]) for _, y in knots.values())
        ax_all.set_xlim(0, end * 1.02)
        ax_all.set_ylim(0, top * 1.18)
        ax_all.axvspan(0, e, color="0.5", alpha=0.08, lw=0)
        ax_all.text(
            e / 2, top * 1.16, "left\npanel", ha="center", va="top", fontsize=7, color="0.4"
        )
        short = [(n, knots[n]) for n in methods if n not in longer]
        entries = []
        groups: list[list[str]] = []  # ends closer than 4 % of the axis share a label
        for name, (_, y) in sorted(short, key=lambda kv: -kv[1][1][-1]):
            if groups and abs(knots[groups[-1][0]][1][-1] - y[-1]) < 0.04 * top:
                groups[-1].append(name)
            else:
                groups.append([name])
        for group in groups:
            same = _coinciding({m: knots[m][1] for m in group})
            vals = ", ".join(
                f"{_group_label(g, {})} {_times(float(knots[g[0]][1][-1]))}" for g in same
            )
            entries.append((e, float(knots[group[0]][1][-1]), vals, _style(group[0])["color"]))
        _end_labels(ax_all, entries, e / (end * 1.02) + 0.03)
        for name in sorted(longer):
            x, y = knots[name]
            text = f"{_label(name)} {_times(float(y[-1]))}\n(| = end of a segment)"
            if name == "lth":  # one segment per IMP round
                text = f"{_label(name)} {_times(float(y[-1]))}\n(round 0 + {len(x) - 2} rounds, | = round end)"
            ax_all.annotate(
                text,
                (x[-1], y[-1]), xytext=(-4, 8), textcoords="offset points", ha="right",
                va="bottom", fontsize=LABEL_SIZE, color=_style(name)["color"],
            )  # fmt: skip
        ax_all.set_title(f"{_title(model)}: every method's whole run (linear scale)", fontsize=10)
        ax_all.set_xlabel("epoch")
        ax_all.set_ylabel("cumulative FLOPs / one dense run of E epochs")
        ax_all.grid(alpha=0.3)
    title = f"Cumulative training cost at {_pct(sparsity)} sparsity ({convention} convention)"
    return _save(fig, path, title, caption, _legend_handles(list(next(iter(runs.values())))))


def _density_steps(sched: Schedule, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys, start = [], [], 0
    for seg in sched.segments:
        d = sched.overall_density(seg.densities)
        xs += [start / steps_per_epoch, (start + seg.steps) / steps_per_epoch]
        ys += [d, d]
        start += seg.steps
    return np.array(xs), np.array(ys)


def density_curves(
    schedules: Mapping[str, Mapping[str, Schedule]],
    steps_per_epoch: int,
    sparsity: float,
    path: Path,
    caption: str = "",
    epochs: int | None = None,
) -> Path:
    """Overall weight density vs epoch per method (log y); one row per model.

    Left: the first E epochs, every method, labelled at the line ends (coinciding methods share a
    label). Right: every method's whole run on one axis (LTH's IMP staircase).
    """
    n = len(schedules)
    fig, axes = plt.subplots(
        n, 2, figsize=(13.5, 4.1 * n + 1.3), squeeze=False, gridspec_kw={"width_ratios": [1, 1.15]}
    )
    for (ax_e, ax_all), (model, methods) in zip(axes, schedules.items(), strict=True):
        steps = {name: _density_steps(s, steps_per_epoch) for name, s in methods.items()}
        e = epochs or _epochs_of_one_run(
            {m: s.total_steps for m, s in methods.items()}, steps_per_epoch
        )
        grid = np.linspace(0, e, 1201)
        curves = {}
        for name, (x, y) in steps.items():
            # step function: the density of the segment that contains each grid point
            idx = np.clip(np.searchsorted(x[1::2], grid, side="left"), 0, len(y) // 2 - 1)
            curves[name] = y[1::2][idx]
        lows = min(float(y.min()) for _, y in steps.values())
        for ax in (ax_e, ax_all):
            ax.set_yscale("log")
            ax.set_ylim(lows / 2.2, 2.2)
            ax.grid(alpha=0.3, which="major")
            ax.grid(alpha=0.1, which="minor", axis="y")
            ax.set_xlabel("epoch")
            ax.set_ylabel("overall weight density (log scale)")
        for name, (x, y) in steps.items():
            ax_e.plot(x, y, **_style(name))
        ax_e.set_xlim(0, e)
        longer = {n for n, s in methods.items() if s.total_steps / steps_per_epoch > e * 1.0001}
        aliases = {name: f"{_label(name)} round 0" for name in longer if name == "lth"}
        entries = []
        for group in _coinciding(curves):
            final = float(curves[group[0]][-1])
            text = f"{_group_label(group, aliases)}: {final:.3g}"
            if all(np.allclose(curves[m], final) for m in group):
                text += " throughout"
            entries.append((e, final, text, _style(group[-1])["color"]))
        _end_labels(ax_e, entries, 1.02)
        ax_e.set_title(f"{_title(model)}: the first E = {e:g} epochs", fontsize=10)
        end = max(float(x[-1]) for x, _ in steps.values())
        for name, (x, y) in steps.items():
            ax_all.plot(x, y, **_style(name))
        ax_all.set_xlim(0, end * 1.02)
        ax_all.axvspan(0, e, color="0.5", alpha=0.08, lw=0)
        ax_all.text(e / 2, 1.9, "left panel", ha="center", va="top", fontsize=7, color="0.4")
        for name in sorted(longer):
            _, y = steps[name]
            text = f"{_label(name)}: ends at {y[-1]:.3g}"
            if name == "lth" and len(y) >= 4:
                text = (
                    f"{_label(name)}: round 0 at density {y[1]:.3g}, then "
                    f"{len(methods[name].phases) - 1} rounds,\neach keeping {y[3] / y[1]:.0%} of "
                    f"the remaining weights;\nends at {y[-1]:.3g}"
                )
            ax_all.text(
                0.97, 0.95, text, transform=ax_all.transAxes, ha="right", va="top",
                fontsize=LABEL_SIZE, color=_style(name)["color"],
            )  # fmt: skip
        ax_all.set_title(f"{_title(model)}: every method's whole run", fontsize=10)
    title = f"Overall weight density during training, target {1 - sparsity:.3g} ({_pct(sparsity)} sparsity)"
    return _save(fig, path, title, caption, _legend_handles(list(next(iter(schedules.values())))))


def layer_breakdown(
    table: LayerTable,
    sparse: Mapping[str, np.ndarray],
    dense: Mapping[str, np.ndarray],
    model: str,
    title: str,
    path: Path,
    caption: str = "",
    densities: Sequence[float] | None = None,
) -> Path:
    """Per-layer FLOPs of one training step: grouped bars (forward, input gradient, weight gradient
    of the sparse step, one bar each, log y) with the dense step's value of each term as a black
    tick above its bar. Layers are named by :func:`display_names`; ``densities`` (per layer) go on
    the top axis. A term that is 0 where the dense step's is not (a layer pruned away) is marked ×
    at the bottom; a term the dense step does not compute either is marked n/a."""
    labels = display_names(model, table.names)
    n = len(labels)
    x = np.arange(n)
    width = 0.27
    rotate = max(len(s) for s in labels) * n > 110
    fig, ax = plt.subplots(figsize=(max(10.0, 0.62 * n + 1.5), 6.6 if rotate else 6.2))
    values = np.concatenate([np.asarray(v[t], float) for t, _ in TERMS for v in (sparse, dense)])
    low, high = values[values > 0].min() / 4, values.max() * 3
    handles = []
    any_zero = any_na = False
    for i, (term, color) in enumerate(TERMS):
        xs = x + (i - 1) * width
        s, d = np.asarray(sparse[term], float), np.asarray(dense[term], float)
        handles.append(
            ax.bar(xs, np.where(s > 0, s, np.nan), width * 0.92, color=color,
                   label=f"{term.replace('_', ' ')}, sparse step")
        )  # fmt: skip
        ax.plot(xs[d > 0], d[d > 0], "_", color="black", ms=9, mew=1.8)
        zero = (s <= 0) & (d > 0)
        any_zero |= bool(zero.any())
        ax.plot(xs[zero], np.full(zero.sum(), low * 1.4), "x", color=color, ms=5, mew=1.5)
        for xi in xs[(s <= 0) & (d <= 0)]:
            any_na = True
            ax.text(xi, low * 1.4, "n/a", ha="center", va="center", fontsize=6, color="0.4")
    handles.append(
        Line2D([], [], ls="", marker="_", color="black", ms=9, mew=1.8, label="dense step, same term")
    )  # fmt: skip
    if any_zero:
        handles.append(
            Line2D([], [], ls="", marker="x", color="0.3", ms=5, mew=1.5, label="0: layer pruned to density 0")
        )  # fmt: skip
    if any_na:
        handles.append(
            Line2D([], [], ls="", label="n/a: term not computed (first layer's input gradient)")
        )
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(NullLocator())  # 8 decades: minor ticks add clutter (and ~0.5 s)
    ax.set_ylim(low, high)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xticks(x, labels, rotation=40 if rotate else 0, ha="right" if rotate else "center",
                  fontsize=8, rotation_mode="anchor")  # fmt: skip
    ax.set_xlabel("layer (module path in the JSON file beside this plot)", fontsize=8)
    ax.set_ylabel("FLOPs per training step (log scale)")
    ax.grid(alpha=0.3, axis="y", which="major")
    if densities is not None:
        top = ax.secondary_xaxis("top")
        top.set_xticks(x, [f"{d:.2g}" if d < 1 else "1" for d in densities], fontsize=7)
        top.set_xlabel("NDSNN final layer density", fontsize=8)
    for i in range(1, n):
        ax.axvline(i - 0.5, color="0.85", lw=0.6, zorder=0)
    return _save(fig, path, f"{_title(model)}: {title}", caption, handles)


def ratio_vs_sparsity(
    ratios: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    paper: Mapping[str, float],
    convention: str,
    distribution: str,
    path: Path,
    caption: str = "",
) -> Path:
    """NDSNN/LTH (%) vs target sparsity per protocol, one panel per model, paper's numbers marked
    (a model without one is titled so, and no paper line is drawn or listed for it)."""
    fig, axes = plt.subplots(1, len(ratios), figsize=(6.5 * len(ratios), 4.6), squeeze=False)
    colors = {}
    for ax, (model, protocols) in zip(axes[0], ratios.items(), strict=True):
        top, ends = 0.0, []
        for protocol, points in protocols.items():
            xs, ys = zip(*points, strict=True)
            (line,) = ax.plot(
                [100 * x for x in xs], [100 * y for y in ys], "o-", color=colors.get(protocol)
            )
            colors[protocol] = line.get_color()
            ends.append((100 * xs[-1], 100 * ys[-1], f"{100 * ys[-1]:.1f}%", colors[protocol]))
            top = max(top, *ys)
        if model in paper:
            p = 100 * paper[model]
            ax.axhline(p, color="crimson", ls="--")
            ax.axhspan(p - 3, p + 3, color="crimson", alpha=0.08)
            top = max(top, paper[model] + 0.03)
        ax.set_ylim(0, 100 * top * 1.12)
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo, hi + 0.1 * (hi - lo))
        _end_labels(ax, ends, 1 / 1.1 + 0.01)  # value at the last point, labels kept apart
        paper_note = (
            f" (paper: {100 * paper[model]:.2f}%)" if model in paper else " (no published claim)"
        )
        ax.set_title(f"{_title(model)}{paper_note}", fontsize=10)
        ax.set_xticks(sorted({100 * x for pts in protocols.values() for x, _ in pts}))
        ax.set_xlabel("target sparsity (%)")
        ax.set_ylabel("NDSNN / LTH training FLOPs (%)")
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=c, marker="o", label=f"LTH protocol: {p}") for p, c in colors.items()
    ]
    if any(model in paper for model in ratios):
        handles.append(
            Line2D([], [], color="crimson", ls="--", label="paper's number (band: ±3 points)")
        )
    title = f"NDSNN cost / LTH cost ({convention} convention, {distribution} distribution)"
    return _save(fig, path, title, caption, handles)


def flops_vs_seconds(
    rows: Sequence[Mapping], sparsity: float, path: Path, caption: str | None = None
) -> Path:
    """Each method's run cost in FLOPs and in measured GPU seconds, both × one dense run: a dot plot
    on a log axis, one row per method (FLOPs: black diamond; seconds: one marker per measured
    configuration), the values written at the row's end; one panel per model. ``rows``: dicts
    with ``model``, ``config``, ``method``, ``flops_x_dense``, ``seconds_x_dense``."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    markers = "osD^vP*X"
    colors = [f"C{i}" for i in range(10)]
    fig, axes = plt.subplots(
        len(models), 1, figsize=(12.0, 0.42 * len(methods) * len(models) + 1.3 * len(models) + 1.2),
        squeeze=False,
    )  # fmt: skip
    values = [r[k] for r in rows for k in ("flops_x_dense", "seconds_x_dense") if r[k] > 0]
    low, high = min(values) / 1.8, max(values) * 1.8
    for ax, model in zip(axes[:, 0], models, strict=True):
        for y, method in enumerate(methods):
            flops = [
                r["flops_x_dense"] for r in rows if r["model"] == model and r["method"] == method
            ]
            seconds = {
                r["config"]: r["seconds_x_dense"]
                for r in rows
                if r["model"] == model and r["method"] == method
            }
            if not flops:
                continue
            pts = [flops[0], *seconds.values()]
            ax.plot([min(pts), max(pts)], [y, y], color="0.75", lw=1.2, zorder=1)
            ax.plot(flops[0], y, "D", color="black", ms=5.5, zorder=5)
            for ci, config in enumerate(configs):
                if config in seconds:
                    # each config on its own small vertical offset: equal values stay visible
                    dy = 0.16 * (ci - (len(configs) - 1) / 2)
                    ax.plot(seconds[config], y + dy, markers[ci % 8], color=colors[ci % 10], ms=7,
                            alpha=0.85, zorder=4)  # fmt: skip
            text = f"FLOPs {_times(flops[0])}" + "".join(
                f" · {c} {_times(v)}" for c, v in seconds.items()
            )
            ax.text(1.01, y, text, transform=ax.get_yaxis_transform(), va="center", fontsize=7.5)
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(len(methods) - 0.5, -0.5)
        ax.set_yticks(range(len(methods)), [_label(m) for m in methods])
        ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
        ax.set_title(f"{_title(model)}: run cost × one dense run (log scale)", fontsize=10)
        ax.set_xlabel("× one dense run of the same model (seconds: same config)")
        ax.grid(alpha=0.3, axis="x", which="both")
    handles = [Line2D([], [], ls="", marker="D", color="black", label="training FLOPs (snn)")]
    handles += [
        Line2D([], [], ls="", marker=markers[ci % 8], color=colors[ci % 10],
               label=f"measured GPU seconds, config {c}")
        for ci, c in enumerate(configs)
    ]  # fmt: skip
    if caption is None:
        caption = (
            f"Target sparsity {_pct(sparsity)}; each method's whole run with its layer-wise "
            "distribution. FLOPs: snn convention. GPU seconds: each schedule priced with the "
            "measured step time at its overall density (interpolated between the measured "
            "densities). Both relative to the dense run of the same model (and config)."
        )
    title = f"Run cost in FLOPs and in measured GPU seconds, {_pct(sparsity)} sparsity"
    return _save(fig, path, title, caption, handles)
