"""Spike-structure monitor: hand-counted silent words/maps/dead channels and work sums on
tiny inputs, a model forward, the recorded ``bench/results/spike_structure.json`` and the bench
script's option errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bench import spike_structure as bench_ss
from ndsnn_triton.kernels.work import forward_skips_silent_maps, work_factors
from ndsnn_triton.models import build_model
from ndsnn_triton.nn import SpikeConv2d, SpikeLinear, masked_layers, reset_net
from ndsnn_triton.profiler.spike_structure import (
    SpikeStructureMonitor,
    as_maps,
    spike_structure,
)

RESULT = Path(__file__).resolve().parent.parent / "bench" / "results" / "spike_structure.json"
FRACTIONS = ("rate", "silent_words32", "silent_maps", "dead_channels")


def _one(layer: torch.nn.Module, *inputs: torch.Tensor) -> dict:
    """The monitor's row for ``layer`` after one forward per input."""
    with SpikeStructureMonitor(layer) as monitor:
        for x in inputs:
            layer(x)
    (row,) = monitor.layers()
    return row


def _pattern_a() -> torch.Tensor:
    """``[T=1, B=3, C=3, 4, 8]``: each map is exactly one 32-element word. Spikes: sample 0
    channel 0 (one), sample 2 channel 1 (two); channel 2 silent everywhere (dead)."""
    x = torch.zeros(1, 3, 3, 4, 8)
    x[0, 0, 0, 1, 2] = 1
    x[0, 2, 1, 0, 0] = 1
    x[0, 2, 1, 3, 7] = 1
    return x


def test_conv_words_maps_dead_and_work() -> None:
    layer = SpikeConv2d(3, 3, 3, padding=1)
    row = _one(layer, _pattern_a())
    # N = 3, OH·OW = 32: the forward skips silent maps.
    assert row["kind"] == "conv" and row["spike_input"] is True
    assert row["input_shape"] == [3, 4, 8] and row["output_shape"] == [3, 4, 8]
    assert row["forwards"] == 1 and row["elements"] == 288
    assert row["rate"] == pytest.approx(3 / 288)
    assert row["silent_words32"] == pytest.approx(7 / 9)  # 9 words, 2 with spikes
    assert row["silent_maps"] == pytest.approx(7 / 9)
    assert row["dead_channels"] == pytest.approx(1 / 3)
    # Forward: the 2 live maps (c0 in sample 0, c1 in sample 2) × 32 output positions.
    assert row["work"]["forward"] == pytest.approx(64 / 288)
    assert row["work"]["weight_grad"] == pytest.approx(3 / 288)  # stride 1: every input usable
    assert row["counts"]["lanes"] == 64 and row["counts"]["events"] == 3
    assert row["density"] == 1.0


def test_linear_partial_word_and_partial_block() -> None:
    layer = SpikeLinear(40, 5)
    x = torch.zeros(2, 3, 40)  # N = 6 samples of 40 features: 240 elements, 8 words (last: 16)
    x[0, 0, 0] = 1  # flat 0 -> word 0
    x[0, 0, 39] = 1  # flat 39 -> word 1
    x[1, 2, 39] = 1  # flat 239 -> word 7 (the partial one)
    row = _one(layer, x)
    assert row["kind"] == "linear"
    assert row["input_shape"] == [40, 1, 1] and row["output_shape"] == [5, 1, 1]
    assert row["kernel_size"] == [1, 1] and row["stride"] == [1, 1] and row["padding"] == [0, 0]
    assert row["rate"] == pytest.approx(3 / 240)
    assert row["silent_words32"] == pytest.approx(5 / 8)
    assert row["silent_maps"] == pytest.approx(237 / 240)
    assert row["dead_channels"] == pytest.approx(38 / 40)
    assert row["work"]["forward"] == 1.0  # 1×1 maps: the forward runs every feature
    assert row["work"]["weight_grad"] == pytest.approx(3 / 240)


