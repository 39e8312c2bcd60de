"""Masked spiking layers: pruned weights stay zero, dense gradients on request, mask versions, helpers."""

import pytest
import torch
import torch.nn.functional as F

from ndsnn_triton.nn import (
    SeqToANNContainer,
    SpikeConv2d,
    SpikeLinear,
    dense_weight_grads,
    flatten_time,
    masked_layers,
    unflatten_time,
)


def _spikes(*shape, rate=0.3):
    return (torch.rand(*shape) < rate).float()


def _layers():
    conv = SpikeConv2d(4, 6, 3, padding=1)
    lin = SpikeLinear(10, 3)
    conv.set_mask(torch.rand(conv.weight.shape) < 0.4)
    lin.set_mask(torch.rand(lin.weight.shape) < 0.4)
    return conv, lin


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-4),
    ],
)
def test_pruned_weights_get_zero_grad_and_stay_zero(make_opt):
    conv, lin = _layers()
    assert (conv.weight[~conv.mask] == 0).all() and (lin.weight[~lin.mask] == 0).all()
    opt = make_opt([*conv.parameters(), *lin.parameters()])
    for _ in range(4):
        opt.zero_grad()
        y = conv(_spikes(2, 3, 4, 5, 5))
        loss = y.square().mean() + lin(_spikes(2, 3, 10)).square().mean()
        loss.backward()
        assert (conv.weight.grad[~conv.mask] == 0).all()
        assert (lin.weight.grad[~lin.mask] == 0).all()
        assert (conv.weight.grad[conv.mask] != 0).any()
        opt.step()
    assert (conv.weight[~conv.mask] == 0).all() and (lin.weight[~lin.mask] == 0).all()
    assert (conv.weight[conv.mask] != 0).all()


def test_dense_weight_grads_context_gives_full_gradient():
    conv, lin = _layers()
    model = torch.nn.ModuleList([conv, lin])
    x = _spikes(2, 3, 4, 5, 5)
    with dense_weight_grads(model):
        assert conv.dense_weight_grad and lin.dense_weight_grad
        conv(x).sum().backward()
    assert not conv.dense_weight_grad and not lin.dense_weight_grad
    w = (conv.weight.detach() * conv.mask).requires_grad_()
    F.conv2d(x.flatten(0, 1), w, conv.bias.detach(), padding=1).sum().backward()
    torch.testing.assert_close(conv.weight.grad, w.grad)
    assert (conv.weight.grad[~conv.mask] != 0).any()


def test_mask_version_moves_on_every_mask_change():
    conv = SpikeConv2d(2, 3, 3)
    v0 = conv.mask_version
    conv.set_mask(torch.rand(conv.weight.shape) < 0.5)
    v1 = conv.mask_version
    assert v1 > v0
    conv.mask[0].fill_(True)  # direct in-place edit
    v2 = conv.mask_version
    assert v2 > v1
    conv.load_state_dict(SpikeConv2d(2, 3, 3).state_dict())
    assert conv.mask_version > v2
    out = conv(_spikes(1, 1, 2, 4, 4))
    assert conv.mask_version > v2 and out.shape == (1, 1, 3, 2, 2)


def test_mask_is_persistent_and_roundtrips_through_state_dict():
    conv = SpikeConv2d(3, 4, 3)
    conv.set_mask(torch.rand(conv.weight.shape) < 0.2)
    state = conv.state_dict()
    assert state["mask"].dtype == torch.bool
    other = SpikeConv2d(3, 4, 3)
    other.load_state_dict(state)
    assert torch.equal(other.mask, conv.mask)
    assert other.density == pytest.approx(conv.mask.float().mean().item())


