"""Spike skipping: the events pass, the forward that skips silent (sample-block, channel) pairs and
the spike-driven weight gradient, against pure-torch references; the MACs the instrumented kernels
count equal ``work.executed_macs`` (the rule the profiler's ``kernel`` convention prices).

On CPU the kernels run in the Triton interpreter (``TRITON_INTERPRET=1``, set by conftest)."""

import json
from pathlib import Path

import pytest
import torch

from ndsnn_triton.kernels.spike_conv import (
    conv_fwd_plan,
    masked_conv2d_ref,
    masked_conv2d_triton,
    masked_conv2d_weight_grad_ref,
    masked_conv2d_weight_grad_triton,
)
from ndsnn_triton.kernels.spike_events import spike_events_ref, spike_events_triton
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, interpreting
from ndsnn_triton.kernels.work import (
    executed_macs,
    forward_block,
    out_hw,
    usable_rows,
    work_factors,
)

TRITON = pytest.mark.skipif(
    not HAS_TRITON or not (torch.cuda.is_available() or interpreting()),
    reason="needs Triton on CUDA or TRITON_INTERPRET=1",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STRUCTURE = Path(__file__).resolve().parents[1] / "bench" / "results" / "spike_structure.json"

# (N, C, H, W, OC, k, stride, padding, dilation): a 2x2 map (blocks span samples, as in deep
# layers), stride 2 (3x3 and 1x1: unusable positions), dilation 2, a 1x1 map (linear layer)
GEOMETRIES = [
    (6, 3, 6, 7, 5, 3, 1, 1, 1),
    (9, 4, 4, 4, 6, 3, 2, 1, 1),
    (7, 2, 5, 5, 4, 1, 2, 0, 1),
    (12, 3, 2, 2, 4, 3, 1, 1, 1),
    (3, 2, 6, 6, 3, 3, 1, 2, 2),
    (10, 6, 1, 1, 3, 1, 1, 0, 1),
]
PATTERNS = [
    "zeros",
    "ones",
    "dead_channels",
    "single",
    "rate0.01",
    "rate0.1",
    "rate0.5",
    "measured",
]


def _measured_structure() -> tuple[float, float]:
    """(silent-map fraction, spike rate) of the deepest spiking conv layer of the trained VGG-16,
    from the recorded structure of real spike maps."""
    data = json.loads(STRUCTURE.read_text())
    row = next(r for r in data["results"] if r["model"] == "vgg16")
    layers = row["structure"]["trained"]["train"]
    deep = [L for L in layers if L["kind"] == "conv" and L["spike_input"]][-1]
    return float(deep["silent_maps"]), float(deep["rate"])


def spikes(pattern: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """An int8 spike tensor ``[N, C, H, W]`` of the named pattern."""
    g = torch.Generator().manual_seed(seed)
    n, c = shape[:2]
    if pattern == "zeros":
        x = torch.zeros(shape)
    elif pattern == "ones":
        x = torch.ones(shape)
    elif pattern == "single":
        x = torch.zeros(shape).flatten()
        x[torch.randint(x.numel(), (1,), generator=g)] = 1
        x = x.view(shape)
    elif pattern == "dead_channels":
        x = (torch.rand(shape, generator=g) < 0.3).float()
        x[:, ::2] = 0  # every other channel silent over the whole batch
    elif pattern.startswith("rate"):
        x = (torch.rand(shape, generator=g) < float(pattern[4:])).float()
    elif pattern == "measured":
        silent, rate = _measured_structure()
        live = torch.rand(n, c, 1, 1, generator=g) >= silent
        inside = min(1.0, rate / max(1e-6, 1.0 - silent))
        x = ((torch.rand(shape, generator=g) < inside) & live).float()
    else:
        raise ValueError(pattern)
    return x.to(torch.int8)


def _layer(geometry, pattern, seed=0, integer=False):
    n, c, h, w, oc, k, s, p, d = geometry
    g = torch.Generator().manual_seed(seed + 1)
    x = spikes(pattern, (n, c, h, w), seed)
    if integer:  # small integers: every sum is exact in fp32, whatever the order
        weight = torch.randint(-3, 4, (oc, c, k, k), generator=g).float()
    else:
        weight = torch.randn(oc, c, k, k, generator=g)
    mask = torch.rand(oc, c, k, k, generator=g) < 0.5
    geo = ([s, s], [p, p], [d, d])
    return x.to(DEVICE), weight.to(DEVICE), mask.to(DEVICE), geo


@TRITON
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.float32])
def test_events_pass_matches_reference(geometry, dtype):
    for pattern in ("rate0.1", "dead_channels", "single", "zeros"):
        x, weight, _, (s, p, d) = _layer(geometry, pattern)
        x = x.to(dtype)
        got = spike_events_triton(x, weight.shape[2:], s, p, d, True)
        ref = spike_events_ref(x, weight.shape[2:], s, p, d, got.samples_per_chunk)
        assert torch.equal(got.active, ref.active)
        assert torch.equal(got.counts, ref.counts)
        written = ref.events >= 0
        assert torch.equal(got.events[written], ref.events[written])
        only = spike_events_triton(x, weight.shape[2:], s, p, d, False)
        assert torch.equal(only.active, ref.active) and only.events is None


