"""LIF neuron: hand-computed sequences, surrogate formulas, backward vs autograd, the module."""

import math

import pytest
import torch

from ndsnn_triton import lif_multistep
from ndsnn_triton.neuron_equations import lif_multistep_autograd_ref
from ndsnn_triton.nn import LIF, ATan, Sigmoid, reset_net


def _run(x, v0, **kw):
    x = torch.tensor(x, dtype=torch.float64).view(-1, 1)
    v = torch.tensor([v0], dtype=torch.float64)
    spikes, v_last = lif_multistep(x, v, **kw)
    return spikes.view(-1).tolist(), v_last.item()


# Each case worked by hand from the LIF equations (charge, fire, reset); values are exact binary fractions.
HAND_CASES = [
    # hard reset to 0, decay_input: H = V + (X - V)/2
    (dict(tau=2.0, v_reset=0.0, decay_input=True), [1.5, 0.5, 1.5, 1.0], 0.0, [0, 0, 1, 0], 0.5),
    # soft reset: after the spike at t=2 V = 1.0625 - 1 = 0.0625, then H = 0.0625 + (1 - 0.0625)/2
    (
        dict(tau=2.0, v_reset=None, decay_input=True),
        [1.5, 0.5, 1.5, 1.0],
        0.0,
        [0, 0, 1, 0],
        0.53125,
    ),
    # no input decay: H = V/2 + X; t=1 hits the threshold exactly (1.0 >= 1 fires)
    (
        dict(tau=2.0, v_reset=0.0, decay_input=False),
        [0.75, 0.625, 0.25, 1.25],
        0.0,
        [0, 1, 0, 1],
        0.0,
    ),
    # hard reset to -0.5 with decay_input: H = V + (X - (V + 0.5))/2
    (dict(tau=2.0, v_reset=-0.5, decay_input=True), [1.5, 3.0, 0.5], -0.5, [0, 1, 0], -0.25),
    # hard reset to -0.5 without input decay: H = V - (V + 0.5)/2 + X
    (dict(tau=2.0, v_reset=-0.5, decay_input=False), [1.0, 0.75, 1.0], -0.5, [0, 0, 1], -0.5),
    # soft reset, no input decay, threshold 0.5: H = V/2 + X, V -= 0.5 on a spike
    (
        dict(tau=2.0, v_reset=None, decay_input=False, v_threshold=0.5),
        [0.25, 0.5, 0.125],
        0.0,
        [0, 1, 0],
        0.1875,
    ),
    # LTH-SNN setting: tau = 4/3 -> H = 0.25 V + 0.75 X: 0.75, 0.9375, 1.171875
    (dict(tau=4.0 / 3.0, v_reset=0.0, decay_input=True), [1.0, 1.0, 1.25], 0.0, [0, 0, 1], 0.0),
]


@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize(("kw", "x", "v0", "spikes", "v_last"), HAND_CASES)
def test_lif_hand_computed(kw, x, v0, spikes, v_last, detach_reset):
    got_spikes, got_v = _run(x, v0, detach_reset=detach_reset, **kw)
    assert got_spikes == spikes
    assert got_v == pytest.approx(v_last, abs=1e-15)


def _atan(x, alpha=2.0):
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


@pytest.mark.parametrize("detach_reset", [False, True])
def test_lif_gradient_hand_derived(detach_reset):
    """L = S0 + S1 + V1 for x = [1.5, 1.0], tau=2, hard reset 0, ATan(2); chain rule by hand."""
    x = torch.tensor([[1.5], [1.0]], dtype=torch.float64, requires_grad=True)
    v = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    s, v_last = lif_multistep(
        x, v, tau=2.0, v_reset=0.0, detach_reset=detach_reset, surrogate="atan", alpha=2.0
    )
    (s.sum() + v_last.sum()).backward()
    h0, h1 = 0.75, 0.875  # no spikes: V0 = H0
    # t = 1: dV1/dH1 = (1 - S1) + (v_reset - H1)·g'(H1 - 1) unless detached
    grad_s1 = 1.0 + (0.0 if detach_reset else (0.0 - h1))
    grad_h1 = 1.0 + grad_s1 * _atan(h1 - 1)
    grad_v0 = grad_h1 * (1 - 1 / 2)
    grad_s0 = 1.0 + (0.0 if detach_reset else grad_v0 * (0.0 - h0))
    grad_h0 = grad_v0 + grad_s0 * _atan(h0 - 1)
    assert x.grad.view(-1).tolist() == pytest.approx([grad_h0 / 2, grad_h1 / 2], abs=1e-14)
    assert v.grad.item() == pytest.approx(grad_h0 / 2, abs=1e-14)


def test_surrogate_derivatives_match_formulas():
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    for alpha in (0.5, 2.0, 5.0):
        expected = (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)
        torch.testing.assert_close(ATan(alpha).derivative(x), expected, rtol=1e-14, atol=0)
        s = 1 / (1 + torch.exp(-alpha * x))
        torch.testing.assert_close(
            Sigmoid(alpha).derivative(x), alpha * s * (1 - s), rtol=1e-12, atol=1e-15
        )
    # known points: ATan(2)'(0) = 1, ATan(2)'(1/pi) = 1/2; Sigmoid(4)'(0) = 1, Sigmoid(4)'(ln 3 / 4) = 3/4
    pts = torch.tensor([0.0, 1 / math.pi], dtype=torch.float64)
    assert ATan(2.0).derivative(pts).tolist() == pytest.approx([1.0, 0.5])
    pts = torch.tensor([0.0, math.log(3) / 4], dtype=torch.float64)
    assert Sigmoid(4.0).derivative(pts).tolist() == pytest.approx([1.0, 0.75])


