"""from_spikingjelly against the real SpikingJelly 2.0 (a test-only dependency): converted VGG- and
ResNet-style networks give SpikingJelly's outputs and gradients, and both reset_nets work."""

import copy

import pytest
import torch
from torch import nn

import ndsnn_triton
from ndsnn_triton.nn import (
    LIF,
    ATan,
    SeqToANNContainer,
    Sigmoid,
    SpikeConv2d,
    SpikeLinear,
    from_spikingjelly,
    reset_net,
)

sj = pytest.importorskip("spikingjelly.activation_based")
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

T, B = 4, 2


def _lif(**kw) -> nn.Module:
    kw.setdefault("surrogate_function", surrogate.ATan())
    kw.setdefault("v_threshold", 0.5)
    return neuron.LIFNode(tau=2.0, detach_reset=True, step_mode="m", **kw)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        layer.Conv2d(cin, cout, 3, stride, 1, bias=False, step_mode="m"),
        layer.BatchNorm2d(cout, step_mode="m"),
    ]


def sj_vgg(width: int = 8) -> nn.Module:
    """conv-bn-LIF-maxpool x2, then flatten-linear-LIF-linear, on [T, B, 3, 32, 32]."""
    return nn.Sequential(
        *_conv_bn(3, width),
        _lif(),
        layer.MaxPool2d(2, 2, step_mode="m"),
        *_conv_bn(width, 2 * width),
        _lif(v_reset=None, surrogate_function=surrogate.Sigmoid(alpha=3.0)),
        layer.MaxPool2d(2, 2, step_mode="m"),
        layer.AvgPool2d(2, 2, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(2 * width * 16, 32, step_mode="m"),
        _lif(decay_input=False, v_threshold=0.1),
        layer.Linear(32, 10, step_mode="m"),
    )


class SJBlock(nn.Module):
    """Spiking basic block: the residual add comes before the second neuron."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, stride), _lif(), *_conv_bn(cout, cout))
        self.short = (
            layer.SeqToANNContainer(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.sn = _lif(v_reset=-0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sn(self.body(x) + self.short(x))


class SJResNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, width), _lif())
        self.blocks = nn.Sequential(SJBlock(width, width, 1), SJBlock(width, 2 * width, 2))
        self.pool = layer.AdaptiveAvgPool2d((1, 1), step_mode="m")
        self.fc = layer.Linear(2 * width, 10, step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(2))


def _x(size: int = 32) -> torch.Tensor:
    return torch.randn(T, B, 3, size, size)


def _run(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Output, input gradient and weight gradients of one forward/backward (state reset before)."""
    functional.reset_net(model)
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), x.grad, [p.grad for p in model.parameters()]


