"""The ``auto`` dispatch: choices keyed on shape, dtype and density bucket (not the mask's address or
version), priced once per key by the time model, never for reference-only calls, float64 routing,
and cache memory. Most tests fake the pricing (no GPU needed: it counts pricings and makes the
sparse kernel's time proportional to mask density); the model's own choices are checked on the
VGG-16 shapes it was calibrated on."""

from __future__ import annotations

import pytest
import torch

import ndsnn_triton
from ndsnn_triton import lif_multistep, masked_linear
from ndsnn_triton.backend import _KERNELS
from ndsnn_triton.kernels import dispatch
from ndsnn_triton.kernels.sparse_index import INDEX_CACHE, build_index, get_index, note_nnz

LINEAR = "ndsnn::masked_linear"


def sparse_impl(x, weight, mask, bias):
    return "sparse"


def dense_impl(x, weight, mask, bias):
    return "dense"


class FakePricer:
    """Stands in for the time model: dense takes 1 µs, sparse 10 µs × the mask's density."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, op, args) -> tuple[float, float]:
        self.calls.append(op)
        return 10.0 * args[2].float().mean().item(), 1.0

    @property
    def races(self) -> int:
        return len(self.calls)


@pytest.fixture
def timer(monkeypatch) -> FakePricer:
    fake = FakePricer()
    monkeypatch.setattr(dispatch, "predicted_us", fake)
    return fake


def _linear_args(density: float, out: int = 32, fin: int = 64) -> tuple:
    x = (torch.rand(8, fin) < 0.3).float()
    weight = torch.randn(out, fin)
    mask = torch.zeros(out * fin, dtype=torch.bool)
    mask[torch.randperm(out * fin)[: round(density * out * fin)]] = True
    return x, weight, mask.view(out, fin), None


def _set_density(mask: torch.Tensor, density: float) -> None:
    """Change ``mask`` in place (its version moves) to a fresh random pattern at ``density``."""
    flat = mask.view(-1)
    flat.zero_()
    flat[torch.randperm(flat.numel())[: round(density * flat.numel())]] = True


def _choose(args: tuple) -> str:
    return dispatch.choose(LINEAR, sparse_impl, dense_impl, args)(*args)


# ----------------------------------------------------------------------------- choice key


@pytest.mark.parametrize(
    ("density", "bucket"),
    [(1.0, 0.5), (0.5, 0.5), (0.49, 0.2), (0.1, 0.1), (0.06, 0.05), (0.02, 0.02), (0.009, 0.0)],
)
def test_density_buckets(density, bucket):
    assert dispatch.density_bucket(density) == bucket


def test_mask_update_within_a_bucket_does_not_retime(timer):
    args = _linear_args(0.04)
    mask = args[2]
    assert _choose(args) == "sparse"
    assert timer.races == 1
    for density in (0.03, 0.021, 0.039):
        version = mask._version
        _set_density(mask, density)
        assert mask._version > version
        assert _choose(args) == "sparse"
    assert timer.races == 1


def test_moving_to_another_bucket_times_once(timer):
    args = _linear_args(0.6)
    mask = args[2]
    assert _choose(args) == "dense"
    _set_density(mask, 0.04)
    assert _choose(args) == "sparse"
    assert _choose(args) == "sparse"
    _set_density(mask, 0.03)
    assert _choose(args) == "sparse"
    assert timer.races == 2


def test_recorded_count_decides_the_bucket_without_counting(timer):
    args = _linear_args(0.6)
    mask = args[2]
    note_nnz(mask, round(0.015 * mask.numel()))  # deliberately not the true count
    key = dispatch.choice_key(LINEAR, args)
    assert key[-1] == 0.01  # the recorded count was used, not a fresh one


def test_unrecorded_count_is_counted_once_and_recorded(timer):
    from ndsnn_triton.kernels.sparse_index import known_nnz

    args = _linear_args(0.25)
    mask = args[2]
    assert known_nnz(mask) is None
    dispatch.choice_key(LINEAR, args)
    assert known_nnz(mask) == int(mask.sum())


def test_key_holds_no_address_or_version():
    a, b = _linear_args(0.1), _linear_args(0.1)
    key = dispatch.choice_key(LINEAR, a)
    assert key == dispatch.choice_key(LINEAR, b)
    _set_density(a[2], 0.12)
    assert key == dispatch.choice_key(LINEAR, a)
    assert a[2].data_ptr() not in key


def test_a_reused_mask_address_cannot_serve_another_density(timer):
    """A new mask tensor at a freed mask's address and version (what the CPU/CUDA allocators do
    to a freed mask) gets its own choice. Simulated deterministically: two views of one storage
    share the address and the version counter, and a write through ``.data`` leaves it as is."""
    x, weight, _, bias = _linear_args(0.5)
    storage = torch.zeros(32 * 64, dtype=torch.bool)
    storage[:20] = True  # 1 % dense
    old_mask = storage.view(32, 64)
    assert _choose((x, weight, old_mask, bias)) == "sparse"
    address, version = old_mask.data_ptr(), old_mask._version
    del old_mask
    storage.data.fill_(True)  # new contents, same address, version untouched
    new_mask = storage.view(32, 64)
    assert (new_mask.data_ptr(), new_mask._version) == (address, version)
    assert _choose((x, weight, new_mask, bias)) == "dense"
    assert timer.races == 2


def test_another_shape_or_dtype_gets_its_own_choice(timer):
    args = _linear_args(0.04)
    _choose(args)
    _choose(_linear_args(0.04, out=16))
    x, weight, mask, bias = args
    _choose((x.half(), weight.half(), mask, bias))
    assert timer.races == 3


# ----------------------------------------------------------------------------- reference-only calls


def test_dense_weight_grad_is_never_timed(timer):
    g, x, mask = torch.randn(8, 32), torch.randn(8, 64), _linear_args(0.01)[2]
    op = "ndsnn::masked_linear_weight_grad"
    assert dispatch.choose(op, sparse_impl, dense_impl, (g, x, mask, True)) is dense_impl
    conv_args = (torch.randn(2, 4, 5, 5), torch.randn(2, 3, 5, 5), torch.rand(4, 3, 3, 3) < 0.1)
    geo = ([1, 1], [1, 1], [1, 1], 1)
    op = "ndsnn::masked_conv2d_weight_grad"
    assert dispatch.choose(op, sparse_impl, dense_impl, (*conv_args, *geo, True)) is dense_impl
    assert timer.calls == []


def test_grouped_conv_is_never_timed(timer):
    x, weight = torch.randn(2, 4, 5, 5), torch.randn(4, 2, 3, 3)
    args = (x, weight, torch.rand(4, 2, 3, 3) < 0.1, None, [1, 1], [1, 1], [1, 1], 2)
    assert dispatch.choose("ndsnn::masked_conv2d", sparse_impl, dense_impl, args) is dense_impl
    assert timer.calls == []


def test_sparse_weight_grad_is_timed(timer):
    g, x, mask = torch.randn(8, 32), torch.randn(8, 64), _linear_args(0.01)[2]
    op = "ndsnn::masked_linear_weight_grad"
    dispatch.choose(op, sparse_impl, dense_impl, (g, x, mask, False))
    assert timer.races == 1


def test_auto_wrapper_times_once_across_mask_updates(timer, monkeypatch):
    monkeypatch.setattr(dispatch, "_on_gpu", lambda tensors: True)  # stands in for CUDA
    monkeypatch.setattr(dispatch, "triton_usable", lambda *tensors: True)
    run = dispatch.wrap(LINEAR, sparse_impl, dense_impl)
    args = _linear_args(0.04)
    with ndsnn_triton.use_backend("auto"):
        for density in (0.04, 0.03, 0.045, 0.025):
            _set_density(args[2], density)
            assert run(*args) == "sparse"
    assert timer.races == 1


# ----------------------------------------------------------------------------- the model's choice


@pytest.fixture
def h200(monkeypatch):
    """Price as on an H200 (the tensors stay on the CPU: only their shapes are read)."""
    from ndsnn_triton.kernels.perf_model import GPUS

    monkeypatch.setattr(dispatch, "_gpu", lambda device: GPUS["H200"])


def _conv_call(op: str, density: float, dtype=torch.bfloat16):
    """VGG-16 conv2's arguments (B 64, T 5) for ``op``, as the op body hands them on."""
    x = torch.empty(320, 64, 32, 32, dtype=dtype)
    w = torch.empty(64, 64, 3, 3)
    mask = torch.zeros(64, 64, 3, 3, dtype=torch.bool)
    mask.view(-1)[: round(density * mask.numel())] = True
    note_nnz(mask, int(mask.sum()))
    geo = ([1, 1], [1, 1], [1, 1], 1)
    if op == "ndsnn::masked_conv2d":
        spikes = torch.empty(x.shape, dtype=torch.int8)
        return (x, w, mask, None, *geo, spikes, torch.empty(320, 64, dtype=torch.int8))
    if op == "ndsnn::masked_conv2d_input_grad":
        return (x, w, mask, list(x.shape), *geo)
    return (x, x.to(torch.int8), mask, *geo, False, torch.float32, False)


