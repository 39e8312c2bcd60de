"""Sparse training from a plain PyTorch loop: :func:`attach` and :class:`Sparsifier`.

::

    sparsifier = attach(model, optimizer, method="ndsnn", sparsity=0.99, total_steps=n)
    for x, y in batches:                    # n iterations
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()                    # the method masks gradients first (a step pre-hook)
        sparsifier.step()                   # masks re-applied; mask updates on update steps

Per iteration ``k`` (the :class:`~ndsnn_triton.sparse.methods.SparseMethod` contract): the
forward/backward runs with dense weight gradients where ``method.needs_dense_grad(k)`` (the
sparsifier switches the layers' flag for the *next* iteration at the end of each ``step()``);
``optimizer.step()`` runs the method's ``before_optimizer_step(k)`` from a step pre-hook;
``step()`` runs ``after_optimizer_step(k, optimizer)`` and advances ``k``. Call ``step()`` exactly
once per iteration, also when the optimizer step was skipped (a ``GradScaler`` step with
non-finite gradients): the iteration then counts, but the masks are left as they were.

The CLI :class:`~ndsnn_triton.train.Trainer` drives its methods through this same class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ndsnn_triton.graphs import StepGraph
from ndsnn_triton.nn.layers import masked_layers
from ndsnn_triton.sparse.distribution import layer_floors
from ndsnn_triton.sparse.masks import boundary_layers
from ndsnn_triton.sparse.methods import METHODS, Phase, SparseMethod, build_method, zero_off_mask
from ndsnn_triton.sparse.validation import check_positive_int

#: version of :meth:`Sparsifier.state_dict`'s layout
STATE_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (else ``model``)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def _found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer is about to skip its update on the device: the ``found_inf`` flag
    that ``GradScaler`` (and the CLI trainer's guard) hands fused optimizers. A host sync."""
    flag = getattr(optimizer, "found_inf", None)
    return isinstance(flag, Tensor) and bool(flag.ne(0).any())


