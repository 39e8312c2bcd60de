"""A training step makes no host synchronisation: the binary-spike check (deferred mode) and the
non-finite check (fused SGD's device-side ``found_inf``) report at points that sync anyway.

On CPU the host-synchronising entry points are counted by patching them; on CUDA the steps run
under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ndsnn_triton
from ndsnn_triton import masked_conv2d, masked_linear
from ndsnn_triton.backend import spike_check_for
from ndsnn_triton.models import build_model
from ndsnn_triton.nn import masked_layers
from ndsnn_triton.profiler.monitor import SpikeRateMonitor
from ndsnn_triton.sparse import build_method
from ndsnn_triton.train import TrainConfig, Trainer, load_checkpoint, load_dataset

#: Tensor methods that copy a value to the host (a device sync on CUDA)
SYNC_METHODS = (
    "item",
    "tolist",
    "cpu",
    "numpy",
    "nonzero",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
)
#: aten ops that read device data on the host (seen outside the ndsnn ops' opaque bodies)
SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal", "_unique2")


class _SyncOps(TorchDispatchMode):
    def __init__(self, counts: collections.Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._overloadpacket.__name__ in SYNC_OPS:
            self.counts[f"aten.{func._overloadpacket.__name__}"] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_host_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter]:
    """Count calls of every host-synchronising entry point within the block, by name."""
    counts: collections.Counter = collections.Counter()

    def counted(name: str, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    with monkeypatch.context() as patch:
        for name in SYNC_METHODS:
            patch.setattr(
                torch.Tensor, name, counted(f"Tensor.{name}", getattr(torch.Tensor, name))
            )
        patch.setattr(torch, "nonzero", counted("torch.nonzero", torch.nonzero))
        patch.setattr(
            torch.cuda, "synchronize", counted("cuda.synchronize", torch.cuda.synchronize)
        )
        with _SyncOps(counts):
            yield counts


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trainer(out, digits, method="static", device="cpu", **cfg) -> Trainer:
    torch.manual_seed(0)
    model = build_model("small", num_classes=10, T=2, in_channels=1, image_size=8)
    kw = {"density": 0.5} if method == "static" else {"density": 0.5, "delta_t": 3}
    config = TrainConfig(**{"epochs": 1, "batch_size": 64, "progress": False, **cfg})
    return Trainer(model, build_method(method, **kw), digits, config, out, device=device)


def _prepared(trainer: Trainer) -> Trainer:
    """Set up method and optimizer as ``fit`` does before its first iteration."""
    trainer.method.setup(trainer.model, len(trainer.train_loader), trainer.cfg.epochs)
    trainer._fresh_optimizer(len(trainer.train_loader))
    return trainer


def _batch(trainer: Trainer, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    for i, batch in enumerate(trainer.train_loader.epoch(0)):
        if i == index:
            return batch
    raise IndexError(index)


def _poison_output(model: torch.nn.Module, steps: set[int]) -> None:
    """Make the classifier output NaN in the training forwards numbered ``steps`` (from 0)."""
    calls = {"n": -1}

    def hook(module, args, output):
        if module.training:
            calls["n"] += 1
            if calls["n"] in steps:
                return output * float("nan")
        return output

    model.classifier.register_forward_hook(hook)


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    params = {f"param {n}": p.detach().clone() for n, p in trainer.model.named_parameters()}
    buffers = {
        f"momentum {i}": s["momentum_buffer"].clone()
        for i, s in enumerate(trainer.optimizer.state.values())
    }
    return params | buffers


# ----------------------------------------------------------------------------- no sync on CPU


@pytest.mark.parametrize("method", ["static", "rigl"])
def test_a_training_step_makes_no_host_sync(digits, tmp_path, monkeypatch, method):
    trainer = _prepared(_trainer(tmp_path, digits, method))
    step = 1  # rigl (delta_t=3): neither an update step nor a dense-gradient one
    assert not trainer.method.is_update_step(step)
    x, y = _batch(trainer)
    with ndsnn_triton.use_spike_check("deferred"), SpikeRateMonitor(trainer.model):
        trainer._train_step(0, x, y)  # first calls: caches and optimizer state
        with count_host_syncs(monkeypatch) as syncs:
            outcome = trainer._train_step(step, x, y)
    assert sum(syncs.values()) == 0, dict(syncs)
    assert int(outcome.seen) == y.shape[0]
    assert trainer._settle() == "" and trainer.skipped_steps == 0


def test_the_counter_sees_the_eager_spike_check(digits, tmp_path, monkeypatch):
    """The counter is live: eager checking syncs once per spike-input layer whose input carries
    no companion (a LIF's spikes do: they are binary by construction and need no check)."""
    trainer = _prepared(_trainer(tmp_path, digits))
    layers = [m for _, m in masked_layers(trainer.model) if m.spike_input]
    assert len(layers) >= 2
    x, y = _batch(trainer)
    trainer._train_step(0, x, y)
    with ndsnn_triton.use_spike_check("eager"), count_host_syncs(monkeypatch) as syncs:
        trainer._train_step(1, x, y)
    assert sum(syncs.values()) == 0, dict(syncs)  # every spike layer's input comes from a LIF
    plain = (torch.rand(2, 1, layers[0].in_channels, 6, 6) < 0.3).float()  # no companion
    with ndsnn_triton.use_spike_check("eager"), count_host_syncs(monkeypatch) as syncs:
        layers[0](plain)
    assert syncs["Tensor.__bool__"] == 1, dict(syncs)


def test_the_counter_sees_item_and_aten_reads(monkeypatch):
    t = torch.tensor([0.0, 2.0])
    with count_host_syncs(monkeypatch) as syncs:
        t.sum().item()
        float(t[1])
        torch.nonzero(t)
        torch.masked_select(t, t > 1)
    assert syncs["Tensor.item"] == 1 and syncs["Tensor.__float__"] == 1, dict(syncs)
    assert syncs["torch.nonzero"] == 1 and syncs["aten.nonzero"] == 1, dict(syncs)
    assert syncs["aten._local_scalar_dense"] == 2 and syncs["aten.masked_select"] == 1, dict(syncs)


# ----------------------------------------------------------------------------- spike check modes


def test_auto_mode_is_eager_on_cpu_and_deferred_on_cuda():
    assert ndsnn_triton.spike_check_mode() == "auto"
    assert spike_check_for("cpu") == "eager" and spike_check_for("cuda") == "deferred"
    with ndsnn_triton.use_spike_check(False):
        assert ndsnn_triton.spike_check_mode() == "off" and spike_check_for("cuda") == "off"
    with ndsnn_triton.use_spike_check("EAGER"):
        assert spike_check_for("cuda") == "eager"
    with pytest.raises(ValueError, match="unknown binary-spike check mode 'sometimes'"):
        ndsnn_triton.set_spike_check("sometimes")
    assert ndsnn_triton.spike_check_mode() == "auto"


@pytest.mark.parametrize(
    ("value", "mode"), [("0", "off"), ("deferred", "deferred"), ("sometimes", None)]
)
def test_spike_check_environment_variable(value, mode):
    proc = subprocess.run(
        [sys.executable, "-c", "import ndsnn_triton; print(ndsnn_triton.spike_check_mode())"],
        env={**os.environ, "NDSNN_CHECK_SPIKES": value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if mode is None:
        assert proc.returncode != 0 and "NDSNN_CHECK_SPIKES" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == mode


def test_deferred_check_raises_the_clear_error_later_naming_the_op():
    x, w = torch.rand(2, 3, 5, 5), torch.randn(4, 3, 3, 3)
    mask = torch.ones_like(w, dtype=torch.bool)
    with ndsnn_triton.use_spike_check("deferred"):
        masked_conv2d(x, w, mask)  # no error yet
        masked_linear((torch.rand(2, 3) < 0.5).float(), torch.randn(4, 3), mask[:, :, 0, 0])
        with pytest.raises(ValueError, match="binary spikes") as err:
            ndsnn_triton.raise_deferred_spike_errors()
        message = str(err.value)
        assert message.startswith("ndsnn::masked_conv2d: spike_input=True")
        assert "masked_linear" not in message and "spike_input=False" in message
        ndsnn_triton.raise_deferred_spike_errors()  # cleared
        masked_conv2d((x < 0.5).float(), w, mask)  # binary: nothing to report
        ndsnn_triton.raise_deferred_spike_errors()


def test_trainer_raises_a_deferred_spike_error_at_the_next_log_record(digits, tmp_path):
    trainer = _trainer(tmp_path, digits, log_every=1)
    name, layer = next((n, m) for n, m in masked_layers(trainer.model) if m.spike_input)
    layer.register_forward_pre_hook(lambda module, args: (args[0] * 0.5,))
    with (
        ndsnn_triton.use_spike_check("deferred"),
        pytest.raises(ValueError, match="requires binary spikes") as err,
    ):
        trainer.fit()
    op = "ndsnn::masked_conv2d" if isinstance(layer, torch.nn.Conv2d) else "ndsnn::masked_linear"
    assert op in str(err.value), name
    assert not (tmp_path / "log.jsonl").exists()  # raised at the first record, before writing


# ----------------------------------------------------------------------------- non-finite steps


def test_a_non_finite_step_is_skipped_on_the_device_without_a_sync(digits, tmp_path, monkeypatch):
    trainer = _prepared(_trainer(tmp_path, digits, skip_nonfinite=True))
    _poison_output(trainer.model, {1})
    x, y = _batch(trainer)
    trainer._train_step(0, x, y)
    before = _state(trainer)
    with ndsnn_triton.use_spike_check("deferred"), count_host_syncs(monkeypatch) as syncs:
        outcome = trainer._train_step(1, x, y)
    assert sum(syncs.values()) == 0, dict(syncs)
    after = _state(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before), "the update was applied"
    assert (float(outcome.loss), int(outcome.correct), int(outcome.seen)) == (0.0, 0, 0)
    assert trainer._settle() == "" and trainer.skipped_steps == 1
    trainer._train_step(2, x, y)  # the next step updates again
    assert not torch.equal(
        after["param classifier.weight"], _state(trainer)["param classifier.weight"]
    )
    assert trainer._settle() == "" and trainer.skipped_steps == 1


def test_without_skip_the_flagged_step_is_reported_by_iteration(digits, tmp_path):
    trainer = _prepared(_trainer(tmp_path, digits))
    _poison_output(trainer.model, {2, 3})
    x, y = _batch(trainer)
    for step in range(5):
        trainer._train_step(step, x, y)
    assert trainer._settle() == "non-finite loss (nan) at iteration 2 (and 1 later iteration(s))"
    assert trainer.skipped_steps == 2 and trainer._settle() == ""


def test_non_finite_found_at_a_later_log_record_stops_with_a_good_checkpoint(digits, tmp_path):
    trainer = _trainer(tmp_path, digits, log_every=4)
    _poison_output(trainer.model, {1})
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at iteration 1;") as err:
        trainer.fit()
    assert "state before iteration 5" in str(err.value)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["position"]["step"] == 5 and ckpt["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 4]  # steps 2-4 logged, without the skipped one
    assert all(r["loss"] == r["loss"] for r in log)  # not NaN


def test_skipping_the_very_first_step_leaves_a_clean_momentum_buffer(digits, tmp_path):
    """Fused SGD fills its momentum buffers in its first step: one skipped there must not
    leave them uninitialised."""
    trainer = _trainer(tmp_path, digits, skip_nonfinite=True, log_every=3)
    _poison_output(trainer.model, {0})
    metrics = trainer.fit()
    assert metrics["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(torch.isfinite(s["momentum_buffer"]).all() for s in trainer.optimizer.state.values())
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 3 and all(r["loss"] == r["loss"] for r in log)


def test_a_checkpointed_foreach_optimizer_state_loads_into_fused_sgd(digits, tmp_path):
    trainer = _prepared(_trainer(tmp_path, digits))
    assert trainer.optimizer.defaults["fused"]
    plain = torch.optim.SGD(trainer.model.parameters(), lr=0.1, momentum=0.9)
    trainer._load_optimizer(plain.state_dict())
    assert all(g["fused"] and not g["foreach"] for g in trainer.optimizer.param_groups)
    x, y = _batch(trainer)
    trainer._train_step(0, x, y)  # runs fused, with found_inf


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
def test_cuda_training_steps_make_no_host_sync(digits, tmp_path):
    trainer = _prepared(_trainer(tmp_path, digits, "rigl", device="cuda"))
    assert ndsnn_triton.spike_check_mode() == "auto" and trainer.amp
    batches = [_batch(trainer, i) for i in range(2)]
    trainer._train_step(0, *batches[0])  # warm-up: kernel choices, index sizing, optimizer state
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    try:
        torch.cuda.set_sync_debug_mode("error")
        for step in (1, 2):  # rigl, delta_t=3: ordinary steps
            trainer._train_step(step, *batches[step - 1])
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert trainer._settle() == "" and trainer.skipped_steps == 0


@pytest.mark.gpu
def test_cuda_spike_check_defers_by_default():
    x = torch.rand(2, 3, 5, 5, device="cuda")
    w = torch.randn(4, 3, 3, 3, device="cuda")
    mask = torch.ones_like(w, dtype=torch.bool)
    previous = torch.cuda.get_sync_debug_mode()
    try:
        torch.cuda.set_sync_debug_mode("error")
        # backend torch: the check under test is the op's, on every backend; "auto" would time
        # its first call of this shape (do_bench synchronises) and count an unrecorded mask
        with ndsnn_triton.use_backend("torch"):
            masked_conv2d(x, w, mask)  # non-binary, but no sync and no error here
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    with pytest.raises(ValueError, match="ndsnn::masked_conv2d: spike_input=True requires binary"):
        ndsnn_triton.raise_deferred_spike_errors()
