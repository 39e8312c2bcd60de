"""Compact (1-byte) spikes on the forward path and in what backward saves, and the memory counts."""

import pytest
import torch

import ndsnn_triton
from ndsnn_triton import lif_multistep, masked_conv2d, masked_linear
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, interpreting
from ndsnn_triton.models import build_model
from ndsnn_triton.nn import (
    LIF,
    SeqToANNContainer,
    SpikeConv2d,
    SpikeLinear,
    SpikeMaxPool2d,
    compact_spikes,
    reset_net,
    set_compact_spikes,
)
from ndsnn_triton.profiler.memory import saved_tensor_bytes, spike_handoff_bytes, spike_memory

TRITON_OK = HAS_TRITON and (torch.cuda.is_available() or interpreting())
BACKENDS = [
    "torch",
    pytest.param("triton", marks=pytest.mark.skipif(not TRITON_OK, reason="no Triton")),
]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
COMPACT = [torch.int8, torch.uint8, torch.bool]


def _spikes(*shape, rate=0.3):
    return (torch.rand(*shape) < rate).float().to(DEVICE)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", COMPACT)
@pytest.mark.parametrize("geo", [dict(stride=1, padding=1), dict(stride=2, padding=0)])
def test_conv_takes_compact_spikes(backend, dtype, geo):
    x = _spikes(3, 5, 6, 7)
    weight = torch.randn(4, 5, 3, 3, device=DEVICE)
    mask = torch.rand(4, 5, 3, 3, device=DEVICE) < 0.5
    bias = torch.randn(4, device=DEVICE)
    with ndsnn_triton.use_backend(backend):
        w_ref = weight.clone().requires_grad_()
        y_ref = masked_conv2d(x, w_ref, mask, bias, **geo)
        y_ref.square().sum().backward()
        w = weight.clone().requires_grad_()
        y = masked_conv2d(x.to(dtype), w, mask, bias, **geo)
        y.square().sum().backward()
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref.detach(), rtol=0, atol=0)
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", COMPACT)
def test_linear_takes_compact_spikes(backend, dtype):
    x = _spikes(6, 9)
    weight = torch.randn(5, 9, device=DEVICE)
    mask = torch.rand(5, 9, device=DEVICE) < 0.5
    with ndsnn_triton.use_backend(backend):
        y_ref = masked_linear(x, weight, mask)
        y = masked_linear(x.to(dtype), weight, mask)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)


