"""BPTT activation memory against SpikingJelly (``bench/memory.py``): the saved-tensor kinds on a
hand-counted module, the SpikingJelly peers being the library's networks, the recorded
``bench/results/memory.json`` being current, and README quoting its table."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ndsnn_triton
from bench import memory as bench_memory
from ndsnn_triton.backend import RECOMPUTE_MAX_DENSITY
from ndsnn_triton.nn import masked_layers, reset_net, should_recompute
from ndsnn_triton.profiler.memory import (
    SAVED_KINDS,
    model_state_bytes,
    saved_bytes_by_kind,
    saved_tensor_bytes,
)
from ndsnn_triton.testing import num_threads

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "bench" / "results" / "memory.json"


class _Tiny(nn.Module):
    """Saves one tensor of each kind, plus an activation shaped like the weight."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 6))
        self.register_buffer("mask", torch.rand(4, 6) < 0.5)
        self.maps = nn.Parameter(torch.randn(1, 2, 4, 4))

    def forward(self, x: torch.Tensor, spikes: torch.Tensor, like_weight: torch.Tensor):
        # mm saves x (3·6 fp32 = 72 B) and (weight·mask).t() (a weight copy: 4·6 fp32 = 96 B)
        y = (x @ (self.weight * self.mask).t()).sum()
        # x in bf16 (18 · 2 = 36 B) and the bf16 cast of the weight (a weight copy: 24 · 2 = 48 B)
        y = y + (x.bfloat16() @ self.weight.bfloat16().t()).float().sum()
        # mul saves like_weight: the weight's shape, not its values: an activation (96 B)
        y = y + (like_weight * self.weight).sum()
        # max pooling of a parameter saves the parameter (excluded) and int64 indices (8 · 8 B)
        pooled, _ = F.max_pool2d(self.maps, 2, return_indices=True)
        # where saves its bool condition (32 B, 1 byte each)
        return y + pooled.sum() + torch.where(spikes, self.maps, 0.0).sum()


def test_saved_kinds_hand_counted():
    model = _Tiny()
    x = torch.randn(3, 6, requires_grad=True)
    spikes = torch.rand(1, 2, 4, 4) < 0.3
    like_weight = torch.randn(4, 6)
    counted = saved_bytes_by_kind(model, lambda: model(x, spikes, like_weight))
    assert counted == {
        "float activations": 72 + 36 + 96,
        "int spikes": 32,
        "indices": 64,
        "weight copies": 96 + 48,
        "total": 444,
    }
    assert tuple(counted)[:-1] == SAVED_KINDS
    by_dtype = saved_tensor_bytes(model, lambda: model(x, spikes, like_weight))
    assert by_dtype == {"bfloat16": 84, "bool": 32, "float32": 264, "int64": 64, "total": 444}
    # weight 4·6 and maps 2·4·4 fp32; the bool mask 24 bytes
    assert model_state_bytes(model) == {"parameters": 224, "buffers": 24, "total": 248}


def test_sparse_networks_recompute_every_spiking_segment():
    """At d = 0.1 every spiking layer is within the default threshold (round(0.1 n) kept)."""
    model = bench_memory.library_network("resnet19", 0.1, T=2)
    for _, m in masked_layers(model):
        assert m.kept_weights <= round(0.1 * m.weight.numel())
    x = (torch.rand(2, 2, 64, 8, 8) < 0.3).float().requires_grad_()
    assert all(should_recompute(x, [block]) for block in model.layers)


def _state_shapes(model: nn.Module) -> tuple[list, list]:
    params = sorted(tuple(p.shape) for p in model.parameters())
    buffers = sorted(
        tuple(b.shape) for n, b in model.named_buffers() if n.rpartition(".")[2] != "mask"
    )
    return params, buffers


@pytest.mark.parametrize("name", ["vgg16", "resnet19"])
def test_spikingjelly_peers_are_the_library_networks(name):
    """Same parameter and buffer shapes, and, with the peer's weights copied in, the same
    training-mode forward output (T = 2, batch 2)."""
    pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import functional

    peer = bench_memory.peer_network(name, T=2)
    ours = bench_memory.library_network(name, 1.0, T=2)
    assert _state_shapes(peer) == _state_shapes(ours)
    neurons = [m for m in peer.modules() if type(m).__name__ == "LIFNode"]
    assert len(neurons) == len([m for m in ours.modules() if type(m).__name__ == "LIF"])
    with torch.no_grad():
        for p in peer.parameters():  # weights unlike the library's init: a real copy check
            p.add_(0.01 * torch.randn_like(p))
    bench_memory.copy_peer_state(peer, ours)
    images = torch.rand(2, 3, 32, 32)
    with num_threads(1):
        functional.reset_net(peer)
        want = peer(images)
        with ndsnn_triton.use_backend("torch"):
            reset_net(ours)
            got = ours(images)
    assert got.shape == want.shape == (2, 2, 10)
    assert want.abs().sum() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _recorded() -> dict:
    return json.loads(RECORDED.read_text())


