"""The per-launch work model and roofline bounds (a model, not a measurement): hand-computed
bytes and FLOPs of a tiny case for every kernel (with and without a spike structure), agreement
with the kernels' executed-work rule and the dense conv count, the synthetic spike structures,
the roofline arithmetic, SPEC §8's anchor table, and the generated docs/roofline.md."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ndsnn_triton.kernels.work import WorkFactors, executed_macs, map_activity, work_factors
from ndsnn_triton.profiler.roofline import (
    COMPUTE_KINDS,
    CONV_ROW_LABELS,
    H100_SXM,
    H200_SXM,
    PEAKS,
    SPEC_H100_ANCHORS,
    ConvShape,
    GpuPeaks,
    LaunchWork,
    MaskStats,
    TableConfig,
    achieved_fraction,
    anchor_shape,
    conv_dgrad_work,
    conv_fwd_work,
    conv_launches,
    conv_rows,
    conv_wgrad_positions_work,
    conv_wgrad_work,
    dense_activity,
    expected_mask_stats,
    layer_activity,
    lif_bwd_work,
    lif_fwd_work,
    lif_rows,
    load_vgg16_spikes,
    mask_stats,
    memory_bound,
    render_markdown,
    roofline_ms,
    spike_events_work,
    spike_skipping_flops,
    synthetic_activity,
    synthetic_spikes,
    total_roofline_ms,
    usable_positions,
    vgg16_lif_sizes,
    wgrad_chunks,
    wgrad_launcher_bytes,
    wgrad_pairs,
    wgrad_positions_chunks,
)

ROOT = Path(__file__).resolve().parents[1]

# x [2, 2, 3, 3], weight [3, 2, 3, 3], stride 1, pad 1 -> y [2, 3, 3, 3]
TINY = ConvShape(n=2, cin=2, h=3, w=3, cout=3)


def _tiny_mask() -> torch.Tensor:
    mask = torch.zeros(3, 2, 3, 3, dtype=torch.bool)
    mask[0, 0, 1, 1] = True  # centre tap: reaches every input of channel 0, every output of row 0
    mask[0, 1, 0, 0] = True  # top-left tap: inputs rows/cols {0,1}; outputs rows/cols {1,2}
    mask[2, 1, 2, 1] = True  # bottom-centre tap: input rows {1,2}; output rows {0,1}
    mask[2, 1, 0, 0] = True
    return mask  # row 1 is empty


def test_mask_stats_of_the_tiny_mask():
    stats = mask_stats(_tiny_mask(), TINY)
    assert stats.nnz == 4
    # x: channel 0 (centre) 9; channel 1: {0,1}×{0,1} ∪ {1,2}×{0,1,2} = 4 + 6 - 2 = 8
    assert stats.x_reached == 9 + 8
    # dy: row 0 (centre) 9; row 1 none; row 2: {0,1}×{0,1,2} ∪ {1,2}×{1,2} = 6 + 4 - 2 = 8
    assert stats.dy_reached == 9 + 0 + 8


def test_forward_bytes_and_flops_by_hand():
    work = conv_fwd_work(TINY, mask_stats(_tiny_mask(), TINY), torch.int8, torch.float32, True)
    assert work.kernel == "_conv_fwd_kernel"
    assert work.traffic == {
        "read x": 2 * 17 * 1,  # n · reached inputs · int8
        "read kept weights": 4 * 4,  # nnz · fp32
        "read col_idx": 4 * 4,  # nnz · int32
        "read row_ptr + row_order": 4 * (3 + 1) + 4 * 3,
        "read bias": 3 * 4,
        "write y": 2 * 3 * 3 * 3 * 4,  # n · cout · oh · ow · fp32
    }
    assert work.bytes_min == 34 + 16 + 16 + 28 + 12 + 216 == 322
    assert work.flops == 2 * 2 * 3 * 3 * 4 == 144  # 2 · n · oh · ow · nnz
    no_bias = conv_fwd_work(TINY, mask_stats(_tiny_mask(), TINY), torch.int8, torch.float32)
    assert no_bias.bytes_min == 322 - 12


def test_skipping_forward_reads_live_inputs_and_the_activity():
    stats = mask_stats(_tiny_mask(), TINY)
    half = WorkFactors(rate=0.2, forward=0.5, weight_grad=0.2)
    work = conv_fwd_work(TINY, stats, torch.int8, torch.float32, True, activity=half)
    dense = conv_fwd_work(TINY, stats, torch.int8, torch.float32, True)
    assert work.traffic == {
        **dense.traffic,
        "read x": 17,  # half the (sample block, channel) lanes live: half the reached input
        "read active": 4 * 2 * 2,  # active [N, C] int32
    }
    assert work.flops == 72  # 2 · n · oh · ow · nnz · f_fwd
    assert work.inputs["activity"] == half
    # every lane live: the dense FLOPs and reads, plus the activity read
    live = conv_fwd_work(TINY, stats, torch.int8, torch.float32, True, dense_activity(TINY))
    assert live.flops == dense.flops and live.bytes_min == dense.bytes_min + 16


def test_spike_events_pass_bytes_by_hand():
    quarter = WorkFactors(rate=0.25, forward=1.0, weight_grad=0.25)
    activity = spike_events_work(TINY, torch.bfloat16, False, quarter)
    assert activity.kernel == "_spike_events_kernel" and activity.flops == 0
    assert activity.traffic == {"read x": 2 * 2 * 9 * 2, "write active": 4 * 2 * 2}
    events = spike_events_work(TINY, torch.int8, True, quarter)
    assert events.traffic == {
        "read x": 2 * 2 * 9,
        "write active": 16,
        "write events": 4 * 9,  # f_wg · C · N · OH · OW = 0.25 · 36 events, int32
        "write counts": 4 * 2 * 2,  # [C, chunks]: 2 sample chunks of one sample
    }
    full = spike_events_work(TINY, torch.int8, True)  # no structure: every input is an event
    assert full.traffic["write events"] == 4 * 2 * 2 * 9


def test_input_gradient_bytes_and_flops_by_hand():
    work = conv_dgrad_work(TINY, mask_stats(_tiny_mask(), TINY), torch.float32, torch.float32)
    assert work.kernel == "_conv_dgrad_kernel"
    assert work.traffic == {
        "read dy": 2 * 17 * 4,  # n · reached dY · fp32
        "read kept weights": 4 * 4,
        "read t_row_idx": 4 * 4,
        "read col_ptr": 4 * (2 * 3 * 3 + 1),  # cin·kh·kw + 1 int32
        "write dx": 2 * 2 * 3 * 3 * 4,
    }
    assert work.bytes_min == 136 + 16 + 16 + 76 + 144 == 388
    assert work.flops == 144


def test_event_driven_weight_gradient_bytes_and_flops_by_hand():
    stats = mask_stats(_tiny_mask(), TINY)
    quarter = WorkFactors(rate=0.25, forward=1.0, weight_grad=0.25)
    work = conv_wgrad_work(TINY, stats, torch.bfloat16, activity=quarter)
    assert work.kernel == "_conv_wgrad_kernel"
    events = 0.25 * 2 * 2 * 9  # f_wg · C · N · OH · OW
    pairs = 4 * events / 2  # nnz kept weights spread over C = 2 channels, each × its events
    assert wgrad_pairs(TINY, stats, quarter) == pairs == 18
    gathered = 34 * (1 - math.exp(-18 / 34))  # distinct dY of 18 pairs over 2 · 17 reached
    assert work.traffic == {
        "read events": 4 * 9,
        "read counts": 4 * 2 * 2,  # [C, chunks]
        "read saved x at events": 9,
        "read dy (gathered at events)": round(2 * gathered),
        "read col_ptr + t_row_idx + t_col_idx": 4 * (2 + 1 + 2 * 4),
        "write partials": 4 * 2 * 4,  # fp32 [chunks, cap = nnz]
    }
    assert work.flops == 36
    assert (
        conv_wgrad_work(TINY, stats, torch.bfloat16, activity=quarter, cap=8).traffic[
            "write partials"
        ]
        == 4 * 2 * 8
    )
    # no structure: an event at every usable position, the dense FLOPs, nearly all dY read
    dense = conv_wgrad_work(TINY, stats, torch.bfloat16)
    assert dense.flops == 144 and dense.traffic["read events"] == 4 * 36
    assert dense.traffic["read dy (gathered at events)"] == round(2 * 34 * -math.expm1(-72 / 34))


@pytest.mark.parametrize(
    ("shape", "rate"),
    [
        (ConvShape(n=4, cin=3, h=6, w=5, cout=4), 0.3),
        (ConvShape(4, 3, 7, 7, 5, 3, 3, (2, 2), (1, 1), (1, 1)), 0.2),
        (ConvShape.linear(n=6, fin=5, fout=3), 0.5),
    ],
)
def test_event_pairs_are_the_kernels_executed_macs(shape, rate):
    """With kept weights spread evenly over input channels (here: a dense mask), the model's
    pairs and forward lanes are exactly the executed MACs of ``ndsnn_triton.kernels.work``."""
    x = (torch.rand(shape.n, shape.cin, shape.h, shape.w) < rate).float()
    mask = torch.ones(shape.cout, shape.cin, shape.kh, shape.kw, dtype=torch.bool)
    geo = (shape.stride, shape.padding, shape.dilation)
    factors = work_factors(x, (shape.kh, shape.kw), *geo, shape.cout)
    done = executed_macs(x, mask, *geo)
    stats = mask_stats(mask, shape)
    assert wgrad_pairs(shape, stats, factors) == pytest.approx(int(done.weight_grad))
    wgrad = conv_wgrad_work(shape, stats, torch.float32, activity=factors)
    assert wgrad.flops == round(2 * int(done.weight_grad))
    fwd = conv_fwd_work(shape, stats, torch.float32, torch.float32, activity=factors)
    assert fwd.flops == round(2 * int(done.forward))
    if shape.stride == (1, 1):  # the input gradient runs N·H·W lanes per kept weight
        dgrad = conv_dgrad_work(shape, stats, torch.float32, torch.float32)
        assert dgrad.flops == 2 * int(done.input_grad)


def test_position_driven_weight_gradient_bytes_and_flops_by_hand():
    work = conv_wgrad_positions_work(TINY, mask_stats(_tiny_mask(), TINY), torch.bfloat16)
    assert work.kernel == "_conv_wgrad_positions_kernel"
    assert work.traffic == {
        "read dy": 2 * 17 * 2,  # bf16
        "read saved x": 2 * 17 * 1,  # int8 spikes the forward saved
        "read entry_row + col_idx + nnz": 4 * (2 * 4 + 1),
        "write kept gradients": 4 * 2,  # nnz · bf16: the minimum, not the launcher's buffers
    }
    assert work.bytes_min == 68 + 34 + 36 + 8 == 146
    assert work.flops == 144


def test_weight_gradient_launcher_bytes_by_hand():
    chunks = wgrad_chunks(TINY, cap=4)
    assert chunks == 2  # the spike-events pass's sample chunks (one sample each here)
    partial = 4 * chunks * 4  # fp32 [chunks, cap]
    extra = wgrad_launcher_bytes(TINY, cap=4, grad_dtype=torch.bfloat16)
    assert extra == {
        "zero partials": partial,
        "kernel writes partials": partial,
        "sum(0) reads partials, writes sums": partial + 4 * 4,
        "zero dense fp32 gradient": 4 * 54,  # 3·2·3·3 weights
        "scatter (reads entry_flat + sums, writes)": 16 * 4,
        "cast to gradient dtype": 54 * (4 + 2),
    }
    assert "cast to gradient dtype" not in wgrad_launcher_bytes(TINY, 4, torch.float32)
    baseline = wgrad_launcher_bytes(TINY, 4, torch.bfloat16, positions=True)
    assert baseline["zero partials"] == 4 * wgrad_positions_chunks(TINY, 4) * 4
    # the chunks each plan picks: sample chunks to offer 2,048 programs over the channels (at most
    # one per sample, at most 64), position chunks for a long position axis
    conv2 = ConvShape(320, 64, 32, 32, 64)
    assert wgrad_chunks(conv2, cap=369) == 32  # ceil(2048 / 64) programs per channel
    assert wgrad_chunks(ConvShape(320, 512, 4, 4, 512), cap=23593) == 4  # ceil(2048 / 512)
    assert wgrad_chunks(ConvShape(3, 8, 4, 4, 8), cap=10) == 3  # one sample per chunk at most
    assert wgrad_positions_chunks(conv2, cap=369) > 1


def test_lif_bytes_and_flops_by_hand():
    fwd = lif_fwd_work(T=2, neurons=5, dtype=torch.bfloat16)
    assert fwd.traffic == {
        "read x": 2 * 5 * 2,
        "read v0": 5 * 2,
        "write spikes": 2 * 5 * 2,
        "write h": 2 * 5 * 2,
        "write v_last": 5 * 2,
    }
    assert fwd.bytes_min == 80 and fwd.flops == 10 * 2 * 5
    int8 = lif_fwd_work(T=2, neurons=5, dtype=torch.bfloat16, int8_spikes=True)
    assert int8.traffic["write spikes"] == 2 * 5 * 1 and int8.traffic["write h"] == 0
    assert int8.bytes_min == 20 + 10 + 10 + 0 + 10
    bwd = lif_bwd_work(T=2, neurons=5, dtype=torch.float32)
    assert bwd.kernel == "_lif_bwd_kernel"
    assert bwd.bytes_min == 40 + 40 + 20 + 40 + 20  # grad_s, h, grad_v_last, grad_x, grad_v0
    assert bwd.flops == 15 * 2 * 5


@pytest.mark.parametrize(
    "shape",
    [
        ConvShape(n=3, cin=4, h=5, w=6, cout=7),
        ConvShape(2, 3, 7, 7, 5, 3, 3, (2, 2), (1, 1), (1, 1)),
        ConvShape(2, 3, 8, 8, 4, 3, 3, (1, 1), (2, 2), (2, 2)),
    ],
)
def test_dense_flops_are_the_dense_conv_count(shape):
    weight = torch.randn(shape.cout, shape.cin, shape.kh, shape.kw)
    stats = mask_stats(torch.ones_like(weight, dtype=torch.bool), shape)
    dense = 2 * shape.n * shape.oh * shape.ow * shape.cout * shape.cin * shape.kh * shape.kw
    x = torch.randn(shape.n, shape.cin, shape.h, shape.w)
    with FlopCounterMode(display=False) as counter:
        y = F.conv2d(x, weight, None, shape.stride, shape.padding, shape.dilation)
    assert y.shape[2:] == (shape.oh, shape.ow)
    assert counter.get_total_flops() == dense
    for work in (
        conv_fwd_work(shape, stats, torch.float32, torch.float32),
        conv_fwd_work(shape, stats, torch.float32, torch.float32, activity=dense_activity(shape)),
        conv_dgrad_work(shape, stats, torch.float32, torch.float32),
        conv_wgrad_positions_work(shape, stats, torch.float32),
    ):
        assert work.flops == dense
    # the event-driven kernel issues every kept tap of every event: at stride s about s² times
    # the dense count (every usable input position an event), the dense count at stride 1
    events = conv_wgrad_work(shape, stats, torch.float32)
    assert events.flops == 2 * shape.n * usable_positions(shape) * stats.nnz
    assert (events.flops == dense) == (shape.stride == (1, 1))


def test_reach_with_stride_and_the_linear_layer():
    strided = ConvShape(1, 2, 4, 4, 3, 1, 1, (2, 2), (0, 0), (1, 1))  # 1×1 stride 2 reads 1 of 4
    ones = torch.ones(3, 2, 1, 1, dtype=torch.bool)
    assert mask_stats(ones, strided) == MaskStats(6, 2 * 4, 3 * 4)
    assert expected_mask_stats(strided, 1.0) == MaskStats(6, 2 * 4, 3 * 4)
    linear = ConvShape.linear(n=4, fin=6, fout=2)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[:, 5] = False  # input feature 5 feeds nothing: it need not be read
    mask[1] = False  # output 1 has no kept weight: its gradient need not be read
    stats = mask_stats(mask, linear)
    assert stats == MaskStats(nnz=5, x_reached=5, dy_reached=1)
    assert conv_fwd_work(linear, stats, torch.float32, torch.float32).flops == 2 * 4 * 5


def test_expected_reach_matches_random_masks():
    shape = ConvShape(n=1, cin=3, h=4, w=4, cout=2)
    gen = torch.Generator().manual_seed(0)
    samples = [mask_stats(torch.rand(2, 3, 3, 3, generator=gen) < 0.1, shape) for _ in range(400)]
    expected = expected_mask_stats(shape, 0.1)
    assert expected.nnz == round(0.1 * 54)
    mean_x = sum(s.x_reached for s in samples) / len(samples)
    mean_dy = sum(s.dy_reached for s in samples) / len(samples)
    assert mean_x == pytest.approx(expected.x_reached, rel=0.05)
    assert mean_dy == pytest.approx(expected.dy_reached, rel=0.05)
    full = expected_mask_stats(shape, 1.0)
    assert full == MaskStats.full(shape, 54)


def test_roofline_is_the_larger_of_the_two_bounds():
    toy = GpuPeaks("toy", hbm_tb_s=1.0, fp32_cuda_tflops=1.0, bf16_tensor_tflops=10.0, source="")
    memory = LaunchWork("k", flops=10**9, traffic={"read": 2 * 10**9})
    assert roofline_ms(memory, toy) == pytest.approx(2.0)  # 2e9 B / 1e12 B/s = 2 ms > 1 ms
    assert memory_bound(memory, toy)
    compute = LaunchWork("k", flops=5 * 10**9, traffic={"read": 2 * 10**9})
    assert roofline_ms(compute, toy) == pytest.approx(5.0)
    assert not memory_bound(compute, toy)
    assert roofline_ms(compute, toy, "bf16_tensor") == pytest.approx(2.0)
    assert total_roofline_ms([memory, compute], toy) == pytest.approx(7.0)
    assert achieved_fraction(4.0, memory, toy) == pytest.approx(0.5)
    assert spike_skipping_flops(compute, 0.1).flops == 5 * 10**8
    with pytest.raises(ValueError):
        achieved_fraction(0.0, memory, toy)
    with pytest.raises(ValueError):
        roofline_ms(memory, toy, "tf32")


def test_published_peaks():
    assert (H100_SXM.hbm_tb_s, H100_SXM.fp32_cuda_tflops, H100_SXM.bf16_tensor_tflops) == (
        3.35,
        67.0,
        989.0,
    )
    assert (H200_SXM.hbm_tb_s, H200_SXM.fp32_cuda_tflops, H200_SXM.bf16_tensor_tflops) == (
        4.8,
        67.0,
        989.0,
    )
    measured = PEAKS["h100-measured"]
    assert (measured.hbm_tb_s, measured.bf16_tensor_tflops) == (3.0, 737.0)  # SPEC §8


def test_table_rows_are_consistent():
    cfg = TableConfig()
    for anchor in SPEC_H100_ANCHORS:
        shape = anchor_shape(anchor)
        assert shape.n == 320 and (shape.oh, shape.ow) == (anchor.hw, anchor.hw)
        act = layer_activity(anchor, cfg)
        assert act == synthetic_activity(shape, 0.1)  # i.i.d. at the documented rate
        for density in cfg.densities:
            rows = {r.label: r for r in conv_rows(anchor, density, cfg)}
            assert tuple(rows) == CONV_ROW_LABELS
            work = conv_launches(anchor, density, cfg)
            nnz = round(density * shape.weights)
            dense_flops = 2 * 320 * anchor.hw**2 * nnz
            assert rows["dgrad"].flops == rows["baseline fwd (no skip)"].flops == dense_flops
            assert rows["baseline wgrad (positions)"].flops == dense_flops
            assert rows["fwd"].flops == round(dense_flops * act.forward)
            assert rows["wgrad"].flops == pytest.approx(dense_flops * act.weight_grad, abs=1)
            assert rows["activity pass"].flops == rows["events pass"].flops == 0
            step = ("activity pass", "fwd", "dgrad", "events pass", "wgrad")
            base = ("baseline fwd (no skip)", "dgrad", "baseline wgrad (positions)")
            for total, parts in (("fwd+bwd", step), ("baseline fwd+bwd", base)):
                assert rows[total].bytes_min == sum(rows[p].bytes_min for p in parts)
                assert rows[total].flops == sum(rows[p].flops for p in parts)
                assert rows[total].bounds_ms["h100", "fp32_cuda"] == pytest.approx(
                    sum(roofline_ms(work[p], H100_SXM) for p in parts)
                )
            # skipping reads the activity on top of the input: never fewer bytes than no skip
            assert rows["fwd"].bytes_min >= rows["baseline fwd (no skip)"].bytes_min
            for label in CONV_ROW_LABELS:
                row = rows[label]
                for compute in COMPUTE_KINDS:
                    h100, h200 = row.bounds_ms["h100", compute], row.bounds_ms["h200", compute]
                    assert h200 <= h100
                    if row.memory_bound["h100", compute] and row.memory_bound["h200", compute]:
                        assert h200 == pytest.approx(h100 * 3.35 / 4.8)
                    if label in work:
                        mem_ms = 1e3 * row.bytes_min / H100_SXM.bytes_per_s
                        flop_ms = 1e3 * row.flops / H100_SXM.flops_per_s(compute)
                        assert row.bounds_ms["h100", compute] == pytest.approx(max(mem_ms, flop_ms))
    # at 99 % sparsity every sparse launch of conv2 and conv4 is memory-bound on the H100
    for anchor in SPEC_H100_ANCHORS[:2]:
        assert all(r.memory_bound["h100", "fp32_cuda"] for r in conv_rows(anchor, 0.01, cfg))


def test_event_driven_weight_gradient_does_less_work_at_low_rates():
    """At 99 % sparsity and a 2 % spike rate the event-driven kernel does 50× fewer FLOPs than the
    position-driven baseline, and with its pass moves fewer bytes down to 4×4 maps; on 2×2 maps
    the pass's activity write (N·C int32, 4 bytes per 4 int8 inputs) outweighs the saving."""
    cfg = TableConfig()
    for anchor in SPEC_H100_ANCHORS:
        act = synthetic_activity(anchor_shape(anchor), 0.02)
        work = conv_launches(anchor, 0.01, cfg, act)
        base = work["baseline wgrad (positions)"]
        assert work["wgrad"].flops == pytest.approx(0.02 * base.flops, rel=1e-6)
        events = work["events pass"].bytes_min + work["wgrad"].bytes_min
        assert (events < base.bytes_min) == (anchor.hw >= 4)