def _spikes_of(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every neuron's output spikes in one forward (no grad)."""
    seen: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _a, y: seen.append(y.detach().float()))
        for m in model.modules()
        if type(m).__name__ in ("LIFNode", "LIF")
    ]
    functional.reset_net(model)
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def _assert_matches(sj_model: nn.Module, x: torch.Tensor, backend: str) -> None:
    """The converted copy gives the same spikes (exactly), outputs and gradients (fp32 tolerance)."""
    ours = from_spikingjelly(copy.deepcopy(sj_model))
    assert not [m for m in ours.modules() if type(m).__module__.startswith("spikingjelly")]
    with ndsnn_triton.use_backend(backend):
        got = _run(ours, x)
        got_spikes = _spikes_of(ours, x)
    want = _run(sj_model, x)
    want_spikes = _spikes_of(sj_model, x)
    assert len(got_spikes) == len(want_spikes) > 0
    for a, b in zip(got_spikes, want_spikes, strict=True):
        assert a.sum() > 0 and torch.equal(a, b)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)
    assert len(got[2]) == len(want[2])
    for g, w in zip(got[2], want[2], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("build", [sj_vgg, SJResNet], ids=["vgg", "resnet"])
def test_converted_network_matches_spikingjelly(build):
    _assert_matches(build(), _x(), "torch")


def test_converted_network_matches_spikingjelly_on_triton():
    """The Triton kernels (the interpreter on CPU: a tiny net, T=2, B=1, 4x4 maps)."""
    sj_model = nn.Sequential(
        *_conv_bn(3, 4),
        _lif(),
        *_conv_bn(4, 4),
        _lif(v_reset=None),
        layer.Flatten(step_mode="m"),
        layer.Linear(64, 3, step_mode="m"),
    )
    _assert_matches(sj_model, torch.randn(2, 1, 3, 4, 4) * 2, "triton")


def test_layers_weights_and_neurons_are_converted():
    sj_model = sj_vgg()
    ours = from_spikingjelly(copy.deepcopy(sj_model))
    convs = [m for m in ours.modules() if isinstance(m, SpikeConv2d)]
    linears = [m for m in ours.modules() if isinstance(m, SpikeLinear)]
    lifs = [m for m in ours.modules() if isinstance(m, LIF)]
    assert [c.spike_input for c in convs] == [False, True]
    assert [lin.spike_input for lin in linears] == [False, True]  # the first follows an AvgPool
    torch.testing.assert_close(convs[0].weight, sj_model[0].weight, rtol=0, atol=0)
    assert isinstance(ours[1], SeqToANNContainer) and isinstance(ours[1][0], nn.BatchNorm2d)
    assert lifs[0].surrogate == ATan(2.0) and lifs[0].v_reset == 0.0 and lifs[0].detach_reset
    assert lifs[1].surrogate == Sigmoid(3.0) and lifs[1].v_reset is None
    assert not lifs[2].decay_input


def test_example_input_decides_spike_input():
    model = SJResNet()
    ruled = from_spikingjelly(copy.deepcopy(model))
    observed = from_spikingjelly(model, example_input=_x(16))
    flags = [
        (name, m.spike_input)
        for name, m in observed.named_modules()
        if isinstance(m, SpikeConv2d | SpikeLinear)
    ]
    # stem analog; every block conv (incl. the shortcut) takes spikes; fc follows an average pool
    assert [f for _, f in flags] == [False] + [True] * 5 + [False]
    ruled_flags = [
        m.spike_input for m in ruled.modules() if isinstance(m, SpikeConv2d | SpikeLinear)
    ]
    # the rule is conservative for the shortcut conv (registered after a BatchNorm): analog
    assert ruled_flags == [False, True, True, True, True, False, False]


def test_example_forward_leaves_the_model_unchanged():
    model = sj_vgg()
    functional.reset_net(model)
    model.train()
    before = copy.deepcopy(model.state_dict())
    ours = from_spikingjelly(model, example_input=_x())
    assert ours.training and all(m.training for m in ours.modules())
    for key, value in ours.state_dict().items():
        if key in before:
            torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert all(m.v == m._v_rest for m in ours.modules() if isinstance(m, LIF))


@pytest.mark.parametrize("reset", [functional.reset_net, reset_net], ids=["sj", "ndsnn"])
def test_both_reset_nets_reset_the_converted_model(reset):
    model = from_spikingjelly(sj_vgg())
    x = _x()
    with torch.no_grad():
        first = model(x)
        second = model(x)
        reset(model)
        again = model(x)
    assert not torch.equal(first, second)  # the state carried over
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def test_membrane_state_is_carried_over():
    sj_model = sj_vgg()
    x = _x()
    with torch.no_grad():
        sj_model(x)
        ours = from_spikingjelly(copy.deepcopy(sj_model))
        torch.testing.assert_close(ours(x), sj_model(x), rtol=1e-5, atol=1e-5)


def test_unconvertible_modules_are_all_listed_and_nothing_changes():
    model = nn.Sequential(
        layer.Conv2d(3, 4, 3, step_mode="s"),
        neuron.IFNode(step_mode="m"),
        neuron.ParametricLIFNode(step_mode="m"),
        neuron.LIFNode(step_mode="m", surrogate_function=surrogate.PiecewiseQuadratic()),
        neuron.LIFNode(step_mode="m", store_v_seq=True),
        layer.Dropout(0.5, step_mode="m"),
        layer.Linear(4, 4, step_mode="m"),
    )
    before = [type(m) for m in model]
    with pytest.raises(ValueError, match="cannot convert 6 module") as err:
        from_spikingjelly(model)
    message = str(err.value)
    for expected in (
        "0 (spikingjelly.activation_based.layer.stateless_wrapper.Conv2d): step_mode='s'",
        "1 (spikingjelly.activation_based.neuron.integrate_and_fire.IFNode): no leak",
        "2 (",
        "learnable tau",
        "PiecewiseQuadratic",
        "store_v_seq",
        "5 (",
    ):
        assert expected in message
    assert [type(m) for m in model] == before


def test_no_spikingjelly_import_in_the_converter():
    import ast
    from pathlib import Path

    import ndsnn_triton.nn.spikingjelly as conv

    tree = ast.parse(Path(conv.__file__).read_text(encoding="utf-8"))
    names = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ] + [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    assert not [n for n in names if "spikingjelly" in n]


def test_cost_report_prices_a_converted_spikingjelly_model(tmp_path):
    """`ndsnn_triton.profiler.report` on a converted SpikingJelly VGG ([T, B, C, H, W] input): the
    layer table has its three weight layers with their dense MACs, every method is priced, and no
    published claim is borrowed for it."""
    import json

    import ndsnn_triton.profiler

    model = from_spikingjelly(sj_vgg(width=4), example_input=_x())
    out = ndsnn_triton.profiler.report(
        model, tmp_path, name="sj_vgg", input_shape="3,32,32", time_steps=T,
        sparsities=(0.9,), epochs=10, rewind_epoch=2,
    )  # fmt: skip
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc == json.loads(json.dumps(out))
    text = (tmp_path / "report.md").read_text()
    assert "No published NDSNN/LTH claim exists for sj_vgg" in text
    # dense MACs per sample per timestep: conv 3→4 @32², conv 4→8 @16², linear 128→32, 32→10
    macs = [4 * 3 * 9 * 32 * 32, 8 * 4 * 9 * 16 * 16, 128 * 32, 32 * 10]
    assert f"Dense forward MACs per sample, all timesteps: {sum(macs) * T:,}" in text
    priced = {row["method"] for row in doc["method_costs"]}
    assert {"dense", "static", "set", "rigl", "ndsnn", "lth"} <= priced
