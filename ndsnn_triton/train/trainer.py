"""Training loop for sparse spiking networks: BPTT over T, SGD + cosine LR, method hooks, logs.

Per iteration: forward over T (dense weight gradients only where the method asks), loss
``mean_t CE``, backward, the method's gradient hook, SGD, LR step, the method's mask hook (masks
re-applied to weights and optimizer state, updates on update steps), ``reset_net``. The method's
hooks run through a :class:`~ndsnn_triton.sparse.Sparsifier`, as in a user's own loop
(:func:`ndsnn_triton.sparse.attach`). With ``cuda_graphs`` (default on CUDA in one process) the
ordinary iterations replay a captured graph (:class:`~ndsnn_triton.sparse.GraphedStep`).

Files written to the output folder:

* ``log.jsonl``: one object per logged iteration: ``step`` (0-based global iteration), ``epoch``,
  ``phase``, ``loss`` and ``acc`` (means since the previous record), ``lr``, ``density``,
  per-layer ``densities`` (of the masks that iteration ran with) and ``spike_rates`` (mean input
  non-zero fraction since the previous record), ``work_factors`` (per layer ``rate``, ``forward``
  and ``weight_grad``: the ``kernel`` cost convention's work factors of the same inputs,
  :meth:`SpikeRateMonitor.work_factors`), ``dense_grad`` (the backward computed dense weight
  gradients), ``mask_update`` (the masks changed after it). Iterations where the masks change
  are always logged, so the per-iteration densities can be rebuilt exactly from the log.
* ``log.csv``: the scalar columns of the same records.
* ``eval.jsonl``: test loss and accuracy after each evaluated epoch.
* ``checkpoint.pt``: the latest checkpoint (atomic; the method's state under ``sparsifier``,
  :meth:`Sparsifier.state_dict`; older checkpoints with ``method`` still load);
  ``metrics.json`` at the end;
  ``config.json`` and ``schedule.json`` (the method's planned schedule) at the start.
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import torch
from torch import nn
from torch.optim.optimizer import _get_fused_kernels_supported_devices

from ndsnn_triton._version import __version__
from ndsnn_triton.backend import raise_deferred_spike_errors
from ndsnn_triton.nn import (
    dense_weight_grads,
    masked_layers,
    predict,
    reset_net,
    temporal_cross_entropy,
)
from ndsnn_triton.profiler.monitor import SpikeRateMonitor
from ndsnn_triton.sparse.attach import GraphedStep, Sparsifier
from ndsnn_triton.sparse.masks import densities_of, overall_density
from ndsnn_triton.sparse.methods import SparseMethod
from ndsnn_triton.train import distributed
from ndsnn_triton.train.checkpoint import (
    CheckpointError,
    fault_point,
    load_checkpoint,
    previous_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ndsnn_triton.train.data import BatchLoader, DataSet
from ndsnn_triton.train.progress import Progress

CSV_FIELDS = ["step", "epoch", "phase", "loss", "acc", "lr", "density", "dense_grad"]


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings (LTH-SNN defaults where they exist)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    amp: bool | None = None  # None: bf16 autocast on CUDA, off on CPU
    seed: int = 0
    cutout: int = 0  # Cutout square side in pixels (0 = off)
    log_every: int = 1  # iterations between log records (update steps always logged)
    eval_every: int = 1  # epochs between test evaluations (the last epoch of a phase always)
    checkpoint_every: int = 0  # iterations between mid-epoch checkpoints (0: at epoch ends only)
    max_steps: int | None = None  # stop (with a checkpoint) after this many iterations in total
    progress: bool = True
    skip_nonfinite: bool = (
        False  # skip iterations with a non-finite loss/gradient instead of stopping
    )
    check_masks: bool = False  # distributed debug: all-gather mask checksums after every update
    # replay ordinary iterations from a captured graph (None: on for CUDA, single process); on a
    # CPU the replay tape of ndsnn_triton.graphs stands in (to check a step, not for speed)
    cuda_graphs: bool | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "log_every", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be positive, got {self.lr}")
        if self.checkpoint_every < 0 or (self.max_steps is not None and self.max_steps < 1):
            raise ValueError("TrainConfig.checkpoint_every must be >= 0 and max_steps >= 1")


@dataclass
class Position:
    """Where a run stands: the next iteration to execute."""

    phase: int = 0
    epoch: int = 0  # within the phase, 0-based
    batch: int = 0  # within the epoch
    step: int = 0  # global iteration index
    phase_started: bool = False  # the optimizer in the checkpoint belongs to this phase


class _StepOutcome(NamedTuple):
    """What one iteration adds to the log (device scalars; zeros if its update was skipped)."""

    loss: torch.Tensor  # loss summed over the batch's samples
    correct: torch.Tensor  # correctly classified samples
    seen: torch.Tensor  # samples counted: the batch size, or 0
    masks_changed: bool  # the method updated the masks after this iteration


@dataclass
class _Interval:
    """Loss/accuracy accumulated since the last log record (device tensors: no sync per step)."""

    loss: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    seen: torch.Tensor | None = None
    steps: int = 0

    def add(self, outcome: _StepOutcome) -> None:
        if self.loss is None:  # copies: a replayed graph overwrites its outputs
            self.loss = outcome.loss.clone()
            self.correct = outcome.correct.clone()
            self.seen = outcome.seen.clone()
        else:
            self.loss = self.loss + outcome.loss
            self.correct = self.correct + outcome.correct
            self.seen = self.seen + outcome.seen
        self.steps += 1

    def totals(self) -> tuple[float, int, int]:
        """``(loss sum, correct, samples)`` of the counted iterations: one host sync."""
        if self.loss is None:
            return 0.0, 0, 0
        loss, correct, seen = torch.stack(
            [self.loss.double(), self.correct.double(), self.seen.double()]
        ).tolist()
        return loss, int(correct), int(seen)


class _FiniteGuard:
    """Device-side record of the iterations whose loss or gradients were non-finite.

    :meth:`record` sets ``found_inf`` (float scalar, 1.0: non-finite), which fused SGD reads to
    skip the whole update on the device, and keeps, without a host sync, how many iterations were
    flagged and what the first was; :meth:`settle` reads that back (one sync) and clears it.
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)
        self.count = torch.zeros((), dtype=torch.int64, device=device)
        self.first_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.first_loss = torch.zeros((), dtype=torch.float32, device=device)
        # finite flags of the first flagged iteration: [loss, each parameter's gradient]
        self.first_flags = torch.ones(1 + len(named), dtype=torch.bool, device=device)
        self._no_grad = torch.zeros((), dtype=torch.float32, device=device)

    def record(self, step: int | torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """Flag iteration ``step`` (an int, or an int64 scalar on the device: a captured step
        reads it there) by its loss and the current gradients; returns the bool scalar ``ok``
        (all finite) on the device."""
        loss = loss.detach().float()
        grads = [p.grad for p in self.params if p.grad is not None]
        # The max-abs of each gradient is finite iff the whole gradient is (NaN propagates).
        maxima = iter(torch._foreach_norm(grads, float("inf")) if grads else [])
        per_param = [
            next(maxima).float() if p.grad is not None else self._no_grad for p in self.params
        ]
        flags = torch.isfinite(torch.stack([loss, *per_param]))
        ok = flags.all()
        bad = ~ok
        first = bad & (self.first_step < 0)
        self.first_step.copy_(torch.where(first, step, self.first_step))
        self.first_loss.copy_(torch.where(first, loss, self.first_loss))
        self.first_flags.copy_(torch.where(first, flags, self.first_flags))
        self.count.add_(bad)
        self.found_inf.copy_(bad)
        return ok

    def settle(self) -> tuple[int, int, str]:
        """``(flagged iterations, first flagged iteration, what was non-finite in it)`` since the
        last call, then clear; ``(0, -1, "")`` when none was flagged. One host sync (a few
        more when one was flagged)."""
        count = int(self.count)
        if not count:
            return 0, -1, ""
        flags = self.first_flags.tolist()
        if not flags[0]:
            what = f"loss ({float(self.first_loss)})"
        else:
            name = self.names[flags.index(False) - 1]
            what = f"gradient in {name.rsplit('.', 1)[0]} ({name})"
        first = int(self.first_step)
        self.count.zero_()
        self.first_step.fill_(-1)
        self.first_flags.fill_(True)
        return count, first, what


def forward_backward(
    model: nn.Module,
    forward_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    dense_grad: bool,
    amp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward over T (bf16 autocast if ``amp``), ``mean_t`` cross-entropy, backward into cleared
    gradients; dense weight gradients if ``dense_grad``. Returns ``(loss, output [T, B, classes])``.

    ``forward_model`` is ``model`` or its DDP wrapper.
    """
    dense_ctx = dense_weight_grads(model) if dense_grad else contextlib.nullcontext()
    with dense_ctx, torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        out = forward_model(x)
        loss = temporal_cross_entropy(out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss, out


def sparse_optimizer_step(sparsifier: Sparsifier, optimizer: torch.optim.Optimizer) -> bool:
    """The optimizer step of the sparsifier's current iteration with the method's hooks around it:
    growth scores and masking of the gradient before (the sparsifier's step pre-hook), mask
    re-application (and on update steps the mask update) after. Returns whether the masks changed.
    """
    optimizer.step()
    return sparsifier.step()


class Trainer:
    """Trains ``model`` with ``method`` on ``data``; writes logs and checkpoints to ``out_dir``."""

    def __init__(
        self,
        model: nn.Module,
        method: SparseMethod,
        data: DataSet,
        config: TrainConfig,
        out_dir: str | Path,
        device: torch.device | str = "cpu",
        run_info: dict[str, Any] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.method = method
        self.data = data
        self.cfg = config
        self.out = Path(out_dir)
        self.run_info = run_info or {}
        self.amp = (self.device.type == "cuda") if config.amp is None else bool(config.amp)
        self.train_loader = BatchLoader(
            data,
            "train",
            config.batch_size,
            True,
            config.seed,
            config.cutout,
            rank=distributed.rank(),
            world=distributed.world_size(),
        )
        self.forward_model: nn.Module = self.model
        if distributed.enabled():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids
            )
        self.skipped_steps = 0
        self._guard = _FiniteGuard(self.model, self.device)
        self.graphs = self._use_graphs(config.cuda_graphs)
        self._step_t = torch.zeros((), dtype=torch.int64, device=self.device)
        self._graphed: GraphedStep | None = None
        self._fused = False  # the optimizer skips non-finite updates on the device
        self.test_loader = BatchLoader(data, "test", config.batch_size, False, config.seed)
        self.layer_names = [name for name, _ in masked_layers(model)]
        self.optimizer: torch.optim.Optimizer | None = None
        self._sparsifier: Sparsifier | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.eval_history: list[dict[str, Any]] = []
        self.elapsed = 0.0

    # ------------------------------------------------------------------ setup

    def _use_graphs(self, setting: bool | None) -> bool:
        """Whether ordinary iterations replay a captured graph (:attr:`TrainConfig.cuda_graphs`)."""
        if setting is None:
            return self.device.type == "cuda" and not distributed.enabled()
        if setting and distributed.enabled():
            raise ValueError(
                "TrainConfig.cuda_graphs: not with torch.distributed (DDP's gradient hooks "
                "synchronise across processes inside the step); turn it off"
            )
        if setting and self.device.type not in _get_fused_kernels_supported_devices():
            raise ValueError(
                f"TrainConfig.cuda_graphs: needs fused SGD on the device, which {self.device.type} lacks"
            )
        return bool(setting)

    def _fresh_optimizer(self, phase_steps: int) -> None:
        """SGD (fused where the device has the kernel: it skips flagged updates on the device)
        and the phase's cosine LR schedule over ``phase_steps`` iterations."""
        self._fused = self.device.type in _get_fused_kernels_supported_devices()
        # a captured step reads the learning rate from the device: the schedule fills it in place
        lr = torch.tensor(self.cfg.lr, device=self.device) if self.graphs else self.cfg.lr
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=lr,
            momentum=self.cfg.momentum,
            weight_decay=self.cfg.weight_decay,
            nesterov=self.cfg.nesterov,
            fused=self._fused or None,
        )
        if self._fused:
            self.optimizer.found_inf = (
                self._guard.found_inf
            )  # read by fused SGD, as GradScaler does
            if self.cfg.momentum:
                # Fused SGD allocates momentum buffers uninitialised and fills them in its first
                # step, so a skipped first step would leave garbage; buf = 0·m + g is that update.
                for p in self._guard.params:
                    self.optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(phase_steps, 1)
        )
        self.sparsifier.set_optimizer(self.optimizer)
        self._graphed = (
            GraphedStep(self.sparsifier, self._device_step) if self.graphs else None
        )  # a new optimizer: capture again

    @property
    def sparsifier(self) -> Sparsifier:
        """The method's driver (made on first use, once the method is set up): the trainer calls
        its epoch and phase hooks itself, so that evaluation sees a phase's model before LTH
        prunes it."""
        if self._sparsifier is None or self._sparsifier.method is not self.method:
            self._sparsifier = Sparsifier(
                self.method, auto_epochs=False, check_masks=self.cfg.check_masks
            )
        return self._sparsifier

    def _load_optimizer(self, state: dict[str, Any]) -> None:
        """Load a saved optimizer state; the update kernel stays this trainer's choice (fused or
        not), whatever the checkpoint's optimizer used."""
        self.optimizer.load_state_dict(state)
        for group in self.optimizer.param_groups:
            group["fused"] = self.optimizer.defaults["fused"]
            group["foreach"] = self.optimizer.defaults["foreach"]
            for key in ("lr", "initial_lr"):  # a tensor where a captured step reads it
                if key in group:
                    value = float(group[key])
                    group[key] = torch.tensor(value, device=self.device) if self.graphs else value

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def _save(self, pos: Position) -> None:
        if not distributed.is_main():
            distributed.barrier()
            return
        self._write_checkpoint(pos)
        distributed.barrier()

    def _write_checkpoint(self, pos: Position) -> None:
        save_checkpoint(
            self.checkpoint_path,
            {
                "model": self.model.state_dict(),
                "sparsifier": self.sparsifier.state_dict(),
                "optimizer": self.optimizer.state_dict()
                if pos.phase_started and self.optimizer
                else None,
                "scheduler": self.scheduler.state_dict()
                if pos.phase_started and self.scheduler
                else None,
                "rng": rng_state(),
                "position": asdict(pos),
                "train_config": asdict(self.cfg) | {"max_steps": None},
                "eval_history": self.eval_history,
                "elapsed": self.elapsed,
                "skipped_steps": self.skipped_steps,
                "run_info": self.run_info,
            },
        )

    def _restore(self, phases_steps: list[int], checkpoint: Path | None) -> Position:
        path = checkpoint or self.checkpoint_path
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as err:
            prev = previous_path(self.checkpoint_path)
            hint = (
                f"; the previous checkpoint {prev} is intact: resume from it with --resume-from {prev}"
                if prev.exists() and prev != path
                else ""
            )
            raise CheckpointError(f"{err}{hint}") from None
        free = ("max_steps", "progress", "cuda_graphs")  # settings that do not change the run
        saved_cfg = {k: v for k, v in ckpt["train_config"].items() if k not in free}
        now_cfg = {k: v for k, v in asdict(self.cfg).items() if k not in free}
        if saved_cfg != now_cfg:
            diff = sorted(k for k in now_cfg if saved_cfg.get(k) != now_cfg[k])
            raise ValueError(
                f"cannot resume {self.checkpoint_path}: training settings differ ({diff})"
            )
        self.model.load_state_dict(ckpt["model"])
        pos = Position(**ckpt["position"])
        self._load_sparsifier(ckpt, pos.step)
        if pos.phase < len(phases_steps):
            self._fresh_optimizer(phases_steps[pos.phase])
            if pos.phase_started:
                self._load_optimizer(ckpt["optimizer"])
                self.scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        self.eval_history = ckpt["eval_history"]
        self.elapsed = ckpt["elapsed"]
        self.skipped_steps = ckpt.get("skipped_steps", 0)
        self._truncate_logs(pos.step)
        return pos

    def _load_sparsifier(self, ckpt: dict[str, Any], step: int) -> None:
        """The method's state from ``sparsifier`` (or ``method``: checkpoints before it)."""
        if "sparsifier" in ckpt:
            self.sparsifier.load_state_dict(ckpt["sparsifier"])
        else:
            self.method.load_state_dict(ckpt["method"])
        self.sparsifier.seek(step)

    def _truncate_logs(self, step: int) -> None:
        """Drop records of iterations at or after ``step`` (written after the checkpoint)."""
        if not distributed.is_main():
            return
        log = self.out / "log.jsonl"
        if log.exists():
            keep = [
                line
                for line in log.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] < step
            ]
            log.write_text("".join(line + "\n" for line in keep))
            with open(self.out / "log.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, CSV_FIELDS)
                writer.writeheader()
                for line in keep:
                    record = json.loads(line)
                    writer.writerow({k: record[k] for k in CSV_FIELDS})
        eval_log = self.out / "eval.jsonl"
        if eval_log.exists():
            keep = [
                line
                for line in eval_log.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step
            ]
            eval_log.write_text("".join(line + "\n" for line in keep))

    # ------------------------------------------------------------------ the loop

    def fit(self, resume: bool = False, checkpoint: str | Path | None = None) -> dict[str, Any]:
        """Train (or continue a run from ``out_dir/checkpoint.pt``, or from ``checkpoint``).

        Returns the final metrics. An iteration with a non-finite loss or gradient is not applied
        (skipped on the device, no host sync); at the next log record, mask update or checkpoint
        ``skip_nonfinite`` counts it, else training stops with ``FloatingPointError`` naming the
        iteration and layer, after checkpointing the state (which never saw that update).
        Binary-spike checks deferred on the device raise their ``ValueError`` at the same points.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        steps_per_epoch = len(self.train_loader)
        torch.manual_seed(self.cfg.seed)
        self.method.setup(self.model, steps_per_epoch, self.cfg.epochs)
        phases = self.method.phases(self.cfg.epochs)
        phase_steps = [p.epochs * steps_per_epoch for p in phases]
        total = sum(phase_steps)
        if resume:
            pos = self._restore(phase_steps, Path(checkpoint) if checkpoint else None)
        else:
            if self.checkpoint_path.exists():
                raise FileExistsError(
                    f"{self.checkpoint_path} exists: pass resume=True (--resume) or use a new folder"
                )
            pos = Position()
            if distributed.is_main():
                for name in ("log.jsonl", "log.csv", "eval.jsonl", "metrics.json"):
                    (self.out / name).unlink(missing_ok=True)
                self._write_json("config.json", self._config_record(phases, steps_per_epoch))
                self._write_json("schedule.json", self.method.schedule().to_dict())
        if distributed.is_main() and not (self.out / "log.csv").exists():
            with open(self.out / "log.csv", "w", newline="") as f:
                csv.DictWriter(f, CSV_FIELDS).writeheader()

        progress = Progress(total, pos.step, enabled=self.cfg.progress and distributed.is_main())
        densities = densities_of(self.model)
        interval = _Interval()
        stopped_early = False
        start_clock = time.perf_counter()
        # Log the first iteration, and every iteration whose masks differ from the previous one's.
        force_log = True
        with SpikeRateMonitor(self.model) as monitor:
            for p in range(pos.phase, len(phases)):
                if not pos.phase_started:
                    self._fresh_optimizer(phase_steps[p])
                    pos.phase_started = True
                for e in range(pos.epoch, phases[p].epochs):
                    data_epoch = sum(ph.epochs for ph in phases[:p]) + e
                    for x, y in self.train_loader.epoch(data_epoch, pos.batch):
                        step = pos.step
                        lr = self.optimizer.param_groups[0]["lr"]
                        if isinstance(lr, torch.Tensor):  # filled in place by the schedule
                            lr = lr.clone()
                        outcome = self._train_step(step, x, y)
                        interval.add(outcome)
                        update = outcome.masks_changed
                        pos.step += 1
                        pos.batch += 1
                        if (
                            force_log
                            or update
                            or step % self.cfg.log_every == 0
                            or step == total - 1
                        ):
                            # The log record syncs anyway: settle the deferred checks here.
                            problem = self._settle()
                            self._log(
                                step,
                                data_epoch,
                                phases[p].name,
                                interval,
                                lr,
                                densities,
                                monitor,
                                update,
                            )
                            interval = _Interval()
                            if problem:
                                self._stop_nonfinite(problem, pos)
                        force_log = update
                        if update:  # (the sparsifier checked the masks agree: check_masks)
                            densities = densities_of(self.model)
                        fault_point("NDSNN_FAULT_KILL_AFTER_STEP", pos.step)
                        progress.update(
                            pos.step, f"{phases[p].name} epoch {e + 1}/{phases[p].epochs}"
                        )
                        if self.cfg.checkpoint_every and pos.step % self.cfg.checkpoint_every == 0:
                            self._save_timed(pos, start_clock)
                            start_clock = time.perf_counter()
                        if self.cfg.max_steps is not None and pos.step >= self.cfg.max_steps:
                            stopped_early = True
                            break
                    if stopped_early:
                        break
                    self._check_point(pos)  # before the method's epoch and phase hooks
                    pos.batch = 0
                    pos.epoch = e + 1
                    self.sparsifier.on_epoch_end(p, e + 1)
                    if self._graphed is not None:  # the hooks may change masks
                        self._graphed.release()
                    last_of_phase = e + 1 == phases[p].epochs
                    if last_of_phase or (e + 1) % self.cfg.eval_every == 0:
                        self._evaluate(pos.step, data_epoch, phases[p].name)
                    if last_of_phase:
                        self.sparsifier.on_phase_end(p)
                        densities = densities_of(self.model)
                        force_log = True
                        pos = Position(p + 1, 0, 0, pos.step, False)
                    self._save_timed(pos, start_clock)
                    start_clock = time.perf_counter()
                if stopped_early:
                    break
        progress.close()
        if stopped_early:
            self._save_timed(pos, start_clock)
            return {"stopped_at_step": pos.step, "completed": False}
        metrics = self._final_metrics(total)
        if distributed.is_main():
            self._write_json("metrics.json", metrics)
        return metrics

    def _check_point(self, pos: Position) -> None:
        """Settle the deferred checks (:meth:`_settle`); stop at ``pos`` if one failed."""
        problem = self._settle()
        if problem:
            self._stop_nonfinite(problem, pos)

    def _save_timed(self, pos: Position, since: float) -> None:
        self._check_point(pos)  # a checkpoint holds no unreported failure
        self.elapsed += time.perf_counter() - since
        self._save(pos)

    def _train_step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> _StepOutcome:
        """One iteration, with no host sync on an ordinary step; replayed from a captured graph
        where :attr:`graphs` is on and the iteration is ordinary (:class:`GraphedStep`).

        A non-finite loss or gradient skips the update on the device (fused SGD reads the
        guard's flag); :meth:`_settle` reports it later. Mask-update steps synchronise anyway, so
        they check at once: drop-and-grow never ranks non-finite gradients.
        """
        self.model.train()
        self.sparsifier.seek(step)  # the trainer counts iterations (resume, phases) itself
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self._graphed is None:
            outcome = self._device_step(x, y)
        else:
            self._step_t.fill_(step)  # where a replayed step reads its iteration number
            outcome = self._graphed(x, y)
        # Skipped or not, the LR schedule follows the iteration count (the host cannot tell).
        self.scheduler.step()
        return outcome

    def _device_step(self, x: torch.Tensor, y: torch.Tensor) -> _StepOutcome:
        """The device work of the iteration the sparsifier stands at (what a graph captures):
        forward, backward, the finite check, SGD with the method's hooks, neuron reset."""
        sparsifier = self.sparsifier
        step = sparsifier.next_step
        loss, out = forward_backward(
            self.model,
            self.forward_model,
            self.optimizer,
            x,
            y,
            sparsifier.dense_grad,
            self.amp,
        )
        ok = self._guard.record(step if self._graphed is None else self._step_t, loss)
        update = self.method.is_update_step(step)
        # Without fused SGD nothing skips a bad update on the device: check every iteration.
        skip_now = (update or not self._fused) and not bool(ok)
        if skip_now:
            # No optimizer step: the sparsifier counts the iteration and leaves the masks.
            self.optimizer.zero_grad(set_to_none=True)
            masks_changed = sparsifier.step()
        else:
            masks_changed = sparse_optimizer_step(sparsifier, self.optimizer)
        reset_net(self.model)
        correct = (predict(out.detach()) == y).sum()
        return _StepOutcome(
            torch.where(ok, loss.detach() * y.shape[0], 0.0),
            torch.where(ok, correct, 0),
            ok.long() * y.shape[0],
            masks_changed,
        )

    def _settle(self) -> str:
        """At a point that synchronises anyway: raise the deferred binary-spike errors, and count
        the iterations skipped as non-finite since the last call. Returns what to stop for
        (``""``: nothing; always nothing with ``skip_nonfinite``)."""
        raise_deferred_spike_errors()
        count, first, what = self._guard.settle()
        self.skipped_steps += count
        if not count or self.cfg.skip_nonfinite:
            return ""
        later = f" (and {count - 1} later iteration(s))" if count > 1 else ""
        return f"non-finite {what} at iteration {first}{later}"

    def _stop_nonfinite(self, problem: str, pos: Position) -> NoReturn:
        """Checkpoint ``pos`` (the next iteration; no skipped update was applied) and raise."""
        self._save(pos)
        raise FloatingPointError(
            f"{problem}; such updates are skipped, and the state before iteration {pos.step} is "
            f"checkpointed in {self.checkpoint_path} (skip such iterations with --skip-nonfinite)"
        )

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Test loss and accuracy of the current model."""
        self.model.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in self.test_loader.epoch(0):
            x, y = x.to(self.device), y.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = self.model(x)
            reset_net(self.model)
            loss_sum += float(temporal_cross_entropy(out.float(), y)) * y.shape[0]
            correct += int((predict(out) == y).sum())
            seen += y.shape[0]
        self.model.train()
        raise_deferred_spike_errors()  # evaluation synchronised on every batch anyway
        return loss_sum / seen, correct / seen

    def _evaluate(self, step: int, epoch: int, phase: str) -> None:
        if not distributed.is_main():
            distributed.barrier()
            return
        loss, acc = self.evaluate()
        record = {
            "step": step,
            "epoch": epoch + 1,
            "phase": phase,
            "test_loss": loss,
            "test_acc": acc,
            "density": overall_density(self.model),
        }
        self.eval_history.append(record)
        with open(self.out / "eval.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        distributed.barrier()

    # ------------------------------------------------------------------ logging

    def _log(
        self,
        step: int,
        epoch: int,
        phase: str,
        interval: _Interval,
        lr: float,
        densities: dict[str, float],
        monitor: SpikeRateMonitor,
        mask_update: bool,
    ) -> None:
        if not distributed.is_main():
            monitor.reset()
            return
        loss_sum, correct, seen = interval.totals()
        if not seen:  # every iteration since the last record was skipped
            return
        record = {
            "step": step,
            "epoch": epoch,
            "phase": phase,
            "loss": loss_sum / seen,
            "acc": correct / seen,
            "lr": float(lr),  # a tensor where a captured step reads it
            "density": overall_density(self.model, densities),
            "densities": densities,
            "spike_rates": monitor.rates(),
            "work_factors": {n: asdict(f) for n, f in monitor.work_factors().items()},
            "dense_grad": self.method.needs_dense_grad(step),
            "mask_update": mask_update,
        }
        monitor.reset()
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.out / "log.csv", "a", newline="") as f:
            csv.DictWriter(f, CSV_FIELDS).writerow({k: record[k] for k in CSV_FIELDS})

    def _config_record(self, phases: list, steps_per_epoch: int) -> dict[str, Any]:
        return {
            "version": __version__,
            "train": asdict(self.cfg),
            "method": self.method.config(),
            "phases": [{"name": p.name, "epochs": p.epochs} for p in phases],
            "steps_per_epoch": steps_per_epoch,
            "dataset": {
                "name": self.data.name,
                "train": len(self.data.train),
                "test": len(self.data.test),
                "classes": self.data.num_classes,
            },
            "device": str(self.device),
            "amp_bf16": self.amp,
            "layers": {name: list(m.weight.shape) for name, m in masked_layers(self.model)},
            **self.run_info,
        }

    def _final_metrics(self, total_steps: int) -> dict[str, Any]:
        final = self.eval_history[-1] if self.eval_history else {}
        return {
            "test_acc": final.get("test_acc"),
            "test_loss": final.get("test_loss"),
            "best_test_acc": max((r["test_acc"] for r in self.eval_history), default=None),
            "wall_time_s": self.elapsed,
            "skipped_steps": self.skipped_steps,
            "steps": total_steps,
            "density": overall_density(self.model),
            "densities": densities_of(self.model),
            "method": self.method.config(),
            "dataset": self.data.name,
            "device": str(self.device),
            "version": __version__,
            **self.run_info,
        }

    def _write_json(self, name: str, obj: Any) -> None:
        path = self.out / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2))
        tmp.replace(path)
