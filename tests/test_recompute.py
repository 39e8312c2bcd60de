"""Recomputed spiking segments: gradients bit-identical to saving, and only int8 inputs kept.

The reference is the same model run with recomputation off (``use_recompute_density(0)``): every
activation saved by autograd as usual. Recomputation forced on (threshold 1) must give the same
outputs, gradients, BN running statistics and neuron state, bit for bit on the CPU torch backend.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import ndsnn_triton
from ndsnn_triton import use_backend, use_recompute_density
from ndsnn_triton.backend import RECOMPUTE_MAX_DENSITY, aten_reference
from ndsnn_triton.models import build_model
from ndsnn_triton.nn import (
    LIF,
    SeqToANNContainer,
    SpikeConv2d,
    SpikeMaxPool2d,
    SpikingSequential,
    reset_net,
    should_recompute,
    temporal_cross_entropy,
)
from ndsnn_triton.nn.recompute import sequential_segments, should_recompute_tail
from ndsnn_triton.profiler.memory import saved_tensor_bytes
from ndsnn_triton.sparse.masks import random_masks

CASES = {  # model: (build kwargs, image shape)
    "small": ({"T": 2, "image_size": 8}, (2, 1, 8, 8)),
    "vgg16": ({"T": 2}, (2, 3, 32, 32)),
    "resnet19": ({"T": 2}, (2, 3, 16, 16)),
}


def _model(name: str, density: float) -> nn.Module:
    kwargs, _ = CASES[name]
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, **kwargs)
    if density < 1:
        random_masks(model, density, "uniform", seed=1)
    return model


def _step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, threshold: float):
    """One training step's output, parameter gradients and state after it."""
    with use_recompute_density(threshold):
        reset_net(model)
        model.zero_grad(set_to_none=True)
        out = model(images)
        temporal_cross_entropy(out, labels).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads, copy.deepcopy(model.state_dict())


