"""SpikeMaxPool2d on float input: nn.MaxPool2d's output and gradient, saving a uint8 window code.

The reference throughout is torch's own ``nn.MaxPool2d`` / ``F.max_pool2d`` (its autograd).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ndsnn_triton.nn import SeqToANNContainer, SpikeMaxPool2d
from ndsnn_triton.nn.pool import _CodedMaxPool2d

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FLOATS = [torch.float32, torch.float64, torch.bfloat16]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits, so equality also checks the sign of zeros."""
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _run(pool: nn.Module, x: torch.Tensor, grad: torch.Tensor | None = None):
    """Output and input gradient of ``pool`` at ``x`` for the upstream gradient ``grad``."""
    x = x.detach().clone().requires_grad_()
    y = pool(x)
    if grad is None:
        grad = torch.randn(y.shape, device=y.device).to(y.dtype)
    y.backward(grad)
    return y.detach(), x.grad, grad


def _check_like_torch(pool: SpikeMaxPool2d, x: torch.Tensor) -> None:
    ref_pool = nn.MaxPool2d(pool.kernel_size, pool.stride, pool.padding)
    y, gx, grad = _run(pool, x)
    y_ref, gx_ref, _ = _run(ref_pool, x, grad)
    assert y.dtype == gx.dtype == x.dtype
    assert torch.equal(y, y_ref)
    assert torch.equal(_bits(y), _bits(y_ref))
    assert torch.equal(gx, gx_ref)
    assert torch.equal(_bits(gx), _bits(gx_ref))


