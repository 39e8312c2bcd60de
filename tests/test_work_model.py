"""The per-launch work model and roofline bounds (a model, not a measurement): hand-computed
bytes and FLOPs of a tiny case for every kernel, consistency with the dense conv count, the
roofline arithmetic and SPEC §8's anchor table."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ndsnn_triton.profiler.roofline import (
    COMPUTE_KINDS,
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
    conv_rows,
    conv_wgrad_work,
    expected_mask_stats,
    lif_bwd_work,
    lif_fwd_work,
    lif_rows,
    mask_stats,
    memory_bound,
    render_markdown,
    roofline_ms,
    spike_skipping_flops,
    total_roofline_ms,
    vgg16_lif_sizes,
    wgrad_chunks,
    wgrad_launcher_bytes,
)

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


def test_weight_gradient_bytes_and_flops_by_hand():
    work = conv_wgrad_work(TINY, mask_stats(_tiny_mask(), TINY), torch.bfloat16)
    assert work.kernel == "_conv_wgrad_kernel"
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
    assert chunks >= 1
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
    # the partials grow with the chunks the launcher's plan picks for a long position axis
    assert wgrad_chunks(ConvShape(320, 64, 32, 32, 64), cap=369) > 1


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
        conv_dgrad_work(shape, stats, torch.float32, torch.float32),
        conv_wgrad_work(shape, stats, torch.float32),
    ):
        assert work.flops == dense


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
        for density in cfg.densities:
            fwd, dgrad, wgrad, both = conv_rows(anchor, density, cfg)
            assert [r.label for r in (fwd, dgrad, wgrad, both)] == [
                "fwd",
                "dgrad",
                "wgrad",
                "fwd+bwd",
            ]
            nnz = round(density * shape.weights)
            assert fwd.flops == dgrad.flops == wgrad.flops == 2 * 320 * anchor.hw**2 * nnz
            assert both.flops == 3 * fwd.flops
            assert both.bytes_min == fwd.bytes_min + dgrad.bytes_min + wgrad.bytes_min
            for row in (fwd, dgrad, wgrad):
                for compute in COMPUTE_KINDS:
                    mem_ms = 1e3 * row.bytes_min / H100_SXM.bytes_per_s
                    flop_ms = 1e3 * row.flops / H100_SXM.flops_per_s(compute)
                    assert row.bounds_ms["h100", compute] == pytest.approx(max(mem_ms, flop_ms))
            for row in (fwd, dgrad, wgrad, both):
                for compute in COMPUTE_KINDS:
                    h100, h200 = row.bounds_ms["h100", compute], row.bounds_ms["h200", compute]
                    assert h200 <= h100
                    if row.memory_bound["h100", compute] and row.memory_bound["h200", compute]:
                        assert h200 == pytest.approx(h100 * 3.35 / 4.8)
    # at 99 % sparsity every sparse launch is memory-bound on the H100
    for anchor in SPEC_H100_ANCHORS[:2]:
        assert all(r.memory_bound["h100", "fp32_cuda"] for r in conv_rows(anchor, 0.01, cfg))


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
