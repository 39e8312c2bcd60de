"""The launchers' plans, checked without launching: CUDA grid limits at the largest shapes,
int32 offsets, launches that fill a 132-SM GPU, and the empty batch on every path."""

from __future__ import annotations

import pytest
import torch

import ndsnn_triton
from ndsnn_triton.kernels.launch import (
    FILL_PROGRAMS,
    GRID_LIMITS,
    MAX_INT32_ELEMENTS,
    PLANS,
    LaunchLimitError,
    check_grid,
    pow2_block,
)
from ndsnn_triton.kernels.lif import lif_bwd_plan, lif_fwd_plan
from ndsnn_triton.kernels.spike_conv import (
    CHANNEL_FOLD_PROGRAMS,
    conv_dgrad_plan,
    conv_fwd_plan,
    conv_wgrad_plan,
    wgrad_reduce_plan,
)
from ndsnn_triton.kernels.spike_prep import spike_prep_plan
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, interpreting

F32, I8 = torch.float32, torch.int8
ONE, PAD = (1, 1), (1, 1)


def fwd_plan(x_shape, w_shape, stride=ONE, padding=PAD, x_dtype=I8, bias=True, cap=None):
    """The forward's plan with fp32 weights and output, the activity given."""
    cap = (
        cap if cap is not None else max(1, w_shape[0] * w_shape[1] * w_shape[2] * w_shape[3] // 100)
    )
    return conv_fwd_plan(x_shape, w_shape, stride, padding, ONE, x_dtype, F32, F32, bias, True, cap)


def dgrad_plan(x_shape, w_shape, stride=ONE, padding=PAD, dtype=F32, cap=100):
    return conv_dgrad_plan(x_shape, w_shape, stride, padding, ONE, dtype, F32, cap)


def _within_limits(grid: tuple[int, ...]) -> bool:
    return all(g <= limit for g, limit in zip(grid, GRID_LIMITS, strict=False))


@pytest.mark.parametrize(
    ("batch", "T", "size"),
    [
        (1_639, 5, 32),  # the first CIFAR batch whose positions pass 65,535 × 128
        (4_096, 5, 32),
        (512, 5, 64),  # TinyImageNet at batch 512
    ],
)
def test_large_batches_stay_within_cuda_grid_limits(batch, T, size):
    n = batch * T
    assert n * size * size > 65_535 * 128  # past the old layout's axis-1 limit
    fwd = fwd_plan((n, 64, size, size), (64, 64, 3, 3))
    dgrad = dgrad_plan((n, 64, size, size), (64, 64, 3, 3))
    wgrad = conv_wgrad_plan((n, 64, size, size), (64, 64, 3, 3), ONE, PAD, ONE, 369, F32, I8, True)
    for launch in (fwd, dgrad, wgrad):
        assert _within_limits(launch.grid), (launch.name, launch.grid)
    # every (sample, position) is covered, and every output channel
    c = fwd.constexprs
    assert fwd.grid[0] * c["S"] * c["Q"] >= n * size * size
    assert fwd.grid[1] * c["ROWS"] >= 64 and dgrad.grid[1] * dgrad.constexprs["CHANS"] >= 64


def test_check_grid_names_the_axis():
    check_grid("k", (2**31 - 1, 65_535, 65_535))
    with pytest.raises(LaunchLimitError, match="grid axis 1 needs 65,536 programs"):
        check_grid("k", (1, 65_536))


def test_more_than_65535_channels_is_refused_clearly():
    with pytest.raises(LaunchLimitError, match="grid axis 1"):
        conv_wgrad_plan((2, 70_000, 1, 1), (3, 70_000, 1, 1), ONE, (0, 0), ONE, 9, F32, I8)


def test_maps_too_large_for_packed_events_are_refused_clearly():
    with pytest.raises(LaunchLimitError, match="257×257 exceed the 256×256"):
        conv_wgrad_plan((1, 3, 257, 257), (4, 3, 3, 3), ONE, PAD, ONE, 9, F32, I8)


@pytest.mark.parametrize(
    ("plan", "args", "tensor"),
    [
        (fwd_plan, ((40_000, 64, 32, 32), (64, 64, 3, 3)), "x"),
        (dgrad_plan, ((40_000, 64, 32, 32), (64, 64, 3, 3)), "grad_input"),
        (
            conv_wgrad_plan,
            ((40_000, 64, 32, 32), (64, 64, 3, 3), ONE, PAD, ONE, 100, F32, I8),
            "input",
        ),
        (lif_fwd_plan, ((5, 8_000, 64, 32, 32), F32, False, True, 0.0), "x_seq"),
        (lif_bwd_plan, ((5, 8_000, 64, 32, 32), F32, 0.0, False, "atan"), "h_seq"),
        (spike_prep_plan, ((40_000, 64, 32, 32), F32, True), "input"),
    ],
)
def test_int32_offsets_are_guarded(plan, args, tensor):
    with pytest.raises(
        LaunchLimitError, match=f"{tensor} has .* elements; the Triton kernels index with int32"
    ):
        plan(*args)


def test_largest_accepted_tensor_is_just_below_the_int32_guard():
    n = MAX_INT32_ELEMENTS // (64 * 32 * 32)
    launch = fwd_plan((n, 64, 32, 32), (64, 64, 3, 3))
    tile = launch.constexprs["S"] * launch.constexprs["Q"]
    assert n * 64 * 32 * 32 + tile < 2**31  # a tile past the end still has int32 offsets


@pytest.mark.parametrize(
    ("name", "launch"),
    [
        # VGG-16 classifier at B = 64, T = 5 (N = 320): 320 samples of a 1×1 map, 10 rows
        ("vgg classifier fwd", fwd_plan((320, 512, 1, 1), (10, 512, 1, 1), padding=(0, 0))),
        ("vgg classifier dgrad", dgrad_plan((320, 512, 1, 1), (10, 512, 1, 1), padding=(0, 0))),
        # its weight gradient at 1 % density: 51 kept weights
        ("vgg classifier wgrad 1%", conv_wgrad_plan((320, 512, 1, 1), (10, 512, 1, 1), ONE, (0, 0), ONE, 51, F32, I8)),
        ("conv12 wgrad 1%", conv_wgrad_plan((320, 512, 2, 2), (512, 512, 3, 3), ONE, PAD, ONE, 23_593, F32, I8)),
        ("lif_fc", lif_fwd_plan((5, 64, 512), F32, False, True, 0.0)),
    ],
)  # fmt: skip
def test_small_launches_offer_enough_programs(name, launch):
    """A launch fills the GPU unless its tiles are already the smallest the plan allows (one
    warp's 32 lanes; 64 LIF neurons); before, the classifier forward launched 30 programs."""
    c = launch.constexprs
    tile = c.get("BLOCK", c.get("S", 1) * c.get("Q", 1))
    smallest = 64 if launch.name.startswith("lif") else 32
    if launch.name == "conv_wgrad":
        tile = smallest  # its grid is (chunks, channels): chunks grow until the launch is full
    assert launch.programs >= FILL_PROGRAMS or tile == smallest, (name, launch.grid, tile)
    assert launch.programs > 64, (name, launch.grid)


def test_big_launches_fold_channels_into_programs():
    """VGG-16 conv2 at B 64, T 5: so many position tiles that a program takes several rows."""
    launch = fwd_plan((320, 64, 32, 32), (64, 64, 3, 3), cap=369)
    assert launch.constexprs["ROWS"] > 1
    assert launch.programs >= CHANNEL_FOLD_PROGRAMS // 2


def test_pow2_block_prefers_big_blocks_when_the_launch_is_big():
    assert pow2_block(10**6, 16, 128) == 128
    assert pow2_block(320, 16, 128, others=10) == 16
    assert pow2_block(5, 16, 128, others=1000) == 16
    assert pow2_block(40, 16, 128, others=1000) == 64  # never larger than the work needs


def test_every_plan_is_registered():
    assert set(PLANS) == {
        "conv_fwd",
        "conv_dgrad",
        "conv_wgrad",
        "wgrad_reduce",
        "spike_prep",
        "lif_fwd",
        "lif_bwd",
    }


def test_plans_describe_every_kernel_argument():
    if not HAS_TRITON:
        pytest.skip("needs Triton")
    launches = [
        fwd_plan((2, 3, 5, 5), (4, 3, 3, 3), x_dtype=torch.bool),
        conv_dgrad_plan((2, 3, 5, 5), (4, 3, 3, 3), ONE, PAD, ONE, torch.bfloat16, F32, 7),
        conv_wgrad_plan((2, 3, 5, 5), (4, 3, 3, 3), ONE, PAD, ONE, 7, torch.float16, torch.uint8),
        wgrad_reduce_plan((4, 3, 3, 3), 2, F32, True),
        spike_prep_plan((2, 3, 5, 5), torch.bfloat16, True),
        lif_fwd_plan((3, 4), torch.bfloat16, True, False, None, 4, True),
        lif_bwd_plan((3, 4), F32, None, True, "sigmoid", False),
    ]
    for launch in launches:
        sig = launch.signature()
        assert list(sig) == list(launch.kernel.arg_names)
    assert launches[0].signature()["x_ptr"] == "*i8"  # bool spikes travel as int8


# ----------------------------------------------------------------------------- empty batch

BACKENDS = ["torch"] + (
    ["triton"] if HAS_TRITON and (interpreting() or torch.cuda.is_available()) else []
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_gives_empty_outputs_and_zero_weight_gradients(backend):
    w = torch.randn(4, 3, 3, 3, device=DEVICE, requires_grad=True)
    mask = torch.rand(4, 3, 3, 3, device=DEVICE) < 0.5
    lw = torch.randn(5, 6, device=DEVICE, requires_grad=True)
    lmask = torch.rand(5, 6, device=DEVICE) < 0.5
    x = torch.zeros(0, 3, 6, 6, device=DEVICE, requires_grad=True)
    xl = torch.zeros(0, 6, device=DEVICE, requires_grad=True)
    xs = torch.zeros(4, 0, 7, device=DEVICE, requires_grad=True)
    with ndsnn_triton.use_backend(backend):
        y = ndsnn_triton.masked_conv2d(x, w, mask, padding=1)
        yl = ndsnn_triton.masked_linear(xl, lw, lmask)
        s, v = ndsnn_triton.lif_multistep(xs, torch.zeros(0, 7, device=DEVICE))
        (y.sum() + yl.sum() + s.sum() + v.sum()).backward()
    assert y.shape == (0, 4, 6, 6) and yl.shape == (0, 5) and s.shape == (4, 0, 7)
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(lw.grad, torch.zeros_like(lw))
    assert x.grad.shape == x.shape and xl.grad.shape == xl.shape and xs.grad.shape == xs.shape


@pytest.mark.skipif("triton" not in BACKENDS, reason="needs Triton on CUDA or the interpreter")
def test_empty_batch_weight_gradient_launcher_returns_zeros():
    from ndsnn_triton.kernels.spike_conv import masked_conv2d_weight_grad_triton

    mask = torch.ones(4, 3, 3, 3, dtype=torch.bool, device=DEVICE)
    grad, bias = masked_conv2d_weight_grad_triton(
        torch.zeros(0, 4, 5, 5, device=DEVICE),
        torch.zeros(0, 3, 5, 5, dtype=torch.int8, device=DEVICE),
        mask, [1, 1], [1, 1], [1, 1], 1, False, None, True,
    )  # fmt: skip
    assert torch.equal(grad, torch.zeros(4, 3, 3, 3, device=DEVICE))
    assert torch.equal(bias, torch.zeros(4, device=DEVICE))


def test_auto_runs_shapes_past_the_launch_limits_on_the_reference(monkeypatch):
    """Under ``auto`` a shape the plans refuse runs on the reference; ``triton`` names it."""
    from ndsnn_triton.kernels import dispatch

    def refuse(*args):
        raise LaunchLimitError("x has 3,000,000,000 elements")

    run = dispatch.wrap("ndsnn::masked_linear", refuse, lambda *a: "reference", priced=False)
    monkeypatch.setattr(dispatch, "triton_usable", lambda *t: True)
    args = (torch.zeros(2, 3), torch.zeros(4, 3), torch.ones(4, 3, dtype=torch.bool), None)
    with ndsnn_triton.use_backend("auto"):
        assert run(*args) == "reference"
    with ndsnn_triton.use_backend("triton"), pytest.raises(LaunchLimitError, match="3,000,000,000"):
        run(*args)