class Sparsifier:
    """Drives a set-up :class:`SparseMethod` from a plain loop (see the module docstring).

    Args:
        method: a method already bound to its model (``method.setup(model, ...)``); :func:`attach`
            builds and sets one up.
        optimizer: the optimizer over the model's weights (``None``: bind one later with
            :meth:`set_optimizer`).
        auto_epochs: call the method's epoch and phase hooks from :meth:`step` when an iteration
            ends an epoch (of ``method.steps_per_epoch`` iterations). False: the caller calls
            :meth:`on_epoch_end` / :meth:`on_phase_end` itself (the CLI trainer, which evaluates
            between them).
        check_masks: after each mask update under ``torch.distributed``, all-gather mask checksums
            and raise if the ranks' masks differ (a debug check: one collective per update).
    """

    def __init__(
        self,
        method: SparseMethod,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        auto_epochs: bool = True,
        check_masks: bool = False,
    ) -> None:
        if method.model is None:
            raise ValueError("Sparsifier: set the method up first (method.setup(model, ...))")
        self.method = method
        self.auto_epochs = bool(auto_epochs)
        self.check_masks = bool(check_masks)
        self.optimizer: torch.optim.Optimizer | None = None
        self._hook: RemovableHandle | None = None
        self._step = 0
        self._stepped = False  # the pre-hook ran for the current iteration
        self.phase_ended = False  # the last step() ended a phase (LTH: pruned and rewound)
        if optimizer is not None:
            self.set_optimizer(optimizer)
        self._set_dense_flags()

    # ------------------------------------------------------------------ where the run stands

    @property
    def model(self) -> nn.Module:
        return self.method.model

    @property
    def next_step(self) -> int:
        """Index of the next iteration (= iterations counted so far)."""
        return self._step

    @property
    def phases(self) -> list[Phase]:
        return self.method.phases(self.method.epochs)

    @property
    def total_steps(self) -> int:
        """Iterations of the whole run, all phases (LTH: every round)."""
        return self.method.total_steps

    @property
    def phase(self) -> int:
        """Index of the phase the next iteration belongs to (``len(phases)`` after the run)."""
        start = 0
        for p, ph in enumerate(self.phases):
            start += ph.epochs * self.method.steps_per_epoch
            if self._step < start:
                return p
        return len(self.phases)

    @property
    def finished(self) -> bool:
        return self._step >= self.total_steps

    @property
    def dense_grad(self) -> bool:
        """Whether the next iteration's backward computes dense weight gradients."""
        return self.method.needs_dense_grad(self._step)

    # ------------------------------------------------------------------ binding

    def set_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Bind ``optimizer`` (replacing the previous one: LTH's fresh optimizer per round): its
        state is zeroed off the masks, and its step pre-hook runs the method's gradient hook."""
        _check_optimizer(optimizer, self.model)
        self._remove_hook()
        self.optimizer = optimizer
        self._hook = optimizer.register_step_pre_hook(self._before_optimizer_step)
        self._zero_off_masks()

    def seek(self, step: int) -> None:
        """Continue at iteration ``step`` (a caller that counts iterations itself, or a resume
        from an own checkpoint). Dense-gradient flags follow; no method hook runs."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"Sparsifier.seek: step must be an int >= 0, got {step!r}")
        self._step = step
        self._stepped = False
        self._set_dense_flags()

    def remove(self) -> None:
        """Detach: remove the optimizer hook and switch dense weight gradients off."""
        self._remove_hook()
        self.optimizer = None
        for _, layer in masked_layers(self.model):
            layer.dense_weight_grad = False

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # ------------------------------------------------------------------ per iteration

    def _before_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any):
        """Optimizer step pre-hook: the method's gradient hook (growth scores, masking)."""
        if self._stepped:
            raise RuntimeError(
                "Sparsifier: optimizer.step() ran twice in one iteration; call "
                "sparsifier.step() once after every optimizer.step()"
            )
        step = self._step
        # A fused optimizer handed found_inf steps anyway and skips on the device: never grow
        # from non-finite gradients (update steps synchronise anyway).
        if self.method.is_update_step(step) and _found_inf(optimizer):
            return None
        self.method.before_optimizer_step(step)
        self._stepped = True
        return None

    def step(self) -> bool:
        """End the current iteration (call after ``optimizer.step()``, once per iteration).

        Re-applies the masks to weights and optimizer state and, on update steps, updates them;
        with ``auto_epochs``, runs the epoch and phase hooks at their boundaries; sets the dense
        weight-gradient flag for the next iteration. Returns whether the masks changed.
        """
        if self.optimizer is None:
            raise RuntimeError("Sparsifier.step: no optimizer bound (set_optimizer)")
        step, stepped = self._step, self._stepped
        self._stepped = False
        self.phase_ended = False
        changed = False
        if stepped:  # else the optimizer skipped the update: weights and masks are as they were
            self.method.after_optimizer_step(step, self.optimizer)
            changed = self.method.is_update_step(step)
            if changed and self.check_masks:
                _assert_masks_agree(self.model, step)
        self._step = step + 1
        if self.auto_epochs:
            self._epoch_hooks()
        self._set_dense_flags()
        return changed

    def is_ordinary(self, step: int | None = None) -> bool:
        """Whether iteration ``step`` (default: the next) is an ordinary one: no dense weight
        gradient, no mask update, not the last of an epoch (whose hooks may change masks). Its
        device work is then the same as every other ordinary iteration's between two mask
        changes, which a captured graph can replay (:class:`GraphedStep`)."""
        step = self._step if step is None else step
        return (
            not self.method.is_update_step(step)
            and not self.method.needs_dense_grad(step)
            and (step + 1) % self.method.steps_per_epoch != 0
        )

    def replayed_step(self) -> None:
        """End an ordinary iteration whose device work (the gradient hook, the optimizer step,
        the mask re-application) was replayed from a captured graph, so that neither
        ``optimizer.step()``'s pre-hook nor :meth:`step` ran: count it as :meth:`step` would."""
        if not self.is_ordinary():
            raise RuntimeError(
                f"Sparsifier.replayed_step: iteration {self._step} is not an ordinary one; "
                "run it eagerly (optimizer.step(), then step())"
            )
        self._stepped = False
        self.phase_ended = False
        self._step += 1
        self._set_dense_flags()

    def graphed(self, step_fn: Callable[..., Any], warmup: int = 1) -> GraphedStep:
        """``step_fn`` run as a captured graph between mask changes: see :class:`GraphedStep`."""
        return GraphedStep(self, step_fn, warmup)

    def on_epoch_end(self, phase: int, epoch_in_phase: int) -> None:
        """The method's epoch hook (``epoch_in_phase`` counts from 1)."""
        self.method.on_epoch_end(phase, epoch_in_phase)

    def on_phase_end(self, phase: int) -> None:
        """The method's phase hook (LTH: prune, rewind); the optimizer's state is zeroed off the
        new masks and :attr:`phase_ended` set. LTH's recipe restarts the optimizer and LR schedule
        here: build new ones and pass the optimizer to :meth:`set_optimizer`."""
        self.method.on_phase_end(phase)
        self._zero_off_masks()
        self.phase_ended = True

    def _epoch_hooks(self) -> None:
        """Run the epoch (and phase) hooks if the iteration just counted ended an epoch."""
        spe, start = self.method.steps_per_epoch, 0
        for p, ph in enumerate(self.phases):
            length = ph.epochs * spe
            done = self._step - start
            if 0 < done <= length:
                if done % spe == 0:
                    self.on_epoch_end(p, done // spe)
                    if done == length:
                        self.on_phase_end(p)
                return
            start += length

    def _set_dense_flags(self) -> None:
        dense = self.dense_grad
        for _, layer in self.method.layers():
            layer.dense_weight_grad = dense

    @torch.no_grad()
    def _zero_off_masks(self) -> None:
        for _, layer in self.method.layers():
            zero_off_mask(layer.weight, layer.mask, self.optimizer)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The iteration counter and the method's state (LTH: round and rewind weights).

        Masks are buffers of the model (in ``model.state_dict()``) and the optimizer's state is
        the optimizer's: save all three to resume exactly.
        """
        return {
            "version": STATE_VERSION,
            "next_step": self._step,
            "method": self.method.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the method's configuration must match this one's)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"Sparsifier.load_state_dict: state version {state.get('version')!r}, "
                f"expected {STATE_VERSION}"
            )
        self.method.load_state_dict(state["method"])
        self.seek(int(state["next_step"]))


def _check_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Every masked weight must be one of the optimizer's parameters."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [name for name, m in masked_layers(model) if id(m.weight) not in held]
    if missing:
        raise ValueError(
            f"the optimizer does not update the weights of masked layers {missing}; "
            "build it over model.parameters()"
        )


def _assert_masks_agree(model: nn.Module, step: int) -> None:
    # Imported here: ndsnn_triton.train imports this module (via the trainer).
    from ndsnn_triton.train.distributed import assert_masks_agree

    assert_masks_agree(model, step)


# ---------------------------------------------------------------------- graphed steps


class GraphedStep:
    """A sparse-training step run as a captured graph (a CUDA graph on CUDA) between mask changes.

    ``step_fn(*inputs)`` is one whole iteration as the eager loop runs it: zero the gradients,
    forward, backward, ``optimizer.step()``, ``sparsifier.step()``; it returns tensors (the loss,
    say). Calling the :class:`GraphedStep` runs the next iteration:

    * eagerly if it is not ordinary (:meth:`Sparsifier.is_ordinary`: a dense-gradient or
      mask-update iteration, or the last of an epoch), if its inputs differ in shape from the
      captured ones (a short last batch), or as one of ``warmup`` ordinary iterations after each
      start or mask change (kernel choices, compressed indices and optimizer state are made there,
      outside any capture);
    * else captured once, then replayed, with the sparsifier counting the replayed iterations.

    After a mask change the graph is dropped and captured again, as masks and indices change only
    there. What is captured must obey the rules of :mod:`ndsnn_triton.graphs`: a learning rate the
    host changes lives in a tensor (``SGD(lr=torch.tensor(0.1, device=...))``; LR schedulers update
    it in place), no host reads in the step, outputs overwritten by the next call (clone what you
    keep). A new optimizer (LTH's next round) needs :meth:`release`.
    """

    def __init__(self, sparsifier: Sparsifier, step_fn: Callable[..., Any], warmup: int = 1):
        check_positive_int(warmup, "GraphedStep: warmup")
        self.sparsifier = sparsifier
        self.step_fn = step_fn
        self.warmup = warmup
        self.graph: StepGraph | None = None
        self._eager_ordinary = 0  # ordinary iterations run eagerly since the last release
        self.captures = 0
        self.replays = 0

    def release(self) -> None:
        """Drop the captured graph; capture again after ``warmup`` eager ordinary iterations."""
        self.graph = None
        self._eager_ordinary = 0

    def __call__(self, *inputs: Tensor) -> Any:
        sparsifier = self.sparsifier
        ordinary = sparsifier.is_ordinary()
        if ordinary and self.graph is not None and self.graph.accepts(*inputs):
            out = self.graph(*inputs)
            sparsifier.replayed_step()
            self.replays += 1
            return out
        if not ordinary or self.graph is not None or self._eager_ordinary < self.warmup:
            out = self.step_fn(*inputs)
            if not ordinary or sparsifier.phase_ended:  # masks may have changed
                self.release()
            elif self.graph is None:
                self._eager_ordinary += 1
            return out
        device = next(t.device for t in inputs if isinstance(t, Tensor))
        self.graph = StepGraph(self.step_fn, device)
        self.captures += 1
        return self.graph(*inputs)  # captured, and run once: step_fn counted the iteration


# ---------------------------------------------------------------------- attach


def attach(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    method: str | SparseMethod = "ndsnn",
    sparsity: float | None = None,
    total_steps: int | None = None,
    *,
    steps_per_epoch: int | None = None,
    check_masks: bool = False,
    **method_kwargs: Any,
) -> Sparsifier:
    """Sparsify ``model`` with ``method`` for a run of ``total_steps`` optimizer steps.

    Args:
        model: a model with masked layers (``SpikeConv2d`` / ``SpikeLinear``), or its DDP wrapper.
        optimizer: the optimizer over its parameters.
        method: a name in :data:`~ndsnn_triton.sparse.METHODS` or a :class:`SparseMethod` built
            but not yet set up (``method_kwargs`` then are not allowed).
        sparsity: final fraction of pruned weights in [0, 1) (density ``1 − sparsity``); required
            with a name, optional with an instance (it must then match its density).
        total_steps: iterations the method's schedule spans (the CLI's ``epochs ×
            steps_per_epoch``). LTH: one round's budget; its whole run is
            :attr:`Sparsifier.total_steps` and its phases end at epoch boundaries.
        steps_per_epoch: iterations per epoch, for methods counting epochs (LTH's
            ``rewind_epoch``); must divide ``total_steps``. Default: one epoch of ``total_steps``.
        check_masks: see :class:`Sparsifier`.
        method_kwargs: the method's own arguments (``delta_t``, ``distribution``, ...).

    Sets the masks up (weights off them zeroed, and the optimizer's state) and returns the
    :class:`Sparsifier` to ``step()`` after every ``optimizer.step()``. A bad argument raises
    ``ValueError`` naming it, with the model and optimizer unchanged.
    """
    model = unwrap(model)
    if not masked_layers(model):
        raise ValueError(
            "attach: the model has no masked layers (SpikeConv2d / SpikeLinear) to sparsify"
        )
    _check_optimizer(optimizer, model)
    method = _method(method, sparsity, method_kwargs)
    spe, epochs = _epochs(total_steps, steps_per_epoch)
    method.phases(epochs)  # LTH checks its rewind epoch against the budget here
    _check_reachable(model, method)
    _setup_or_restore(method, model, spe, epochs)
    return Sparsifier(method, optimizer, check_masks=check_masks)


def _method(
    method: str | SparseMethod, sparsity: float | None, kwargs: dict[str, Any]
) -> SparseMethod:
    """The method to attach: built from a name, or the given instance (checked)."""
    if isinstance(method, SparseMethod):
        if kwargs:
            raise ValueError(f"attach: method arguments {sorted(kwargs)} given with a built method")
        if method.model is not None:
            raise ValueError("attach: the method is already set up on a model; build a new one")
        if sparsity is not None and not math.isclose(1.0 - _density(sparsity), method.density):
            raise ValueError(
                f"attach: sparsity={sparsity} disagrees with the method's density {method.density}"
            )
        return method
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            f"attach: unknown sparse-training method {method!r}; expected one of {sorted(METHODS)}"
        )
    if sparsity is None:
        raise ValueError("attach: give the target sparsity (sparsity=0.99 keeps 1 % of weights)")
    return build_method(method, density=_density(sparsity), **kwargs)


def _density(sparsity: float) -> float:
    if (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, int | float)
        or not 0.0 <= sparsity < 1.0
    ):
        raise ValueError(f"attach: sparsity must lie in [0, 1), got {sparsity!r}")
    return 1.0 - float(sparsity)


def _epochs(total_steps: int | None, steps_per_epoch: int | None) -> tuple[int, int]:
    """``(steps_per_epoch, epochs)`` of a budget of ``total_steps`` iterations."""
    if total_steps is None:
        raise ValueError("attach: give total_steps, the iterations the schedule spans")
    total = check_positive_int(total_steps, "attach: total_steps")
    if steps_per_epoch is None:
        return total, 1
    spe = check_positive_int(steps_per_epoch, "attach: steps_per_epoch")
    if total % spe:
        raise ValueError(
            f"attach: steps_per_epoch={spe} does not divide total_steps={total} (whole epochs)"
        )
    return spe, total // spe


def _check_reachable(model: nn.Module, method: SparseMethod) -> None:
    """The per-layer floors (``min_kept_per_output``) must fit in the density's budget."""
    dense = boundary_layers(model, method.dense_first, method.dense_last)
    shapes = [(name, tuple(m.weight.shape)) for name, m in masked_layers(model)]
    sizes = sum(math.prod(shape) for name, shape in shapes if name not in dense)
    if method.density >= 1.0:
        return
    if not sizes:
        raise ValueError("attach: every masked layer is kept dense; nothing can be pruned")
    floor = sum(layer_floors(shapes, method.min_kept_per_output, dense).values())
    if floor > method.density * sizes:
        raise ValueError(
            f"attach: sparsity {1 - method.density:g} is unreachable: the per-layer floors "
            f"(min_kept_per_output={method.min_kept_per_output:g} weights per output unit) keep "
            f"{floor} of {sizes} prunable weights, sparsity at most {1 - floor / sizes:.6g}; "
            "lower the sparsity or min_kept_per_output"
        )


def _setup_or_restore(method: SparseMethod, model: nn.Module, spe: int, epochs: int) -> None:
    """``method.setup``; if it fails, the masked layers' weights and masks are put back."""
    saved = {name: (m.weight.detach().clone(), m.mask.clone()) for name, m in masked_layers(model)}
    try:
        method.setup(model, spe, epochs)
    except BaseException:
        with torch.no_grad():
            for name, m in masked_layers(model):
                m.weight.copy_(saved[name][0])
                m.mask.copy_(saved[name][1])
        method.model = None
        raise


__all__ = ["STATE_VERSION", "Sparsifier", "attach", "unwrap"]