@pytest.mark.parametrize(
    "op",
    ["ndsnn::masked_conv2d", "ndsnn::masked_conv2d_input_grad", "ndsnn::masked_conv2d_weight_grad"],
)
def test_model_prefers_the_sparse_kernel_only_when_sparse_enough(h200, op):
    """On VGG-16 conv2 the model prices the sparse kernel under the recorded cuDNN time at
    density 0.01 (by the margin) and far over it at 0.5: auto picks dense, then sparse."""
    sparse_us, dense_us = dispatch.predicted_us(op, _conv_call(op, 0.01))
    assert sparse_us < dispatch.SPARSE_MARGIN * dense_us
    sparse_us, dense_us = dispatch.predicted_us(op, _conv_call(op, 0.5))
    assert sparse_us > dense_us
    dense_choice = dispatch.choose(op, sparse_impl, dense_impl, _conv_call(op, 0.5))
    sparse_choice = dispatch.choose(op, sparse_impl, dense_impl, _conv_call(op, 0.01))
    assert (dense_choice, sparse_choice) == (dense_impl, sparse_impl)


def test_a_choice_is_priced_at_the_first_mask_of_its_bucket(h200, monkeypatch):
    """The model prices the mask it first sees in a density bucket at that mask's density, and a
    later mask of the same bucket reuses the choice without pricing again."""
    op = "ndsnn::masked_conv2d"
    dense_end, _ = dispatch.predicted_us(op, _conv_call(op, 0.019))
    sparse_end, _ = dispatch.predicted_us(op, _conv_call(op, 0.011))
    assert sparse_end < dense_end
    priced = []
    real = dispatch.predicted_us
    monkeypatch.setattr(dispatch, "predicted_us", lambda *a: priced.append(a) or real(*a))
    first = dispatch.choose(op, sparse_impl, dense_impl, _conv_call(op, 0.019))
    again = dispatch.choose(op, sparse_impl, dense_impl, _conv_call(op, 0.011))
    assert first is again and len(priced) == 1
    dispatch.choose(op, sparse_impl, dense_impl, _conv_call(op, 0.009))  # the next bucket
    assert len(priced) == 2


