"""The ndsnn ops: values against torch, gradients, opcheck, gradcheck, backend switch, bad input."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import ndsnn_triton
from ndsnn_triton import masked_conv2d, masked_linear

CONV_CASES = [
    # (N, Cin, H, W, Cout, k, stride, padding, dilation, groups, bias)
    (3, 5, 7, 6, 4, 3, 1, 1, 1, 1, True),
    (2, 3, 8, 8, 6, 3, 2, 1, 1, 1, False),  # stride 2
    (1, 7, 1, 1, 3, 1, 1, 0, 1, 1, True),  # batch 1, 1x1 map, 1x1 kernel
    (2, 4, 5, 5, 4, 3, 1, 2, 2, 2, True),  # dilation, groups
    (2, 6, 4, 4, 5, 1, 2, 0, 1, 1, False),  # 1x1 shortcut with stride 2
]


def _conv_inputs(case, dtype=torch.float64, density=0.5, binary=True):
    n, cin, h, w, cout, k, stride, padding, dilation, groups, bias = case
    x = (
        (torch.rand(n, cin, h, w) < 0.3).to(dtype)
        if binary
        else torch.randn(n, cin, h, w, dtype=dtype)
    )
    weight = torch.randn(cout, cin // groups, k, k, dtype=dtype)
    mask = torch.rand(weight.shape) < density
    b = torch.randn(cout, dtype=dtype) if bias else None
    return (
        x,
        weight,
        mask,
        b,
        dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
    )


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dense_weight_grad", [False, True])
def test_conv_matches_torch_with_masked_weight(case, dense_weight_grad):
    x, weight, mask, bias, geo = _conv_inputs(case)
    x.requires_grad_()
    w = weight.clone().requires_grad_()
    if bias is not None:
        bias.requires_grad_()
    y = masked_conv2d(x, w, mask, bias, **geo, dense_weight_grad=dense_weight_grad)
    # torch reference: dense conv on an explicitly zeroed leaf weight
    w_eff = (weight * mask).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    b_ref = None if bias is None else bias.detach().clone().requires_grad_()
    y_ref = F.conv2d(x_ref, w_eff, b_ref, **geo)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    assert y.is_contiguous()
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    expected_w = w_eff.grad if dense_weight_grad else w_eff.grad * mask
    torch.testing.assert_close(w.grad, expected_w, rtol=1e-12, atol=1e-12)
    if dense_weight_grad:
        assert (w.grad[~mask] != 0).any()
    else:
        assert (w.grad[~mask] == 0).all()
    if bias is not None:
        torch.testing.assert_close(bias.grad, b_ref.grad)


def test_conv_ignores_values_stored_at_pruned_positions():
    x, weight, mask, bias, geo = _conv_inputs(CONV_CASES[0])
    y_clean = masked_conv2d(x, weight * mask, mask, bias, **geo)
    y_dirty = masked_conv2d(x, weight, mask, bias, **geo)  # pruned weights non-zero in storage
    torch.testing.assert_close(y_dirty, y_clean, rtol=0, atol=0)


def test_conv_accepts_non_contiguous_input():
    x, weight, mask, bias, geo = _conv_inputs(CONV_CASES[0])
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x_nc.is_contiguous()
    torch.testing.assert_close(
        masked_conv2d(x_nc, weight, mask, bias, **geo), masked_conv2d(x, weight, mask, bias, **geo)
    )


@pytest.mark.parametrize("dense_weight_grad", [False, True])
def test_linear_matches_torch_with_masked_weight(dense_weight_grad):
    x = (torch.rand(7, 11) < 0.4).double().requires_grad_()
    weight = torch.randn(5, 11, dtype=torch.float64)
    mask = torch.rand(5, 11) < 0.3
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    w = weight.clone().requires_grad_()
    y = masked_linear(x, w, mask, bias, dense_weight_grad=dense_weight_grad)
    w_eff = (weight * mask).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y_ref = F.linear(x_ref, w_eff, bias.detach())
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(w.grad, w_eff.grad if dense_weight_grad else w_eff.grad * mask)
    torch.testing.assert_close(bias.grad, g.sum(0))


# ----------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("case", CONV_CASES[:4])
def test_conv_gradcheck_float64(case):
    x, weight, mask, bias, geo = _conv_inputs(case, binary=False)
    args = [x.requires_grad_(), weight.requires_grad_()]
    if bias is not None:
        args.append(bias.requires_grad_())

    def f(x, w, b=None):
        return masked_conv2d(x, w, mask, b, **geo, spike_input=False)

    assert torch.autograd.gradcheck(f, tuple(args))


def test_conv_gradcheck_weight_with_binary_spikes():
    x, weight, mask, bias, geo = _conv_inputs(CONV_CASES[1])
    assert torch.autograd.gradcheck(
        lambda w: masked_conv2d(x, w, mask, bias, **geo), (weight.requires_grad_(),)
    )


def test_linear_gradcheck_float64():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(3, 6) < 0.5
    assert torch.autograd.gradcheck(
        lambda x, w, b: masked_linear(x, w, mask, b, spike_input=False), (x, w, b)
    )


# ----------------------------------------------------------------------------- opcheck


def _opcheck(op, args):
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("dense", [False, True])
def test_opcheck_masked_conv2d(dense):
    x, weight, mask, _, _ = _conv_inputs(CONV_CASES[1], dtype=torch.float32)
    args = (
        x.requires_grad_(),
        weight.requires_grad_(),
        mask,
        torch.randn(6, requires_grad=True),
        [2, 2],
        [1, 1],
        [1, 1],
        1,
        True,
        dense,
    )
    _opcheck(torch.ops.ndsnn.masked_conv2d.default, args)
    _opcheck(
        torch.ops.ndsnn.masked_conv2d.default,
        (x, weight, mask, None, [2, 2], [1, 1], [1, 1], 1, True, dense),
    )
    # with the companion a LIF emits: the int8 copy and per-map activity
    spikes = x.detach().to(torch.int8)
    active = (spikes.flatten(2) != 0).any(-1).to(torch.int8)
    _opcheck(torch.ops.ndsnn.masked_conv2d.default, (*args, spikes, active))


def test_opcheck_conv_backward_ops():
    x, weight, mask, _, _ = _conv_inputs(CONV_CASES[1], dtype=torch.float32)
    y = masked_conv2d(x, weight, mask, stride=2, padding=1)
    g = torch.randn_like(y)
    _opcheck(
        torch.ops.ndsnn.masked_conv2d_input_grad.default,
        (g, weight, mask, list(x.shape), [2, 2], [1, 1], [1, 1], 1),
    )
    for dense in (False, True):
        _opcheck(
            torch.ops.ndsnn.masked_conv2d_weight_grad.default,
            (g, x, mask, [2, 2], [1, 1], [1, 1], 1, dense, True),
        )
    # the bias gradient fused in, returned in the (fp32) weight's dtype for a bf16 dY
    _opcheck(
        torch.ops.ndsnn.masked_conv2d_weight_grad.default,
        (g.bfloat16(), x.to(torch.int8), mask, [2, 2], [1, 1], [1, 1], 1, False, True,
         torch.float32, True),
    )  # fmt: skip


def test_opcheck_linear_ops():
    x = (torch.rand(6, 9) < 0.5).float().requires_grad_()
    w = torch.randn(4, 9, requires_grad=True)
    mask = torch.rand(4, 9) < 0.5
    b = torch.randn(4, requires_grad=True)
    for dense in (False, True):
        _opcheck(torch.ops.ndsnn.masked_linear.default, (x, w, mask, b, True, dense))
    _opcheck(torch.ops.ndsnn.masked_linear.default, (x, w, mask, None, True, False))
    g = torch.randn(6, 4)
    _opcheck(torch.ops.ndsnn.masked_linear_input_grad.default, (g, w.detach(), mask))
    _opcheck(torch.ops.ndsnn.masked_linear_weight_grad.default, (g, x.detach(), mask, True, True))
    _opcheck(
        torch.ops.ndsnn.masked_linear_weight_grad.default,
        (g, x.detach().to(torch.int8), mask, False, True, torch.float32, True),
    )
    # mixed precision: bf16 spikes with their int8 copy, fp32 weight and bias
    xb = x.detach().bfloat16().requires_grad_()
    _opcheck(
        torch.ops.ndsnn.masked_linear.default,
        (xb, w, mask, b, True, False, x.detach().to(torch.int8)),
    )


@pytest.mark.parametrize("shape", [(3, 4, 5, 5), (6, 7)])
def test_opcheck_spike_prep(shape):
    for dtype in (torch.float32, torch.int8):
        x = (torch.rand(shape) < 0.4).to(dtype)
        _opcheck(torch.ops.ndsnn.spike_prep.default, (x, "test"))


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_opcheck_lif_ops(v_reset):
    x = torch.randn(4, 3, 5, requires_grad=True)
    v = torch.zeros(3, 5, requires_grad=True)
    params = (2.0, 1.0, v_reset, True, False, "atan", 2.0)
    _opcheck(torch.ops.ndsnn.lif_multistep.default, (x, v, *params))
    x4 = torch.randn(4, 3, 2, 2, 2, requires_grad=True)  # maps of 4 positions: a full companion
    v4 = torch.zeros(3, 2, 2, 2, requires_grad=True)
    _opcheck(torch.ops.ndsnn.lif_multistep.default, (x4, v4, *params, False, 4))
    s, v_last, h, _, _ = torch.ops.ndsnn.lif_multistep(x.detach(), v.detach(), *params)
    _opcheck(
        torch.ops.ndsnn.lif_multistep_backward.default,
        (torch.randn_like(s), torch.randn_like(v_last), h, *params),
    )
    _opcheck(
        torch.ops.ndsnn.lif_multistep_backward.default, (torch.randn_like(s), None, h, *params)
    )


def test_every_ndsnn_op_is_opchecked_here():
    """Guard: a new ndsnn op must get an opcheck test in this file."""
    import ndsnn_triton.ops as ops_module

    registered = {
        name.split("::")[1]
        for name in dir(ops_module)
        for obj in [getattr(ops_module, name)]
        if isinstance(obj, torch._library.custom_ops.CustomOpDef)
        for name in [obj._qualname]
    }
    with open(__file__) as f:
        source = f.read()
    missing = [op for op in sorted(registered) if f"torch.ops.ndsnn.{op}.default" not in source]
    assert registered and not missing, f"ops without opcheck: {missing}"


# ----------------------------------------------------------------------------- compile


def test_compile_module_stack_has_no_graph_breaks():
    from ndsnn_triton.nn import LIF, SpikeConv2d, SpikeLinear

    torch._dynamo.reset()
    conv = SpikeConv2d(3, 4, 3, padding=1, spike_input=False)
    lin = SpikeLinear(4 * 4 * 4, 5)

    def step(x):
        lif = LIF(tau=2.0)
        s = lif(conv(x))
        return lin(s.flatten(2))

    x = torch.randn(2, 3, 3, 4, 4)
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), step(x))
    out = compiled(x)
    out.sum().backward()
    assert conv.weight.grad is not None and lin.weight.grad is not None


# ----------------------------------------------------------------------------- backend switch


def test_backend_switch_and_context_manager():
    assert ndsnn_triton.get_backend() == "auto"
    with ndsnn_triton.use_backend("auto"):  # restores the process-wide choice set inside
        ndsnn_triton.set_backend("torch")
        assert ndsnn_triton.get_backend() == "torch"
        with ndsnn_triton.use_backend("triton"):
            assert ndsnn_triton.get_backend() == "triton"
        assert ndsnn_triton.get_backend() == "torch"
        with pytest.raises(ValueError, match="unknown ndsnn backend 'cuda'"):
            ndsnn_triton.set_backend("cuda")
        with pytest.raises(ValueError, match="unknown"), ndsnn_triton.use_backend("nope"):
            pass
        assert ndsnn_triton.get_backend() == "torch"
    assert ndsnn_triton.get_backend() == "auto"


def test_backends_give_the_same_result_where_they_exist():
    x, weight, mask, bias, geo = _conv_inputs(CONV_CASES[0])
    with ndsnn_triton.use_backend("torch"):
        ref = masked_conv2d(x, weight, mask, bias, **geo)
    with ndsnn_triton.use_backend("auto"):
        torch.testing.assert_close(masked_conv2d(x, weight, mask, bias, **geo), ref)


def test_triton_backend_without_a_kernel_names_the_op():
    from ndsnn_triton.backend import _KERNELS

    x, weight, mask, bias, geo = _conv_inputs(CONV_CASES[0])
    if ("ndsnn::masked_conv2d", "triton") in _KERNELS:
        pytest.skip("a Triton kernel is registered for masked_conv2d")
    with (
        ndsnn_triton.use_backend("triton"),
        pytest.raises(NotImplementedError, match="ndsnn::masked_conv2d"),
    ):
        masked_conv2d(x, weight, mask, bias, **geo)


@pytest.mark.parametrize(("value", "ok"), [("torch", True), ("TRITON", True), ("gpu", False)])
def test_backend_environment_variable(value, ok):
    env = {**os.environ, "NDSNN_BACKEND": value}
    proc = subprocess.run(
        [sys.executable, "-c", "import ndsnn_triton; print(ndsnn_triton.get_backend())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == value.lower()
    else:
        assert proc.returncode != 0
        assert "unknown ndsnn backend 'gpu'" in proc.stderr and "NDSNN_BACKEND" in proc.stderr


# ----------------------------------------------------------------------------- spikes and bad input


def test_non_binary_spikes_are_rejected_and_check_can_be_disabled():
    x = torch.rand(2, 3, 5, 5)
    w = torch.randn(4, 3, 3, 3)
    mask = torch.ones_like(w, dtype=torch.bool)
    with pytest.raises(ValueError, match="binary spikes"):
        masked_conv2d(x, w, mask)
    with pytest.raises(ValueError, match="binary spikes"):
        masked_linear(torch.rand(2, 3), torch.randn(4, 3), torch.ones(4, 3, dtype=torch.bool))
    torch.testing.assert_close(masked_conv2d(x, w, mask, spike_input=False), F.conv2d(x, w))
    with ndsnn_triton.use_spike_check(False):
        assert not ndsnn_triton.spike_check_enabled()
        masked_conv2d(x, w, mask)  # trusted: no check
    assert ndsnn_triton.spike_check_enabled()
    with ndsnn_triton.use_spike_check(True):  # restores the process-wide choice set inside
        ndsnn_triton.set_spike_check(False)
        assert not ndsnn_triton.spike_check_enabled()
    assert ndsnn_triton.spike_check_enabled()


def _good_conv():
    return (
        torch.ones(2, 3, 5, 5),
        torch.randn(4, 3, 3, 3),
        torch.ones(4, 3, 3, 3, dtype=torch.bool),
    )


@pytest.mark.parametrize(
    ("mutate", "exc", "match"),
    [
        (lambda x, w, m: (x[0], w, m), ValueError, r"\[N, C, H, W\]"),
        (lambda x, w, m: (x[:, :2], w, m), ValueError, "input channels"),
        (lambda x, w, m: (x, w, m[:, :, :2]), ValueError, "mask shape"),
        (lambda x, w, m: (x, w, m.float()), TypeError, "mask must be a bool"),
        (lambda x, w, m: (x, w.double(), m), TypeError, "weight dtype"),
        (lambda x, w, m: (x.long(), w, m), TypeError, "floating"),
        (lambda x, w, m: (x, w[0], m), ValueError, "weight must be 4-D"),
        (lambda x, w, m: (x.numpy(), w, m), TypeError, "x must be a torch.Tensor"),
        (lambda x, w, m: (x[:, :, :1, :1], w, m), ValueError, "too small"),
    ],
)
def test_conv_bad_input_names_the_problem(mutate, exc, match):
    with pytest.raises(exc, match=match):
        masked_conv2d(*mutate(*_good_conv()))


def test_conv_bad_bias_and_geometry():
    x, w, m = _good_conv()
    with pytest.raises(ValueError, match="bias shape"):
        masked_conv2d(x, w, m, torch.zeros(3))
    with pytest.raises(ValueError, match="stride"):
        masked_conv2d(x, w, m, stride=0)
    with pytest.raises(TypeError, match="padding"):
        masked_conv2d(x, w, m, padding=(1, 1, 1))


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (
            (torch.ones(2, 3, 1), torch.randn(4, 3), torch.ones(4, 3, dtype=torch.bool)),
            ValueError,
            "2-D",
        ),
        (
            (torch.ones(2, 5), torch.randn(4, 3), torch.ones(4, 3, dtype=torch.bool)),
            ValueError,
            "5 features",
        ),
        (
            (torch.ones(2, 3), torch.randn(4, 3), torch.ones(3, 4, dtype=torch.bool)),
            ValueError,
            "mask shape",
        ),
        ((torch.ones(2, 3), torch.randn(4, 3), torch.ones(4, 3)), TypeError, "bool"),
        (
            (
                torch.ones(2, 3, dtype=torch.float16),
                torch.randn(4, 3, dtype=torch.bfloat16),
                torch.ones(4, 3, dtype=torch.bool),
            ),
            TypeError,
            "dtype",
        ),
    ],
)
def test_linear_bad_input_names_the_problem(args, exc, match):
    with pytest.raises(exc, match=match):
        masked_linear(*args)


@pytest.mark.gpu
def test_conv_device_mismatch_is_named():
    x, w, m = _good_conv()
    with pytest.raises(ValueError, match="weight is on cuda"):
        masked_conv2d(x, w.cuda(), m)


def test_compile_whole_model_has_no_graph_breaks():
    from ndsnn_triton.models import small_snn
    from ndsnn_triton.nn import reset_net, temporal_cross_entropy

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = small_snn(10, T=2)
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3])
    expected = model(x)
    reset_net(model)
    compiled = torch.compile(
        model, backend="aot_eager", fullgraph=True
    )  # a graph break would raise
    out = compiled(x)
    reset_net(model)
    torch.testing.assert_close(out, expected)
    temporal_cross_entropy(out, y).backward()
    assert all(p.grad is not None for p in model.parameters())
