"""`attach()` / `Sparsifier`: sparse training from a plain PyTorch loop.

Each method reaches its scheduled density with pruned weights and momentum exactly zero; growth
steps see dense gradients; the loop is bit-identical to the CLI trainer (one implementation); AMP
with a GradScaler that skips a step; checkpoints round-trip; bad inputs change nothing.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ndsnn_triton.models import build_model, small_snn
from ndsnn_triton.nn import masked_layers, reset_net, temporal_cross_entropy
from ndsnn_triton.sparse import Sparsifier, attach, build_method, densities_of, get_masks
from ndsnn_triton.train import BatchLoader, TrainConfig, Trainer, load_dataset

STEPS = 12  # the run's budget; ΔT = 3
METHODS = {
    "ndsnn": {"sparsity": 0.99, "delta_t": 3},
    "rigl": {"sparsity": 0.9, "delta_t": 3},
    "set": {"sparsity": 0.9, "delta_t": 3},
    "static": {"sparsity": 0.9},
    # two pruning rounds of 0.25 (density 0.5625), rewinding to the end of epoch 1 of round 0
    "lth": {"sparsity": 0.4375, "steps_per_epoch": 4, "rewind_epoch": 1, "rounds": 2},
}


def _model() -> nn.Module:
    return build_model("small", num_classes=10, T=2, in_channels=1, image_size=8)


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed tiny batch per iteration (independent of the global RNG)."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)


def _sgd(model: nn.Module, **kw) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, **kw)


def _iteration(model, optimizer, sparsifier, step, scaler=None, amp=False) -> bool:
    """One plain-loop iteration; returns whether the masks changed."""
    x, y = _batch(step)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = temporal_cross_entropy(model(x), y)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    reset_net(model)
    return sparsifier.step()


def _run(method: str, steps: int | None = None):
    torch.manual_seed(0)
    model = _model()
    optimizer = _sgd(model)
    kw = dict(METHODS[method])
    sparsifier = attach(model, optimizer, method, total_steps=STEPS, **kw)
    for step in range(sparsifier.total_steps if steps is None else steps):
        _iteration(model, optimizer, sparsifier, step)
        if sparsifier.phase_ended and not sparsifier.finished:  # LTH: a fresh optimizer per round
            optimizer = _sgd(model)
            sparsifier.set_optimizer(optimizer)
    return model, optimizer, sparsifier


def _overall(schedule, densities) -> float:
    return schedule.overall_density([densities[n] for n in schedule.layer_names])


# ----------------------------------------------------------------------------- the plain loop


@pytest.mark.parametrize("method", list(METHODS))
def test_a_plain_loop_reaches_the_scheduled_density(method):
    model, optimizer, sparsifier = _run(method)
    schedule = sparsifier.method.schedule()
    final = _overall(schedule, densities_of(model))
    planned = schedule.overall_density(schedule.segments[-1].densities)
    assert final == pytest.approx(planned, abs=2e-3)
    assert sparsifier.finished and sparsifier.phase == len(sparsifier.phases)
    if method == "ndsnn":  # 99 % sparsity: 1 % kept (the floors bind only within layers)
        assert final == pytest.approx(0.01, abs=1e-3)
    for _, layer in masked_layers(model):
        assert not layer.weight[~layer.mask].any()  # pruned weights exactly zero
        buffer = optimizer.state[layer.weight]["momentum_buffer"]
        assert not buffer[~layer.mask].any()  # and their momentum


def test_lth_phases_end_at_round_boundaries():
    torch.manual_seed(0)
    model = _model()
    optimizer = _sgd(model)
    sparsifier = attach(model, optimizer, "lth", total_steps=STEPS, **METHODS["lth"])
    assert [p.epochs for p in sparsifier.phases] == [3, 2, 2] and sparsifier.total_steps == 28
    ends = []
    for step in range(sparsifier.total_steps):
        _iteration(model, optimizer, sparsifier, step)
        if sparsifier.phase_ended:  # also after the last round
            ends.append(step)
            optimizer = _sgd(model)
            sparsifier.set_optimizer(optimizer)
    assert ends == [11, 19, 27]


def test_growth_steps_compute_dense_gradients():
    torch.manual_seed(0)
    model = _model()
    optimizer = _sgd(model)
    sparsifier = attach(model, optimizer, "rigl", sparsity=0.9, total_steps=STEPS, delta_t=3)
    layer = dict(masked_layers(model))["features.5"]
    grown_total = 0
    for step in range(STEPS):
        x, y = _batch(step)
        optimizer.zero_grad(set_to_none=True)
        temporal_cross_entropy(model(x), y).backward()
        grad, before = layer.weight.grad.clone(), layer.mask.clone()
        optimizer.step()
        reset_net(model)
        changed = sparsifier.step()
        dense = sparsifier.method.needs_dense_grad(step)
        assert changed == sparsifier.method.is_update_step(step)
        assert bool(grad[~before].any()) == dense, step  # dense only on growth steps
        grown = layer.mask & ~before
        if changed:
            assert (grad[grown] != 0).all()  # RigL grew where the dense gradient was non-zero
            grown_total += int(grown.sum())
    assert grown_total > 0


def test_the_plain_loop_is_bit_identical_to_the_cli_trainer(tmp_path):
    """Same data, seed and optimizer: the Trainer and attach() run one implementation."""
    data = load_dataset("digits")
    kw = {"density": 0.5625, "rewind_epoch": 1, "rounds": 2}
    config = TrainConfig(epochs=2, batch_size=256, lr=0.1, progress=False)
    torch.manual_seed(0)
    trainer = Trainer(
        small_snn(10, T=2, in_channels=1, image_size=8),
        build_method("lth", **kw),
        data,
        config,
        tmp_path,
    )
    trainer.fit()

    torch.manual_seed(0)
    model = small_snn(10, T=2, in_channels=1, image_size=8)
    loader = BatchLoader(data, "train", config.batch_size, True, config.seed, 0)
    spe = len(loader)
    torch.manual_seed(config.seed)  # as Trainer.fit, before the method's setup
    optimizer, scheduler = _trainer_sgd(model, config, 2 * spe)
    sparsifier = attach(
        model,
        optimizer,
        "lth",
        sparsity=1 - kw["density"],
        total_steps=2 * spe,
        steps_per_epoch=spe,
        rewind_epoch=1,
        rounds=2,
    )
    for data_epoch in range(sum(p.epochs for p in sparsifier.phases)):
        for x, y in loader.epoch(data_epoch):
            model.train()
            optimizer.zero_grad(set_to_none=True)
            temporal_cross_entropy(model(x), y).backward()
            optimizer.step()
            scheduler.step()
            reset_net(model)
            sparsifier.step()
            if sparsifier.phase_ended and not sparsifier.finished:
                optimizer, scheduler = _trainer_sgd(model, config, 1 * spe)
                sparsifier.set_optimizer(optimizer)
    assert sparsifier.finished
    for name, layer in masked_layers(model):
        assert torch.equal(layer.mask, get_masks(trainer.model)[name]), name
    for (name, p), q in zip(model.named_parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(p, q), name


def _trainer_sgd(model, config, phase_steps):
    """The trainer's optimizer and LR schedule (fused SGD, cosine over the phase)."""
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        fused=True,
    )
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=phase_steps)


