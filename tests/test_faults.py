"""Crash-safe resume (SIGKILL mid-run and mid-checkpoint-write), bad checkpoints, numerical faults."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ndsnn_triton.models import small_snn
from ndsnn_triton.sparse import build_method
from ndsnn_triton.train import (
    CheckpointError,
    TrainConfig,
    Trainer,
    load_checkpoint,
    load_dataset,
    save_checkpoint,
)
from ndsnn_triton.train.checkpoint import previous_path

ARGS = [
    "--method",
    "ndsnn",
    "--sparsity",
    "0.8",
    "--delta-t",
    "4",
    "--epochs",
    "2",
    "--T",
    "2",
    "--checkpoint-every",
    "5",
    "--no-progress",
]


def _train_cli(out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ndsnn_triton.cli", "train", *ARGS, "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def _final(out: Path) -> tuple[dict, list[float], float]:
    masks = {
        k: v
        for k, v in load_checkpoint(out / "checkpoint.pt")["model"].items()
        if k.endswith("mask")
    }
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    return masks, losses, json.loads((out / "metrics.json").read_text())["test_acc"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = _train_cli(out)
    assert proc.returncode == 0, proc.stderr
    return _final(out)


def _assert_same(out: Path, reference) -> None:
    masks, losses, acc = _final(out)
    ref_masks, ref_losses, ref_acc = reference
    assert masks.keys() == ref_masks.keys() and all(
        torch.equal(masks[k], ref_masks[k]) for k in masks
    )
    assert losses == ref_losses
    assert acc == ref_acc


def test_sigkill_mid_run_then_resume_ends_like_an_uninterrupted_run(tmp_path, reference):
    proc = _train_cli(tmp_path, env={"NDSNN_FAULT_KILL_AFTER_STEP": "13"})
    assert proc.returncode == -signal.SIGKILL
    assert (
        load_checkpoint(tmp_path / "checkpoint.pt")["position"]["step"] == 10
    )  # the last one before the kill
    proc = _train_cli(tmp_path, "--resume")
    assert proc.returncode == 0, proc.stderr
    _assert_same(tmp_path, reference)


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, reference):
    proc = _train_cli(tmp_path, env={"NDSNN_FAULT_KILL_IN_CHECKPOINT": "3"})
    assert proc.returncode == -signal.SIGKILL
    assert list(tmp_path.glob(".checkpoint.pt.tmp-*"))  # the half-written file
    assert load_checkpoint(tmp_path / "checkpoint.pt")["position"]["step"] == 10  # 2nd save intact
    proc = _train_cli(tmp_path, "--resume")
    assert proc.returncode == 0, proc.stderr
    _assert_same(tmp_path, reference)


def test_truncated_checkpoint_is_refused_and_the_previous_one_still_resumes(tmp_path, reference):
    proc = _train_cli(tmp_path, "--max-steps", "12")
    assert proc.returncode == 0, proc.stderr
    ckpt, prev = tmp_path / "checkpoint.pt", previous_path(tmp_path / "checkpoint.pt")
    assert prev.exists()
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    proc = _train_cli(tmp_path, "--resume")
    assert proc.returncode != 0
    assert (
        "truncated or not a torch checkpoint" in proc.stderr
        and "checkpoint.prev.pt is intact" in proc.stderr
    )
    assert load_checkpoint(prev)["position"]["step"] == 10
    proc = _train_cli(tmp_path, "--resume-from", str(prev))
    assert proc.returncode == 0, proc.stderr
    _assert_same(tmp_path, reference)


def test_foreign_and_incompatible_checkpoints_are_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an ndsnn checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "old.pt", {"model": {}})
    data = torch.load(tmp_path / "old.pt", weights_only=False)
    data["version"] = "9.9.0"
    torch.save(data, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"written by ndsnn_triton 9\.9\.0, incompatible"):
        load_checkpoint(tmp_path / "old.pt")


def _poisoned_trainer(out, skip, poison_step=5):
    """A trainer whose classifier output turns NaN in iteration ``poison_step``."""
    torch.manual_seed(0)
    model = small_snn(10, T=2)
    trainer = Trainer(
        model,
        build_method("rigl", density=0.3, delta_t=4),
        load_dataset("digits"),
        TrainConfig(epochs=1, batch_size=128, progress=False, skip_nonfinite=skip),
        out,
    )
    calls = {"n": 0}

    def poison(module, args, output):
        if module.training:
            calls["n"] += 1
            if calls["n"] == poison_step + 1:
                return output * float("nan")
        return output

    model.classifier.register_forward_hook(poison)
    return trainer, calls


def test_non_finite_loss_stops_with_step_and_checkpoint(tmp_path):
    trainer, _ = _poisoned_trainer(tmp_path, skip=False)
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at iteration 5"):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    # The state after it, which never saw its update: resuming continues at iteration 6.
    assert ckpt["position"]["step"] == 6 and ckpt["skipped_steps"] == 1


def test_non_finite_gradient_names_the_layer(tmp_path):
    torch.manual_seed(0)
    model = small_snn(10, T=2)
    trainer = Trainer(
        model,
        build_method("static", density=0.5),
        load_dataset("digits"),
        TrainConfig(epochs=1, batch_size=128, progress=False),
        tmp_path,
    )
    seen = {"n": 0}

    def nan_grad(grad):
        seen["n"] += 1
        return grad * float("nan") if seen["n"] == 3 else grad

    model.features[5].weight.register_hook(nan_grad)
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite gradient in features\.5 \(features\.5\.weight\) at iteration 2",
    ):
        trainer.fit()


def test_skip_nonfinite_counts_and_continues(tmp_path):
    trainer, _ = _poisoned_trainer(tmp_path, skip=True)
    metrics = trainer.fit()
    assert metrics["skipped_steps"] == 1 and metrics["test_acc"] is not None
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert 5 not in steps and 6 in steps


def test_cli_reports_nonfinite_cleanly(tmp_path):
    proc = _train_cli(tmp_path, "--lr", "1e30", "--max-steps", "6")
    assert proc.returncode != 0
    assert "ndsnn train: non-finite" in proc.stderr and "Traceback" not in proc.stderr
    assert Path(tmp_path / "checkpoint.pt").exists()
