"""Property tests: the Triton kernels against the references on random shapes, densities and spike
patterns (Triton interpreter on CPU, tiny shapes, a bounded number of examples). Set
``NDSNN_FUZZ_EXAMPLES`` to run more (e.g. on a GPU)."""

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ndsnn_triton
from ndsnn_triton import lif_multistep, masked_conv2d, masked_linear
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, interpreting

pytestmark = [
    pytest.mark.skipif(
        not HAS_TRITON or not (torch.cuda.is_available() or interpreting()),
        reason="needs Triton on CUDA or the interpreter",
    ),
    # cuDNN fp32 must not use TF32 while it serves as the reference
    pytest.mark.usefixtures("no_tf32"),
]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
EXAMPLES = int(os.environ.get("NDSNN_FUZZ_EXAMPLES", "20"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


#: spike patterns the skipping kernels treat differently: silent maps and dead channels are
#: skipped by the forward, events drive the weight gradient
PATTERNS = ["random", "zeros", "ones", "sparse", "silent_maps", "dead_channel", "single"]


def _spikes(shape, pattern, seed):
    g = torch.Generator().manual_seed(seed)
    if pattern == "zeros":
        return torch.zeros(shape)
    if pattern == "ones":
        return torch.ones(shape)
    if pattern == "single":
        x = torch.zeros(shape).flatten()
        x[torch.randint(x.numel(), (1,), generator=g)] = 1.0
        return x.view(shape)
    x = (torch.rand(shape, generator=g) < (0.05 if pattern == "sparse" else 0.3)).float()
    if pattern == "silent_maps":  # about half of the (sample, channel) maps silent
        x *= (torch.rand(*shape[:2], *([1] * (len(shape) - 2)), generator=g) < 0.5).float()
    elif pattern == "dead_channel" and len(shape) > 1:
        x[:, torch.randint(shape[1], (1,), generator=g)] = 0.0
    return x


def _both(fn):
    out = {}
    for backend in ("triton", "torch"):
        with ndsnn_triton.use_backend(backend):
            out[backend] = fn()
    for a, b in zip(out["triton"], out["torch"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@FUZZ
@given(
    n=st.integers(1, 3),
    cin=st.integers(1, 7),
    cout=st.integers(1, 6),
    size=st.integers(1, 7),
    k=st.sampled_from([1, 3]),
    stride=st.sampled_from([1, 2]),
    padding=st.sampled_from([0, 1]),
    density=st.sampled_from([0.0, 0.2, 0.7, 1.0]),
    pattern=st.sampled_from(PATTERNS),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_conv_fuzz(n, cin, cout, size, k, stride, padding, density, pattern, bias, seed):
    if size + 2 * padding < k:
        return  # no output position: rejected up front (see the bad-input catalogue)
    g = torch.Generator().manual_seed(seed)
    x = _spikes((n, cin, size, size), pattern, seed).to(DEVICE)
    w = torch.randn(cout, cin, k, k, generator=g).to(DEVICE)
    mask = (torch.rand(w.shape, generator=g) < density).to(DEVICE)
    b = torch.randn(cout, generator=g).to(DEVICE) if bias else None

    def run():
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = masked_conv2d(xx, ww, mask, b, stride=stride, padding=padding)
        y.backward(torch.ones_like(y) * 0.5)
        return y.detach(), xx.grad, ww.grad

    _both(run)


@FUZZ
@given(
    n=st.integers(1, 5),
    fin=st.integers(1, 17),
    fout=st.integers(1, 9),
    density=st.sampled_from([0.0, 0.3, 1.0]),
    pattern=st.sampled_from(PATTERNS),
    seed=st.integers(0, 2**16),
)
def test_linear_fuzz(n, fin, fout, density, pattern, seed):
    g = torch.Generator().manual_seed(seed)
    x = _spikes((n, fin), pattern, seed).to(DEVICE)
    w = torch.randn(fout, fin, generator=g).to(DEVICE)
    mask = (torch.rand(w.shape, generator=g) < density).to(DEVICE)

    def run():
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = masked_linear(xx, ww, mask)
        y.backward(torch.full_like(y, 0.25))
        return y.detach(), xx.grad, ww.grad

    _both(run)


@FUZZ
@given(
    T=st.integers(1, 6),
    m=st.integers(1, 40),
    v_reset=st.sampled_from([0.0, -0.2, None]),
    decay_input=st.booleans(),
    detach_reset=st.booleans(),
    surrogate=st.sampled_from(["atan", "sigmoid"]),
    seed=st.integers(0, 2**16),
)
def test_lif_fuzz(T, m, v_reset, decay_input, detach_reset, surrogate, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(T, m, generator=g) * 2).to(DEVICE)

    def run():
        xx = x.clone().requires_grad_()
        v = torch.zeros(m, device=DEVICE, requires_grad=True)
        s, vl = lif_multistep(
            xx,
            v,
            tau=1.5,
            v_reset=v_reset,
            decay_input=decay_input,
            detach_reset=detach_reset,
            surrogate=surrogate,
            alpha=2.5,
        )
        (s.sum() + vl.sum()).backward()
        return s.detach(), vl.detach(), xx.grad, v.grad

    _both(run)