# ----------------------------------------------------------------------------- float64


def test_float64_is_refused_on_the_triton_backend():
    run = dispatch.wrap(LINEAR, sparse_impl, dense_impl)
    args = tuple(
        a.double() if a is not None and a.is_floating_point() else a for a in _linear_args(0.5)
    )
    with (
        ndsnn_triton.use_backend("triton"),
        pytest.raises(
            TypeError,
            match=r"ndsnn::masked_linear: backend 'triton' does not take float64.*'torch' or 'auto'",
        ),
    ):
        run(*args)


def test_float64_runs_the_reference_under_auto(timer, monkeypatch):
    monkeypatch.setattr(dispatch, "_on_gpu", lambda tensors: True)
    run = dispatch.wrap(LINEAR, sparse_impl, dense_impl)
    args = tuple(
        a.double() if a is not None and a.is_floating_point() else a for a in _linear_args(0.01)
    )
    with ndsnn_triton.use_backend("auto"):
        assert run(*args) == "dense"
    assert timer.calls == []


@pytest.mark.skipif(
    (LINEAR, "triton") not in _KERNELS, reason="no Triton kernels registered (Triton missing)"
)
def test_float64_ops_on_the_triton_backend_name_the_problem():
    x, weight, mask, _ = _linear_args(0.5)
    with ndsnn_triton.use_backend("triton"):
        with pytest.raises(TypeError, match=r"ndsnn::masked_linear: .*float64"):
            masked_linear(x.double(), weight.double(), mask)
        with pytest.raises(TypeError, match=r"ndsnn::lif_multistep: .*float64"):
            lif_multistep(
                torch.randn(3, 4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
            )


# ----------------------------------------------------------------------------- cache memory


def _owns_exactly_its_storage(t: torch.Tensor) -> bool:
    return t.untyped_storage().nbytes() == t.numel() * t.element_size()


def test_build_index_keeps_only_cap_sized_buffers():
    mask = torch.rand(64, 1152) < 0.01
    index = build_index(mask)
    assert index.cap == int(mask.sum())
    tensors = {
        name: value for name, value in vars(index).items() if isinstance(value, torch.Tensor)
    }
    assert tensors and all(_owns_exactly_its_storage(t) for t in tensors.values()), {
        name: t.untyped_storage().nbytes() for name, t in tensors.items()
    }


def test_clear_caches_empties_choices_and_indices(timer):
    args = _linear_args(0.04)
    _choose(args)
    get_index(args[2], 32, 64)
    assert dispatch._CHOICES and INDEX_CACHE.entries
    dispatch.clear_caches()
    assert not dispatch._CHOICES and not INDEX_CACHE.entries
