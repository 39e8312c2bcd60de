"""The ``kernel`` cost convention: MACs the sparse Triton kernels execute on the spike structure.

Hand-computed terms on a tiny layer table; equality with ``snn`` when the kernels' factors equal
the spike rate; the i.i.d. spike model against a Monte-Carlo estimate of
:func:`ndsnn_triton.kernels.work.work_factors`; the monitor's device-side factors; the report and
``ndsnn profile`` outputs; clear errors for bad spike-structure files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ndsnn_triton.backend import aten_reference
from ndsnn_triton.kernels import work
from ndsnn_triton.models import build_model
from ndsnn_triton.nn import reset_net
from ndsnn_triton.nn.layers import SpikeConv2d, SpikeLinear
from ndsnn_triton.profiler.cost import (
    CONVENTIONS,
    KernelWork,
    integrate,
    rate_vector,
    run_cost,
    step_cost,
    step_terms,
    with_kernel_work,
)
from ndsnn_triton.profiler.kernel_work import (
    LayerGeometry,
    StructureFileError,
    iid_factors,
    iid_work,
    load_structure,
    measured_work,
    trace_geometry,
)
from ndsnn_triton.profiler.layers import LayerInfo, LayerTable, trace_layers
from ndsnn_triton.profiler.monitor import SpikeRateMonitor
from ndsnn_triton.profiler.report import report_model
from ndsnn_triton.profiler.run_profile import (
    format_profile,
    has_work_factors,
    mean_work_factors,
    profile_run,
)
from ndsnn_triton.sparse.schedules import Schedule

SMALL = {"num_classes": 10, "T": 2, "in_channels": 1, "image_size": 8}
FAST = {"sparsities": (0.9,), "epochs": 2, "rewind_epoch": 1, "dataset_size": 256, "batch": 32}


def _layer(name, macs, timesteps, spike, input_grad, kind="conv") -> LayerInfo:
    return LayerInfo(name, kind, (1,), 1, macs, timesteps, spike, input_grad, 1.0, True)


@pytest.fixture
def tiny_table() -> LayerTable:
    """An analog stem (τ = 1, no input gradient), a stride-2 spike conv and a spike linear."""
    layers = [
        _layer("stem", 100, 1, False, False),
        _layer("conv", 50, 2, True, True),
        _layer("fc", 8, 2, True, True, "linear"),
    ]
    return LayerTable(layers, [], 1)


@pytest.fixture
def tiny_work() -> KernelWork:
    return KernelWork(
        forward=np.array([1.0, 0.4, 0.7]),
        weight_grad=np.array([0.9, 0.3, 0.2]),
        input_grad=np.array([1.0, 4.0, 1.0]),
        rate=np.array([1.0, 0.1, 0.2]),
        source="hand-made",
    )


def test_kernel_terms_by_hand(tiny_table, tiny_work):
    batch, d = 3, np.array([0.5, 0.25, 1.0])
    # base = 2·B·τ·M: stem 2·3·1·100 = 600, conv 2·3·2·50 = 600, fc 2·3·2·8 = 96
    f, i, w = step_terms(tiny_table, d, np.ones(3), batch, "kernel", False, tiny_work)
    # the analog stem runs cuDNN's dense path: 2·B·τ·M per term, whatever its density
    assert f.tolist() == [600.0, 600 * 0.25 * 0.4, 96 * 1.0 * 0.7]
    assert i.tolist() == [0.0, 600 * 0.25 * 4.0, 96 * 1.0 * 1.0]
    assert w.tolist() == [600.0, 600 * 0.25 * 0.3, 96 * 1.0 * 0.2]
    # a dense-gradient step runs cuDNN dense: 2·B·τ·M, whatever the mask and the spikes
    _, _, w_dense = step_terms(tiny_table, d, np.ones(3), batch, "kernel", True, tiny_work)
    assert w_dense.tolist() == [600.0, 600.0, 96.0]
    # attached to the table, the same numbers come out of step_cost without passing them
    table = with_kernel_work(tiny_table, tiny_work)
    cost = step_cost(table, dict(zip(table.names, d, strict=True)), 0.5, batch, "kernel")
    assert cost.forward.tolist() == f.tolist() and cost.weight_grad.tolist() == w.tolist()
    assert "kernel" in CONVENTIONS


def test_kernel_per_segment_factors_go_with_the_steps(tiny_table, tiny_work):
    """``[S, L]`` factors (one row per logged segment) integrate like ``[S, L]`` rates."""
    d = np.array([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5]])
    rows = KernelWork(
        np.stack([tiny_work.forward, 2 * tiny_work.forward / 3]),
        np.stack([tiny_work.weight_grad, tiny_work.weight_grad]),
        tiny_work.input_grad,
        np.stack([tiny_work.rate, tiny_work.rate]),
    )
    run = integrate(
        tiny_table,
        np.array([2, 5]),
        d,
        np.array([False, True]),
        np.ones(3),
        1,
        "kernel",
        kernel=rows,
    )
    by_hand = 0.0
    for s, (steps, dense) in enumerate([(2, False), (5, True)]):
        one = KernelWork(rows.forward[s], rows.weight_grad[s], rows.input_grad, rows.rate[s])
        f, i, w = step_terms(tiny_table, d[s], np.ones(3), 1, "kernel", dense, one)
        by_hand += steps * (f + i + w).sum()
    assert run.total == pytest.approx(by_hand, rel=1e-15)
    assert run.dense_grad_steps == 5


def test_kernel_equals_snn_when_the_factors_are_the_rate():
    """Forward factor = weight-gradient factor = r (no silent-block overhead, stride 1) and
    input positions = output positions: kernel and snn agree exactly on ordinary steps (the
    analog stem at density 1, where both price it dense)."""
    table = trace_layers(build_model("small", **SMALL), (1, 1, 8, 8))
    rates = {layer.name: 0.05 * (j + 1) for j, layer in enumerate(table.layers)}
    r = rate_vector(table, rates)
    same = KernelWork(r, r, np.ones(len(r)), r)
    densities = {layer.name: 0.3 if layer.spike_input else 1.0 for layer in table.layers}
    snn = step_cost(table, densities, rates, 16, "snn")
    ker = step_cost(table, densities, rates, 16, "kernel", kernel=same)
    for term in ("forward", "input_grad", "weight_grad"):
        assert getattr(ker, term).tolist() == getattr(snn, term).tolist()
    sched = Schedule("x", table.names, [1] * len(table.names))
    sched.append(7, [1.0] * len(table.names), False)
    sched.append(5, [0.2 if layer.spike_input else 1.0 for layer in table.layers], False)
    assert run_cost(table, sched, rates, 8, "kernel", same).total == (
        run_cost(table, sched, rates, 8, "snn").total
    )


def test_kernel_without_factors_is_a_clear_error(tiny_table):
    with pytest.raises(ValueError, match="'kernel' needs each layer's measured work factors"):
        step_cost(tiny_table, None, 0.1, 1, "kernel")
    bad = KernelWork(np.ones(2), np.ones(2), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="cover 2 layers, the table 3"):
        step_cost(tiny_table, None, 0.1, 1, "kernel", kernel=bad)
    with pytest.raises(ValueError, match="finite and >= 0"):
        KernelWork(np.array([-1.0]), np.ones(1), np.ones(1), np.ones(1))


def _geometry(c, oc, h, k, stride, pad, timesteps=1) -> LayerGeometry:
    oh, ow = work.out_hw(h, h, k, k, (stride, stride), (pad, pad), (1, 1))
    return LayerGeometry(
        "l", "conv", c, oc, (h, h), (oh, ow), (k, k), (stride,) * 2, (pad,) * 2, (1, 1), timesteps
    )


@pytest.mark.parametrize(
    ("geometry", "rate"),
    [
        (_geometry(4, 8, 5, 3, 1, 1), 0.03),  # a 5×5 map
        (_geometry(4, 8, 2, 3, 1, 1), 0.1),  # 2×2 maps: the smallest the forward skips
        (_geometry(3, 4, 6, 3, 2, 1), 0.1),  # stride 2: every input row usable
        (_geometry(3, 4, 6, 1, 2, 0), 0.1),  # 1×1 stride 2: every other row usable
        (
            LayerGeometry(
                "fc", "linear", 16, 10, (1, 1), (1, 1), (1,) * 2, (1,) * 2, (0,) * 2, (1,) * 2, 2
            ),
            0.02,
        ),
    ],
)
def test_iid_model_matches_monte_carlo(geometry, rate):
    batch = 12
    n = geometry.timesteps * batch
    gen = torch.Generator().manual_seed(0)
    draws = [
        work.work_factors(
            (torch.rand(n, geometry.in_channels, *geometry.in_hw, generator=gen) < rate).float(),
            geometry.kernel_size,
            geometry.stride,
            geometry.padding,
            geometry.dilation,
        )
        for _ in range(40)
    ]
    forward, weight_grad = iid_factors(geometry, rate)
    assert np.mean([f.forward for f in draws]) == pytest.approx(float(forward), abs=0.02)
    assert np.mean([f.weight_grad for f in draws]) == pytest.approx(float(weight_grad), rel=0.08)


def test_iid_model_is_the_silent_map_formula():
    geometry = _geometry(16, 32, 4, 3, 1, 1, timesteps=5)  # 4×4 maps: the forward skips
    for r in (0.0, 0.01, 0.1, 1.0):
        forward, weight_grad = iid_factors(geometry, r)
        assert float(forward) == pytest.approx(1 - (1 - r) ** 16, rel=1e-12)
        assert float(weight_grad) == pytest.approx(r, rel=1e-12)
    linear = LayerGeometry(
        "fc", "linear", 16, 10, (1, 1), (1, 1), (1, 1), (1, 1), (0, 0), (1, 1), 2
    )
    assert float(iid_factors(linear, 0.1)[0]) == 1.0  # 1×1 maps are not skipped
    forward, _ = iid_factors(geometry, np.array([[0.0, 1.0], [0.5, 0.5]]))
    assert forward.shape == (2, 2) and forward[0, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="spike rate must lie in"):
        iid_factors(geometry, 1.5)


def test_traced_geometry_of_a_strided_model():
    model = build_model("resnet19", num_classes=10, T=2)
    geometry = trace_geometry(model, (1, 3, 32, 32))
    table = trace_layers(model, (1, 3, 32, 32))
    assert list(geometry) == table.names
    down = geometry["layers.0.conv1"]
    assert (down.in_hw, down.out_hw, down.stride, down.timesteps) == ((32, 32), (16, 16), (2, 2), 2)
    assert down.input_grad_factor == 4.0 and down.weight_grad_bound == 4.0
    short = geometry["layers.0.shortcut.0"]
    assert short.input_grad_factor == 4.0 and short.weight_grad_bound == 1.0
    assert geometry["encoder.conv"].timesteps == 1 and geometry["fc2"].kind == "linear"
    for layer in table.layers:  # the traced geometry gives the table's MACs back
        g = geometry[layer.name]
        assert layer.macs == (
            g.out_channels * g.in_channels * g.kernel_size[0] * g.kernel_size[1] * g.out_positions
        )


def test_monitor_work_factors_equal_the_work_model():
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "conv": SpikeConv2d(4, 6, 3, stride=2, padding=1),
            "same": SpikeConv2d(6, 5, 3, padding="same"),
            "fc": SpikeLinear(5, 3),
        }
    )
    xs = [(torch.rand(3, 2, 4, 9, 9) < 0.1).float() for _ in range(2)]
    xs[1][:, :, 1] = 0  # a silent channel
    y = (torch.rand(3, 2, 6, 7, 7) < 0.2).float()
    z = (torch.rand(3, 2, 5) < 0.2).float()
    with SpikeRateMonitor(model) as monitor, aten_reference():
        model["same"](y)
        model["fc"](z)
        model["conv"](xs[0])
        one = monitor.work_factors()
        model["conv"](xs[1])
    assert one["same"] == work.work_factors(y.flatten(0, 1), (3, 3), (1, 1), (1, 1), (1, 1))
    assert one["fc"] == work.work_factors(z.reshape(-1, 5))
    assert one["conv"] == work.work_factors(xs[0].flatten(0, 1), (3, 3), (2, 2), (1, 1), (1, 1))
    # over two forwards of equal shape: sums of lanes and events over the summed dense work
    both = monitor.work_factors()["conv"]
    each = [work.work_factors(x.flatten(0, 1), (3, 3), (2, 2), (1, 1), (1, 1)) for x in xs]
    for key in ("rate", "forward", "weight_grad"):
        assert getattr(both, key) == pytest.approx(np.mean([getattr(f, key) for f in each]))
    assert monitor.rates()["conv"] == both.rate
    monitor.reset()
    assert monitor.work_factors() == {} and monitor.rates() == {}
    with SpikeRateMonitor(model, work=False) as plain, aten_reference():
        model["fc"](z)
    assert plain.work_factors() == {} and plain.rates()["fc"] == one["fc"].rate


def _structure_doc(model_name: str, table: LayerTable, geometry, scale: float = 1.0) -> dict:
    layers = []
    for j, layer in enumerate(table.layers):
        rate = 1.0 if not layer.spike_input else 0.05 + 0.02 * j
        bound = geometry[layer.name].weight_grad_bound
        layers.append(
            {
                "name": layer.name,
                "kind": layer.kind,
                "spike_input": layer.spike_input,
                "rate": rate,
                "work": {"forward": min(1.0, scale * 3 * rate), "weight_grad": rate * bound},
            }
        )
    state = {"train": {"layers": layers}, "eval": {"layers": layers}}
    return {
        "environment": {"torch": torch.__version__},
        "dataset": "fashion-mnist",
        "models": {model_name: {"training": {"batch": 32, "T": 4}, "states": {"trained": state}}},
    }


def test_report_shows_three_conventions_and_kernel_ratios(tmp_path):
    model = build_model("small", **SMALL)
    table = trace_layers(model, (1, 1, 8, 8))
    geometry = trace_geometry(model, (1, 1, 8, 8))
    path = tmp_path / "structure.json"
    path.write_text(json.dumps(_structure_doc("small", table, geometry)))
    out = tmp_path / "report"
    report = report_model(
        model, out, name="small", input_shape=(1, 8, 8), spike_structure=path, **FAST
    )
    assert report["conventions"] == ["snn", "rigl", "kernel"]
    assert {r["convention"] for r in report["claim_check"]} == {"snn", "rigl", "kernel"}
    kernel_rows = [r for r in report["method_costs"] if r["convention"] == "kernel"]
    assert {r["method"] for r in kernel_rows} == {"dense", "static", "set", "rigl", "ndsnn", "lth"}
    assert next(r for r in kernel_rows if r["method"] == "dense")["x_dense"] == pytest.approx(1.0)
    k = report["kernel_work"]["small"]
    assert k["kind"] == "measured" and "trained/train" in k["source"]
    assert "fashion-mnist" in report["assumptions"]["kernel_spike_structure"]
    for row, layer in zip(k["layers"], table.layers, strict=True):
        assert row["layer"] == layer.name
        if layer.spike_input:  # the snn ideal on the same spikes: ratio = factor / rate
            assert row["forward_ratio"] == pytest.approx(min(1.0, 3 * row["rate"]) / row["rate"])
            assert row["weight_grad_ratio"] == pytest.approx(1.0)
    md = (out / "report.md").read_text()
    assert "kernel ×dense" in md and "kernel/snn forward" in md and "| kernel |" in md
    csv_text = (out / "kernel_work.csv").read_text()
    assert csv_text.startswith("model,layer,") and "forward_ratio" in csv_text
    # the default for a user's model is the i.i.d. model at the assumed rate
    iid = report_model(model, tmp_path / "iid", name="small", input_shape=(1, 8, 8), **FAST)
    assert iid["kernel_work"]["small"]["kind"] == "iid"
    assert "i.i.d." in iid["kernel_work"]["small"]["source"]


def _write_run(run: Path, records: list[dict], model_kwargs: dict) -> None:
    model = build_model("small", **model_kwargs)
    table = trace_layers(model, (1, 1, 8, 8))
    run.mkdir()
    config = {
        "model": "small",
        "model_kwargs": model_kwargs,
        "train": {"batch_size": 16},
        "method": {"method": "static"},
        "layers": {n: [1] for n in table.names},
    }
    (run / "config.json").write_text(json.dumps(config))
    sched = Schedule("static", table.names, [1] * len(table.names))
    sched.append(4, [0.5] * len(table.names), False)
    (run / "schedule.json").write_text(json.dumps(sched.to_dict()))
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_profile_uses_logged_work_factors_or_the_iid_model(tmp_path):
    table = trace_layers(build_model("small", **SMALL), (1, 1, 8, 8))
    names = table.names
    rates = {
        n: (1.0 if not layer.spike_input else 0.2)
        for n, layer in zip(names, table.layers, strict=True)
    }
    factors = {
        n: {"rate": rates[n], "forward": 0.5 if rates[n] < 1 else 1.0, "weight_grad": rates[n]}
        for n in names
    }
    base = {"densities": dict.fromkeys(names, 0.5), "spike_rates": rates, "dense_grad": False}
    old = [{"step": s, **base} for s in (0, 3)]  # a log written before work factors existed
    new = [{**r, "work_factors": factors} for r in old]
    _write_run(tmp_path / "old", old, SMALL)
    _write_run(tmp_path / "new", new, SMALL)
    geometry = trace_geometry(build_model("small", **SMALL), (1, 1, 8, 8))

    result = profile_run(tmp_path / "new")
    assert set(result["conventions"]) == {"snn", "rigl", "kernel"}
    assert result["work_factors_logged"]
    logged = KernelWork(
        np.array([factors[n]["forward"] for n in names]),
        np.array([factors[n]["weight_grad"] for n in names]),
        np.array([geometry[n].input_grad_factor for n in names]),
        rate_vector(table, rates),
    )
    by_hand = step_cost(table, base["densities"], rates, 16, "kernel", kernel=logged).total * 4
    kernel = result["conventions"]["kernel"]
    assert kernel["measured_schedule_flops"] == pytest.approx(by_hand, rel=1e-12)
    assert kernel["measured_over_predicted"] == pytest.approx(1.0, rel=1e-12)
    text = format_profile(result)
    assert "kernel" in text and "logged work factors" in text and "fwd/r" in text

    result = profile_run(tmp_path / "old")
    assert not result["work_factors_logged"]
    iid = iid_work(table, geometry, rate_vector(table, rates), 16)
    by_hand = step_cost(table, base["densities"], rates, 16, "kernel", kernel=iid).total * 4
    assert result["conventions"]["kernel"]["measured_schedule_flops"] == pytest.approx(
        by_hand, rel=1e-12
    )
    assert "i.i.d." in result["kernel_sources"]["measured"]


def test_trainer_logs_work_factors(tmp_path):
    from ndsnn_triton.sparse import build_method
    from ndsnn_triton.train import TrainConfig, Trainer, load_dataset

    torch.manual_seed(0)
    model = build_model("small", num_classes=10, T=2, in_channels=1, image_size=8)
    config = TrainConfig(epochs=1, batch_size=64, progress=False, max_steps=2)
    trainer = Trainer(
        model, build_method("static", density=0.5), load_dataset("digits"), config, tmp_path
    )
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    first = records[0]
    assert set(first["work_factors"]) == set(first["spike_rates"])
    for name, f in first["work_factors"].items():
        assert f["rate"] == pytest.approx(first["spike_rates"][name])
        assert f["rate"] <= f["forward"] + 1e-12 and f["forward"] <= 1.0
    assert has_work_factors(records)
    assert mean_work_factors(records).keys() == first["spike_rates"].keys()


@pytest.fixture
def small_setup():
    model = build_model("small", **SMALL)
    table = trace_layers(model, (1, 1, 8, 8))
    geometry = trace_geometry(model, (1, 1, 8, 8))
    return model, table, geometry


def _bad(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(text)
    return path


def test_bad_structure_files_give_clear_errors(tmp_path, small_setup):
    model, table, geometry = small_setup
    good = _structure_doc("small", table, geometry)
    with pytest.raises(StructureFileError, match="is missing"):
        load_structure(tmp_path / "nope.json", "small")
    with pytest.raises(StructureFileError, match="not valid JSON"):
        load_structure(_bad(tmp_path, "{not json"), "small")
    with pytest.raises(StructureFileError, match="'models' object"):
        load_structure(_bad(tmp_path, "[]"), "small")
    path = _bad(tmp_path, json.dumps(good))
    with pytest.raises(StructureFileError, match=r"no model 'vgg16' \(it has \['small'\]\)"):
        load_structure(path, "vgg16")
    with pytest.raises(StructureFileError, match="no state 'init'"):
        load_structure(path, "small", "init/train")
    with pytest.raises(ValueError, match="STATE/MODE"):
        load_structure(path, "small", "trained")
    missing = json.loads(json.dumps(good))
    del missing["models"]["small"]["states"]["trained"]["train"]["layers"][1]
    structure = load_structure(_bad(tmp_path, json.dumps(missing)), "small")
    with pytest.raises(StructureFileError, match=r"no work factors for layers \['features.1'\]"):
        measured_work(table, geometry, structure)
    for field, value, message in [
        ("forward", 1.5, r"work.forward = 1.5 is out of range \[0, 1\]"),
        ("weight_grad", -0.1, "work.weight_grad = -0.1 is out of range"),
        ("weight_grad", 2.0, r"work.weight_grad = 2.0 is out of range \[0, 1\]"),
        ("forward", "x", "work.forward: expected a number"),
    ]:
        doc = json.loads(json.dumps(good))
        doc["models"]["small"]["states"]["trained"]["train"]["layers"][2]["work"][field] = value
        with pytest.raises(StructureFileError, match=f"layer features.5: {message}"):
            load_structure(_bad(tmp_path, json.dumps(doc)), "small", geometry=geometry)
    doc = json.loads(json.dumps(good))
    doc["models"]["small"]["states"]["trained"]["train"]["layers"][0]["rate"] = float("nan")
    with pytest.raises(StructureFileError, match="rate: expected a number"):
        load_structure(_bad(tmp_path, json.dumps(doc)), "small")
    # through the report: nothing written, the file's problem named
    with pytest.raises(StructureFileError, match="has no model 'small'"):
        report_model(
            model,
            tmp_path / "out",
            name="small",
            input_shape=(1, 8, 8),
            spike_structure=_bad(tmp_path, json.dumps({"models": {"x": {}}})),
            **FAST,
        )
    assert not (tmp_path / "out").exists()


def test_benchmark_result_layout_loads_and_agrees_with_the_monitor(tmp_path, small_setup):
    """A file as ``python -m bench.spike_structure`` writes it (``results`` rows with
    ``structure[state][mode]`` layer lists) loads, and its factors are the training monitor's."""
    from ndsnn_triton.profiler.spike_structure import spike_structure

    model, table, geometry = small_setup
    torch.manual_seed(3)
    batches = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(2)]
    with aten_reference():
        layers = spike_structure(model, batches, train=True)
        model.train()
        with SpikeRateMonitor(model) as monitor:
            for x, _ in batches:
                model(x)
                reset_net(model)
    row = {
        "case": "small",
        "model": "small",
        "dataset": "fashion-mnist",
        "batch": 8,
        "T": 2,
        "structure": {"trained": {"train": layers, "eval": layers}},
    }
    path = tmp_path / "spike_structure.json"
    path.write_text(json.dumps({"environment": {}, "results": [row]}))
    structure = load_structure(path, "small", "trained/train", geometry)
    assert structure.dataset == "fashion-mnist" and structure.training["batch"] == 8
    logged = monitor.work_factors()
    assert structure.layers.keys() == logged.keys()
    for name, f in structure.layers.items():
        assert f.rate == pytest.approx(logged[name].rate, rel=1e-12)
        assert f.forward == pytest.approx(logged[name].forward, rel=1e-12)
        assert f.weight_grad == pytest.approx(logged[name].weight_grad, rel=1e-12)
    work_ = measured_work(table, geometry, structure)
    assert work_.source.startswith("measured (spike_structure.json: small trained/train")
    bad = {"environment": {}, "results": [{"model": "small"}]}
    with pytest.raises(StructureFileError, match="result of small has no 'structure'"):
        load_structure(_bad(tmp_path, json.dumps(bad)), "small")


