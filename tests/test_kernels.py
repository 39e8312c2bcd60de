"""Triton kernels against their references. On CPU they run in the Triton interpreter
(``TRITON_INTERPRET=1``, set by conftest) on tiny shapes; the same tests run on a GPU."""

import pytest
import torch

import ndsnn_triton
from ndsnn_triton import lif_multistep, masked_conv2d, masked_linear
from ndsnn_triton.kernels.lif import (
    LIF_BWD_RTOL,
    lif_backward_ref,
    lif_backward_triton,
    lif_forward_ref,
    lif_forward_tolerance,
    lif_forward_triton,
)
from ndsnn_triton.kernels.sparse_index import INDEX_CACHE, build_index
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, interpreting
from ndsnn_triton.nn import SpikeConv2d, SpikeLinear

pytestmark = [
    pytest.mark.skipif(
        not HAS_TRITON or not (torch.cuda.is_available() or interpreting()),
        reason="needs Triton on CUDA or TRITON_INTERPRET=1",
    ),
    # cuDNN fp32 must not use TF32 while it serves as the reference
    pytest.mark.usefixtures("no_tf32"),
]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (N, Cin, H, W, Cout, k, stride, padding, dilation): odd channels, 1x1 maps, batch 1, stride 2
SHAPES = [
    (2, 5, 7, 6, 3, 3, 1, 1, 1),
    (1, 3, 8, 8, 7, 3, 2, 1, 1),
    (3, 6, 1, 1, 5, 1, 1, 0, 1),
    (2, 4, 5, 5, 4, 3, 1, 2, 2),
    (2, 6, 4, 4, 5, 1, 2, 0, 1),
]


def _case(shape, density, spikes, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, c, h, w, oc, k, *_ = shape
    if spikes == "zeros":
        x = torch.zeros(n, c, h, w)
    elif spikes == "ones":
        x = torch.ones(n, c, h, w)
    else:
        x = (torch.rand(n, c, h, w, generator=g) < 0.3).float()
    weight = torch.randn(oc, c, k, k, generator=g)
    mask = torch.rand(oc, c, k, k, generator=g) < density
    if density == 0.5:
        mask[0] = False  # an empty row
    return x.to(DEVICE), weight.to(DEVICE), mask.to(DEVICE)


def _run_conv(backend, x, weight, mask, bias, geo, dense):
    x = x.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    b = None if bias is None else bias.clone().requires_grad_()
    with ndsnn_triton.use_backend(backend):
        y = masked_conv2d(x, w, mask, b, **geo, dense_weight_grad=dense)
        y.backward(torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y))
    return y.detach(), x.grad, w.grad, None if b is None else b.grad


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("density", "spikes"),
    [(0.5, "random"), (0.0001, "random"), (1.0, "random"), (0.5, "zeros"), (0.5, "ones")],
)
def test_conv_kernels_match_reference(shape, density, spikes):
    x, weight, mask = _case(shape, density, spikes)
    _, _, _, _, oc, _, stride, padding, dilation = shape
    geo = dict(stride=stride, padding=padding, dilation=dilation)
    bias = torch.randn(oc, device=DEVICE)
    got = _run_conv("triton", x, weight, mask, bias, geo, False)
    ref = _run_conv("torch", x, weight, mask, bias, geo, False)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert (got[2][~mask] == 0).all()


def test_conv_dense_weight_grad_on_the_triton_backend():
    x, weight, mask = _case(SHAPES[0], 0.5, "random")
    geo = dict(stride=1, padding=1, dilation=1)
    got = _run_conv("triton", x, weight, mask, None, geo, True)
    ref = _run_conv("torch", x, weight, mask, None, geo, True)
    torch.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-5)
    assert (got[2][~mask] != 0).any()


