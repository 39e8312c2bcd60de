"""Measured-time pricing of schedules: interpolation, integration, the wall-clock claim, the report."""

import json

import numpy as np
import pytest

from ndsnn_triton.cli import main
from ndsnn_triton.profiler.claim import Assumptions, schedule_of, setup_model
from ndsnn_triton.profiler.measured import (
    interpolation_note,
    load_step_times,
    measured_claim,
    measured_run,
    parse_step_times,
)
from ndsnn_triton.profiler.report import build_report
from ndsnn_triton.sparse.schedules import Schedule

GRID = {
    "train": ([0.01, 0.1, 1.0], [1.0, 2.0, 10.0]),
    "update": ([0.01, 0.1, 1.0], [5.0, 6.0, 20.0]),
}


def _doc(model="vgg16", config="auto_bf16", grid=GRID, batch=64, extra=()):
    rows = [
        {
            "model": model,
            "config": config,
            "kind": kind,
            "batch": batch,
            "T": 5,
            "density": d,
            "median_ms": ms,
        }
        for kind, (ds, mss) in grid.items()
        for d, ms in zip(ds, mss, strict=True)
    ]
    return {"environment": {"device": "test"}, "results": rows + list(extra)}


def _times(**kw):
    return parse_step_times(_doc(**kw))[(kw.get("model", "vgg16"), kw.get("config", "auto_bf16"))]


def test_step_time_interpolates_linearly_and_clamps():
    t = _times()
    assert t.step_ms(0.055, False) == pytest.approx(1.5)
    assert t.step_ms(0.5, False) == pytest.approx(2 + 0.4 / 0.9 * 8)
    assert t.step_ms(0.001, False) == 1.0  # below the grid: the smallest measured point
    assert t.step_ms(1.0, True) == 20.0
    assert t.step_ms(0.1, True) == 6.0
    assert "outside the measured range" in interpolation_note(t, [0.005, 0.5])
    assert interpolation_note(t, [0.01, 1.0]) is None


def test_measured_run_hand_computed():
    sched = Schedule("x", ["a", "b"], [100, 300])
    sched.append(10, [1.0, 1.0], False)  # overall 1.0 -> 10 ms
    sched.append(5, [0.1, 0.1], True)  # update step at 0.1 -> 6 ms
    sched.append(20, [0.4, 0.0], False)  # overall (40 + 0)/400 = 0.1 -> 2 ms
    run = measured_run(sched, _times())
    assert run.seconds == pytest.approx((10 * 10 + 5 * 6 + 20 * 2) / 1e3)
    assert run.update_seconds == pytest.approx(5 * 6 / 1e3)
    assert (run.steps, run.update_steps) == (35, 5)
    # planned at batch 128, measured at 64: twice the time per step
    assert measured_run(sched, _times(), batch=128).seconds == pytest.approx(2 * run.seconds)


def test_missing_update_times_are_named():
    sched = Schedule("x", ["a"], [10])
    sched.append(3, [0.5], True)
    t = _times(grid={"train": GRID["train"]})
    with pytest.raises(ValueError, match="no 'update' measurements"):
        measured_run(sched, t)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["results"][0].pop("median_ms"), "missing \\['median_ms'\\]"),
        (lambda d: d["results"][0].update(density=0.0), "density must lie in"),
        (lambda d: d["results"][0].update(median_ms=-1.0), "positive number"),
        (lambda d: d["results"].append(dict(d["results"][0])), "two 'train' times"),
        (lambda d: d["results"][1].update(batch=32), "mixes batch"),
        (lambda d: d.pop("results"), "'results' list"),
        (lambda d: d.update(results=[]), "no 'train'/'update'"),
    ],
)
def test_bad_step_times_are_named(mutate, message):
    doc = _doc()
    mutate(doc)
    with pytest.raises(ValueError, match=message):
        parse_step_times(doc)