def test_small_maps_of_several_samples() -> None:
    layer = SpikeConv2d(2, 2, 1)
    x = torch.zeros(2, 4, 2, 2, 2)  # N = 8, 2×2 maps: still skipped when silent
    x[0, 1, 0, 0, 0] = 1  # sample 1, channel 0
    x[1, 1, 1, 1, 1] = 1  # sample 5, channel 1
    x[1, 2, 1, 0, 1] = 1  # sample 6, channel 1
    row = _one(layer, x)
    assert row["silent_maps"] == pytest.approx(13 / 16)
    assert row["dead_channels"] == 0.0
    # Words hold 4 samples × 2 channels × 4 positions: both have spikes (32 ∤ H·W, so words
    # may be fewer silent than maps).
    assert row["silent_words32"] == 0.0
    assert row["work"]["forward"] == pytest.approx(12 / 64)  # 3 live maps × 4 positions
    assert row["work"]["weight_grad"] == pytest.approx(3 / 64)


def test_accumulates_over_forwards() -> None:
    layer = SpikeConv2d(3, 3, 3, padding=1)
    ones = torch.ones(1, 3, 3, 4, 8)
    row = _one(layer, _pattern_a(), ones)
    assert row["forwards"] == 2 and row["elements"] == 576
    assert row["rate"] == pytest.approx((3 + 288) / 576)
    assert row["silent_maps"] == pytest.approx(7 / 18)
    assert row["silent_words32"] == pytest.approx(7 / 18)
    assert row["dead_channels"] == pytest.approx(1 / 6)
    assert row["work"]["forward"] == pytest.approx((64 + 288) / 576)
    assert row["counts"]["maps"] == 18 and row["counts"]["channels"] == 6


def test_matches_work_factors_and_reset() -> None:
    """On a real model's inputs the device-side sums equal :func:`work_factors` per layer."""
    torch.manual_seed(0)
    model = build_model("small", num_classes=10, T=2, in_channels=1, image_size=8)
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        layer.register_forward_pre_hook(
            lambda _m, args, name=name: inputs.__setitem__(name, args[0].detach().clone())
        )
        for name, layer in masked_layers(model)
    ]
    try:
        with SpikeStructureMonitor(model) as monitor, torch.no_grad():
            model(torch.randn(3, 1, 8, 8))
            reset_net(model)
    finally:
        for h in handles:
            h.remove()
    rows = monitor.layers()
    assert [r["name"] for r in rows] == [n for n, _ in masked_layers(model)]
    for row, (name, layer) in zip(rows, masked_layers(model), strict=True):
        kind = "linear" if isinstance(layer, SpikeLinear) else "conv"
        x4 = as_maps(inputs[name], kind)
        f = work_factors(
            x4,
            tuple(row["kernel_size"]),
            tuple(row["stride"]),
            tuple(row["padding"]),
            tuple(row["dilation"]),
        )
        assert row["rate"] == pytest.approx(f.rate)
        assert row["work"]["forward"] == pytest.approx(f.forward)
        assert row["work"]["weight_grad"] == pytest.approx(f.weight_grad)
        assert row["input_shape"] == list(x4.shape[1:])
    assert rows[0]["spike_input"] is False and all(r["spike_input"] for r in rows[1:])
    monitor.reset()
    assert monitor.layers() == []


def test_spike_structure_modes_leave_weights() -> None:
    torch.manual_seed(0)
    model = build_model("small", num_classes=10, T=2, in_channels=1, image_size=8)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if "weight" in k}
    batches = [(torch.randn(2, 1, 8, 8), torch.tensor([1, 3])) for _ in range(2)]
    rows = spike_structure(model, batches, train=True)
    assert not model.training  # mode restored
    assert all(r["forwards"] == 2 for r in rows)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # gradients not applied
    rows = spike_structure(model, [b[0] for b in batches], train=False)
    assert all(r["forwards"] == 2 for r in rows)
    with pytest.raises(ValueError, match="labels"):
        spike_structure(model, [batches[0][0]], train=True)


