"""Cost model: layer table, step and run cost against hand-computed values and brute force,
measured counters (FlopCounterMode, fvcore), the claim check, `ndsnn report` and `ndsnn profile`."""

import contextlib
import json

import numpy as np
import pytest
import torch

from ndsnn_triton.backend import aten_reference
from ndsnn_triton.cli import main
from ndsnn_triton.models import resnet19, small_snn, vgg16
from ndsnn_triton.nn import dense_weight_grads, masked_layers
from ndsnn_triton.profiler import SpikeRateMonitor
from ndsnn_triton.profiler.claim import Assumptions, lth_cost, setup_model
from ndsnn_triton.profiler.cost import run_cost, step_cost
from ndsnn_triton.profiler.counters import flop_counter_training_step, fvcore_forward_macs
from ndsnn_triton.profiler.layers import trace_layers
from ndsnn_triton.sparse import build_method, random_masks
from ndsnn_triton.sparse.schedules import Schedule

# small_snn at 8x8, T=3: M_l by hand (Cout·Cin·k²·Hout·Wout; linear in·out)
SMALL_MACS = {
    "encoder.conv": 32 * 1 * 9 * 64,
    "features.1": 64 * 32 * 9 * 64,
    "features.5": 64 * 64 * 9 * 16,
    "classifier": 256 * 10,
}


@pytest.fixture(scope="module")
def small_table():
    return trace_layers(small_snn(10, T=3), (4, 1, 8, 8))


def test_layer_table_by_tracing(small_table):
    t = small_table
    assert t.names == list(SMALL_MACS) and t.batch == 4
    assert {layer.name: layer.macs for layer in t.layers} == SMALL_MACS
    assert [layer.timesteps for layer in t.layers] == [1, 3, 3, 3]  # static stem once
    assert [layer.spike_input for layer in t.layers] == [False, True, True, True]
    assert [layer.input_grad for layer in t.layers] == [False, True, True, True]
    assert [layer.weights for layer in t.layers] == [288, 18432, 36864, 2560]
    lif = [e for e in t.elementwise if e.kind == "lif"]
    assert lif[0].elements == 3 * 32 * 64  # first LIF: T x 32 channels x 8x8, per sample


def test_layer_table_of_the_big_models_and_plain_torch():
    assert (
        trace_layers(vgg16(), (1, 3, 32, 32)).macs_per_sample() == 313_201_664 * 5 - 4 * 1_769_472
    )
    assert (
        sum(layer.macs for layer in trace_layers(resnet19(), (1, 3, 32, 32)).layers) == 555_551_232
    )
    plain = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 16, 4)
    )
    t = trace_layers(plain, (2, 3, 4, 4))
    assert [
        (layer.macs, layer.timesteps, layer.spike_input, layer.maskable) for layer in t.layers
    ] == [
        (8 * 3 * 9 * 16, 1, False, False),
        (8 * 16 * 4, 1, False, False),
    ]


def test_step_cost_hand_computed(small_table):
    d = {"encoder.conv": 1.0, "features.1": 0.5, "features.5": 0.25, "classifier": 0.1}
    r = {"features.1": 0.2, "features.5": 0.4, "classifier": 0.5}
    B, T = 8, 3
    base = {n: 2 * B * (1 if n == "encoder.conv" else T) * m for n, m in SMALL_MACS.items()}
    rr = {"encoder.conv": 1.0, **r}
    snn = step_cost(small_table, d, r, B, "snn")
    np.testing.assert_allclose(snn.forward, [base[n] * d[n] * rr[n] for n in SMALL_MACS])
    np.testing.assert_allclose(
        snn.input_grad, [0.0] + [base[n] * d[n] for n in list(SMALL_MACS)[1:]]
    )
    np.testing.assert_allclose(snn.weight_grad, [base[n] * d[n] * rr[n] for n in SMALL_MACS])
    grow = step_cost(small_table, d, r, B, "snn", dense_grad=True)
    np.testing.assert_allclose(grow.weight_grad, [base[n] * rr[n] for n in SMALL_MACS])
    rigl = step_cost(small_table, d, r, B, "rigl")
    f = np.array([base[n] * d[n] for n in SMALL_MACS])
    np.testing.assert_allclose(rigl.forward, f)
    np.testing.assert_allclose(rigl.input_grad, f)
    assert rigl.total == pytest.approx(3 * f.sum())
    assert step_cost(small_table, d, r, B, "rigl", dense_grad=True).total == pytest.approx(
        2 * f.sum() + sum(base.values())
    )
    # the first layer's value: 2·8·1·18432 FLOPs forward at d=1 on analog input
    assert snn.forward[0] == 2 * 8 * 18432
    assert snn.elementwise > 0