def test_set_mask_rejects_bad_masks():
    conv = SpikeConv2d(3, 4, 3)
    with pytest.raises(ValueError, match="mask shape"):
        conv.set_mask(torch.ones(4, 3, 1, 1, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        conv.set_mask(torch.ones(4, 3, 3, 3))


def test_spike_conv_matches_nn_conv_on_time_first_input():
    torch.manual_seed(3)
    conv = SpikeConv2d(3, 5, 3, stride=2, padding="valid", bias=True)
    ref = torch.nn.Conv2d(3, 5, 3, stride=2)
    ref.load_state_dict({k: v for k, v in conv.state_dict().items() if k != "mask"})
    x = _spikes(4, 2, 3, 9, 9)
    y = conv(x)
    assert y.shape == (4, 2, 5, 4, 4)
    torch.testing.assert_close(y, ref(x.flatten(0, 1)).unflatten(0, (4, 2)))


def test_spike_conv_same_padding_and_unsupported_modes():
    conv = SpikeConv2d(2, 2, 3, padding="same", dilation=2)
    assert conv(_spikes(1, 1, 2, 6, 6)).shape == (1, 1, 2, 6, 6)
    with pytest.raises(ValueError, match="padding_mode"):
        SpikeConv2d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="asymmetrically"):
        SpikeConv2d(2, 2, 4, padding="same")


def test_spike_layers_reject_wrong_rank():
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\]"):
        SpikeConv2d(3, 4, 3)(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 2-D"):
        SpikeLinear(3, 4)(torch.zeros(3))
    with pytest.raises(ValueError, match="input channels"):
        SpikeConv2d(3, 4, 3)(torch.zeros(2, 1, 5, 8, 8))


def test_analog_layer_accepts_real_values_spike_layer_does_not():
    x = torch.randn(2, 1, 3, 6, 6)
    SpikeConv2d(3, 4, 3, spike_input=False)(x)
    with pytest.raises(ValueError, match="binary spikes"):
        SpikeConv2d(3, 4, 3)(x)


def test_autocast_runs_layers_in_the_autocast_dtype():
    conv, lin = _layers()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(_spikes(2, 1, 4, 5, 5))
        z = lin(_spikes(2, 1, 10))
    assert y.dtype == torch.bfloat16 and z.dtype == torch.bfloat16
    y.float().sum().backward()
    assert conv.weight.grad.dtype == torch.float32
    assert (conv.weight.grad[~conv.mask] == 0).all()


def test_masked_layers_lists_every_maskable_layer():
    model = torch.nn.Sequential(
        SpikeConv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Sequential(SpikeLinear(2, 2))
    )
    assert [name for name, _ in masked_layers(model)] == ["0", "2.0"]


def test_time_helpers_roundtrip_and_container():
    x = torch.randn(3, 4, 2, 5, 5)
    flat = flatten_time(x)
    assert flat.shape == (12, 2, 5, 5)
    assert torch.equal(unflatten_time(flat, 3), x)
    with pytest.raises(ValueError, match="multiple of T"):
        unflatten_time(flat, 5)
    bn = SeqToANNContainer(torch.nn.BatchNorm2d(2))
    out = bn(x)
    assert out.shape == x.shape
    # BN statistics are taken over T·B samples together
    torch.testing.assert_close(out.mean(dim=(0, 1, 3, 4)), torch.zeros(2), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="time-first"):
        bn(torch.randn(2, 5))


def test_kept_count_follows_every_mask_change():
    """The count set_mask records is reused, never served stale: an in-place edit, load_state_dict
    or a deep copy changed afterwards is counted again."""
    import copy

    layer = SpikeLinear(4, 3)
    layer.set_mask(torch.rand(3, 4) < 2)  # all kept
    assert layer.kept_weights == 12
    layer.mask[0, 0] = False  # in place, outside set_mask
    assert layer.kept_weights == 11 and layer.density == pytest.approx(11 / 12)
    twin = copy.deepcopy(layer)
    twin.mask[1] = False
    assert twin.kept_weights == 7 and layer.kept_weights == 11
    layer.load_state_dict(twin.state_dict())
    assert layer.kept_weights == 7
    layer.keep_all()
    assert layer.kept_weights == 12 and bool(layer.mask.all())
