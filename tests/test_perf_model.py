"""The GPU time model of the kernels (a model, not a measurement): hand-computed costs of each
launch, the prediction's arithmetic, its calibration reproduced from the recorded GPU file (the
serial-gather forward within about 10 %, the cuDNN fits and measured times equal to the file),
the predictions file written before a GPU measures the new kernels, and docs/roofline.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ndsnn_triton.kernels import perf_model as pm
from ndsnn_triton.kernels.perf_model import GPUS, ConvShape, Spikes
from ndsnn_triton.kernels.spike_conv import conv_dgrad_plan, conv_fwd_plan
from ndsnn_triton.kernels.work import executed_macs, work_factors
from ndsnn_triton.profiler import roofline

ROOT = Path(__file__).resolve().parents[1]
PREDICTIONS = ROOT / "bench" / "results" / "kernel_predictions-H200.json"


def test_expected_chunks_by_hand():
    # L ~ Binomial(2, 1/2): P(0) = 1/4, P(1) = 1/2, P(2) = 1/4; ceil(L/2) = 0, 1, 1
    assert pm.expected_chunks(2, 0.5, 2) == pytest.approx(0.75)
    assert pm.expected_chunks(2, 0.5, 2, at_least=1) == pytest.approx(1.0)
    assert pm.expected_chunks(9, 1.0, 4) == 3.0
    gen = torch.Generator().manual_seed(0)
    draws = (torch.rand(20_000, 36, generator=gen) < 0.1).sum(1)
    assert pm.expected_chunks(36, 0.1, 4) == pytest.approx(
        float(torch.ceil(draws / 4).mean()), rel=0.02
    )


def test_forward_cost_by_hand():
    shape = ConvShape(n=8, cin=4, h=6, w=6, cout=5)
    nnz = 36
    spikes = Spikes(rate=0.2, active_maps=0.75)
    cost = pm.conv_fwd_cost(
        shape, nnz, torch.int8, torch.float32, torch.bfloat16, spikes, bias=True
    )
    launch = conv_fwd_plan(
        shape.x_shape, shape.w_shape, (1, 1), (1, 1), (1, 1), torch.int8, torch.float32,
        torch.bfloat16, True, True, nnz,
    )  # fmt: skip
    c = launch.constexprs
    assert cost.programs == launch.programs and cost.warps == launch.num_warps
    t = cost.traffic
    assert t["read x"] == 8 * 4 * 36 * 0.75  # int8, live maps only
    assert t["read kept weights + col_idx"] == 36 * 4 + 36 * 4
    assert t["read row_ptr + row_order"] == 4 * (2 * 5 + 1)
    assert t["read activity"] == 8 * 4
    assert t["write y"] == 8 * 5 * 36 * 2  # bf16
    assert cost.bytes == sum(t.values())
    # FLOPs: 2 per executed MAC, the live maps' share (the kernels' own rule)
    assert cost.flops == 2 * 36 * 8 * 36 * 0.75
    rows = pm.expected_chunks(4 * 9, 36 / 180, c["BLOCK_K"], 1)
    items = launch.grid[0] * 5 * rows
    assert cost.chain == pytest.approx(items + 2 * launch.programs)


def test_forward_flops_are_the_executed_macs_of_a_uniform_input():
    """With every map live, the model's FLOPs are twice the kernels' executed MACs."""
    x = torch.ones(8, 4, 6, 6)
    mask = torch.rand(5, 4, 3, 3, generator=torch.Generator().manual_seed(1)) < 0.3
    nnz = int(mask.sum())
    cost = pm.conv_fwd_cost(ConvShape(8, 4, 6, 6, 5), nnz, torch.int8, torch.float32, torch.float32)
    assert cost.flops == 2 * executed_macs(x, mask, (1, 1), (1, 1)).forward.item()


def test_input_gradient_cost_by_hand():
    shape = ConvShape(n=8, cin=4, h=6, w=6, cout=5)
    cost = pm.conv_dgrad_cost(shape, 36, torch.bfloat16, torch.float32)
    launch = conv_dgrad_plan(
        shape.x_shape, shape.w_shape, (1, 1), (1, 1), (1, 1), torch.bfloat16, torch.float32, 36
    )
    assert cost.traffic["read dy"] == 8 * 5 * 36 * 2
    assert cost.traffic["write dx"] == 8 * 4 * 36 * 2
    assert cost.flops == 2 * 36 * 8 * 36
    per = pm.expected_chunks(5 * 9, 36 / 180, launch.constexprs["BLOCK_K"], 1)
    assert cost.chain == pytest.approx(launch.grid[0] * 4 * per + launch.programs)


def test_weight_gradient_flops_are_kept_weights_times_events():
    shape = ConvShape(n=8, cin=4, h=6, w=6, cout=5)
    cost = pm.conv_wgrad_cost(shape, 36, torch.float32, Spikes(rate=0.1))
    events = 0.1 * 8 * 4 * 36  # stride 1, same padding: every position usable
    assert cost.flops == pytest.approx(2 * 36 * events / 4)
    # the reduce reads the mask and the partials, writes the gradient in its dtype
    red = pm.wgrad_reduce_cost(shape, 36, 3, torch.float32)
    assert (
        red.traffic["write gradient"] == 5 * 4 * 9 * 4
        and red.traffic["read partials"] == 36 * 3 * 4
    )


def test_prediction_is_the_slowest_term_plus_the_launch():
    cost = pm.LaunchCost("k", bytes=4.8e6, flops=6.7e6, lanes=0.0, chain=0.0, programs=1, warps=4)
    p = pm.predict(cost, GPUS["H200"])
    assert p.hbm_us == pytest.approx(1.0) and p.flop_us == pytest.approx(0.1)
    assert p.total_us == pytest.approx(1.0 + pm.CALIBRATION.launch_us) and p.bound == "hbm"
    assert p.roofline_us == pytest.approx(1.0)
    # a chain of 100 dependent loads in one program cannot be shared out
    slow = pm.LaunchCost("k", 0.0, 0.0, 0.0, chain=100.0, programs=1, warps=4)
    assert pm.predict(slow, GPUS["H200"]).latency_us == pytest.approx(100 * pm.CALIBRATION.t_dep_us)
    # many short programs: the chain divides over the programs the GPU holds at once
    held = pm.concurrency(GPUS["H200"], 4)
    assert held == 132 * 8  # half of 64 warps per SM, 4 warps per program
    wide = pm.LaunchCost("k", 0.0, 0.0, 0.0, chain=2.0 * held * 10, programs=held * 10, warps=4)
    assert pm.predict(wide, GPUS["H200"]).latency_us == pytest.approx(20 * pm.CALIBRATION.t_dep_us)
    # a register cap holds what it leaves room for: 65,536 / (72 × 128) = 7 programs per SM
    assert pm.concurrency(GPUS["H200"], 4, max_registers=72) == 132 * 7
    assert pm.concurrency(GPUS["H200"], 4, max_registers=64) == 132 * 8
    assert pm.concurrency(GPUS["H200"], 1, max_registers=72) == 132 * 28
    capped = pm.LaunchCost("k", 0.0, 0.0, 0.0, 2.0 * held * 10, held * 10, 4, max_registers=72)
    assert pm.predict(capped, GPUS["H200"]).latency_us == pytest.approx(
        2.0 * held * 10 / (132 * 7) * pm.CALIBRATION.t_dep_us
    )
    assert roofline.achieved_fraction(2.0, p) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive"):
        roofline.achieved_fraction(0.0, p)


def test_gpu_names():
    assert pm.gpu_for("NVIDIA H200").name == "H200 SXM"
    assert pm.gpu_for("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert pm.gpu_for("NVIDIA A10").name == "H100 SXM"  # unknown: the H100's numbers


def test_calibration_reproduces_the_recorded_serial_forward():
    """t_dep refitted on the recorded H200 file equals the model's constant, and the serial
    forward it was measured on is predicted within about 10 % on every layer."""
    t_dep, rows = roofline.fit_t_dep()
    assert t_dep == pytest.approx(pm.CALIBRATION.t_dep_us, abs=0.002)
    assert len(rows) == 8
    assert max(abs(r.error) for r in rows) <= 0.11, [(r.case, r.error) for r in rows]
    # the same model as "waves × kept weights per row × ~1 µs": three dependent loads per weight
    assert 0.9 <= roofline.LEGACY_FORWARD_DEPTH * t_dep <= 1.1


def test_dense_fits_and_measured_times_are_the_recorded_files():
    fits = roofline.fit_dense()
    assert {k: f for k, (f, _) in fits.items()} == pm.DENSE_FITS
    for r in roofline._recorded_cases(roofline.H200_KERNELS):
        shape = roofline._case_shape(r)
        med = r["median_ms"]
        row = pm.DENSE_MEASURED[("H200", shape)]
        for compute, (fwd, total) in row.items():
            assert fwd == round(med[f"cudnn_{compute}_fwd"] * 1e3, 1)
            assert total == round(med[f"cudnn_{compute}_fwd_bwd"] * 1e3, 1)
        # the recorded shapes are priced at their recorded times
        assert pm.dense_us(shape, torch.bfloat16, "fwd", GPUS["H200"]) == row["bf16"][0]


def test_dense_model_off_the_recorded_shapes():
    h200 = GPUS["H200"]
    shape = ConvShape(192, 64, 32, 32, 64)  # not recorded: the fit
    fit = pm.DENSE_FITS[("H200", "bf16", "fwd")]
    gflop, mb = pm.flops_and_bytes(shape, torch.bfloat16)
    assert pm.dense_us(shape, torch.bfloat16, "fwd", h200) == pytest.approx(fit.us(gflop, mb))
    # an H100 scales the H200's fit by bandwidth
    h100 = pm.dense_us(shape, torch.bfloat16, "fwd", GPUS["H100"])
    assert h100 == pytest.approx(fit.us(gflop, mb) * 4.8 / 3.35)
    # a linear layer is a cuBLAS GEMM: roofline at half of peak plus a launch
    lin = ConvShape.linear(320, 512, 10)
    assert pm.dense_us(lin, torch.bfloat16, "fwd", h200) < 5.0


def test_synthetic_spikes_have_the_modelled_structure():
    shape = ConvShape(n=64, cin=16, h=4, w=4, cout=32)
    for silent, dead in ((None, 0.0), (0.5, 0.0), (0.6, 0.25)):
        gen = torch.Generator().manual_seed(1)
        x = roofline.synthetic_spikes((64, 16, 4, 4), 0.1, silent, dead, generator=gen)
        assert set(x.unique().tolist()) <= {0.0, 1.0}
        want = roofline.synthetic_structure(shape, 0.1, silent, dead)
        got = work_factors(x, (3, 3), (1, 1), (1, 1), (1, 1))
        assert got.rate == pytest.approx(want.rate, rel=0.1)
        assert got.forward == pytest.approx(want.active_maps, abs=0.05)
        if silent is not None:  # exact: the constructed count of silent maps
            assert got.forward == pytest.approx(1 - round(silent * 64 * 16) / (64 * 16), abs=1e-12)


def test_model_layers_of_the_recorded_structure():
    vgg = roofline.model_layers("vgg16")
    assert [layer.label for layer in vgg][:2] == ["conv2", "conv3"] and len(vgg) == 13
    conv2 = vgg[0]
    assert conv2.shape == ConvShape(320, 64, 32, 32, 64) and conv2.bias
    res = roofline.model_layers("resnet19")
    strided = [layer for layer in res if layer.shape.stride == (2, 2)]
    assert len(strided) == 6
    assert not any(layer.bias for layer in res if layer.shape.kh > 1)  # Kim's convs: no bias
    assert all(0 <= layer.silent_maps <= 1 for layer in res)


def test_predictions_file_is_the_model_today():
    """The predictions written down for the benchmark's cases before a GPU measures them: the
    committed file equals what the model predicts now."""
    doc = json.loads(PREDICTIONS.read_text())
    assert doc["rows"] == json.loads(json.dumps(roofline.benchmark_predictions("H200")))
    assert doc["model"]["t_dep_us"] == pm.CALIBRATION.t_dep_us
    for row in doc["rows"]:
        total = sum(k["us"] for k in row["kernels"].values())
        assert row["fwd_bwd_us"] == pytest.approx(total, abs=0.05)
        assert all(math.isfinite(k["us"]) and k["us"] > 0 for k in row["kernels"].values())


def test_docs_roofline_is_the_generated_report():
    committed = (ROOT / "docs" / "roofline.md").read_text()
    assert committed == roofline.render_markdown(), (
        "docs/roofline.md is stale: run `ndsnn roofline --out docs/roofline.md`"
    )