def test_recorded_memory_is_complete_and_at_the_default_threshold():
    doc = _recorded()
    s = doc["settings"]
    assert s["recompute_density"] == RECOMPUTE_MAX_DENSITY
    assert (s["T"], tuple(s["batches"]), tuple(s["densities"])) == (
        bench_memory.T,
        bench_memory.BATCHES,
        bench_memory.DENSITIES,
    )
    keys = [(r["model"], r["dtype"], r["library"], r["density"]) for r in doc["results"]]
    assert keys == [
        (m, dt, lib, d)
        for m in bench_memory.MODELS
        for dt in bench_memory.DTYPES
        for lib, d in [*((bench_memory.LIBRARY, d) for d in s["densities"]), ("spikingjelly", 1.0)]
    ]
    for r in doc["results"]:
        if "absent" in r:
            continue
        assert r["per_sample_bytes"]["total"] > 0
        assert sum(r["per_sample_bytes"][k] for k in SAVED_KINDS) == r["per_sample_bytes"]["total"]


def test_recorded_memory_is_current():
    """A fresh count of the whole grid equals the recorded bytes exactly (byte counts are
    deterministic: shapes, seeded masks). One thread: ~12 s, and other processes holding the
    cores cannot slow it down tenfold as they do two spinning threads."""
    doc = _recorded()
    s = doc["settings"]
    recorded = {(r["model"], r["dtype"], r["library"], r["density"]): r for r in doc["results"]}
    with num_threads(1), ndsnn_triton.use_recompute_density(s["recompute_density"]):
        fresh = bench_memory.measure(densities=tuple(s["densities"]), batches=tuple(s["batches"]))
    assert len(fresh) == len(recorded)
    for r in fresh:
        if "absent" in r:  # SpikingJelly missing here: its recorded rows cannot be checked
            continue
        want = recorded[(r["model"], r["dtype"], r["library"], r["density"])]
        key = f"{r['model']} {r['dtype']} {r['library']} d={r['density']}"
        assert r["per_sample_bytes"] == want["per_sample_bytes"], key
        assert r["constant_bytes"] == want["constant_bytes"], key
        if r.get("ratio_to_spikingjelly") is not None:
            assert r["ratio_to_spikingjelly"] == want["ratio_to_spikingjelly"], key


def test_readme_quotes_the_recorded_table():
    table = bench_memory.readme_table(_recorded()["results"])
    assert table in (ROOT / "README.md").read_text()


def test_readme_table_and_plot_without_spikingjelly(tmp_path):
    """A run without SpikingJelly records the peer as absent; table and plot still work."""
    doc = _recorded()
    rows = [
        r
        if r["library"] == bench_memory.LIBRARY
        else {k: r[k] for k in ("model", "dtype", "library", "density")} | {"absent": "missing"}
        for r in doc["results"]
    ]
    rows = [r | {"ratio_to_spikingjelly": None} if "absent" not in r else r for r in rows]
    table = bench_memory.readme_table(rows)
    assert table.count("\n") == 2 + len(bench_memory.MODELS) * len(bench_memory.DTYPES)
    assert "| vgg16 | fp32 | — |" in table and "×" not in table.split("\n", 2)[2]
    png = bench_memory.plot(doc | {"results": rows}, tmp_path / "memory.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recorded_recompute_flops_are_current_and_readme_quotes_them():
    """FlopCounterMode counts the recomputation's extra forward (and runs through the replay):
    a fresh count of ResNet-19 at d = 0.01 equals the recorded one; README quotes the table."""
    doc = _recorded()
    rows = doc["recompute_flops"]
    with num_threads(1), ndsnn_triton.use_recompute_density(doc["settings"]["recompute_density"]):
        (fresh,) = bench_memory.recompute_flops(("resnet19",), (0.01,), batch=rows[0]["batch"])
    (want,) = [r for r in rows if (r["model"], r["density"]) == ("resnet19", 0.01)]
    assert fresh == want
    assert fresh["flops_recomputing"] > fresh["flops_saving"] > 0
    assert all(r["overhead"] == 0 for r in rows if r["density"] == 1.0)  # tails: elementwise
    assert bench_memory.readme_recompute_table(rows) in (ROOT / "README.md").read_text()