# ----------------------------------------------------------------------------- AMP


@pytest.mark.parametrize("fused", [False, True])
def test_amp_with_a_grad_scaler_that_skips_an_update_step(fused):
    torch.manual_seed(0)
    model = _model()
    optimizer = _sgd(model, fused=fused)
    sparsifier = attach(model, optimizer, "ndsnn", sparsity=0.9, total_steps=STEPS, delta_t=3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    poisoned = {"on": False}

    def poison(module, args, output):
        return output * float("inf") if poisoned["on"] else output

    model.classifier.register_forward_hook(poison)
    for step in range(STEPS):
        poisoned["on"] = step == 6  # an update step (ΔT = 3)
        masks = get_masks(model)
        weights = [p.detach().clone() for p in model.parameters()]
        changed = _iteration(model, optimizer, sparsifier, step, scaler, amp=True)
        if step == 6:
            assert sparsifier.method.is_update_step(6) and not changed
            assert all(torch.equal(m, get_masks(model)[n]) for n, m in masks.items())
            assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))
        else:
            assert changed == sparsifier.method.is_update_step(step)
    assert sparsifier.next_step == STEPS
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for _, layer in masked_layers(model):
        assert not layer.weight[~layer.mask].any()


# ----------------------------------------------------------------------------- checkpoints


def test_state_dict_round_trip_continues_exactly():
    model, optimizer, sparsifier = _run("ndsnn", steps=5)
    saved = copy.deepcopy((model.state_dict(), optimizer.state_dict(), sparsifier.state_dict()))
    for step in range(5, STEPS):
        _iteration(model, optimizer, sparsifier, step)

    torch.manual_seed(123)  # a different initialisation: everything comes from the checkpoint
    model2 = _model()
    optimizer2 = _sgd(model2)
    sparsifier2 = attach(model2, optimizer2, "ndsnn", total_steps=STEPS, **METHODS["ndsnn"])
    model2.load_state_dict(saved[0])
    optimizer2.load_state_dict(saved[1])
    sparsifier2.load_state_dict(saved[2])
    assert sparsifier2.next_step == 5
    for step in range(5, STEPS):
        _iteration(model2, optimizer2, sparsifier2, step)
    for name, layer in masked_layers(model):
        assert torch.equal(layer.mask, get_masks(model2)[name]), name
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_state_of_another_configuration_is_refused():
    _, _, sparsifier = _run("ndsnn", steps=1)
    model = _model()
    other = attach(model, _sgd(model), "ndsnn", sparsity=0.9, total_steps=STEPS)
    with pytest.raises(ValueError, match="checkpoint was written by method"):
        other.load_state_dict(sparsifier.state_dict())


