"""Data-parallel training on CPU: gloo, 2 processes, a file store (no ports)."""

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ndsnn_triton.nn import LIF, SpikeLinear
from ndsnn_triton.sparse import build_method, get_masks
from ndsnn_triton.testing import num_threads
from ndsnn_triton.train import TrainConfig, Trainer
from ndsnn_triton.train.data import DataSet, ImageSplit
from ndsnn_triton.train.distributed import assert_masks_agree

pytestmark = pytest.mark.skipif(
    not dist.is_available() or sys.platform == "win32", reason="needs torch.distributed with gloo"
)


class ToyNet(nn.Module):
    """A BN-free spiking MLP (per-rank BN statistics would differ from a single process's)."""

    def __init__(self, T: int = 2) -> None:
        super().__init__()
        self.T = T
        self.fc1 = SpikeLinear(64, 48, spike_input=False)
        self.lif = LIF(tau=2.0)
        self.fc2 = SpikeLinear(48, 10)

    def forward(self, x):
        x = x.flatten(1).unsqueeze(0).expand(self.T, -1, -1)
        return self.fc2(self.lif(self.fc1(x)))


def toy_data() -> DataSet:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(128) % 10
    protos = torch.randint(0, 256, (10, 1, 8, 8), generator=g, dtype=torch.uint8)
    noise = torch.randint(-40, 40, (128, 1, 8, 8), generator=g)
    images = (protos[labels].int() + noise).clamp(0, 255).to(torch.uint8)
    split = ImageSplit(images, labels)
    return DataSet("toy", split, ImageSplit(images[:32], labels[:32]), 10, (0.5,), (0.3,))


METHODS = {
    "ndsnn": {"density": 0.3, "delta_t": 3, "t_end_fraction": 0.7},
    "rigl": {"density": 0.3, "delta_t": 3},
    "set": {"density": 0.3, "delta_t": 3},
    "lth": {"density": 0.5625, "rewind_epoch": 1},
}


def _train(method: str, out: Path, rank: int = 0) -> dict:
    torch.manual_seed(0)
    model = ToyNet()
    trainer = Trainer(
        model,
        build_method(method, **METHODS[method]),
        toy_data(),
        TrainConfig(epochs=2, batch_size=16, lr=0.2, progress=False, check_masks=True),
        out,
    )
    trainer.fit()
    return {
        "masks": get_masks(model),
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": trainer.optimizer.state_dict()["state"],
    }


def _worker(rank: int, world: int, store: str, method: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        result = _train(method, Path(out), rank)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path: Path, method: str, fn=_worker) -> list[dict]:
    out = tmp_path / method
    out.mkdir()
    mp.spawn(fn, args=(2, str(tmp_path / f"store-{method}"), method, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("method", list(METHODS))
def test_ranks_hold_identical_masks_weights_and_optimizer_state(tmp_path, method):
    r0, r1 = _spawn(tmp_path, method)
    for name in r0["masks"]:
        assert torch.equal(r0["masks"][name], r1["masks"][name]), name
    for key in r0["params"]:
        assert torch.equal(r0["params"][key], r1["params"][key]), key
    for key, state in r0["optimizer"].items():
        for buf, value in state.items():
            assert torch.equal(value, r1["optimizer"][key][buf]), (key, buf)
    assert (tmp_path / method / "log.jsonl").exists()  # rank 0 logged
    assert (tmp_path / method / "checkpoint.pt").exists()


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, method):
    two = _spawn(tmp_path, method)[0]
    single_dir = tmp_path / f"{method}-single"
    with num_threads(1):  # as each rank runs
        one = _train(method, single_dir)
    for name in one["masks"]:
        assert torch.equal(one["masks"][name], two["masks"][name]), name
    for key in one["params"]:
        torch.testing.assert_close(
            one["params"][key], two["params"][key], rtol=1e-4, atol=1e-5, msg=key
        )


def _diverging_worker(rank: int, world: int, store: str, method: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = ToyNet()
        if rank == 1:
            model.fc2.mask[0, 0] = False
        try:
            assert_masks_agree(model, step=7)
            outcome = "agreed"
        except RuntimeError as err:
            outcome = str(err)
        torch.save(outcome, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_mask_divergence_is_detected_on_every_rank(tmp_path):
    outcomes = _spawn(tmp_path, "diverge", _diverging_worker)
    for outcome in outcomes:
        assert "masks diverged across ranks after step 7: layer fc2" in outcome


def test_torchrun_environment_without_peers_is_single_process(monkeypatch):
    from ndsnn_triton.train.distributed import init_from_env, is_main, world_size

    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_from_env() is None and world_size() == 1 and is_main()
    assert os.environ["WORLD_SIZE"] == "1"