def _assert_identical(a, b) -> None:
    (out_a, grads_a, state_a), (out_b, grads_b, state_b) = a, b
    assert torch.equal(out_a, out_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


def _inputs(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    shape = CASES[name][1]
    return torch.rand(shape, generator=g) * 2, torch.randint(0, 10, (shape[0],), generator=g)


@pytest.mark.parametrize("density", [1.0, 0.1, 0.01])
@pytest.mark.parametrize("name", list(CASES))
def test_gradients_bit_identical_with_recomputation(name, density):
    """Against saving everything (threshold 0): every segment from its int8 input (threshold 1),
    and the default rule (dense layers: the tails from the conv outputs; sparse: whole segments)."""
    model = _model(name, density)
    images, labels = _inputs(name)
    with use_backend("torch"):
        saving = _step(copy.deepcopy(model), images, labels, 0.0)
        for threshold in (1.0, RECOMPUTE_MAX_DENSITY):
            twin = copy.deepcopy(model)
            _assert_identical(saving, _step(twin, images, labels, threshold))
            # BN statistics moved exactly once (the replay leaves them alone)
            assert all(
                int(m.num_batches_tracked) == 1
                for m in twin.modules()
                if isinstance(m, nn.BatchNorm2d)
            )


def test_gradients_bit_identical_under_bf16_autocast():
    model = _model("small", 0.1)
    twin = copy.deepcopy(model)
    images, labels = _inputs("small")
    with use_backend("torch"), torch.autocast("cpu", dtype=torch.bfloat16):
        saving = _step(model, images, labels, 0.0)
        recomputing = _step(twin, images, labels, 1.0)
    assert saving[0].dtype == torch.bfloat16
    _assert_identical(saving, recomputing)


def test_triton_path_recomputes_within_tolerance():
    """The Triton kernels (interpreted on CPU) replay deterministically: same gradients, for the
    whole segment rebuilt (threshold 1) and for the tail alone (density 0.3 > 0.1)."""
    torch.manual_seed(3)
    net = SpikingSequential(
        LIF(),
        SpikeConv2d(3, 4, 3, padding=1),
        SeqToANNContainer(nn.BatchNorm2d(4)),
        LIF(),
        SeqToANNContainer(SpikeMaxPool2d(2)),
    )
    net[1].set_mask(torch.rand(net[1].weight.shape) < 0.3)
    currents = torch.rand(2, 2, 3, 4, 4) * 3
    weights = torch.randn(2, 2, 4, 2, 2)

    def run(threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = copy.deepcopy(net)
        with use_backend("triton"), use_recompute_density(threshold):
            reset_net(model)
            x = currents.clone().requires_grad_()
            out = model(x)
            (out * weights).sum().backward()
        return out.detach(), x.grad, model[1].weight.grad

    out_a, gx_a, gw_a = run(0.0)
    assert out_a.sum() > 0 and gw_a.abs().sum() > 0  # spikes and gradients really flow
    for threshold in (1.0, RECOMPUTE_MAX_DENSITY):
        out_b, gx_b, gw_b = run(threshold)
        torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
        torch.testing.assert_close(gx_a, gx_b, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(gw_a, gw_b, rtol=1e-6, atol=1e-7)


def _saved(model: nn.Module, images: torch.Tensor, threshold: float) -> dict[str, int]:
    def forward() -> torch.Tensor:
        reset_net(model)
        with use_recompute_density(threshold):
            return model(images)

    with use_backend("torch"):
        return saved_tensor_bytes(model, forward)


def test_recomputed_small_model_keeps_only_int8_segment_inputs():
    """Hand count, small model (width 32, 8×8 image, T = 2, B = 2), every segment recomputed."""
    model = _model("small", 0.01)
    images, _ = _inputs("small")
    T, B, w = 2, 2, 32
    image = B * 1 * 8 * 8 * 4  # the stem conv's float input
    stem_bn_input = B * w * 8 * 8 * 4  # once, not per step (direct coding)
    stem_bn_stats = 2 * w * 4  # its batch mean and inverse std
    lif0_input = B * w * 8 * 8 * 4 + 4  # the expanded BN output's storage + the rest potential
    segment_inputs = T * B * (w * 8 * 8 + 2 * w * 4 * 4)  # int8 spikes into conv 1 and conv 2
    classifier_input = T * B * 2 * w * 2 * 2  # int8
    saved = _saved(model, images, 1.0)
    assert saved == {
        "float32": image + stem_bn_input + stem_bn_stats + lif0_input,
        "int8": segment_inputs + classifier_input,
        "total": image
        + stem_bn_input
        + stem_bn_stats
        + lif0_input
        + segment_inputs
        + classifier_input,
    }
    # the default threshold (0.1) recomputes whole segments at density 0.01
    assert _saved(model, images, RECOMPUTE_MAX_DENSITY) == saved
    # at density 1 the convs run as usual (int8 inputs kept) and each tail keeps its conv output
    dense = _saved(_model("small", 1.0), images, RECOMPUTE_MAX_DENSITY)
    conv_outputs = T * B * (2 * w * 8 * 8 + 2 * w * 4 * 4) * 4
    assert dense == {
        "float32": image + stem_bn_input + stem_bn_stats + lif0_input + conv_outputs,
        "int8": segment_inputs + classifier_input,
        "total": image
        + stem_bn_input
        + stem_bn_stats
        + lif0_input
        + conv_outputs
        + segment_inputs
        + classifier_input,
    }
    # with recomputation off, BN keeps the conv outputs, the LIFs h, the pools their codes
    saving = _saved(_model("small", 1.0), images, 0.0)
    h = conv_outputs
    bn_stats = 2 * (2 * 2 * w * 4)
    pool_codes = T * B * (2 * w * 4 * 4 + 2 * w * 2 * 2)
    assert saving == {
        "float32": dense["float32"] + h + bn_stats,
        "int8": dense["int8"],
        "uint8": pool_codes,
        "total": dense["total"] + h + bn_stats + pool_codes,
    }


def test_resnet_block_keeps_one_int8_copy_of_its_input():
    model = _model("resnet19", 0.01)
    images, _ = _inputs("resnet19")
    saved = _saved(model, images, 1.0)
    kept = _saved(model, images, 0.0)
    # 8 blocks, each keeping its input once (16×16 image, stride 2 at each stage's first block):
    # 64·16·16, 128·8·8 ×3, 256·4·4 ×3, 512·2·2
    T, B = 2, 2
    blocks = 64 * 256 + 3 * 128 * 64 + 3 * 256 * 16 + 512 * 4
    assert saved["int8"] == T * B * blocks + T * B * 256  # + fc2's int8 input
    assert saved["total"] < kept["total"] / 4


def test_replay_is_invisible_to_hooks_and_state():
    model = _model("small", 0.01)
    images, labels = _inputs("small")
    calls = []
    conv = model.features[1]
    handle = conv.register_forward_pre_hook(lambda m, args: calls.append(1))
    try:
        with use_backend("torch"):
            _step(model, images, labels, 1.0)
    finally:
        handle.remove()
    assert len(calls) == 1  # the forward, not the replay in backward
    lif = model.features[3]
    assert isinstance(lif.v, torch.Tensor) and lif.v.grad_fn is not None  # v_last carries a graph


def test_state_carried_between_calls_gives_the_same_gradients():
    """Two forwards without reset_net: the second starts from a membrane potential with a graph,
    so it is not recomputed, and the gradient flows back into the first call's segment."""

    def two_calls(model: nn.Module, threshold: float):
        images, labels = _inputs("small")
        with use_backend("torch"), use_recompute_density(threshold):
            reset_net(model)
            model.zero_grad(set_to_none=True)
            out = model(images) + model(images)
            temporal_cross_entropy(out, labels).backward()
        return out.detach(), {n: p.grad for n, p in model.named_parameters()}, {}

    model = _model("small", 0.01)
    twin = copy.deepcopy(model)
    _assert_identical(two_calls(model, 0.0), two_calls(twin, 1.0))


def test_should_recompute_rule():
    seq = SpikingSequential(
        SpikeConv2d(4, 4, 3, padding=1),
        SeqToANNContainer(nn.BatchNorm2d(4)),
        LIF(),
        SeqToANNContainer(SpikeMaxPool2d(2)),
    )
    seq[0].set_mask(torch.rand(seq[0].weight.shape) < 0.05)
    x = (torch.rand(2, 2, 4, 8, 8) < 0.3).float()
    parts = list(seq)
    with use_recompute_density(0.1):
        assert should_recompute(x, parts)
        with torch.no_grad():
            assert not should_recompute(x, parts)
        with aten_reference():
            assert not should_recompute(x, parts)
    with use_recompute_density(0.0):
        assert not should_recompute(x, parts)
    with use_recompute_density(0.01):  # density ~0.05 > 0.01: the layer keeps saving
        assert not should_recompute(x, parts)
    seq[2].v = torch.zeros(2, 4, 8, 8)  # a neuron not at rest
    with use_recompute_density(1.0):
        assert not should_recompute(x, parts)
    seq[2].reset()
    seq[2].compact_spikes = True
    with use_recompute_density(1.0):
        assert not should_recompute(x, parts)
    seq[2].compact_spikes = False
    seq[0].spike_input = False  # analog input cannot be kept as int8
    with use_recompute_density(1.0):
        assert not should_recompute(x, parts)
    # the weightless tail is rebuilt at any density while recomputation is on
    y = torch.randn(2, 2, 4, 8, 8, requires_grad=True)
    with use_recompute_density(0.01):
        assert should_recompute_tail([y], parts[1:])
        assert not should_recompute_tail([y], parts)  # a masked layer is no tail
        with torch.no_grad():
            assert not should_recompute_tail([y], parts[1:])
    with use_recompute_density(0.0):
        assert not should_recompute_tail([y], parts[1:])


def test_sequential_segments_cut_before_spiking_layers():
    model = _model("small", 1.0)
    assert sequential_segments(list(model.features)) == [(0, 1), (1, 5), (5, 9)]
    assert type(model.features).__mro__[1] is nn.Sequential
    assert "features.1.weight" in model.state_dict()  # the keys of a plain nn.Sequential


def test_weight_changed_before_backward_is_caught():
    model = _model("small", 0.01)
    images, labels = _inputs("small")
    with use_backend("torch"), use_recompute_density(1.0):
        reset_net(model)
        loss = temporal_cross_entropy(model(images), labels)
        with torch.no_grad():
            model.features[1].weight.mul_(2)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "abc", True])
def test_threshold_must_be_a_density(bad):
    with pytest.raises(ValueError, match=r"recompute density must be a number in \[0, 1\]"):
        ndsnn_triton.set_recompute_density(bad)
    assert ndsnn_triton.get_recompute_density() == RECOMPUTE_MAX_DENSITY


def test_threshold_from_the_environment():
    code = "import ndsnn_triton; print(ndsnn_triton.get_recompute_density())"
    env = {**os.environ, "NDSNN_RECOMPUTE_DENSITY": "0.25"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.25"
    env["NDSNN_RECOMPUTE_DENSITY"] = "lots"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "NDSNN_RECOMPUTE_DENSITY" in out.stderr


def test_lif_keeps_an_expanded_input_instead_of_h():
    """Direct coding feeds the first LIF one step expanded over T: it keeps that step (and the
    one-value rest potential) and reruns the forward for h, with the gradient of the h path."""
    T, shape = 5, (3, 4, 6, 6)
    step = torch.randn(shape) * 2
    lif = LIF(tau=4 / 3, detach_reset=True)
    grads = []
    for contiguous in (False, True):
        x = step.clone().requires_grad_()
        seq = x.expand(T, *shape)
        seq = seq.contiguous() if contiguous else seq
        lif.reset()
        with use_backend("torch"):
            saved = saved_tensor_bytes(lif, lambda s=seq: lif(s))
            lif.reset()
            out = lif(seq)
        (out * torch.arange(out.numel()).reshape(out.shape).sin()).sum().backward()
        grads.append(x.grad)
        expected = step.numel() * 4 + 4 if not contiguous else T * step.numel() * 4
        assert saved["total"] == expected
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("name", ["small", "resnet19"])
def test_torch_compile_traces_without_breaks_and_saves_as_usual(name):
    """Under torch.compile the rules step aside before touching a module (no graph break with
    fullgraph=True); the compiled step's gradients match the eager recomputing one."""
    torch._dynamo.reset()
    model = _model(name, 0.05)
    twin = copy.deepcopy(model)
    images, labels = _inputs(name)
    with use_backend("torch"):
        eager = _step(model, images, labels, RECOMPUTE_MAX_DENSITY)
        compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
        reset_net(twin)
        out = compiled(images)
        temporal_cross_entropy(out, labels).backward()
    torch.testing.assert_close(out, eager[0])
    for n, p in twin.named_parameters():
        torch.testing.assert_close(p.grad, eager[1][n], rtol=1e-5, atol=1e-6, msg=n)
    torch._dynamo.reset()