def test_rigl_convention_gives_rigls_published_formula(small_table):
    """Over RigL's update window the mean step cost is (3 f_S ΔT + 2 f_S + f_D)/(ΔT + 1)."""
    model = small_snn(10, T=3)
    method = build_method(
        "rigl", density=0.2, delta_t=10, stop_fraction=1.0, distribution="uniform"
    )
    method.setup(
        model, steps_per_epoch=11, epochs=10
    )  # 110 iterations, updates at 10, 20, ..., 100
    cost = run_cost(small_table, method.schedule(), 1.0, batch=4, convention="rigl")
    realised = dict(zip(method.schedule().layer_names, method.current_densities(), strict=True))
    assert realised == pytest.approx({n: 0.2 for n in SMALL_MACS}, abs=0.002)
    f_s = step_cost(small_table, realised, 1.0, 4, "rigl").forward.sum()
    f_d = step_cost(small_table, None, 1.0, 4, "rigl").forward.sum()
    updates = 10
    expected = 3 * f_s * (110 - updates) + updates * (2 * f_s + f_d)
    assert cost.total == pytest.approx(expected)
    assert cost.dense_grad_steps == updates


def test_run_cost_equals_brute_force_per_iteration_sum(small_table):
    model = small_snn(10, T=3)
    method = build_method("ndsnn", density=0.05, delta_t=7, distribution="erk", t_end_fraction=0.6)
    method.setup(model, steps_per_epoch=9, epochs=11)
    schedule = method.schedule()
    rates = {"features.1": 0.15, "features.5": 0.3, "classifier": 0.25}
    for convention in ("snn", "rigl"):
        fast = run_cost(small_table, schedule, rates, batch=16, convention=convention)
        brute = sum(
            step_cost(
                small_table,
                dict(zip(schedule.layer_names, d, strict=True)),
                rates,
                16,
                convention,
                g,
            ).total
            for _, d, g in schedule.iter_steps()
        )
        assert fast.total == pytest.approx(brute, rel=1e-12)
        assert fast.steps == 99 and fast.cumulative[-1] == pytest.approx(brute, rel=1e-12)


@pytest.mark.parametrize("make", [vgg16, resnet19])
def test_analytic_equals_flop_counter_mode_on_aten_ops(make):
    """d = 1, r = 1: analytic snn == FlopCounterMode's aten conv + matmul count, exactly."""
    torch.manual_seed(0)
    model = make(T=2)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    with aten_reference():
        total, per_op = flop_counter_training_step(model, x, y)
    assert set(per_op) <= {"aten.convolution", "aten.convolution_backward", "aten.addmm", "aten.mm"}
    table = trace_layers(model, x)
    assert step_cost(table, None, 1.0, 2, "snn").total == total


@pytest.mark.parametrize("make", [vgg16, resnet19])
@pytest.mark.parametrize("dense_grad", [False, True])
def test_mask_and_spike_aware_counts_equal_analytic(make, dense_grad):
    torch.manual_seed(1)
    model = make(T=2)
    random_masks(model, 0.3, "erk", seed=2)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    with (
        SpikeRateMonitor(model) as monitor,
        dense_weight_grads(model) if dense_grad else contextlib.nullcontext(),
    ):
        total, per_op = flop_counter_training_step(model, x, y)
    assert all(op.startswith("ndsnn.") for op in per_op)
    table = trace_layers(model, x)
    densities = {name: layer.density for name, layer in masked_layers(model)}
    analytic = step_cost(table, densities, monitor.rates(), 2, "snn", dense_grad=dense_grad).total
    assert total == pytest.approx(analytic, rel=1e-9, abs=len(table.layers) * 3)
    dense_total = step_cost(table, None, 1.0, 2, "snn").total
    assert total < 0.5 * dense_total  # the masks and spikes really are counted


