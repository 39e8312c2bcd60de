"""Captured training steps (``ndsnn_triton.graphs``, ``Sparsifier.graphed``, the trainer's
``cuda_graphs``): on CPU through the replay tape, which keeps a CUDA graph's rules (baked Python
numbers, no Python at replay, fixed output tensors, no host reads in the capture), so a step that
breaks one of them gives different numbers here too. The CUDA-graph equality tests run on a GPU.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import ndsnn_triton
from ndsnn_triton.graphs import GraphCaptureError, StepGraph
from ndsnn_triton.models import build_model
from ndsnn_triton.nn import reset_net, temporal_cross_entropy
from ndsnn_triton.sparse import attach
from ndsnn_triton.sparse.methods import build_method
from ndsnn_triton.train import TrainConfig, Trainer, load_dataset


def _linear_step(lr):
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(lin.parameters(), lr=lr, momentum=0.9, fused=True)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(lin(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return lin, opt, step


def _batches(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(5, 4, generator=g), torch.randint(0, 3, (5,), generator=g)) for _ in range(n)
    ]


def test_a_replayed_step_equals_the_eager_one():
    lin, opt, step = _linear_step(torch.tensor(0.1))
    ref_lin, ref_opt, ref_step = _linear_step(0.1)
    graph = StepGraph(step, "cpu")
    for i, (x, y) in enumerate(_batches(5)):
        # step 0 eager: the optimizer makes its momentum buffers outside the capture
        loss = step(x, y) if i == 0 else graph(x, y)
        assert torch.equal(loss, ref_step(x, y))
        assert torch.equal(lin.weight, ref_lin.weight)
        if i == 2:  # a schedule changes the rate between steps: in place, on the tensor
            opt.param_groups[0]["lr"].fill_(0.05)
            ref_opt.param_groups[0]["lr"] = 0.05
    assert graph.replays == 3


def test_a_python_number_is_baked_into_the_capture():
    """What a CUDA graph does too: a rate changed as a Python float after the capture is not
    seen by the replays (hence a tensor learning rate in a captured step)."""
    lin, opt, step = _linear_step(0.1)
    batches = _batches(4)
    step(*batches[0])
    graph = StepGraph(step, "cpu")
    graph(*batches[1])
    opt.param_groups[0]["lr"] = 0.0  # ignored by the replay
    before = lin.weight.detach().clone()
    graph(*batches[2])
    assert not torch.equal(lin.weight, before)


def test_host_reads_and_other_shapes_are_refused():
    graph = StepGraph(lambda x: x.sum().item(), "cpu")
    with pytest.raises(GraphCaptureError, match="_local_scalar_dense reads a device value"):
        graph(torch.ones(3))
    graph = StepGraph(lambda x: x * 2, "cpu")
    graph(torch.ones(3))
    assert graph.accepts(torch.zeros(3)) and not graph.accepts(torch.zeros(4))
    with pytest.raises(ValueError, match="differ from the captured"):
        graph(torch.ones(4))


def test_the_tape_replays_triton_launches():
    x = (torch.rand(2, 2, 3, 5, 5) < 0.4).float()
    w, mask = torch.randn(4, 3, 3, 3), torch.rand(4, 3, 3, 3) < 0.5
    with ndsnn_triton.use_backend("triton"), ndsnn_triton.use_spike_check(False):
        ndsnn_triton.masked_conv2d(x[0], w, mask, padding=1)  # warm-up: the mask's index
        graph = StepGraph(lambda s: ndsnn_triton.masked_conv2d(s, w, mask, padding=1), "cpu")
        graph(x[0])
        out = graph(x[1])
        ref = ndsnn_triton.masked_conv2d(x[1], w, mask, padding=1)
    assert torch.equal(out, ref)


def _attached(device: str = "cpu"):
    torch.manual_seed(0)
    model = build_model("small", num_classes=10, T=2, in_channels=1, image_size=8).to(device)
    lr = torch.tensor(0.1, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, fused=True)
    sparsifier = attach(model, opt, "rigl", sparsity=0.5, total_steps=12, delta_t=4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = temporal_cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sparsifier.step()
        reset_net(model)
        return loss.detach()

    return model, opt, sparsifier, schedule, step


def test_an_attach_loop_runs_graphed_as_it_runs_eagerly():
    model, opt, sparsifier, schedule, step = _attached()
    ref_model, ref_opt, ref_sparsifier, ref_schedule, ref_step = _attached()
    graphed = sparsifier.graphed(step)
    g = torch.Generator().manual_seed(2)
    for i in range(10):  # mask updates at iterations 4 and 8
        x, y = torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
        assert torch.equal(graphed(x, y), ref_step(x, y)), i
        schedule.step()
        ref_schedule.step()
    assert sparsifier.next_step == ref_sparsifier.next_step == 10
    # 0 warm-up, 1 captured, 2-3 replayed, 4 update (eager), 5 warm-up, 6 captured, 7 replayed,
    # 8 update, 9 warm-up
    assert graphed.captures == 2 and graphed.replays == 3
    for (name, p), q in zip(
        model.state_dict().items(), ref_model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(opt.state[p]["momentum_buffer"], ref_opt.state[q]["momentum_buffer"])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _fit(digits, out, graphs: bool) -> Trainer:
    torch.manual_seed(0)
    model = build_model("small", num_classes=10, T=2, in_channels=1, image_size=8)
    config = TrainConfig(epochs=1, batch_size=64, progress=False, cuda_graphs=graphs, max_steps=9)
    trainer = Trainer(model, build_method("rigl", density=0.5, delta_t=3), digits, config, out)
    trainer.fit()
    return trainer


def test_the_trainer_with_graphs_trains_as_without(digits, tmp_path):
    eager = _fit(digits, tmp_path / "eager", False)
    graphed = _fit(digits, tmp_path / "graphed", True)
    assert graphed._graphed.replays >= 1 and graphed._graphed.captures == 3
    logs = [
        [json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()]
        for d in ("eager", "graphed")
    ]
    for a, b in zip(*logs, strict=True):
        assert a["loss"] == b["loss"] and a["acc"] == b["acc"], a["step"]
        assert a["spike_rates"] == b["spike_rates"] and a["mask_update"] == b["mask_update"]
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-6)  # a float32 tensor in the graph
    for (name, p), q in zip(
        eager.model.state_dict().items(), graphed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name


def test_graphs_refuse_a_device_without_fused_sgd(digits, tmp_path, monkeypatch):
    import ndsnn_triton.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    model = build_model("small", num_classes=10, T=2, in_channels=1, image_size=8)
    config = TrainConfig(epochs=1, progress=False, cuda_graphs=True)
    with pytest.raises(ValueError, match="cuda_graphs: needs fused SGD"):
        Trainer(model, build_method("static", density=0.5), digits, config, tmp_path)


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
def test_cuda_graphed_trainer_equals_the_eager_one(digits, tmp_path):
    """Losses, weights and optimizer state of the CUDA-graph step equal the eager step's over
    iterations that cross mask updates (bf16 autocast, the library's kernels)."""
    runs = []
    for graphs in (False, True):
        torch.manual_seed(0)
        model = build_model("small", num_classes=10, T=2, in_channels=1, image_size=8)
        config = TrainConfig(
            epochs=1, batch_size=64, progress=False, cuda_graphs=graphs, max_steps=12
        )
        method = build_method("rigl", density=0.5, delta_t=4)
        trainer = Trainer(model, method, digits, config, tmp_path / str(graphs), device="cuda")
        trainer.fit()
        runs.append(trainer)
    eager, graphed = runs
    assert graphed._graphed.replays >= 3
    for (name, p), q in zip(
        eager.model.state_dict().items(), graphed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    for p, q in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
        a, b = eager.optimizer.state[p], graphed.optimizer.state[q]
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


@pytest.mark.gpu
def test_cuda_attach_loop_graphed_equals_eager():
    runs = []
    for graphed_run in (False, True):
        model, opt, sparsifier, schedule, step = _attached("cuda")
        run = sparsifier.graphed(step) if graphed_run else step
        g = torch.Generator().manual_seed(2)
        losses = []
        for _ in range(10):
            x = torch.rand(8, 1, 8, 8, generator=g).cuda()
            y = torch.randint(0, 10, (8,), generator=g).cuda()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                losses.append(run(x, y).clone())
            schedule.step()
        runs.append((model, opt, losses))
    (a, opt_a, la), (b, opt_b, lb) = runs
    assert all(torch.equal(u, v) for u, v in zip(la, lb, strict=True))
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(opt_a.state[p]["momentum_buffer"], opt_b.state[q]["momentum_buffer"])