def test_measured_structure_overrides_the_documented_rate():
    sparse = WorkFactors(rate=0.03, forward=0.4, weight_grad=0.03)
    cfg = TableConfig(activity={"conv9": sparse}, activity_source="test")
    conv9 = next(a for a in SPEC_H100_ANCHORS if a.layer == "conv9")
    assert layer_activity(conv9, cfg) == sparse
    assert layer_activity(SPEC_H100_ANCHORS[0], cfg) == synthetic_activity(
        anchor_shape(SPEC_H100_ANCHORS[0]), 0.1
    )
    rows = {r.label: r for r in conv_rows(conv9, 0.01, cfg)}
    assert rows["fwd"].flops == round(0.4 * rows["baseline fwd (no skip)"].flops)
    text = render_markdown(cfg)
    assert "work factors given for conv9 (test)" in text
    assert "Spikes (given): rate 0.0300, f_fwd = 0.400, f_wg = 0.030." in text


@pytest.mark.parametrize(
    ("silent", "dead"), [(None, 0.0), (0.5, 0.0), (0.6, 0.25), (0.0, 0.0), (1.0, 0.0)]
)
def test_synthetic_spikes_have_the_modelled_structure(silent, dead):
    shape = ConvShape(n=64, cin=16, h=4, w=4, cout=32)
    gen = torch.Generator().manual_seed(1)
    x = synthetic_spikes((64, 16, 4, 4), 0.1, silent, dead, generator=gen)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    got = work_factors(x, (3, 3), (1, 1), (1, 1), (1, 1), shape.cout)
    want = synthetic_activity(shape, 0.1, silent, dead)
    active = map_activity(x)
    if silent is not None:  # exact counts of silent maps and of channels silent in every sample
        assert int((~active).sum()) == round(silent * 64 * 16)
        assert int((~active.any(0)).sum()) >= round(dead * 16)
    if silent == 1.0:
        assert got.rate == want.rate == 0 and got.forward == want.forward == 0
        return
    assert got.rate == pytest.approx(want.rate, rel=0.1)
    assert got.weight_grad == pytest.approx(want.weight_grad, rel=0.1)
    assert got.forward == pytest.approx(want.forward, abs=0.05)


