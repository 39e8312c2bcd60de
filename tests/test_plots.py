"""The report's plots as a reader sees them: layer names that map to the model, every method's line
visible, bar lengths that are not stacked on a log axis, no text on top of other text or cut off,
and the assumptions written on every figure (and in the PNG's Description)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.text import Text
from PIL import Image

from ndsnn_triton.profiler import plots, report
from ndsnn_triton.profiler.claim import PROTOCOLS, Assumptions, ClaimRow, setup_model
from ndsnn_triton.profiler.cost import RunCost
from ndsnn_triton.sparse.schedules import Schedule

A = Assumptions(epochs=30, rewind_epoch=2, batch=128, dataset_size=1280, delta_t=10)
SPE = A.steps_per_epoch  # 10
E_STEPS = A.epochs * SPE
METHODS = ("dense", "static", "set", "rigl", "ndsnn", "lth")
ROUNDS = 5


@pytest.fixture(scope="module")
def tables():
    return {m: setup_model(m, A).table for m in ("vgg16", "resnet19")}


def _run(method: str, segments: list[tuple[int, float]]) -> RunCost:
    """A run of ``segments`` (iterations, FLOPs per iteration)."""
    ends = np.cumsum([s for s, _ in segments])
    zero = np.zeros(1)
    cumulative = np.cumsum([s * c for s, c in segments]).astype(float)
    return RunCost(method, "snn", int(ends[-1]), zero, zero, zero, 0.0, cumulative, ends, 0.0, 0)


def _runs() -> dict[str, RunCost]:
    """Shaped like the real ones: LTH's round 0 is the dense run, SET costs what static does, RigL
    a little more, NDSNN in between."""
    sparse = [(E_STEPS, 0.02)]
    rigl = [(9, 0.02) if i % 2 == 0 else (1, 0.2) for i in range(2 * E_STEPS // 10)]
    ndsnn = [(10, 1.0 - 0.99 * (1 - (1 - i / A.epochs) ** 3)) for i in range(A.epochs)]
    lth = [(E_STEPS, 1.0)] + [
        ((A.epochs - A.rewind_epoch) * SPE, 0.75**k) for k in range(1, ROUNDS + 1)
    ]
    segs = {
        "dense": [(E_STEPS, 1.0)],
        "static": sparse,
        "set": sparse,
        "rigl": rigl,
        "ndsnn": ndsnn,
        "lth": lth,
    }
    return {m: _run(m, segs[m]) for m in METHODS}


def _schedules(names: list[str], density: float = 0.01) -> dict[str, Schedule]:
    sizes = [100] * len(names)
    out = {}
    for m in METHODS:
        s = Schedule(m, list(names), sizes, phases=[("train", E_STEPS)])
        if m == "dense":
            s.append(E_STEPS, [1.0] * len(names), False)
        elif m == "ndsnn":
            for i in range(A.epochs):
                d = density + (1 - density) * (1 - (i + 1) / A.epochs) ** 3
                s.append(SPE, [d] * len(names), False)
        elif m == "lth":
            s.phases = [("round 0", E_STEPS)] + [
                (f"round {k}", (A.epochs - A.rewind_epoch) * SPE) for k in range(1, ROUNDS + 1)
            ]
            for k, (_, steps) in enumerate(s.phases):
                s.append(steps, [max(0.75**k, density)] * len(names), False)
        else:
            s.append(E_STEPS, [density] * len(names), False)
        out[m] = s
    return out


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plot functions close, kept open for inspection (closed afterwards)."""
    close = plots.plt.close
    kept = []
    monkeypatch.setattr(plots.plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def _texts(fig) -> list[tuple[str, object]]:
    """(text, window extent) of every visible non-empty text but tick labels."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [a for ax in fig.axes for a in (ax, *ax.child_axes)]
    ticks = {
        id(t)
        for ax in axes
        for t in ax.get_xticklabels(which="both") + ax.get_yticklabels(which="both")
    }
    return [
        (t.get_text(), Text.get_window_extent(t, renderer))  # the text alone, not its arrow
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and id(t) not in ticks
    ]


def _assert_readable(fig) -> None:
    """No two texts overlap and none is cut off by the figure's edge."""
    boxes = _texts(fig)
    width, height = fig.bbox.width, fig.bbox.height
    for text, b in boxes:
        assert b.x0 >= -1 and b.y0 >= -1 and b.x1 <= width + 1 and b.y1 <= height + 1, (
            f"cut off: {text!r}"
        )
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1 :]:
            overlap = a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1
            assert not overlap, f"{ta!r} overlaps {tb!r}"