# ----------------------------------------------------------------------------- wiring


def test_a_wrapped_model_and_a_built_method_are_accepted():
    model = _model()
    optimizer = _sgd(model)
    method = build_method("static", density=0.25)
    sparsifier = attach(nn.DataParallel(model), optimizer, method, total_steps=4)
    assert sparsifier.model is model and sparsifier.method is method
    assert _overall(method.schedule(), densities_of(model)) == pytest.approx(0.25, abs=1e-3)


def test_dense_gradient_flags_follow_the_next_step_and_remove_clears_them():
    model = _model()
    optimizer = _sgd(model)
    sparsifier = attach(model, optimizer, "rigl", sparsity=0.9, total_steps=STEPS, delta_t=3)
    flags = []
    for step in range(STEPS):
        flags.append(all(m.dense_weight_grad for _, m in masked_layers(model)))
        _iteration(model, optimizer, sparsifier, step)
    assert flags == [sparsifier.method.needs_dense_grad(s) for s in range(STEPS)]
    assert sum(flags) == 2  # steps 3 and 6 (updates stop at 75 %)
    sparsifier.seek(3)
    assert all(m.dense_weight_grad for _, m in masked_layers(model))
    sparsifier.remove()
    assert not any(m.dense_weight_grad for _, m in masked_layers(model))
    optimizer.step()  # no hook any more


def test_two_optimizer_steps_in_one_iteration_are_refused():
    model = _model()
    optimizer = _sgd(model)
    attach(model, optimizer, "static", sparsity=0.5, total_steps=4)
    optimizer.step()
    with pytest.raises(RuntimeError, match=r"ran twice in one iteration"):
        optimizer.step()


def test_a_sparsifier_needs_a_set_up_method():
    with pytest.raises(ValueError, match="set the method up first"):
        Sparsifier(build_method("static", density=0.5))


# ----------------------------------------------------------------------------- bad inputs


def _plain_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3))


BAD = [
    ("no masked layers", lambda m, o: attach(_plain_mlp(), o, "rigl", 0.9, 10), "no masked layers"),
    ("sparsity 1", lambda m, o: attach(m, o, "rigl", 1.0, 10), r"sparsity must lie in \[0, 1\)"),
    ("sparsity < 0", lambda m, o: attach(m, o, "rigl", -0.1, 10), r"sparsity must lie in"),
    ("below the floors", lambda m, o: attach(m, o, "ndsnn", 0.999, 10), "unreachable"),
    (
        "floor option",
        lambda m, o: attach(m, o, "set", 0.9, 10, min_kept_per_output=100),
        "min_kept_per_output=100",
    ),
    ("unknown method", lambda m, o: attach(m, o, "magic", 0.9, 10), "unknown sparse-training"),
    ("no total_steps", lambda m, o: attach(m, o, "rigl", 0.9), "total_steps"),
    ("no update in the run", lambda m, o: attach(m, o, "ndsnn", 0.9, 1), "no mask update"),
    ("lth rewind", lambda m, o: attach(m, o, "lth", 0.9, 10), "rewind_epoch=20"),
    (
        "foreign optimizer",
        lambda m, o: attach(m, _sgd(_model()), "rigl", 0.9, 10),
        "does not update the weights",
    ),
]


@pytest.mark.parametrize(("action", "match"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_input_changes_nothing(action, match):
    model = _model()
    optimizer = _sgd(model)
    x, y = _batch(0)
    temporal_cross_entropy(model(x), y).backward()
    optimizer.step()  # momentum state to protect
    reset_net(model)
    before = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
    hooks = len(optimizer._optimizer_step_pre_hooks)
    with pytest.raises(ValueError, match=match):
        action(model, optimizer)
    after = (model.state_dict(), optimizer.state_dict())
    for key, value in before[0].items():
        assert torch.equal(value, after[0][key]), key
    for key, state in before[1]["state"].items():
        assert torch.equal(state["momentum_buffer"], after[1]["state"][key]["momentum_buffer"])
    assert len(optimizer._optimizer_step_pre_hooks) == hooks
    assert not any(m.dense_weight_grad for _, m in masked_layers(model))