def test_other_rows_share_the_file_and_files_are_checked(tmp_path):
    doc = _doc(extra=[{"model": "vgg16", "kind": "rebuild", "median_ms": 0.1}])
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    assert set(load_step_times(path)) == {("vgg16", "auto_bf16")}
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_step_times(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_step_times(tmp_path / "missing.json")


# 10 steps per epoch; NDSNN updates its masks every 10 steps
SMALL = Assumptions(epochs=10, rewind_epoch=2, batch=128, dataset_size=1280, delta_t=10)


@pytest.fixture(scope="module")
def vgg_setup():
    return setup_model("vgg16", SMALL)


def test_flat_step_times_give_the_step_count_ratio(vgg_setup):
    """With one time for every step, GPU seconds are proportional to steps: dense-plus-retrain
    LTH runs E + (E - rewind) epochs against NDSNN's E, so the ratio is 10 / 18."""
    flat = {"train": ([0.01, 1.0], [3.0, 3.0]), "update": ([0.01, 1.0], [3.0, 3.0])}
    times = parse_step_times(_doc(grid=flat))
    rows = measured_claim([vgg_setup], SMALL, times, sparsities=(0.9, 0.99))
    by = {(r.protocol, r.sparsity): r for r in rows}
    assert by[("dense-plus-retrain", 0.99)].ratio_seconds == pytest.approx(10 / 18)
    assert by[("dense-plus-retrain", 0.9)].ratio_seconds == pytest.approx(10 / 18)
    # full IMP to 1 % takes 16 rounds of 25 % after the dense one (0.75^16 = 1.002 %, within the
    # LTH method's documented tolerance), each E - rewind epochs
    rounds = 16
    assert by[("full-imp", 0.99)].ratio_seconds == pytest.approx(10 / (10 + rounds * 8))
    # amortized: one IMP run to the lowest level, shared by the 2 levels
    assert by[("amortized", 0.9)].ratio_seconds == pytest.approx(2 * 10 / (10 + rounds * 8))
    assert all(0 < r.ratio_flops < 1 and r.paper_ratio == 0.3135 for r in rows)


def test_sparser_steps_cost_less_time(vgg_setup):
    """Times falling with density make NDSNN's run cheaper than its dense step count says."""
    times = parse_step_times(_doc())
    t = times[("vgg16", "auto_bf16")]
    nd = measured_run(schedule_of(vgg_setup, "ndsnn", SMALL, 0.01, "uniform"), t, SMALL.batch)
    dense_seconds = SMALL.epochs * SMALL.steps_per_epoch * 10.0 / 1e3 * 2  # batch 128 vs 64
    assert nd.seconds < dense_seconds
    assert nd.update_seconds > 0 and nd.update_steps > 0


def test_report_adds_the_measured_section(tmp_path):
    path = tmp_path / "step_times.json"
    doc = _doc(model="resnet19")
    doc["results"] += _doc(model="resnet19", config="dense_bf16")["results"]
    path.write_text(json.dumps(doc))
    out = tmp_path / "rep"
    report = build_report(out, ["resnet19"], (0.9, 0.99), SMALL, step_times=path)
    measured = report["measured"]
    assert {r["config"] for r in measured["claim"]} == {"auto_bf16", "dense_bf16"}
    assert len(measured["claim"]) == 2 * 3 * 2
    costs = {(r["config"], r["method"]): r for r in measured["method_costs"]}
    assert costs[("auto_bf16", "dense")]["seconds_x_dense"] == 1.0
    assert np.isfinite([r["seconds"] for r in measured["method_costs"]]).all()
    for name in ("measured_claim.csv", "measured_costs.csv", "cost_flops_vs_seconds.png"):
        assert (out / name).stat().st_size > 0
    assert "## Measured GPU time" in (out / "report.md").read_text()


def test_report_refuses_a_bad_step_times_file_before_writing(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": [{"model": "vgg16"}]}))
    out = tmp_path / "never"
    with pytest.raises(SystemExit, match="result 0: missing"):
        main(["report", "--out", str(out), "--models", "vgg16", "--step-times", str(bad)])
    assert not out.exists()
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_doc(model="resnet19")))
    with pytest.raises(SystemExit, match="none of the report's models"):
        main(["report", "--out", str(out), "--models", "vgg16", "--step-times", str(other)])
    assert not out.exists()