def _check_layer(row: dict) -> None:
    for key in FRACTIONS:
        assert 0.0 <= row[key] <= 1.0, (row["name"], key)
    for key in ("forward", "weight_grad"):
        assert 0.0 <= row["work"][key] <= 1.0 + 1e-12, (row["name"], key)
    _c, h, w = row["input_shape"]
    _oc, oh, ow = row["output_shape"]
    counts = row["counts"]
    eps = 1e-12
    assert row["silent_maps"] >= row["dead_channels"] - eps
    if (h * w) % 32 == 0:
        assert row["silent_words32"] >= row["silent_maps"] - eps
    assert row["silent_words32"] >= 1 - counts["nonzero"] / counts["words"] - eps
    assert row["rate"] <= 1 - row["silent_maps"] + eps
    assert 1 - row["silent_maps"] <= row["work"]["forward"] + eps
    if forward_skips_silent_maps(oh * ow):  # the forward runs the live maps only
        assert row["work"]["forward"] == pytest.approx(1 - row["silent_maps"], abs=eps)
    else:
        assert row["work"]["forward"] == 1.0
    assert row["work"]["weight_grad"] <= row["rate"] * h * w / (oh * ow) + eps
    assert 0.0 < row["density"] <= 1.0


def test_guaranteed_relations_on_random_spikes() -> None:
    gen = torch.Generator().manual_seed(1)
    layer = SpikeConv2d(4, 8, 3, stride=2, padding=1)
    x = (torch.rand(2, 3, 4, 8, 8, generator=gen) < 0.02).float()
    x[:, :, 1] = 0  # a dead channel
    _check_layer(_one(layer, x))


def test_recorded_factors_follow_the_current_rule() -> None:
    """The recorded file's derived forward factors are those of today's forward rule, derived
    from its own recorded counts (``bench.spike_structure.rederive_forward`` is a no-op on it)."""
    record = json.loads(RESULT.read_text())
    again = bench_ss.rederive_forward(json.loads(RESULT.read_text()))
    assert again == record


def test_recorded_result() -> None:
    if not RESULT.exists():
        pytest.skip(f"{RESULT.name} not recorded yet (python -m bench.spike_structure)")
    record = json.loads(RESULT.read_text())
    assert {"environment", "results"} <= set(record)
    assert record["environment"]["torch"]
    models = {r["model"]: r for r in record["results"]}
    assert {"vgg16", "resnet19", "small"} <= set(models)
    for name, r in models.items():
        assert r["dataset"] == "fashion-mnist" and r["method"] == "ndsnn"
        assert r["sparsity"] == pytest.approx(0.99) and r["T"] == 4
        assert r["steps"] >= 1 and r["batch"] >= 1 and r["cpu_s_train"] > 0
        assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["train_acc"] <= 1.0
        assert 0.0 < r["final_density"] <= 0.02, name  # NDSNN ended near 1 % density
        for stage in ("init", "trained"):
            for mode in ("train", "eval"):
                layers = r["structure"][stage][mode]
                assert layers, (name, stage, mode)
                for row in layers:
                    _check_layer(row)
                    assert not math.isnan(row["rate"])
                dens = [row["density"] for row in layers]
                if stage == "init":
                    assert all(d == 1.0 for d in dens)


@pytest.mark.parametrize(
    "argv",
    [
        ["--cpu-minutes", "0"],
        ["--cpu-minutes", "abc"],
        ["--small-cpu-minutes", "-1"],
        ["--models", "alexnet"],
        ["--small-epochs", "0"],
        ["--jobs", "0"],
    ],
)
def test_bench_rejects_bad_options(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as err:
        bench_ss.main(argv)
    assert err.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bench_reuse_needs_runs(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no finished run"):
        bench_ss.main(
            [
                "--reuse",
                "--runs",
                str(tmp_path),
                "--models",
                "small",
                "--out",
                str(tmp_path / "o.json"),
            ]
        )