@pytest.mark.parametrize("surrogate", [ATan(2.0), Sigmoid(4.0)])
def test_surrogate_call_is_heaviside_with_surrogate_backward(surrogate):
    x = torch.tensor([-1.0, -0.1, 0.0, 0.3, 2.0], dtype=torch.float64, requires_grad=True)
    y = surrogate(x)
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    torch.testing.assert_close(x.grad, surrogate.derivative(x.detach()))


def test_surrogate_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        ATan(alpha=0.0)


@pytest.mark.parametrize("surrogate", ["atan", "sigmoid"])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("decay_input", [False, True])
@pytest.mark.parametrize("v_reset", [0.0, -0.3, None])
def test_lif_op_matches_autograd_reference(v_reset, decay_input, detach_reset, surrogate):
    torch.manual_seed(1)
    kw = dict(
        tau=1.7,
        v_threshold=0.8,
        v_reset=v_reset,
        decay_input=decay_input,
        detach_reset=detach_reset,
        surrogate=surrogate,
        alpha=3.0,
    )
    x = (torch.randn(6, 3, 5, dtype=torch.float64) * 1.5 + 0.5).requires_grad_()
    v = (torch.randn(3, 5, dtype=torch.float64) * 0.3).requires_grad_()
    s, v_last = lif_multistep(x, v, **kw)
    x_ref, v_ref = x.detach().clone().requires_grad_(), v.detach().clone().requires_grad_()
    s_ref, v_last_ref = lif_multistep_autograd_ref(x_ref, v_ref, **kw)
    assert torch.equal(s, s_ref)
    assert 0 < s.sum() < s.numel()  # the case exercises both firing and silence
    torch.testing.assert_close(v_last, v_last_ref, rtol=0, atol=1e-14)
    gs, gv = torch.randn_like(s), torch.randn_like(v_last)
    torch.autograd.backward((s, v_last), (gs, gv))
    torch.autograd.backward((s_ref, v_last_ref), (gs, gv))
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(v.grad, v_ref.grad, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_lif_gradcheck_membrane_path(v_reset):
    """With detach_reset the membrane output has a true derivative: gradcheck it numerically."""
    x = (torch.rand(4, 2, 3, dtype=torch.float64) * 2).requires_grad_()
    v = (torch.rand(2, 3, dtype=torch.float64) * 0.5).requires_grad_()

    def v_last(x, v):
        return lif_multistep(x, v, tau=2.0, v_reset=v_reset, detach_reset=True)[1]

    assert torch.autograd.gradcheck(v_last, (x, v), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lif_low_precision_keeps_dtype(dtype):
    x = torch.randn(3, 2, 4).to(dtype)
    s, v = lif_multistep(x, torch.zeros(2, 4, dtype=dtype))
    assert s.dtype == dtype and v.dtype == dtype
    ref, _ = lif_multistep(x.double(), torch.zeros(2, 4, dtype=torch.float64))
    # spikes can differ only where H sits within rounding of the threshold
    assert (s.double() != ref).float().mean() < 0.05


def test_lif_module_keeps_state_between_calls_and_resets():
    torch.manual_seed(2)
    x = torch.randn(6, 2, 3)
    whole = LIF(tau=2.0)(x)
    lif = LIF(tau=2.0)
    parts = torch.cat([lif(x[:2]), lif(x[2:])])
    torch.testing.assert_close(parts, whole)
    lif.reset()
    assert lif.v == 0.0
    torch.testing.assert_close(lif(x), whole)


def test_lif_module_soft_reset_rests_at_zero():
    lif = LIF(v_reset=None)
    lif(torch.randn(2, 1, 3))
    lif.reset()
    assert lif.v == 0.0
    lif = LIF(v_reset=-0.2)
    assert lif.v == -0.2


def test_reset_net_resets_every_neuron():
    net = torch.nn.Sequential(LIF(), torch.nn.Identity(), LIF())
    net(torch.randn(2, 1, 4) + 2)
    assert all(isinstance(m.v, torch.Tensor) for m in (net[0], net[2]))
    reset_net(net)
    assert net[0].v == 0.0 and net[2].v == 0.0


def test_lif_module_rejects_batch_change_without_reset():
    lif = LIF()
    lif(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="reset"):
        lif(torch.randn(2, 5, 4))


def test_lif_defaults_are_spikingjelly():
    lif = LIF()
    assert (lif.tau, lif.v_threshold, lif.v_reset, lif.decay_input, lif.detach_reset) == (
        2.0,
        1.0,
        0.0,
        True,
        False,
    )
    assert isinstance(lif.surrogate, Sigmoid) and lif.surrogate.alpha == 4.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(tau=0.5), "tau"),
        (dict(tau=float("nan")), "tau"),
        (dict(v_threshold=float("inf")), "v_threshold"),
        (dict(surrogate="relu"), "surrogate"),
        (dict(alpha=-1.0), "alpha"),
    ],
)
def test_lif_op_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lif_multistep(torch.randn(2, 3), torch.zeros(3), **kwargs)


def test_lif_op_rejects_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match="v_init shape"):
        lif_multistep(torch.randn(4, 2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[T, \.\.\.\]"):
        lif_multistep(torch.randn(4), torch.zeros(()))
    with pytest.raises(TypeError, match="v_init dtype"):
        lif_multistep(torch.randn(4, 3), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating"):
        lif_multistep(torch.ones(4, 3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="time-first"):
        LIF()(torch.randn(5))
    with pytest.raises(TypeError, match="surrogate"):
        LIF(surrogate="atan")
