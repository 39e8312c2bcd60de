"""GPU checks of the Triton kernels (marked ``gpu``; skipped without CUDA).

Correctness rule (FlashAttention's): ``max|out − ref| ≤ 2·max|out_torch − ref| + atol`` for outputs
and every gradient, where ``ref`` is a float64 computation and ``out_torch`` the reference backend
in the same dtype as ``out``. Every test runs with TF32 off (the ``no_tf32`` fixture: cuDNN's fp32
convolutions would otherwise use TF32, so ``out_torch`` would carry TF32-sized error), restored
after the test.
"""

import pytest
import torch

import ndsnn_triton
from ndsnn_triton import masked_conv2d, masked_linear
from ndsnn_triton.models import resnet19, vgg16
from ndsnn_triton.nn import masked_layers, reset_net, temporal_cross_entropy
from ndsnn_triton.profiler.layers import trace_layers
from ndsnn_triton.sparse import random_masks

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_tf32")]
ATOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}


def _layer_shapes() -> list[tuple[int, int, int, int, int, int]]:
    """(Cin, Cout, k, stride, padding, input map) of every spike-input conv of VGG-16 and ResNet-19."""
    shapes = set()
    for make in (vgg16, resnet19):
        model = make()
        table = trace_layers(model, (1, 3, 32, 32))
        for (_, layer), info in zip(masked_layers(model), table.layers, strict=True):
            if info.kind != "conv" or not layer.spike_input:
                continue
            out_map = round((info.macs / (layer.weight[0].numel() * layer.out_channels)) ** 0.5)
            k, s = layer.kernel_size[0], layer.stride[0]
            shapes.add(
                (layer.in_channels, layer.out_channels, k, s, layer._padding_ints[0], out_map * s)
            )
    return sorted(shapes)


def _grads(backend, dtype, x, weight, mask, geo, g):
    # clone: .to() of an fp32 tensor to fp32 returns it, and its .grad would accumulate over calls
    xx = x.to(dtype).clone().requires_grad_()
    ww = weight.to(dtype).clone().requires_grad_()
    with ndsnn_triton.use_backend(backend):
        y = masked_conv2d(xx, ww, mask, **geo)
        y.backward(g.to(dtype))
    return [t.double() for t in (y.detach(), xx.grad, ww.grad)]


def _check_rule(out, out_torch, ref, atol, what):
    err = (out - ref).abs().max().item()
    base = (out_torch - ref).abs().max().item()
    assert err <= 2 * base + atol, f"{what}: error {err:.3g} > 2 × torch's {base:.3g} + {atol}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", _layer_shapes())
def test_conv_layer_shapes_meet_the_error_rule(shape, dtype):
    cin, cout, k, stride, pad, size = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.rand(2 * 5, cin, size, size, device="cuda", generator=g) < 0.1).float()
    weight = torch.randn(cout, cin, k, k, device="cuda", generator=g) * (2.0 / (cin * k * k)) ** 0.5
    mask = torch.rand(weight.shape, device="cuda", generator=g) < 0.1
    geo = dict(stride=stride, padding=pad)
    with ndsnn_triton.use_backend("torch"):
        y = masked_conv2d(x, weight, mask, **geo)
    grad = torch.randn(y.shape, device="cuda", generator=g)
    ref = _grads("torch", torch.float64, x.double(), weight.double(), mask, geo, grad.double())
    torch_same = _grads("torch", dtype, x, weight, mask, geo, grad)
    ours = _grads("triton", dtype, x, weight, mask, geo, grad)
    for name, a, b, r in zip(
        ("output", "input grad", "weight grad"), ours, torch_same, ref, strict=True
    ):
        _check_rule(a, b, r, ATOL[dtype], f"{shape} {dtype} {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_linear_meets_the_error_rule(dtype):
    g = torch.Generator(device="cuda").manual_seed(1)
    x = (torch.rand(640, 512, device="cuda", generator=g) < 0.1).float()
    weight = torch.randn(256, 512, device="cuda", generator=g) * 0.05
    mask = torch.rand(weight.shape, device="cuda", generator=g) < 0.05
    grad = torch.randn(640, 256, device="cuda", generator=g)
    results = {}
    for backend, dt in (("torch", torch.float64), ("torch", dtype), ("triton", dtype)):
        xx, ww = x.to(dt).clone().requires_grad_(), weight.to(dt).clone().requires_grad_()
        with ndsnn_triton.use_backend(backend):
            y = masked_linear(xx, ww, mask)
            y.backward(grad.to(dt))
        results[(backend, dt)] = [t.double() for t in (y.detach(), xx.grad, ww.grad)]
    for i in range(3):
        _check_rule(
            results[("triton", dtype)][i],
            results[("torch", dtype)][i],
            results[("torch", torch.float64)][i],
            ATOL[dtype],
            f"linear {i}",
        )


def test_opcheck_on_cuda():
    """opcheck on the ``"triton"`` backend only: opcheck clones the arguments between its eager
    and compiled calls, so ``"auto"`` would re-time its choice on each clone (new cache keys)."""
    x = (torch.rand(4, 8, 6, 6, device="cuda") < 0.3).float().requires_grad_()
    w = torch.randn(5, 8, 3, 3, device="cuda", requires_grad=True)
    mask = torch.rand(5, 8, 3, 3, device="cuda") < 0.3
    with ndsnn_triton.use_backend("triton"):
        torch.library.opcheck(
            torch.ops.ndsnn.masked_conv2d.default,
            (x, w, mask, None, [1, 1], [1, 1], [1, 1], 1, True, False),
        )
        xl = (torch.rand(6, 9, device="cuda") < 0.5).float().requires_grad_()
        wl = torch.randn(4, 9, device="cuda", requires_grad=True)
        torch.library.opcheck(
            torch.ops.ndsnn.masked_linear.default,
            (xl, wl, torch.rand(4, 9, device="cuda") < 0.5, None, True, False),
        )
        xs = torch.randn(4, 3, 5, device="cuda", requires_grad=True)
        v = torch.zeros(3, 5, device="cuda", requires_grad=True)
        torch.library.opcheck(
            torch.ops.ndsnn.lif_multistep.default,
            (xs, v, 2.0, 1.0, 0.0, True, False, "atan", 2.0),
        )


def _train(backend, steps=3):
    torch.manual_seed(0)
    model = vgg16(T=2).cuda()
    random_masks(model, 0.1, "erk", seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(
        8, 3, 32, 32, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1)
    )
    y = torch.arange(8, device="cuda") % 10
    losses = []
    with ndsnn_triton.use_backend(backend):
        for _ in range(steps):
            loss = temporal_cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            reset_net(model)
            losses.append(loss.item())
    return losses, model


def test_vgg16_trains_the_same_on_torch_and_triton():
    ref_losses, ref_model = _train("torch")
    losses, model = _train("triton")
    assert losses == pytest.approx(ref_losses, rel=1e-3)
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)


def test_compile_has_no_graph_breaks_on_cuda():
    torch._dynamo.reset()
    model = resnet19(T=2).cuda()
    random_masks(model, 0.1, "erk")
    x = torch.randn(2, 3, 32, 32, device="cuda")
    with ndsnn_triton.use_backend("triton"):
        compiled = torch.compile(model, fullgraph=True)  # fullgraph: any graph break raises
        out = compiled(x)
        reset_net(model)
        out.sum().backward()
    assert all(p.grad is not None for _, p in model.named_parameters() if p.requires_grad)
