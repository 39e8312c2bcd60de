"""CPU smoke run of the method-training sweep (``bench/train_methods.py``) on digits."""

import json

import pytest

from bench.train_methods import _claim_with_rates, main
from ndsnn_triton.models import build_model
from ndsnn_triton.nn import masked_layers
from ndsnn_triton.profiler.claim import Assumptions


def test_sweep_records_accuracy_time_and_rates(tmp_path):
    out = tmp_path / "training.json"
    argv = [
        "--models", "small", "--methods", "dense", "static", "ndsnn", "lth",
        "--sparsities", "0.9", "--dataset", "digits", "--epochs", "2", "--T", "2",
        "--batch-size", "64", "--lth-rounds", "1", "--rewind-epoch", "0",
        "--runs", str(tmp_path / "runs"), "--out", str(out), "--device", "cpu",
    ]  # fmt: skip
    main(argv)
    doc = json.loads(out.read_text())
    rows = {r["method"]: r for r in doc["results"]}
    assert set(rows) == {"dense", "static", "ndsnn", "lth"}
    for method, r in rows.items():
        assert 0.0 <= r["test_acc"] <= 1.0 and r["wall_time_s"] > 0
        assert 0 < r["mean_spike_rate"] < 1
        assert r["flops"]["snn"] < r["flops"]["rigl"]  # spikes under 100 % cut the snn count
        expected = 1.0 if method == "dense" else 0.1
        assert r["final_density"] == pytest.approx(expected, abs=0.02)
    assert rows["lth"]["steps"] == 2 * rows["static"]["steps"]  # dense round + one retrain
    mtime = (tmp_path / "runs" / "small" / "static-0.9" / "metrics.json").stat().st_mtime
    main(argv)  # finished runs are read, not trained again
    assert (tmp_path / "runs" / "small" / "static-0.9" / "metrics.json").stat().st_mtime == mtime


def test_claim_recomputed_with_measured_rates():
    model = build_model("resnet19", num_classes=10, T=5)
    spike_layers = [n for n, m in masked_layers(model) if m.spike_input]
    a = Assumptions(epochs=10, rewind_epoch=2, dataset_size=1280)
    low = _claim_with_rates("resnet19", 0.99, dict.fromkeys(spike_layers, 0.05), a)
    high = _claim_with_rates("resnet19", 0.99, dict.fromkeys(spike_layers, 0.5), a)
    assert len(low) == len(high) == 3 * 3  # protocols × distributions
    assert all(0 < r["ratio"] < 1 for r in low + high)
    # the rates change the ratio (spike-aware terms weigh differently in NDSNN and LTH runs)
    assert any(abs(a_["ratio"] - b["ratio"]) > 1e-6 for a_, b in zip(low, high, strict=True))