def test_synthetic_rate_is_at_least_one_spike_per_live_map():
    shape = ConvShape(n=8, cin=4, h=8, w=8, cout=4)
    act = synthetic_activity(shape, 0.001, silent_maps=0.5)
    assert act.rate == pytest.approx(16 / (8 * 4 * 64))  # 16 live maps, one spike each
    x = synthetic_spikes((8, 4, 8, 8), 0.001, 0.5)
    assert int(x.sum()) == 16


def _vgg16_structure_file(tmp_path: Path) -> Path:
    """A spike-structure result file as bench.spike_structure writes it, from a real (tiny
    batch) VGG-16 forward on the torch backend."""
    import ndsnn_triton
    from ndsnn_triton.models import build_model
    from ndsnn_triton.profiler.spike_structure import spike_structure

    model = build_model("vgg16", num_classes=10, T=2, in_channels=1, image_size=32)
    images = torch.randn(1, 1, 32, 32)
    with ndsnn_triton.use_backend("torch"):
        layers = spike_structure(model, [images], train=False)
    row = {"case": "vgg16", "model": "vgg16", "structure": {"trained": {"train": layers}}}
    path = tmp_path / "spike_structure.json"
    path.write_text(json.dumps({"environment": {}, "results": [row]}))
    return path


def test_measured_vgg16_structure_loads_by_conv(tmp_path):
    path = _vgg16_structure_file(tmp_path)
    spikes = load_vgg16_spikes(path)
    assert list(spikes) == [f"conv{k}" for k in range(1, 14)]
    assert spikes["conv2"].name == "features.1" and spikes["conv2"].input_shape == (64, 32, 32)
    assert spikes["conv9"].input_shape == (512, 4, 4) and spikes["conv12"].input_shape == (
        512,
        2,
        2,
    )
    for layer in spikes.values():
        assert 0 <= layer.rate <= 1 and 0 <= layer.silent_maps <= 1
        assert layer.work.rate == layer.rate
    doc = json.loads(path.read_text())
    doc["results"][0]["structure"]["trained"]["train"].pop(3)
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not VGG-16"):
        load_vgg16_spikes(path)