def test_fvcore_counts_forward_macs_one_per_mac():
    model = vgg16(T=2)
    x = torch.randn(2, 3, 32, 32)
    table = trace_layers(model, x)
    assert fvcore_forward_macs(model, x) == 2 * table.macs_per_sample()
    assert step_cost(table, None, 1.0, 2, "snn").forward.sum() == 2 * fvcore_forward_macs(model, x)


def test_lth_protocols_against_closed_form():
    a = Assumptions(epochs=10, rewind_epoch=2, batch=50, dataset_size=500, spike_rate=0.2)
    setup = setup_model("resnet19", a)
    table = setup.table
    per_density = lambda d: step_cost(table, {n: d for n in table.names}, 1.0, 50, "rigl").total  # noqa: E731
    spe = 10
    # full IMP to 90%: round 0 dense 10 epochs, rounds 1..8 at 0.75^k (the last exactly 0.1), 8 epochs each
    densities = [0.75**k for k in range(8)] + [0.1]
    expected = 10 * spe * per_density(1.0) + sum(8 * spe * per_density(d) for d in densities[1:])
    assert lth_cost(setup, "full-imp", 0.1, [0.1], "uniform", "rigl", a) == pytest.approx(
        expected, rel=1e-12
    )
    expected = 10 * spe * per_density(1.0) + 8 * spe * per_density(0.1)
    assert lth_cost(setup, "dense-plus-retrain", 0.1, [0.1], "uniform", "rigl", a) == pytest.approx(
        expected, rel=1e-12
    )
    full_to_1 = lth_cost(setup, "full-imp", 0.01, [0.01], "uniform", "rigl", a)
    assert lth_cost(
        setup, "amortized", 0.1, [0.1, 0.05, 0.01], "uniform", "rigl", a
    ) == pytest.approx(full_to_1 / 3)
    with pytest.raises(ValueError, match="unknown LTH protocol"):
        lth_cost(setup, "half-imp", 0.1, [0.1], "uniform", "rigl", a)
    with pytest.raises(ValueError, match="unknown cost convention"):
        run_cost(table, Schedule("x", table.names, [1] * len(table.names)), 0.1, 4, "flops")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(epochs=-1), "epochs"),
        (dict(rewind_epoch=400), "rewind_epoch"),
        (dict(d_init=1.5), "d_init"),
        (dict(spike_rate=2.0), "spike rates"),
    ],
)
def test_bad_assumptions_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Assumptions(**kwargs)


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_command_writes_tables_and_plots(tmp_path, capsys):
    out = tmp_path / "report"
    args = [
        "report",
        "--out",
        str(out),
        "--models",
        "vgg16",
        "resnet19",
        "--sparsities",
        "0.9",
        "0.99",
        "--epochs",
        "20",
        "--rewind-epoch",
        "2",
        "--energy",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert (
        "| protocol | conv. | distribution |" in printed
        and "31.35" in printed
        and "40.89" in printed
    )
    report = json.loads((out / "report.json").read_text())
    rows = report["claim_check"]
    assert (
        len(rows) == 2 * 3 * 3 * 3 * 2
    )  # models x protocols x conventions x distributions x sparsities
    assert {
        "model",
        "protocol",
        "convention",
        "distribution",
        "sparsity",
        "ndsnn_flops",
        "lth_flops",
        "ratio",
    } <= set(rows[0])
    assert all(r["ratio"] == pytest.approx(r["ndsnn_flops"] / r["lth_flops"]) for r in rows)
    assert report["assumptions"]["epochs"] == 20 and report["assumptions"]["spike_rate"] == 0.1
    for name in (
        "cumulative_cost",
        "density",
        "layers_vgg16",
        "layers_resnet19",
        "ratio_vs_sparsity",
    ):
        assert _is_png(out / f"{name}.png"), name
        assert json.loads((out / f"{name}.json").read_text())
    md = (out / "report.md").read_text()
    assert (
        "## Assumptions" in md
        and "![ratio_vs_sparsity](ratio_vs_sparsity.png)" in md
        and "energy" in md
    )
    assert (out / "claim_check.csv").read_text().count("\n") == len(rows) + 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sparsities", "1.0"], "sparsity must lie in [0, 1)"),
        (["--epochs", "-3"], "epochs must be a positive integer"),
        (["--rewind-epoch", "500"], "rewind_epoch"),
    ],
)
def test_report_bad_arguments(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as err:
        main(["report", "--out", str(tmp_path), *extra])
    assert message in str(err.value) + capsys.readouterr().err


def test_profile_command_integrates_the_logged_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--method",
                "rigl",
                "--sparsity",
                "0.8",
                "--epochs",
                "2",
                "--T",
                "2",
                "--delta-t",
                "5",
                "--out",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["profile", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rigl = result["conventions"]["rigl"]
    # the rigl convention ignores spike rates: logged and planned schedules cost the same
    assert rigl["measured_over_predicted"] == pytest.approx(1.0, rel=1e-12)
    # snn: rebuild the measured cost by hand from the log (log_every=1: one record per iteration)
    config = json.loads((run / "config.json").read_text())
    table = trace_layers(small_snn(**config["model_kwargs"]), (1, 1, 8, 8))
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    brute = sum(
        step_cost(table, r["densities"], r["spike_rates"], 64, "snn", r["dense_grad"]).total
        for r in records
    )
    assert result["conventions"]["snn"]["measured_schedule_flops"] == pytest.approx(
        brute, rel=1e-12
    )
    assert main(["profile", str(run)]) == 0
    assert "measured schedule" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"config\.json is missing"):
        main(["profile", str(tmp_path)])


def test_profile_of_a_run_stopped_early_compares_the_same_iterations(tmp_path, capsys):
    """`ndsnn train ... --max-steps 4`: the prediction covers the 4 iterations that ran, not the
    whole plan (the rigl convention ignores spike rates, so both sides then agree exactly)."""
    run = tmp_path / "run"
    args = ["train", "--method", "rigl", "--sparsity", "0.9", "--epochs", "1", "--T", "2"]
    assert (
        main([*args, "--delta-t", "2", "--max-steps", "4", "--out", str(run), "--no-progress"]) == 0
    )
    capsys.readouterr()
    assert main(["profile", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["compared_iterations"] == [0, 4] and result["logged_iterations"] == 4
    assert result["planned_iterations"] > 4
    assert result["conventions"]["rigl"]["measured_over_predicted"] == pytest.approx(1, rel=1e-12)
    assert main(["profile", str(run)]) == 0
    assert "4 of " in capsys.readouterr().out


def test_schedule_window_keeps_the_iterations_asked_for():
    sched = Schedule("m", ["a"], [10])
    sched.append(5, [1.0], False)
    sched.append(1, [0.5], True)
    sched.append(4, [0.5], False)
    part = sched.window(3, 7)
    assert [(s.steps, s.densities, s.dense_grad) for s in part.segments] == [
        (2, (1.0,), False),
        (1, (0.5,), True),
        (1, (0.5,), False),
    ]
    assert sched.window(0, 100).segments == sched.segments
    assert sched.window(8, 8).total_steps == 0
    with pytest.raises(ValueError, match="not a range"):
        sched.window(5, 2)


@pytest.mark.slow
def test_recorded_report_is_current_and_readme_quotes_it(tmp_path):
    """docs/report was written by the current code, and README's claim table is its table."""
    from pathlib import Path

    from ndsnn_triton.profiler.report import build_report

    root = Path(__file__).resolve().parents[1]
    recorded = json.loads((root / "docs" / "report" / "report.json").read_text())
    fresh = build_report(tmp_path, energy=True)
    assert len(fresh["claim_check"]) == len(recorded["claim_check"]) == 216
    for a, b in zip(fresh["claim_check"], recorded["claim_check"], strict=True):
        assert (a["model"], a["protocol"], a["convention"], a["distribution"], a["sparsity"]) == (
            b["model"],
            b["protocol"],
            b["convention"],
            b["distribution"],
            b["sparsity"],
        )
        assert a["ratio"] == pytest.approx(b["ratio"], rel=1e-9)
    md = (root / "docs" / "report" / "report.md").read_text()
    table = md[md.index("| protocol | conv.") : md.index("## Cost of each method")].strip()
    assert table in (root / "README.md").read_text()


# RigL (Evci et al. 2020), ResNet-50 on ImageNet, 1x training: (distribution, sparsity) ->
# (training FLOPs, inference FLOPs) as multiples of dense, from google-research/rigl's README.
RIGL_PUBLISHED = {
    ("uniform", 0.8): (0.23, 0.23),
    ("uniform", 0.9): (0.13, 0.13),
    ("erk", 0.8): (0.42, 0.42),
    ("erk", 0.9): (0.24, 0.24),
}


@pytest.mark.parametrize(("distribution", "sparsity"), list(RIGL_PUBLISHED))
def test_rigl_convention_reproduces_published_resnet50_multipliers(distribution, sparsity):
    """The ``rigl`` convention on a plain (T = 1, analog) ResNet-50 gives RigL's published FLOP
    multipliers to their printed precision (±0.01). Uniform keeps the first layer dense, ERK covers
    every layer, as in RigL. Residual differences of a few thousandths come from RigL's MicroNet
    counting, which also counts activations, bias and residual adds (a separate line here)."""
    from ann_resnet50 import resnet50

    from ndsnn_triton.nn import to_masked
    from ndsnn_triton.profiler.cost import dense_run_cost

    model = to_masked(resnet50())
    table = trace_layers(model, (1, 3, 224, 224))
    assert table.macs_per_sample() * 2 == pytest.approx(8.2e9, rel=0.01)  # RigL: dense 8.2e9 FLOPs
    method = build_method(
        "rigl",
        density=1 - sparsity,
        distribution=distribution,
        dense_first=distribution == "uniform",
        delta_t=100,
        zeta=0.3,
        stop_fraction=0.75,
    )
    method.setup(model, steps_per_epoch=320, epochs=100)  # 32,000 iterations, batch 4096
    schedule = method.schedule()
    train = run_cost(table, schedule, 1.0, 4096, "rigl").total / dense_run_cost(
        table, schedule.total_steps, 1.0, 4096, "rigl"
    )
    final = dict(zip(schedule.layer_names, schedule.segments[-1].densities, strict=True))
    inference = (
        step_cost(table, final, 1.0, 1, "rigl").forward.sum()
        / step_cost(table, None, 1.0, 1, "rigl").forward.sum()
    )
    published_train, published_inference = RIGL_PUBLISHED[(distribution, sparsity)]
    assert train == pytest.approx(published_train, abs=0.01)
    assert inference == pytest.approx(published_inference, abs=0.01)
    assert train > inference  # dense gradients on update steps cost extra


def test_to_masked_keeps_the_function_of_a_plain_model():
    from ann_resnet50 import Bottleneck

    from ndsnn_triton.nn import MaskedConv2d, to_masked

    torch.manual_seed(0)
    block = Bottleneck(16, 8, 2).eval()
    x = torch.randn(2, 16, 8, 8)
    expected = block(x)
    masked = to_masked(block)
    assert isinstance(masked.body[0], MaskedConv2d) and isinstance(masked.down[0], MaskedConv2d)
    torch.testing.assert_close(masked(x), expected)
    assert len(masked_layers(masked)) == 4