@TRITON
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_kernels_match_reference_and_count_the_rule(geometry, pattern):
    x, weight, mask, (s, p, d) = _layer(geometry, pattern)
    bias = torch.randn(weight.shape[0], device=DEVICE)
    fwd_work = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    y = masked_conv2d_triton(x, weight, mask, bias, s, p, d, 1, work=fwd_work)
    ref = masked_conv2d_ref(x, weight, mask, bias, s, p, d, 1)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(ref)
    wg_work = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    dw = masked_conv2d_weight_grad_triton(dy, x, mask, s, p, d, 1, False, work=wg_work)
    dw_ref = masked_conv2d_weight_grad_ref(dy, x, mask, s, p, d, 1, False)
    torch.testing.assert_close(dw, dw_ref, rtol=1e-5, atol=1e-5)
    rule = executed_macs(x, mask, s, p, d)
    assert fwd_work.item() == rule.forward.item()
    assert wg_work.item() == rule.weight_grad.item()


@TRITON
@pytest.mark.parametrize("geometry", GEOMETRIES[:4])
def test_skipping_changes_no_bit_of_the_result(geometry):
    # integer weights and gradients: the reference and the kernels compute exact sums, so any
    # skipped non-zero term (or a term counted twice) shows as an inequality
    x, weight, mask, (s, p, d) = _layer(geometry, "measured", integer=True)
    assert torch.equal(
        masked_conv2d_triton(x, weight, mask, None, s, p, d, 1),
        masked_conv2d_ref(x, weight, mask, None, s, p, d, 1),
    )
    g = torch.Generator().manual_seed(5)
    y_shape = masked_conv2d_ref(x, weight, mask, None, s, p, d, 1).shape
    dy = torch.randint(-3, 4, y_shape, generator=g).float().to(DEVICE)
    assert torch.equal(
        masked_conv2d_weight_grad_triton(dy, x, mask, s, p, d, 1, False),
        masked_conv2d_weight_grad_ref(dy, x, mask, s, p, d, 1, False),
    )


@TRITON
def test_weight_grad_is_deterministic():
    x, weight, mask, (s, p, d) = _layer(GEOMETRIES[0], "rate0.5")
    dy = torch.randn_like(masked_conv2d_ref(x, weight, mask, None, s, p, d, 1))
    a = masked_conv2d_weight_grad_triton(dy, x, mask, s, p, d, 1, False)
    b = masked_conv2d_weight_grad_triton(dy, x, mask, s, p, d, 1, False)
    assert torch.equal(a, b)


