"""Device operations (kernel launches) of a spiking layer on the Triton path, counted on CPU in the
interpreter by ``ndsnn_triton.profiler.device_ops``: every Triton launch and every aten op that
computes, fills, copies or casts.

The budget of one LIF → sparse conv layer in training: 3 operations for the forward (the LIF's
one-value rest potential, the LIF, the conv) and 4 for the backward (input gradient, weight
gradient with the bias fused in, its reduce, the LIF's backward) — in fp32 without a bias, and
under bf16 autocast with fp32 master weights and a bias."""

from __future__ import annotations

import pytest
import torch

import ndsnn_triton
from ndsnn_triton.nn import LIF, ATan, SeqToANNContainer, SpikeConv2d, SpikeLinear, SpikeMaxPool2d
from ndsnn_triton.profiler.device_ops import DeviceOpCounter

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="counts the interpreter's launches (the CPU path)"
)


def _lif() -> LIF:
    return LIF(tau=4 / 3, detach_reset=True, surrogate=ATan(2.0))


def _counted_step(layers, x: torch.Tensor, amp: bool):
    """Warm up (index built, kernels traced), then count one forward and one backward with
    fresh gradients, as a training step with ``zero_grad(set_to_none=True)`` runs them."""
    params = [p for m in layers for p in m.parameters()]
    with ndsnn_triton.use_backend("triton"), torch.autocast("cpu", torch.bfloat16, enabled=amp):
        for _ in range(2):
            for m in layers:
                if isinstance(m, LIF):
                    m.reset()
            for p in (*params, x):
                p.grad = None
            with DeviceOpCounter() as fwd:
                y = x
                for m in layers:
                    y = m(y)
            grad = torch.ones_like(y)
            with DeviceOpCounter() as bwd:
                y.backward(grad)
    return fwd.result, bwd.result


@pytest.mark.parametrize(("bias", "amp"), [(False, False), (True, True)])
def test_lif_to_conv_stays_within_its_launch_budget(bias, amp):
    conv = SpikeConv2d(4, 6, 3, padding=1, bias=bias)
    conv.set_mask(torch.rand(6, 4, 3, 3) < 0.3)
    x = torch.randn(2, 3, 4, 5, 5, dtype=torch.bfloat16 if amp else torch.float32)
    fwd, bwd = _counted_step([_lif(), conv], x.requires_grad_(), amp)
    assert fwd.summary() == {"new_full": 1, "triton:lif_fwd": 1, "triton:conv_fwd": 1}
    assert bwd.summary() == {
        "triton:conv_dgrad": 1,
        "triton:conv_wgrad": 1,
        "triton:wgrad_reduce": 1,
        "triton:lif_bwd": 1,
    }
    assert fwd.total <= 3 and bwd.total <= 4


def test_lif_to_linear_uses_the_same_kernels():
    lin = SpikeLinear(8, 5)
    lin.set_mask(torch.rand(5, 8) < 0.5)
    x = torch.randn(3, 2, 8, requires_grad=True)
    fwd, bwd = _counted_step([_lif(), lin], x, amp=False)
    assert fwd.total == 3 and bwd.total == 4, (fwd.summary(), bwd.summary())


def test_pooling_carries_the_companion():
    """LIF → max pool → conv: the conv still reads the LIF's companion (pooled): no fallback
    pass and no binary check run."""
    conv = SpikeConv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 3, 4, 6, 6, requires_grad=True)
    fwd, _ = _counted_step([_lif(), SeqToANNContainer(SpikeMaxPool2d(2)), conv], x, amp=False)
    names = fwd.summary()
    assert "triton:spike_prep" not in names and "logical_and" not in names
    assert names["triton:conv_fwd"] == 1


def test_input_from_elsewhere_takes_one_fallback_pass():
    """Spikes no LIF of the library made: one parallel pass (int8 copy, activity, binary check)
    before the conv."""
    conv = SpikeConv2d(4, 6, 3, padding=1, bias=False)
    x = (torch.rand(3, 2, 4, 5, 5) < 0.3).float().requires_grad_()
    fwd, _ = _counted_step([conv], x, amp=False)
    assert fwd.triton == ["spike_prep", "conv_fwd"]


def test_counter_counts_kernels_not_views():
    x = torch.randn(4, 6)
    with DeviceOpCounter() as ops:
        x.view(2, 12).t()  # views
        y = x.reshape(24)  # contiguous: a view too
        x.t().reshape(24)  # a transposed one must be copied
        z = (y + 1).sum()  # two kernels
        x.to(torch.float32)  # same dtype: nothing
        x.to(torch.bfloat16)  # a cast
        torch.empty(3)  # an allocation
        torch.zeros(3)  # a fill
    assert ops.result.aten == ["clone", "add", "sum", "_to_copy", "zeros"], ops.result.aten
    assert ops.result.total == 5 and float(z) == pytest.approx(float(x.sum() + 24))
