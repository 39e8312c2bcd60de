"""Spike skipping: the forward that skips silent (sample, channel) input maps given their activity,
the weight gradient that finds its spikes itself, and the fallback pass that makes the activity
(and the int8 copy) for inputs no LIF described — against pure-torch references; the MACs the
instrumented kernels count equal ``work.executed_macs`` (the rule the profiler's ``kernel``
convention prices).

On CPU the kernels run in the Triton interpreter (``TRITON_INTERPRET=1``, set by conftest)."""

import json
from pathlib import Path

import pytest
import torch

from ndsnn_triton.kernels.spike_conv import (
    conv_fwd_plan,
    masked_conv2d_input_grad_ref,
    masked_conv2d_input_grad_triton,
    masked_conv2d_ref,
    masked_conv2d_triton,
    masked_conv2d_weight_grad_ref,
    masked_conv2d_weight_grad_triton,
)
from ndsnn_triton.kernels.spike_prep import spike_prep_ref, spike_prep_triton
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, interpreting
from ndsnn_triton.kernels.work import executed_macs, out_hw, usable_rows, work_factors

TRITON = pytest.mark.skipif(
    not HAS_TRITON or not (torch.cuda.is_available() or interpreting()),
    reason="needs Triton on CUDA or TRITON_INTERPRET=1",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STRUCTURE = Path(__file__).resolve().parents[1] / "bench" / "results" / "spike_structure.json"

# (N, C, H, W, OC, k, stride, padding, dilation): a 2x2 map (tiles span samples, as in deep
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


def _companion(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The int8 copy and map activity a LIF (or the fallback pass) hands the forward."""
    return x.to(torch.int8), (x.flatten(2) != 0).any(-1).to(torch.int8)


@TRITON
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.float32])
def test_prep_pass_matches_reference(geometry, dtype):
    for pattern in ("rate0.1", "dead_channels", "single", "zeros"):
        x, _, _, _ = _layer(geometry, pattern)
        x = x.to(dtype)
        for got, ref in zip(spike_prep_triton(x, True), spike_prep_ref(x, True), strict=True):
            assert got.dtype == ref.dtype and torch.equal(got, ref)
    bad = torch.full((2, 3, 4, 4), 0.5, device=DEVICE)
    assert spike_prep_triton(bad, True)[2].item() == 1 == spike_prep_ref(bad, True)[2].item()


#: every pattern on a map; the skip-relevant ones on deep 2x2 maps (tiles span samples); every
#: geometry at rate 0.1
CASES = sorted(
    {(0, p) for p in PATTERNS}
    | {(3, p) for p in ("zeros", "dead_channels", "single", "measured")}
    | {(g, "rate0.1") for g in range(len(GEOMETRIES))}
)


@TRITON
@pytest.mark.parametrize(("geometry", "pattern"), CASES)
def test_kernels_match_reference_and_count_the_rule(geometry, pattern):
    geometry = GEOMETRIES[geometry]
    x, weight, mask, (s, p, d) = _layer(geometry, pattern)
    bias = torch.randn(weight.shape[0], device=DEVICE)
    spikes_i8, active = _companion(x)
    fwd_work = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    y = masked_conv2d_triton(x, weight, mask, bias, s, p, d, 1, spikes_i8, active, work=fwd_work)
    ref = masked_conv2d_ref(x, weight, mask, bias, s, p, d, 1)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(ref)
    dx_work = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    dx = masked_conv2d_input_grad_triton(dy, weight, mask, list(x.shape), s, p, d, 1, dx_work)
    dx_ref = masked_conv2d_input_grad_ref(dy, weight, mask, list(x.shape), s, p, d, 1)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-5, atol=1e-5)
    wg_work = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    dw, db = masked_conv2d_weight_grad_triton(
        dy, x, mask, s, p, d, 1, False, torch.float32, True, work=wg_work
    )
    dw_ref, db_ref = masked_conv2d_weight_grad_ref(
        dy, x, mask, s, p, d, 1, False, torch.float32, True
    )
    torch.testing.assert_close(dw, dw_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(db, db_ref, rtol=1e-5, atol=1e-5)
    rule = executed_macs(x, mask, s, p, d)
    assert fwd_work.item() == rule.forward.item()
    assert dx_work.item() == rule.input_grad.item()
    assert wg_work.item() == rule.weight_grad.item()
    # without the activity the forward runs every sample: the rule without skipping
    plain_work = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    masked_conv2d_triton(x, weight, mask, bias, s, p, d, 1, spikes_i8, work=plain_work)
    assert plain_work.item() == executed_macs(x, mask, s, p, d, skip=False).forward.item()


@TRITON
@pytest.mark.parametrize("geometry", GEOMETRIES[:4])
def test_skipping_changes_no_bit_of_the_result(geometry):
    # integer weights and gradients: the reference and the kernels compute exact sums, so any
    # skipped non-zero term (or a term counted twice) shows as an inequality
    x, weight, mask, (s, p, d) = _layer(geometry, "measured", integer=True)
    ref = masked_conv2d_ref(x, weight, mask, None, s, p, d, 1)
    assert torch.equal(masked_conv2d_triton(x, weight, mask, None, s, p, d, 1, *_companion(x)), ref)
    assert torch.equal(masked_conv2d_triton(x, weight, mask, None, s, p, d, 1), ref)
    g = torch.Generator().manual_seed(5)
    dy = torch.randint(-3, 4, ref.shape, generator=g).float().to(DEVICE)
    got = masked_conv2d_weight_grad_triton(dy, x, mask, s, p, d, 1, False, None, True)
    want = masked_conv2d_weight_grad_ref(dy, x, mask, s, p, d, 1, False, None, True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@TRITON
def test_kernels_are_deterministic():
    x, weight, mask, (s, p, d) = _layer(GEOMETRIES[0], "rate0.5")
    dy = torch.randn_like(masked_conv2d_ref(x, weight, mask, None, s, p, d, 1))
    runs = [
        (
            masked_conv2d_weight_grad_triton(dy, x, mask, s, p, d, 1, False, None, True),
            masked_conv2d_input_grad_triton(dy, weight, mask, list(x.shape), s, p, d, 1),
            masked_conv2d_triton(x, weight, mask, None, s, p, d, 1, *_companion(x)),
        )
        for _ in range(2)
    ]
    (wa, ba), dxa, ya = runs[0]
    (wb, bb), dxb, yb = runs[1]
    assert torch.equal(wa, wb) and torch.equal(ba, bb) and torch.equal(dxa, dxb)
    assert torch.equal(ya, yb)


@TRITON
def test_rows_longer_than_a_chunk_and_empty_rows():
    """The pipelined loops walk several chunks per row and write rows (and input channels) that
    keep no weight: bias only, or zeros."""
    g = torch.Generator().manual_seed(8)
    x = (torch.rand(3, 12, 5, 5, generator=g) < 0.4).float().to(DEVICE)
    weight = torch.randn(6, 12, 3, 3, generator=g).to(DEVICE)
    mask = torch.rand(6, 12, 3, 3, generator=g) < 0.8
    mask[2] = False  # an output channel with no kept weight
    mask[:, 5] = False  # an input channel no kept weight reads
    mask = mask.to(DEVICE)
    bias = torch.randn(6, generator=g).to(DEVICE)
    geo = ([1, 1], [1, 1], [1, 1])
    y = masked_conv2d_triton(x, weight, mask, bias, *geo, 1, *_companion(x))
    torch.testing.assert_close(
        y, masked_conv2d_ref(x, weight, mask, bias, *geo, 1), rtol=1e-5, atol=1e-5
    )
    dy = torch.randn_like(y)
    dx = masked_conv2d_input_grad_triton(dy, weight, mask, list(x.shape), *geo, 1)
    dx_ref = masked_conv2d_input_grad_ref(dy, weight, mask, list(x.shape), *geo, 1)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(dx[:, 5], torch.zeros_like(dx[:, 5]))


def test_executed_macs_hand_computed():
    # 1x1 convolution, 2 samples of a 2x2 map, 2 input channels, 1 output channel keeping both.
    x = torch.zeros(2, 2, 2, 2)
    x[0, 0, 0, 1] = 1  # one spike in channel 0 of sample 0; channel 1 dead
    mask = torch.ones(1, 2, 1, 1, dtype=torch.bool)
    # forward: only the (sample 0, channel 0) map is live, 4 output positions; the weight
    # gradient meets its one event; the input gradient runs both kept weights over all 8
    # input positions
    work = executed_macs(x, mask)
    assert (work.forward.item(), work.weight_grad.item(), work.input_grad.item()) == (4, 1, 16)
    # without the activity, every sample's map is run: 2 kept weights × 2 samples × 4 positions
    assert executed_macs(x, mask, skip=False).forward.item() == 16
    # 32x32 maps, 3 output channels: a live map in sample 0 runs 1024 lanes per kept weight
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
    # a 2-D input is a [N, F, 1, 1] map (a linear layer): 1x1 maps are not skipped in the forward
    lin = executed_macs(torch.tensor([[1.0, 0.0, 1.0]]), torch.ones(2, 3, dtype=torch.bool))
    assert (lin.forward.item(), lin.weight_grad.item(), lin.input_grad.item()) == (6, 4, 6)


def test_work_factors_bound_the_ideal():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(16, 8, 4, 4, generator=g) < 0.05).float()
    f = work_factors(x, (3, 3), (1, 1), (1, 1), (1, 1))
    assert f.rate == pytest.approx(x.mean().item())
    # stride 1, same padding: every non-zero input is an event, one per output position
    assert f.weight_grad == pytest.approx(f.rate)
    assert f.rate <= f.forward <= 1.0
    # the forward runs the live (sample, channel) maps only
    live = (x.flatten(2) != 0).any(-1)
    assert f.forward == pytest.approx(live.float().mean().item())


def test_work_factors_of_a_silent_input():
    f = work_factors(torch.zeros(4, 2, 3, 3), (3, 3), (1, 1), (1, 1), (1, 1))
    assert (f.rate, f.forward, f.weight_grad) == (0.0, 0.0, 0.0)


def test_plans_skip_only_where_the_maps_are_large_enough():
    for h, skips in ((32, True), (2, True), (1, False)):
        launch = conv_fwd_plan(
            (320, 3, h, h), (16, 3, 3, 3), (1, 1), (1, 1), (1, 1), torch.int8, torch.float32,
            torch.float32, False, True, 40,
        )  # fmt: skip
        assert launch.constexprs["SKIP"] is skips
        oh, _ = out_hw(h, h, 3, 3, (1, 1), (1, 1), (1, 1))
        assert launch.constexprs["S"] * launch.constexprs["Q"] >= min(oh * oh, 32)


@TRITON
def test_work_counter_must_be_int64():
    x, weight, mask, (s, p, d) = _layer(GEOMETRIES[0], "rate0.1")
    with pytest.raises(ValueError, match="int64"):
        masked_conv2d_triton(x, weight, mask, None, s, p, d, 1, work=torch.zeros(1))
