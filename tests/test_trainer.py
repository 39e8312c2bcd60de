"""Trainer: logs, checkpoints, exact resume, real training on digits, and `ndsnn train`."""

import json

import pytest
import torch

from ndsnn_triton.cli import main
from ndsnn_triton.models import small_snn
from ndsnn_triton.nn import masked_layers
from ndsnn_triton.sparse import build_method, get_masks
from ndsnn_triton.train import (
    CheckpointError,
    TrainConfig,
    Trainer,
    load_checkpoint,
    load_dataset,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _run(out, digits, method_name, method_kw, resume=False, **cfg):
    torch.manual_seed(0)
    model = small_snn(10, T=2, in_channels=1, image_size=8)
    method = build_method(method_name, **method_kw)
    config = TrainConfig(**{"epochs": 2, "batch_size": 128, "lr": 0.1, "progress": False, **cfg})
    trainer = Trainer(model, method, digits, config, out)
    return trainer, trainer.fit(resume=resume)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_log_records_hold_what_the_cost_model_needs(digits, tmp_path):
    trainer, metrics = _run(tmp_path, digits, "rigl", {"density": 0.2, "delta_t": 5})
    log = _records(tmp_path / "log.jsonl")
    assert [r["step"] for r in log] == list(range(metrics["steps"]))  # log_every=1
    names = [n for n, _ in masked_layers(trainer.model)]
    for r in log:
        assert {
            "step",
            "epoch",
            "loss",
            "lr",
            "density",
            "densities",
            "spike_rates",
            "dense_grad",
        } <= set(r)
        assert list(r["densities"]) == names and list(r["spike_rates"]) == names
        assert (
            r["spike_rates"]["encoder.conv"] == 1.0 or r["spike_rates"]["encoder.conv"] > 0.5
        )  # analog image
        assert all(0 <= v <= 1 for v in r["spike_rates"].values())
    assert log[0]["lr"] == 0.1 and log[-1]["lr"] < 0.01  # cosine to ~0
    csv_lines = (tmp_path / "log.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,epoch,phase,loss") and len(csv_lines) == len(log) + 1
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_acc"] == metrics["test_acc"] and saved["wall_time_s"] > 0
    assert len(_records(tmp_path / "eval.jsonl")) == 2


def test_sparse_log_interval_still_logs_every_mask_change(digits, tmp_path):
    _run(tmp_path, digits, "ndsnn", {"density": 0.2, "delta_t": 4}, log_every=10)
    log = _records(tmp_path / "log.jsonl")
    steps = [r["step"] for r in log]
    updates = [r["step"] for r in log if r["mask_update"]]
    assert updates and all(s + 1 in steps for s in updates if s + 1 < 24)
    assert all(s % 10 == 0 or s in updates or s - 1 in updates or s == 23 for s in steps)


@pytest.mark.parametrize(
    ("method", "kw", "stop"),
    [
        ("ndsnn", {"density": 0.2, "delta_t": 3}, 10),  # mid-epoch, between mask updates
        ("lth", {"density": 0.5625, "rewind_epoch": 1}, 31),  # inside round 1, after a rewind
    ],
)
def test_resume_continues_exactly(digits, tmp_path, method, kw, stop):
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    full, full_metrics = _run(full_dir, digits, method, kw, checkpoint_every=7)
    _, partial = _run(part_dir, digits, method, kw, checkpoint_every=7, max_steps=stop)
    assert partial == {"stopped_at_step": stop, "completed": False}
    resumed, resumed_metrics = _run(part_dir, digits, method, kw, resume=True, checkpoint_every=7)
    a, b = get_masks(full.model), get_masks(resumed.model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    for (name, p), q in zip(full.model.named_parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    full_log, part_log = _records(full_dir / "log.jsonl"), _records(part_dir / "log.jsonl")
    assert [r["step"] for r in full_log] == [r["step"] for r in part_log]
    assert [r["loss"] for r in full_log] == [r["loss"] for r in part_log]
    assert full_metrics["test_acc"] == resumed_metrics["test_acc"]


def test_a_checkpoint_from_before_the_sparsifier_still_resumes(digits, tmp_path):
    """Checkpoints written before ``sparsifier`` held the method's state under ``method``."""
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    kw = {"density": 0.2, "delta_t": 3}
    full, _ = _run(full_dir, digits, "ndsnn", kw)
    _run(part_dir, digits, "ndsnn", kw, max_steps=10)
    ckpt = load_checkpoint(part_dir / "checkpoint.pt")
    assert ckpt["sparsifier"]["next_step"] == 10
    ckpt["method"] = ckpt.pop("sparsifier")["method"]
    save_checkpoint(part_dir / "checkpoint.pt", ckpt)
    resumed, _ = _run(part_dir, digits, "ndsnn", kw, resume=True)
    a, b = get_masks(full.model), get_masks(resumed.model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_checkpoint_errors_are_clear(digits, tmp_path):
    _run(tmp_path, digits, "static", {"density": 0.5}, max_steps=3)
    ckpt = tmp_path / "checkpoint.pt"
    good = ckpt.read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        _run(tmp_path, digits, "static", {"density": 0.5})
    with pytest.raises(ValueError, match="training settings differ"):
        _run(tmp_path, digits, "static", {"density": 0.5}, resume=True, lr=0.05)
    with pytest.raises(ValueError, match="method"):
        _run(tmp_path, digits, "static", {"density": 0.25}, resume=True)
    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(ckpt)
    torch.save({"weights": 1}, ckpt)
    with pytest.raises(CheckpointError, match="not an ndsnn checkpoint"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "kw", "epochs"),
    [
        ("ndsnn", {"delta_t": 10}, 8),
        ("lth", {"rewind_epoch": 1}, 3),
        ("set", {"delta_t": 10}, 8),
        ("rigl", {"delta_t": 10}, 8),
        ("static", {}, 8),
        ("dense", {}, 8),
    ],
)
def test_every_method_learns_digits_at_90_percent_sparsity(digits, tmp_path, method, kw, epochs):
    kw = dict(kw) if method == "dense" else {"density": 0.1, **kw}
    torch.manual_seed(0)
    model = small_snn(10, T=4, in_channels=1, image_size=8)
    config = TrainConfig(epochs=epochs, batch_size=64, lr=0.1, progress=False, log_every=20)
    trainer = Trainer(model, build_method(method, **kw), digits, config, tmp_path)
    metrics = trainer.fit()
    assert metrics["test_acc"] > 0.8, metrics  # chance is 0.1
    expected = 1.0 if method == "dense" else 0.1
    assert metrics["density"] == pytest.approx(expected, abs=1e-3)


def test_cli_train_writes_the_run_folder_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--method",
        "set",
        "--sparsity",
        "0.8",
        "--epochs",
        "1",
        "--T",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main([*args, "--max-steps", "5"]) == 0
    assert "continue with --resume" in capsys.readouterr().out
    assert main([*args, "--resume"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    for name in (
        "log.jsonl",
        "log.csv",
        "eval.jsonl",
        "metrics.json",
        "checkpoint.pt",
        "config.json",
        "schedule.json",
    ):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["density"] == pytest.approx(0.2, abs=1e-3) and metrics["model"] == "small"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--method", "ndsnn", "--prune-rate", "0.3"],
            "--prune-rate does not apply to method ndsnn",
        ),
        (["--method", "rigl", "--sparsity", "0"], "needs --sparsity above 0"),
        (["--dataset", "cifar10"], "--data-root"),
        (["--dataset", "cifar10", "--data-root", "/nonexistent"], "CIFAR-10"),
        (["--model", "vgg16"], "image_size"),
    ],
)
def test_cli_train_bad_arguments(tmp_path, extra, message):
    with pytest.raises(SystemExit) as err:
        main(["train", "--out", str(tmp_path / "x"), "--no-progress", *extra])
    assert message in str(err.value)