def _saved(fn):
    """What autograd saves while ``fn()`` runs (tensors passed to pack hooks)."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kernel", [2, 3, (2, 3)])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 1.0])
def test_spikes_give_max_pool_output_and_gradient_bitwise(dtype, kernel, rate):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = (torch.rand(3, 5, 4 * kh, 3 * kw, device=DEVICE) < rate).to(dtype)
    _check_like_torch(SpikeMaxPool2d(kernel), x)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kernel", [2, 3, (2, 3)])
def test_floats_with_ties_give_max_pool_output_and_gradient_bitwise(dtype, kernel):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randint(0, 3, (2, 7, 5 * kh, 2 * kw), device=DEVICE).to(dtype)
    _check_like_torch(SpikeMaxPool2d(kernel, stride=kernel), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signed_zeros_and_negative_values_are_bitwise_torch(dtype):
    # windows of -0.0 / +0.0 ties (which amax does not order like max pooling: a zero maximum may
    # come out with the other sign), negatives, and upstream gradients of -0.0 (torch's backward
    # adds them to zero: +0.0)
    signs = torch.where(torch.rand(4, 3, 32, 32, device=DEVICE) < 0.5, -1.0, 1.0)
    x = (torch.randint(-1, 1, (4, 3, 32, 32), device=DEVICE).float() * signs).to(dtype)
    for k in (2, 4, 8, 16):
        minus_zero = torch.full((4, 3, 32 // k, 32 // k), -0.0, device=DEVICE, dtype=dtype)
        y, gx, _ = _run(SpikeMaxPool2d(k), x, minus_zero)
        y_ref, gx_ref, _ = _run(nn.MaxPool2d(k), x, minus_zero)
        assert torch.equal(_bits(y), _bits(y_ref))
        assert torch.equal(_bits(gx), _bits(gx_ref))


def test_three_dim_input():
    x = torch.randint(0, 3, (5, 6, 8), device=DEVICE).float()
    pool = SpikeMaxPool2d(2)
    _, saved = _saved(lambda: pool(x.clone().requires_grad_()))
    assert [t.dtype for t in saved] == [torch.uint8]
    _check_like_torch(pool, x)


def test_inside_seq_to_ann_container_on_time_first_input():
    x = (torch.rand(4, 2, 3, 8, 8, device=DEVICE) < 0.3).float()
    seq = SeqToANNContainer(SpikeMaxPool2d(2))
    y, gx, grad = _run(seq, x)
    assert y.shape == (4, 2, 3, 4, 4)
    y_ref, gx_ref, _ = _run(
        lambda s: F.max_pool2d(s.flatten(0, 1), 2).unflatten(0, (4, 2)), x, grad
    )
    assert torch.equal(y, y_ref)
    assert torch.equal(gx, gx_ref)


@pytest.mark.parametrize("kernel", [2, 3, (2, 3)])
def test_backward_saves_one_uint8_code_per_output(kernel):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = (torch.rand(2, 3, 2 * kh, 4 * kw, device=DEVICE) < 0.5).float().requires_grad_()
    y, saved = _saved(lambda: SpikeMaxPool2d(kernel)(x))
    assert len(saved) == 1
    (code,) = saved
    assert code.dtype == torch.uint8 and code.shape == y.shape
    assert not any(t.dtype == torch.int64 for t in saved)
    # the code is the row-major offset of the window's first spike (0 for a silent window)
    windows = x.detach().unflatten(-1, (4, kw)).unflatten(-3, (2, kh)).movedim(-3, -2).flatten(-2)
    first = torch.where(windows.any(-1), (windows > 0).to(torch.uint8).argmax(-1), 0)
    assert torch.equal(code, first.to(torch.uint8))
    assert code.max() < kh * kw


def test_without_grad_nothing_is_coded_or_saved():
    pool = SpikeMaxPool2d(2)
    x = (torch.rand(2, 3, 8, 8, device=DEVICE) < 0.5).float()
    with torch.no_grad():
        y, saved = _saved(lambda: pool(x.clone().requires_grad_()))
    assert saved == [] and y.grad_fn is None
    assert torch.equal(y, F.max_pool2d(x, 2))
    y, saved = _saved(lambda: pool(x))  # grad mode on, but x needs no gradient
    assert saved == [] and y.grad_fn is None
    assert torch.equal(y, F.max_pool2d(x, 2))


def test_coded_path_is_taken_only_when_a_gradient_is_needed(monkeypatch):
    calls = []
    apply = _CodedMaxPool2d.apply
    monkeypatch.setattr(_CodedMaxPool2d, "apply", lambda *a: calls.append(1) or apply(*a))
    pool = SpikeMaxPool2d(2)
    x = torch.rand(1, 2, 4, 4, device=DEVICE)
    with torch.no_grad():
        pool(x.clone().requires_grad_())
    pool(x)
    assert calls == []
    pool(x.clone().requires_grad_())
    assert calls == [1]


@pytest.mark.parametrize(
    "kwargs, size",
    [
        (dict(kernel_size=3, stride=2, padding=1), (8, 8)),  # overlapping, padded
        (dict(kernel_size=2, stride=1), (8, 8)),  # overlapping
        (dict(kernel_size=2, padding=1), (8, 8)),  # padded
        (dict(kernel_size=2, dilation=2), (8, 8)),
        (dict(kernel_size=2, ceil_mode=True), (8, 8)),
        (dict(kernel_size=3), (8, 9)),  # H not divisible by the kernel
        (dict(kernel_size=(16, 17)), (16, 34)),  # 272 > 256 window elements
    ],
)
def test_other_windows_fall_back_to_max_pool_with_int64_indices(kwargs, size):
    pool = SpikeMaxPool2d(**kwargs)
    x = torch.randint(0, 3, (2, 3, *size), device=DEVICE).float()
    _, saved = _saved(lambda: pool(x.clone().requires_grad_()))
    dtypes = [t.dtype for t in saved]
    # nn.MaxPool2d's autograd, unchanged: it saves its int64 indices (and the input)
    assert torch.int64 in dtypes and torch.uint8 not in dtypes
    y, gx, grad = _run(pool, x)
    y_ref, gx_ref, _ = _run(nn.MaxPool2d(**kwargs), x, grad)
    assert torch.equal(y, y_ref)
    assert torch.equal(gx, gx_ref)


def test_largest_coded_window_has_256_elements():
    x = torch.randint(0, 3, (2, 3, 32, 16), device=DEVICE).float()
    pool = SpikeMaxPool2d(16)
    _, saved = _saved(lambda: pool(x.clone().requires_grad_()))
    assert [t.dtype for t in saved] == [torch.uint8]
    _check_like_torch(pool, x)


def test_return_indices_falls_back_to_max_pool():
    pool = SpikeMaxPool2d(2, return_indices=True)
    x = torch.rand(1, 2, 4, 4, device=DEVICE, requires_grad=True)
    y, idx = pool(x)
    y_ref, idx_ref = F.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(y, y_ref) and torch.equal(idx, idx_ref)


def test_autocast_pools_in_the_input_dtype():
    x = torch.randint(0, 3, (2, 3, 8, 8), device=DEVICE).float().requires_grad_()
    device_type = "cuda" if DEVICE == "cuda" else "cpu"
    with torch.autocast(device_type, dtype=torch.bfloat16):
        y, saved = _saved(lambda: SpikeMaxPool2d(2)(x))
        y_ref = F.max_pool2d(x, 2)
    assert y.dtype == y_ref.dtype == torch.float32
    assert [t.dtype for t in saved] == [torch.uint8]
    assert torch.equal(y, y_ref)


def test_nan_window_outputs_nan_and_routes_to_its_first_nan():
    nan = float("nan")
    x = torch.tensor([[[[1.0, nan], [nan, 5.0]]]], device=DEVICE, requires_grad=True)
    y = SpikeMaxPool2d(2)(x)
    assert y.isnan().all() and y.isnan().equal(F.max_pool2d(x, 2).isnan())
    y.backward(torch.full_like(y, 2.0))
    # torch's kernels send it to the last NaN ([1, 0]); this pooling to the first ([0, 1])
    assert torch.equal(x.grad, torch.tensor([[[[0.0, 2.0], [0.0, 0.0]]]], device=DEVICE))


def test_gradcheck_and_gradgradcheck_in_float64():
    x = torch.randperm(2 * 3 * 6 * 6, device=DEVICE).to(torch.float64).view(2, 3, 6, 6) / 7
    x.requires_grad_()
    for kernel in (2, 3, (2, 3)):
        pool = SpikeMaxPool2d(kernel)
        assert torch.autograd.gradcheck(pool, (x,))
        assert torch.autograd.gradgradcheck(pool, (x,))


def test_torch_compile_matches_eager():
    pool = SpikeMaxPool2d(2)
    compiled = torch.compile(pool, backend="aot_eager", fullgraph=True)
    x = torch.randint(0, 3, (2, 3, 8, 8), device=DEVICE).float()
    y, gx, grad = _run(compiled, x)
    y_ref, gx_ref, _ = _run(nn.MaxPool2d(2), x, grad)
    assert torch.equal(y, y_ref)
    assert torch.equal(gx, gx_ref)
