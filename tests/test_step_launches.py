"""Kernel launches of a whole training step (``ndsnn_triton.profiler.step_launches``), counted on
CPU: the count does not grow with T, stays within the stated per-layer budget, equals the recorded
file for VGG-16 and ResNet-19, and counting without running the Triton kernels counts the same."""

from __future__ import annotations

import json

import pytest
import torch

import ndsnn_triton
from bench.step_launches import MODELS, PATHS, RESULT, LaunchCase, budget, row
from ndsnn_triton.nn import LIF, ATan, SeqToANNContainer, SpikeConv2d, SpikeLinear, SpikeMaxPool2d
from ndsnn_triton.profiler.step_launches import component_of, count_step_launches

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="counts the interpreter's launches (the CPU path)"
)


def _tiny_phases(T: int):
    torch.manual_seed(0)
    conv, lin = SpikeConv2d(2, 3, 3, padding=1), SpikeLinear(3 * 2 * 2, 4)
    conv.set_mask(torch.rand(3, 2, 3, 3) < 0.5)
    lif = dict(tau=4 / 3, detach_reset=True, surrogate=ATan(2.0))
    model = torch.nn.Sequential(
        LIF(**lif), conv, LIF(**lif), SeqToANNContainer(SpikeMaxPool2d(2)), torch.nn.Flatten(2), lin
    )
    x = torch.randn(T, 2, 2, 4, 4, requires_grad=True)
    state = {}

    def forward():
        for m in model.modules():
            if isinstance(m, LIF):
                m.reset()
        state["out"] = model(x)

    def backward():
        for p in (*model.parameters(), x):
            p.grad = None
        state["out"].sum().backward()

    return {"forward": forward, "backward": backward}


def test_counting_without_running_the_kernels_counts_the_same():
    with ndsnn_triton.use_backend("triton"):
        phases = _tiny_phases(2)
        count_step_launches(phases)  # warm-up: index built, kernels traced
        ran = count_step_launches(phases, run_triton=True)
        dry = count_step_launches(phases, run_triton=False)
    assert ran.to_dict() == dry.to_dict()
    assert ran.by_name()["triton:conv_fwd"] == 2  # the conv, and the linear as a 1×1 conv
    assert ran.by_name()["triton:lif_fwd"] == 2


@pytest.mark.parametrize("path", list(PATHS))
def test_a_step_launches_the_same_at_every_T_within_budget(path):
    backend, density = PATHS[path]
    counts = [LaunchCase("small", T, max(density, 0.3)) for T in (2, 3)]
    steps = [case.count(backend) for case in counts]
    assert steps[0].by_name() == steps[1].by_name()
    components = steps[0].by_component()
    limits = budget(counts[0].layer_counts())
    assert components["conv/linear"] <= limits["conv/linear"], components
    assert components["LIF"] <= limits["LIF"], components
    names = steps[0].by_name()
    assert "triton:spike_prep" not in names  # every spike input comes from a library LIF
    if path == "sparse":  # every masked layer on the Triton kernels
        assert "convolution" not in names and names["triton:conv_wgrad"] >= 3
    else:  # cuDNN-style convolutions, the fused LIF
        assert "triton:conv_fwd" not in names and names["convolution"] >= 1
        assert names["triton:lif_fwd"] >= counts[0].layer_counts()["lif_layers"]
    assert steps[0].phases["optimizer"].summary() == {"_fused_sgd_": 1}
    assert steps[0].phases["masks"].summary() == {"_foreach_mul_": 1}


def test_the_recorded_file_is_what_the_models_launch_now():
    doc = json.loads(RESULT.read_text())
    recorded = {r["case"]: r for r in doc["results"]}
    assert {r["model"] for r in recorded.values()} == set(MODELS)
    for model in MODELS:
        for path in PATHS:
            fresh = row(model, path, 2)
            assert recorded[fresh["case"]] == fresh, fresh["case"]
            assert "triton:spike_prep" not in fresh["launches"]
            later = recorded[f"{model}/{path}/T4"]
            assert later["launches"] == fresh["launches"], "grows with T"
            for component in ("conv/linear", "LIF"):
                assert fresh["components"][component] <= fresh["budget"][component]


def test_launch_names_fall_into_components():
    assert component_of("triton:conv_dgrad") == "conv/linear"
    assert component_of("convolution_backward") == "conv/linear"
    assert component_of("triton:lif_bwd") == "LIF"
    assert component_of("native_batch_norm_backward") == "BatchNorm"
    assert component_of("_fused_sgd_") == "optimizer"
    assert component_of("add_") == "other"


def test_readme_quotes_the_recorded_table():
    from pathlib import Path

    from bench.step_launches import readme_table

    table = readme_table(json.loads(RESULT.read_text())["results"])
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert table in readme