def _all_text(fig) -> str:
    return "\n".join(t for t, _ in _texts(fig))


def _assert_caption_drawn(fig, caption: str) -> None:
    assert " ".join(caption.split()) in " ".join(_all_text(fig).split())


def _png_caption(path) -> str:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    return Image.open(path).text["Description"]


def test_display_names_map_vgg16_to_conv1_to_conv13_and_fc(tables):
    names = plots.display_names("vgg16", tables["vgg16"].names)
    assert names == [f"conv{i}" for i in range(1, 14)] + ["fc"]


def test_display_names_map_resnet19_to_stages_and_blocks(tables):
    paths = tables["resnet19"].names
    names = plots.display_names("resnet19", paths)
    assert len(set(names)) == len(names) == len(paths)
    assert names[0] == "stem" and names[-2:] == ["fc1", "fc2"]
    assert names[1:4] == ["s1b1.conv1", "s1b1.conv2", "s1b1.shortcut"]
    assert {"s2b1.shortcut", "s3b1.shortcut", "s1b3.conv2", "s3b2.conv2"} <= set(names)
    assert names[paths.index("layers.3.conv1")] == "s2b1.conv1"


def test_display_names_fall_back_to_the_module_path():
    assert plots.display_names("mlp", ["body.0", "head"]) == ["body.0", "head"]
    # a name that would not be unique keeps its path
    assert plots.display_names("x", ["features.1", "conv1", "classifier"]) == [
        "features.1",
        "conv1",
        "fc",
    ]


def test_cumulative_cost_shows_every_method_and_labels_the_coinciding_ones(tmp_path, figures):
    runs = {"vgg16": _runs(), "resnet19": _runs()}
    units = {m: float(E_STEPS) for m in runs}
    caption = report.plot_caption(A, sparsity=0.99, lth_rounds=ROUNDS)
    path = plots.cumulative_cost(
        runs, units, SPE, 0.99, "snn", tmp_path / "c.png", caption, A.epochs
    )
    assert _png_caption(path) == caption
    (fig,) = figures
    _assert_readable(fig)
    _assert_caption_drawn(fig, caption)
    left = fig.axes[0]
    styles = {
        (line.get_color(), str(line.get_linestyle()), line.get_linewidth())
        for line in left.get_lines()
        if len(line.get_xdata()) > 2
    }
    assert len(styles) == len(METHODS)  # six lines, no two drawn alike
    assert left.get_yscale() == "log" and left.get_xlim() == (0, A.epochs)
    labels = [t.get_text() for t in left.texts]
    assert any(t.startswith("dense = LTH round 0  1.00×") for t in labels), labels
    assert any(t.startswith("static = SET  0.020×") for t in labels), labels
    assert any(t.startswith("RigL") for t in labels) and any(t.startswith("NDSNN") for t in labels)
    whole = fig.axes[1]
    assert whole.get_xlim()[1] >= (E_STEPS + ROUNDS * (A.epochs - A.rewind_epoch) * SPE) / SPE


def test_density_curves_label_coinciding_methods(tmp_path, figures):
    schedules = {"vgg16": _schedules(["a", "b"]), "resnet19": _schedules(["a", "b"])}
    caption = report.plot_caption(A, sparsity=0.99, convention=None, lth_rounds=ROUNDS)
    path = plots.density_curves(schedules, SPE, 0.99, tmp_path / "d.png", caption, A.epochs)
    assert _png_caption(path) == caption
    (fig,) = figures
    _assert_readable(fig)
    _assert_caption_drawn(fig, caption)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "dense = LTH round 0: 1 throughout" in labels
    assert "static = SET = RigL: 0.01 throughout" in labels
    assert "no FLOP convention" in _all_text(fig)


def test_layer_breakdown_draws_unstacked_bars_named_for_the_model(tmp_path, figures, tables):
    table = tables["resnet19"]
    n = len(table.names)
    rng = np.random.default_rng(0)
    dense = {k: rng.uniform(1e8, 1e10, n) for k in ("forward", "input_grad", "weight_grad")}
    dense["input_grad"][0] = 0.0  # the first layer computes no input gradient
    densities = rng.uniform(0.0, 1.0, n)
    densities[2] = 0.0
    sparse = {k: v * densities for k, v in dense.items()}
    caption = report.plot_caption(A, sparsity=0.99, distribution="global", lth=None)
    path = plots.layer_breakdown(
        table, sparse, dense, "resnet19", "t", tmp_path / "l.png", caption, densities
    )
    assert _png_caption(path) == caption
    (fig,) = figures
    _assert_readable(fig)
    _assert_caption_drawn(fig, caption)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    bars = ax.patches
    assert len(bars) == 3 * n and all(b.get_y() == 0 for b in bars)  # side by side, not stacked
    heights = np.array([b.get_height() for b in bars])
    expected = np.concatenate([sparse[k] for k in ("forward", "input_grad", "weight_grad")])
    assert np.allclose(np.nan_to_num(heights), expected)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == plots.display_names("resnet19", table.names)