def test_docs_roofline_is_the_generated_table():
    """docs/roofline.md is ``ndsnn roofline --out docs/roofline.md`` (default options) of this
    checkout: regenerate it when the kernels' plans or the work model change."""
    committed = (ROOT / "docs" / "roofline.md").read_text()
    assert committed == render_markdown(TableConfig()), (
        "docs/roofline.md is stale: run `ndsnn roofline --out docs/roofline.md`"
    )


def test_lif_rows_cover_the_vgg16_sizes():
    sizes = vgg16_lif_sizes()
    assert len(sizes) == 13
    assert sizes[:2] == [(64, 32), (64, 32)] and sizes[-1] == (512, 2)
    groups = lif_rows(TableConfig())
    assert [(label, count) for label, count, _ in groups] == [
        ("64@32×32", 2),
        ("128@16×16", 2),
        ("256@8×8", 3),
        ("512@4×4", 3),
        ("512@2×2", 3),
        ("all", 13),
    ]
    fwd, int8, bwd = groups[0][2]
    m = 64 * 64 * 32 * 32  # B·C·H·W neurons, bf16
    assert fwd.bytes_min == 5 * m * 2 * 3 + m * 2 * 2  # x, spikes, h; v0, v_last
    assert int8.bytes_min == 5 * m * (2 + 1) + m * 2 * 2
    assert bwd.bytes_min == 5 * m * 2 * 3 + m * 2 * 2  # grad_s, h, grad_x; grad_v's
    assert all(r.memory_bound["h100", "fp32_cuda"] for _, _, rows in groups for r in rows)


def test_spec_anchor_table_is_present():
    rows = {a.layer: a for a in SPEC_H100_ANCHORS}
    assert list(rows) == ["conv2", "conv4", "conv6", "conv9", "conv12"]
    conv2, conv9 = rows["conv2"], rows["conv9"]
    assert (conv2.cin, conv2.cout, conv2.hw) == (64, 64, 32)
    assert (conv2.fwd_bwd_fp32_ms, conv2.fwd_bwd_tf32_ms, conv2.fwd_bwd_bf16_ms) == (
        2.45,
        0.895,
        0.467,
    )
    assert (conv2.fwd_bf16_ms, conv2.csr_fwd_99_ms, conv2.csr_fwd_90_ms) == (0.159, 0.267, 0.835)
    assert (conv9.fwd_bwd_fp32_ms, conv9.fwd_bwd_bf16_ms, conv9.csr_fwd_99_ms) == (
        3.815,
        0.2525,
        0.102,
    )
    assert rows["conv12"].csr_fwd_99_ms == 0.041
    text = render_markdown()
    assert "model, not measurement" in text
    for value in ("2,450", "895", "467", "159", "267", "835", "3,815", "41.0"):
        assert value in text