def test_compact_input_errors_name_the_problem():
    w = torch.randn(4, 5, 3, 3)
    mask = torch.ones_like(w, dtype=torch.bool)
    x = torch.zeros(1, 5, 4, 4, dtype=torch.int8)
    with pytest.raises(TypeError, match="spike_input=True"):
        masked_conv2d(x, w, mask, spike_input=False)
    with pytest.raises(ValueError, match="binary"):
        masked_conv2d(x + 2, w, mask, padding=1)
    with pytest.raises(TypeError, match="int8/uint8/bool"):
        masked_conv2d(x.to(torch.int32), w, mask)
    with pytest.raises(TypeError, match="weight must be floating"):
        masked_linear(
            torch.zeros(2, 3, dtype=torch.int8),
            torch.zeros(4, 3, dtype=torch.int8),
            torch.ones(4, 3, dtype=torch.bool),
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_lif_int8_spikes_match_float_spikes(backend, v_reset):
    x = torch.randn(4, 3, 7, device=DEVICE) * 2
    v0 = torch.zeros(3, 7, device=DEVICE)
    with ndsnn_triton.use_backend(backend), torch.no_grad():
        s_ref, v_ref = lif_multistep(x, v0, tau=2.0, v_reset=v_reset)
        s, v = lif_multistep(x, v0, tau=2.0, v_reset=v_reset, int8_spikes=True)
        _, _, h, _, _ = torch.ops.ndsnn.lif_multistep(
            x, v0, 2.0, 1.0, v_reset, True, False, "atan", 2.0, True
        )
    assert s.dtype == torch.int8 and h.numel() == 0  # h is not written without a backward
    assert 0 < int(s.sum()) < s.numel()
    torch.testing.assert_close(s, s_ref.to(torch.int8), rtol=0, atol=0)
    torch.testing.assert_close(v, v_ref, rtol=0, atol=0)


def test_lif_int8_spikes_refuse_an_input_that_needs_a_gradient():
    x = torch.randn(2, 3, requires_grad=True)
    v0 = torch.zeros(3)
    with pytest.raises(ValueError, match="int8_spikes=True carries no gradient"):
        lif_multistep(x, v0, int8_spikes=True)
    # The raw op cannot check up front; its backward says what went wrong.
    _, v, _, _, _ = torch.ops.ndsnn.lif_multistep(
        x, v0, 2.0, 1.0, 0.0, True, False, "atan", 2.0, True
    )
    with pytest.raises(RuntimeError, match="int8 spikes carry none"):
        v.sum().backward()


def test_lif_module_emits_int8_only_where_no_gradient_flows():
    lif = LIF(compact_spikes=True)
    x = torch.randn(3, 2, 5) * 2
    assert lif(x.clone().requires_grad_()).dtype == torch.float32  # training: float spikes
    lif.reset()
    assert lif(x).dtype == torch.int8  # the input needs no gradient
    lif.reset()
    with torch.no_grad():
        assert lif(x.clone().requires_grad_()).dtype == torch.int8
    lif.reset()
    with ndsnn_triton.backend.aten_reference():
        assert lif(x).dtype == torch.int8


@pytest.mark.parametrize("dtype", COMPACT)
@pytest.mark.parametrize(
    "pool", [SpikeMaxPool2d(2), SpikeMaxPool2d(3, stride=2, padding=1), SpikeMaxPool2d(2, stride=1)]
)
def test_spike_max_pool_on_compact_spikes_equals_float_pooling(dtype, pool):
    x = _spikes(2, 3, 6, 6, rate=0.2)
    y = pool(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(
        y.float(), torch.nn.functional.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding)
    )


@pytest.mark.parametrize("name", ["vgg16", "resnet19"])
def test_models_give_identical_outputs_with_compact_spikes(name):
    model = build_model(name, num_classes=10, T=2).to(DEVICE).eval()
    images = torch.rand(2, 3, 32, 32, device=DEVICE)
    with torch.no_grad():
        reset_net(model)
        expected = model(images)
        with compact_spikes(model) as switched:
            assert switched > 10
            reset_net(model)
            got = model(images)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not any(m.compact_spikes for m in model.modules() if isinstance(m, LIF))
    assert set_compact_spikes(model, True) == switched
    assert all(m.compact_spikes for m in model.modules() if isinstance(m, LIF))


@pytest.mark.skipif(not TRITON_OK, reason="no Triton")
def test_spiking_stack_on_triton_kernels_with_compact_spikes():
    model = torch.nn.Sequential(
        SpikeConv2d(2, 4, 3, padding=1, spike_input=False),
        LIF(tau=1.5),
        SeqToANNContainer(SpikeMaxPool2d(2)),
        SpikeConv2d(4, 5, 3, padding=1),
        LIF(tau=1.5),
        torch.nn.Flatten(2),
        SpikeLinear(5 * 3 * 3, 3),
    ).to(DEVICE)
    with torch.no_grad():
        model[0].weight.mul_(3)
    images = torch.rand(2, 2, 2, 6, 6, device=DEVICE)
    with torch.no_grad(), ndsnn_triton.use_backend("torch"):
        reset_net(model)
        expected = model(images)
    set_compact_spikes(model, True)
    with torch.no_grad(), ndsnn_triton.use_backend("triton"):
        reset_net(model)
        got = model(images)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().sum() > 0


def test_saved_bytes_hand_counted():
    """A spike conv keeps its input as int8 (T·B·C·H·W bytes); a LIF keeps only h (4 bytes each)."""
    conv = SpikeConv2d(4, 6, 3, padding=1)
    x = (torch.rand(2, 3, 4, 5, 5) < 0.3).float()
    counted = saved_tensor_bytes(conv, lambda: conv(x))
    assert counted == {"int8": 2 * 3 * 4 * 5 * 5, "total": 2 * 3 * 4 * 5 * 5}
    lif = LIF()
    current = torch.randn(2, 3, 10, requires_grad=True)
    assert saved_tensor_bytes(lif, lambda: lif(current)) == {"float32": 240, "total": 240}


def test_handoff_bytes_hand_counted():
    lif = LIF()
    current = torch.randn(2, 3, 10)
    assert spike_handoff_bytes(lif, lambda: lif(current)) == 2 * 3 * 10 * 4
    lif.reset()
    lif.compact_spikes = True
    assert spike_handoff_bytes(lif, lambda: lif(current)) == 2 * 3 * 10


def test_spike_memory_report_restores_the_model():
    model = build_model("small", num_classes=10, T=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = spike_memory(model, torch.rand(3, 1, 8, 8))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and not any(
        m.compact_spikes for m in model.modules() if isinstance(m, LIF)
    )
    # small SNN (width 32) at T=2, B=3: spike inputs of conv 32→64 at 8×8, conv 64→64 at 4×4 and
    # of the classifier (64·2·2), per sample and step
    spike_values = 2 * 3 * (32 * 8 * 8 + 64 * 4 * 4 + 64 * 2 * 2)
    assert report["saved_spike_inputs"] == {"int8": spike_values, "as_float32": 4 * spike_values}
    handoff = report["inference_handoff"]
    assert handoff["float"] == 4 * handoff["compact"]
    assert (
        report["train_saved"]["ndsnn"]["total"] < report["train_saved"]["aten_reference"]["total"]
    )


def test_recorded_spike_memory_is_current_and_readme_quotes_it():
    """bench/results/spike_memory.json matches a fresh count, and README's table quotes it."""
    import json
    from pathlib import Path

    from bench.spike_memory import measure

    root = Path(__file__).resolve().parents[1]
    recorded = json.loads((root / "bench" / "results" / "spike_memory.json").read_text())["results"]
    fresh = measure(tuple(recorded[0]["batches"]), recorded[0]["T"])
    assert [r["per_sample_bytes"] for r in fresh] == [r["per_sample_bytes"] for r in recorded]
    readme = (root / "README.md").read_text()
    vgg, resnet = (r["per_sample_bytes"] for r in recorded)
    mib = lambda v: f"{v / 2**20:.2f}"  # noqa: E731
    for key in ("train_saved_ndsnn", "train_saved_aten_reference", "saved_spike_inputs_int8"):
        assert f"| {mib(vgg[key])} MiB | {mib(resnet[key])} MiB |" in readme, key
    hand = [
        mib(r[k])
        for r in (vgg, resnet)
        for k in ("inference_handoff_float", "inference_handoff_compact")
    ]
    assert f"| {hand[0]} / {hand[1]} MiB | {hand[2]} / {hand[3]} MiB |" in readme