def test_ratio_and_measured_plots_carry_their_captions(tmp_path, figures):
    ratios = {
        m: {p: [(0.9, 0.3 / (i + 1)), (0.99, 0.25 / (i + 1))] for i, p in enumerate(PROTOCOLS)}
        for m in ("vgg16", "resnet19")
    }
    caption = report.plot_caption(
        A, sparsity=None, distribution="global", lth="protocols", levels=(0.9, 0.99)
    )
    path = plots.ratio_vs_sparsity(
        ratios, {"vgg16": 0.3135}, "snn", "global", tmp_path / "r.png", caption
    )
    assert _png_caption(path) == caption
    rows = [
        {"model": m, "config": c, "method": k, "flops_x_dense": f, "seconds_x_dense": f * s}
        for m in ("vgg16", "resnet19")
        for c, s in (("auto_bf16", 2.0), ("dense_bf16", 5.0))
        for k, f in zip(METHODS, (1.0, 0.02, 0.02, 0.021, 0.3, 5.0), strict=True)
    ]
    path = plots.flops_vs_seconds(rows, 0.99, tmp_path / "m.png")
    assert "snn convention" in _png_caption(path) and "99%" in _png_caption(path)
    for fig in figures:
        _assert_readable(fig)
    _assert_caption_drawn(figures[0], caption)
    assert "paper: 31.35%" in _all_text(figures[0])


def test_report_plots_write_names_paths_and_assumptions(tmp_path, tables):
    """``report._plots``: the layer JSON has display names and module paths; every PNG's caption
    states model-independent assumptions (E, batch, T, spike rate, distribution, sparsity)."""
    setups = [SimpleNamespace(name=m, table=t) for m, t in tables.items()]
    runs = {m: _runs() for m in tables}
    schedules = {m: _schedules(t.names) for m, t in tables.items()}
    rows = [
        ClaimRow(m, p, "snn", "global", s, 1.0, 4.0, 0.25, 0.3)
        for m in tables
        for p in PROTOCOLS
        for s in (0.9, 0.99)
    ]
    units = {m: float(E_STEPS) for m in tables}
    figures = report._plots(tmp_path, setups, A, rows, runs, schedules, units, 0.99, [0.9, 0.99])
    assert {p.name for p in figures} == {
        "cumulative_cost.png",
        "density.png",
        "layers_vgg16.png",
        "layers_resnet19.png",
        "ratio_vs_sparsity.png",
    }
    for p in figures:
        caption = _png_caption(p)
        for fact in ("E = 30 epochs", "batch 128", "T = 5", "Layer-wise distribution"):
            assert fact in caption, (p.name, fact)
        if p.name != "density.png":
            assert "snn convention" in caption and "r = 0.1" in caption, p.name
        if p.name != "ratio_vs_sparsity.png":
            assert "target sparsity 99%" in caption, p.name
    for name in ("cumulative_cost.png", "density.png"):
        caption = _png_caption(tmp_path / name)
        assert "NDSNN and LTH global magnitude" in caption and "SET and RigL ERK" in caption
        assert f"then {ROUNDS} rounds" in caption and "epoch 2 (rewind)" in caption
    layers = json.loads((tmp_path / "layers_vgg16.json").read_text())
    assert layers["module_paths"] == layers["layers"] == tables["vgg16"].names
    assert layers["display_names"] == [f"conv{i}" for i in range(1, 14)] + ["fc"]
    assert set(layers["sparse"]) == set(layers["dense"]) == {"forward", "input_grad", "weight_grad"}
    resnet = json.loads((tmp_path / "layers_resnet19.json").read_text())
    assert resnet["display_names"][0] == "stem" and resnet["display_names"][-1] == "fc2"
    cumulative = json.loads((tmp_path / "cumulative_cost.json").read_text())
    assert set(cumulative["vgg16"]) == set(METHODS)
    assert {"iteration", "cumulative_flops"} <= set(cumulative["vgg16"]["lth"])