@pytest.mark.parametrize("density", [0.0001, 0.4, 1.0])
@pytest.mark.parametrize("n", [1, 6])
def test_linear_kernels_match_reference(density, n):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(n, 13, generator=g) < 0.4).float().to(DEVICE)
    weight = torch.randn(5, 13, generator=g).to(DEVICE)
    mask = (torch.rand(5, 13, generator=g) < density).to(DEVICE)
    bias = torch.randn(5, generator=g).to(DEVICE)
    outs = {}
    for backend in ("triton", "torch"):
        xx, ww, bb = (
            x.clone().requires_grad_(),
            weight.clone().requires_grad_(),
            bias.clone().requires_grad_(),
        )
        with ndsnn_triton.use_backend(backend):
            y = masked_linear(xx, ww, mask, bb)
            y.backward(torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y))
        outs[backend] = (y.detach(), xx.grad, ww.grad, bb.grad)
    for a, b in zip(outs["triton"], outs["torch"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


LIF_CONFIGS = [
    (vr, di, dr, s)
    for vr in (0.0, -0.3, None)
    for di in (True, False)
    for dr in (True, False)
    for s in ("atan", "sigmoid")
]


def assert_lif_forward_guarantee(x, v0, v_th, v_reset, out, ref):
    """The forward's stated fp32 guarantee (ndsnn_triton/kernels/lif.py): identical to the
    reference on CPU; on CUDA, h and v within ``lif_forward_tolerance`` and spikes equal except
    where the reference's h came within that tolerance of the threshold (that neuron's later
    steps excluded: a different spike decision changes its reset)."""
    (s, v, h), (sr, vr, hr) = out, ref
    if x.device.type == "cpu":
        assert torch.equal(s, sr) and torch.equal(h, hr) and torch.equal(v, vr)
        return
    tol = lif_forward_tolerance(x, hr, v0, v_th, v_reset)
    near = (hr - v_th).abs() <= tol
    excluded = torch.cummax(near.to(torch.int8), dim=0).values.bool()
    kept = ~excluded
    assert torch.equal(s[kept], sr[kept])
    assert bool(((h - hr).abs() <= tol)[kept].all())
    never = kept.all(0)
    assert bool(((v - vr).abs() <= tol[-1])[never].all())


@pytest.mark.parametrize(("v_reset", "decay_input", "detach_reset", "surrogate"), LIF_CONFIGS)
def test_lif_kernels_match_reference(v_reset, decay_input, detach_reset, surrogate):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(5, 3, 37, generator=g) * 1.5 + 0.4).to(DEVICE)
    v0 = (torch.randn(3, 37, generator=g) * 0.2).to(DEVICE)
    s, v, h = lif_forward_triton(x, v0, 1.7, 0.8, v_reset, decay_input)[:3]
    sr, vr, hr = lif_forward_ref(x, v0, 1.7, 0.8, v_reset, decay_input)[:3]
    assert_lif_forward_guarantee(x, v0, 0.8, v_reset, (s, v, h), (sr, vr, hr))
    gs, gv = (
        torch.randn(s.shape, generator=g).to(DEVICE),
        torch.randn(v.shape, generator=g).to(DEVICE),
    )
    # the backward of the same h on both sides: its stated relative tolerance
    gx, gv0 = lif_backward_triton(
        gs, gv, hr, 1.7, 0.8, v_reset, decay_input, detach_reset, surrogate, 3.0
    )
    gxr, gv0r = lif_backward_ref(
        gs, gv, hr, 1.7, 0.8, v_reset, decay_input, detach_reset, surrogate, 3.0
    )
    torch.testing.assert_close(gx, gxr, rtol=LIF_BWD_RTOL, atol=1e-6)
    torch.testing.assert_close(gv0, gv0r, rtol=LIF_BWD_RTOL, atol=1e-6)


def _lif_forward_cuda_style(x, v0, tau, v_th, v_reset, decay_input):
    """The fp32 reference as torch computes it on CUDA: dividing by a Python scalar multiplies
    by its rounded fp32 reciprocal (torch's CUDA ``div_true`` kernel), one rounding more than an
    IEEE division. Emulated on CPU, one rounded operation at a time."""
    inv_tau = torch.tensor(1.0, dtype=torch.float32) / torch.tensor(tau, dtype=torch.float32)
    v, spikes, hs = v0.clone(), [], []
    for t in range(x.shape[0]):
        reset0 = v_reset is None or v_reset == 0.0
        if decay_input:
            h = v + (x[t] - v) * inv_tau if reset0 else v + (x[t] - (v - v_reset)) * inv_tau
        else:
            h = v * (1.0 - 1.0 / tau) + x[t] if reset0 else v - (v - v_reset) * inv_tau + x[t]
        sp = (h - v_th >= 0).float()
        v = h - sp * v_th if v_reset is None else (1.0 - sp) * h + sp * v_reset
        spikes.append(sp)
        hs.append(h)
    return torch.stack(spikes), v, torch.stack(hs)


@pytest.mark.skipif(DEVICE != "cpu", reason="emulates CUDA's reference on CPU")
@pytest.mark.parametrize(("v_reset", "decay_input"), [(0.0, True), (-0.3, True), (-0.3, False)])
def test_lif_guarantee_holds_against_cuda_style_reference(v_reset, decay_input):
    """The tolerance stated for CUDA covers the reciprocal-multiply rounding of torch's CUDA
    reference: checked here against an emulation of it, with data that does differ."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(8, 4096, generator=g) * 2.0 + 0.3
    v0 = torch.randn(4096, generator=g) * 0.3
    tau, v_th = 1.7, 0.8
    out = lif_forward_triton(x, v0, tau, v_th, v_reset, decay_input)[:3]
    ref = _lif_forward_cuda_style(x, v0, tau, v_th, v_reset, decay_input)
    assert not torch.equal(out[2], ref[2])  # the emulation really rounds differently
    sr, vr, hr = ref
    tol = lif_forward_tolerance(x, hr, v0, v_th, v_reset)
    near = (hr - v_th).abs() <= tol
    kept = ~torch.cummax(near.to(torch.int8), dim=0).values.bool()
    assert torch.equal(out[0][kept], sr[kept])
    assert bool(((out[2] - hr).abs() <= tol)[kept].all())
    assert bool(((out[1] - vr).abs() <= tol[-1])[kept.all(0)].all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_lif_half_precision_spikes_agree_between_forward_and_backward(dtype, v_reset):
    """The forward decides spikes on the h it stores (rounded to bf16/fp16), so the backward,
    which recomputes S = (h - v_th >= 0) from that h, sees every spike the forward emitted."""
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(8, 30_000, generator=g) * 0.9 + 0.45).to(dtype).to(DEVICE)
    v0 = torch.zeros(30_000, dtype=dtype, device=DEVICE)
    s, _, h = lif_forward_triton(x, v0, 2.0, 1.0, v_reset, True)[:3]
    recomputed = (h.float() - 1.0 >= 0).to(dtype)
    assert torch.equal(s, recomputed)
    # the data reaches the case the fix is about: h values rounded onto the threshold itself
    assert int((h.float() == 1.0).sum()) > 10


@pytest.mark.parametrize(
    ("shape", "map_size"),
    [
        ((3, 2, 4, 5, 5), 25),
        ((3, 2, 6, 2, 2), 4),
        ((2, 3, 7), 1),
        ((2, 3, 7), 0),
        ((2, 2, 3, 70, 70), 4900),
    ],
)
@pytest.mark.parametrize("int8_spikes", [False, True])
@pytest.mark.parametrize("repeated", [False, True])
def test_lif_companion_equals_the_reference(shape, map_size, int8_spikes, repeated):
    """The forward's companion (int8 copy; per-map activity on maps of ≥ 4 positions, none past
    the one-program map limit) and its outputs equal the reference, also for an input repeated
    over T without a copy (stride 0, as a direct-coding stem gives) and a rest potential given
    as one value."""
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(shape, generator=g) * 2).to(DEVICE)
    if repeated:
        x = x[:1].expand(shape)
    v0 = torch.zeros((), device=DEVICE).expand(shape[1:])
    out = lif_forward_triton(x, v0, 4 / 3, 1.0, 0.0, True, int8_spikes, map_size)
    ref = lif_forward_ref(x, v0, 4 / 3, 1.0, 0.0, True, int8_spikes, map_size)
    for a, b in zip(out, ref, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    copy, active = out[3:]
    assert copy.numel() == (0 if int8_spikes or not map_size else x.numel())
    if 4 <= map_size <= 4096:
        flags = (out[0].reshape(shape[0], -1, map_size) != 0).any(-1).to(torch.int8)
        assert torch.equal(active, flags)  # by hand from the spikes
    else:
        assert active.numel() == 0


def test_lif_backward_without_a_last_potential_gradient():
    """No gradient on the last potential: the kernel starts from zero (no zero tensor is made)."""
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(4, 3, 9, generator=g) + 0.5).to(DEVICE)
    h = lif_forward_ref(x, torch.zeros(3, 9, device=DEVICE), 2.0, 1.0, 0.0, True)[2]
    gs = torch.randn(h.shape, generator=g).to(DEVICE)
    zeros = torch.zeros(3, 9, device=DEVICE)
    for fn in (lif_backward_triton, lif_backward_ref):
        a = fn(gs, None, h, 2.0, 1.0, 0.0, True, True, "atan", 2.0)
        b = lif_backward_ref(gs, zeros, h, 2.0, 1.0, 0.0, True, True, "atan", 2.0)
        torch.testing.assert_close(a, b, rtol=LIF_BWD_RTOL, atol=1e-6)


def test_lif_op_on_triton_backend_through_autograd():
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 2, 9, generator=g) + 0.5).to(DEVICE)
    results = {}
    for backend in ("triton", "torch"):
        xx = x.clone().requires_grad_()
        v = torch.zeros(2, 9, device=DEVICE, requires_grad=True)
        with ndsnn_triton.use_backend(backend):
            s, vl = lif_multistep(xx, v, tau=2.0, surrogate="atan", alpha=2.0)
            (s.sum() + vl.square().sum()).backward()
        results[backend] = (s.detach(), vl.detach(), xx.grad, v.grad)
    for a, b in zip(results["triton"], results["torch"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_index_is_rebuilt_on_mask_change_and_never_stale():
    x, weight, mask = _case(SHAPES[0], 0.5, "random")
    geo = dict(stride=1, padding=1, dilation=1)
    with ndsnn_triton.use_backend("triton"):
        masked_conv2d(x, weight, mask, **geo)
        builds = INDEX_CACHE.builds
        masked_conv2d(x, weight, mask, **geo)
        assert INDEX_CACHE.builds == builds  # cached
        mask[:, :2] = False  # in place: the version moves, the storage stays
        y = masked_conv2d(x, weight, mask, **geo)
        assert INDEX_CACHE.builds == builds + 1
        mask[:, 2:] = True  # grows past the first build's capacity
        y2 = masked_conv2d(x, weight, mask, **geo)
    with ndsnn_triton.use_backend("torch"):
        torch.testing.assert_close(y2, masked_conv2d(x, weight, mask, **geo), rtol=1e-5, atol=1e-5)
        mask[:, 2:] = False
    del y


def test_build_index_layout():
    mask = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    idx = build_index(mask)
    assert idx.cap == 5
    assert idx.row_ptr.tolist() == [0, 2, 2, 5]
    assert idx.col_idx.tolist() == [0, 2, 0, 1, 2]
    assert idx.entry_row.tolist() == [0, 0, 2, 2, 2]
    assert idx.entry_flat.tolist() == [0, 2, 6, 7, 8]
    assert idx.row_order.tolist() == [2, 0, 1]  # longest row first
    assert idx.col_ptr.tolist() == [0, 2, 3, 5]
    assert idx.t_row_idx.tolist() == [0, 2, 2, 0, 2]
    assert idx.t_col_idx.tolist() == [0, 0, 1, 2, 2]
    assert idx.t_entry_flat.tolist() == [0, 6, 7, 2, 8]


def test_spike_layers_train_the_same_on_both_backends():
    torch.manual_seed(4)
    conv = SpikeConv2d(3, 4, 3, padding=1).to(DEVICE)
    lin = SpikeLinear(4 * 4 * 4, 3).to(DEVICE)
    conv.set_mask(torch.rand(conv.weight.shape, device=DEVICE) < 0.5)
    lin.set_mask(torch.rand(lin.weight.shape, device=DEVICE) < 0.5)
    state = {
        k: v.clone()
        for k, v in {
            **conv.state_dict(),
            **{f"l.{k}": v for k, v in lin.state_dict().items()},
        }.items()
    }
    x = (torch.rand(2, 2, 3, 4, 4, device=DEVICE) < 0.4).float()
    losses = {}
    for backend in ("torch", "triton"):
        conv.load_state_dict({k: v for k, v in state.items() if not k.startswith("l.")})
        lin.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("l.")})
        opt = torch.optim.SGD([*conv.parameters(), *lin.parameters()], lr=0.1, momentum=0.9)
        run = []
        with ndsnn_triton.use_backend(backend):
            for _ in range(3):
                out = lin(ndsnn_triton.nn.LIF(tau=2.0)(conv(x)).flatten(2))
                loss = out.square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.append(loss.item())
        losses[backend] = (run, conv.weight.detach().clone())
    assert losses["torch"][0] == pytest.approx(losses["triton"][0], rel=1e-5)
    torch.testing.assert_close(losses["torch"][1], losses["triton"][1], rtol=1e-5, atol=1e-6)


def test_spike_inputs_are_saved_as_int8_for_backward():
    """What autograd keeps of a spike layer's input: 1 byte per value instead of 4."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    conv = SpikeConv2d(8, 8, 3, padding=1)
    x = (torch.rand(5, 2, 8, 6, 6) < 0.2).float()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        conv(x)
    inputs = [t for t in saved if t.shape == (10, 8, 6, 6)]
    assert len(inputs) == 1 and inputs[0].dtype == torch.int8
    assert inputs[0].element_size() * inputs[0].numel() == x.numel()  # vs 4·numel for fp32


def test_triton_backend_refuses_cpu_tensors_without_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    x, weight, mask = _case(SHAPES[0], 0.5, "random")
    with (
        ndsnn_triton.use_backend("triton"),
        pytest.raises(RuntimeError, match="needs CUDA tensors"),
    ):
        masked_conv2d(x, weight, mask, padding=1)


def test_index_is_sized_from_the_count_set_mask_records():
    from ndsnn_triton.kernels.sparse_index import get_index

    conv = SpikeConv2d(3, 4, 3)
    mask = torch.zeros_like(conv.mask)
    mask.view(-1)[:10] = True
    conv.set_mask(mask)
    assert conv.mask._ndsnn_nnz == (conv.mask._version, 10)
    assert get_index(conv.mask, 4, 27).cap == 10
    # A recorded count belongs to one mask version: after any other change the mask is counted afresh.
    conv.mask._ndsnn_nnz = (conv.mask._version, 25)
    conv.mask.view(-1)[10] = True
    assert get_index(conv.mask, 4, 27).cap == 11