@pytest.mark.gpu
def test_cuda_monitor_hooks_make_no_host_sync_and_match_the_work_model():
    """On CUDA (Triton kernels), the work-factor hooks of a training step queue device work
    only, and the factors read back equal :func:`work.work_factors` of the same inputs."""
    from ndsnn_triton.nn import masked_layers, temporal_cross_entropy

    torch.manual_seed(0)
    model = build_model("vgg16", num_classes=10, T=2, image_size=32).cuda()
    x = torch.randn(8, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (8,), device="cuda")
    with SpikeRateMonitor(model) as monitor:
        temporal_cross_entropy(model(x), y).backward()  # warm-up: kernels, usable masks
        reset_net(model)
        monitor.reset()
        inputs: dict[str, torch.Tensor] = {}
        keep = [
            layer.register_forward_pre_hook(
                lambda _m, args, n=name: inputs.__setitem__(n, args[0].detach())
            )
            for name, layer in masked_layers(model)
        ]
        torch.cuda.synchronize()
        previous = torch.cuda.get_sync_debug_mode()
        try:
            torch.cuda.set_sync_debug_mode("error")
            temporal_cross_entropy(model(x), y).backward()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
            for handle in keep:
                handle.remove()
    factors = monitor.work_factors()
    for name, layer in masked_layers(model):
        v = inputs[name]
        if isinstance(layer, SpikeConv2d):
            expected = work.work_factors(
                v.flatten(0, 1),
                layer.kernel_size,
                layer.stride,
                layer._padding_ints,
                layer.dilation,
            )
        else:
            expected = work.work_factors(v.reshape(-1, v.shape[-1]))
        assert factors[name] == expected, name