def test_executed_macs_hand_computed():
    # 1x1 convolution, 2 samples of a 1x4 map, 2 input channels, 1 output channel keeping both.
    x = torch.zeros(2, 2, 1, 4)
    x[0, 0, 0, 1] = 1  # one spike in channel 0, channel 1 dead
    mask = torch.ones(1, 2, 1, 1, dtype=torch.bool)
    # BLOCK_P = 16 covers all 8 output positions: channel 0's block is live (8 lanes), channel 1's
    # is skipped; the weight gradient meets channel 0's one event; the input gradient runs both
    # kept weights over all 8 input positions.
    assert forward_block(8, 1) == 16
    work = executed_macs(x, mask)
    assert (work.forward.item(), work.weight_grad.item(), work.input_grad.item()) == (8, 1, 16)
    # 32x32 maps: a block of 16 positions lies inside one sample, so a live map in sample 0 runs
    # 1024 lanes per kept weight, and sample 1's silent map none.
    x = torch.zeros(2, 1, 32, 32)
    x[0, 0, 5, 5] = 1
    mask = torch.ones(3, 1, 1, 1, dtype=torch.bool)
    work = executed_macs(x, mask)
    assert (work.forward.item(), work.weight_grad.item()) == (3 * 1024, 3)


def test_usable_positions_of_strided_layers():
    # 1x1 stride 2 on 5 rows reads rows 0, 2, 4 only; a 3x3 stride 2 layer reads every row
    assert usable_rows(5, 3, 1, 2, 0, 1).tolist() == [True, False, True, False, True]
    assert usable_rows(5, 2, 3, 2, 0, 1).all()
    x = torch.ones(1, 1, 5, 5)
    mask = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    assert executed_macs(x, mask, (2, 2)).weight_grad.item() == 9
    # a 2-D input is a [N, F, 1, 1] map (a linear layer)
    lin = executed_macs(torch.tensor([[1.0, 0.0, 1.0]]), torch.ones(2, 3, dtype=torch.bool))
    assert (lin.forward.item(), lin.weight_grad.item(), lin.input_grad.item()) == (4, 4, 6)


def test_work_factors_bound_the_ideal():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(16, 8, 4, 4, generator=g) < 0.05).float()
    f = work_factors(x, (3, 3), (1, 1), (1, 1), (1, 1), out_channels=8)
    assert f.rate == pytest.approx(x.mean().item())
    # stride 1, same padding: every non-zero input is an event, one per output position
    assert f.weight_grad == pytest.approx(f.rate)
    assert f.rate <= f.forward <= 1.0
    block = forward_block(16 * 16, 8)
    n, c = x.shape[:2]
    per_block = max(1, block // 16)
    live = (x.reshape(n // per_block, per_block, c, 16) != 0).any(-1).any(1)
    assert f.forward == pytest.approx(live.float().mean().item())


def test_work_factors_of_a_silent_input():
    f = work_factors(torch.zeros(4, 2, 3, 3), (3, 3), (1, 1), (1, 1), (1, 1), 2)
    assert (f.rate, f.forward, f.weight_grad) == (0.0, 0.0, 0.0)


def test_plans_use_the_rule_block():
    for n, h, oc in ((320, 32, 64), (320, 2, 512), (1, 1, 10)):
        oh, ow = out_hw(h, h, 3, 3, (1, 1), (1, 1), (1, 1))
        launch = conv_fwd_plan(
            (n, 3, h, h), (oc, 3, 3, 3), (1, 1), (1, 1), (1, 1), torch.int8, torch.float32, False
        )
        assert launch.constexprs["BLOCK_P"] == forward_block(n * oh * ow, oc)


@TRITON
def test_work_counter_must_be_int64():
    x, weight, mask, (s, p, d) = _layer(GEOMETRIES[0], "rate0.1")
    with pytest.raises(ValueError, match="int64"):
        masked_conv2d_triton(x, weight, mask, None, s, p, d, 1, work=torch.zeros(1))
