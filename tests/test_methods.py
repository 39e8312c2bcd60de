"""Sparse-training methods: schedules against closed forms and against what training does."""

import contextlib
import json
import math

import pytest
import torch

import ndsnn_triton.ops as ops_module
from ndsnn_triton.models import small_snn
from ndsnn_triton.nn import (
    SpikeLinear,
    dense_weight_grads,
    masked_layers,
    reset_net,
    temporal_cross_entropy,
)
from ndsnn_triton.sparse import build_method, cosine_decay, cubic_sparsity, get_masks
from ndsnn_triton.sparse.methods import LTH, NDSNN, drop_and_grow
from ndsnn_triton.train import TrainConfig, Trainer, load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _train(method, digits, tmp_path, epochs=3, **cfg):
    torch.manual_seed(0)
    model = small_snn(10, T=2, in_channels=1, image_size=8)
    config = TrainConfig(epochs=epochs, batch_size=128, lr=0.1, progress=False, **cfg)
    trainer = Trainer(model, method, digits, config, tmp_path)
    return trainer, trainer.fit()


def _log(tmp_path):
    return [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- closed forms


def test_cubic_and_cosine_closed_forms():
    # θ_t = θ_f + (θ_i − θ_f)(1 − (t − t0)/(t_end − t0))^3 at the midpoint: 0.9 − 0.9·0.125
    assert cubic_sparsity(50, 0.0, 0.9, 0, 100) == pytest.approx(0.7875)
    assert cubic_sparsity(-5, 0.0, 0.9, 0, 100) == 0.0
    assert cubic_sparsity(150, 0.0, 0.9, 0, 100) == pytest.approx(0.9)
    assert cubic_sparsity(30, 0.5, 0.99, 10, 90) == pytest.approx(
        0.99 + (0.5 - 0.99) * (1 - 20 / 80) ** 3
    )
    # ζ_t = end + (start − end)(1 + cos(π t / T))/2
    assert cosine_decay(0, 0.5, 0.005, 100) == pytest.approx(0.5)
    assert cosine_decay(25, 0.5, 0.005, 100) == pytest.approx(
        0.005 + 0.495 * (1 + math.cos(math.pi / 4)) / 2
    )
    assert cosine_decay(100, 0.5, 0.005, 100) == pytest.approx(0.005)
    assert cosine_decay(500, 0.3, 0.0, 100) == 0.0


def test_ndsnn_targets_follow_the_cubic_formula():
    method = NDSNN(density=0.02, delta_t=10, t_end_fraction=0.8, d_init=0.5)
    method.setup(small_snn(), steps_per_epoch=50, epochs=4)  # 200 iterations, t_end = 160
    assert method.t_end == 160
    updates = method.update_steps()
    assert updates == list(range(10, 200, 10))
    for t in updates:
        theta = 0.98 + (0.5 - 0.98) * (1 - min(t, 160) / 160) ** 3
        assert method.target_density(t) == pytest.approx(1 - theta)
    assert method.target_density(160) == pytest.approx(0.02)
    assert method.zeta(0) == pytest.approx(0.5) and method.zeta(200) == pytest.approx(0.005)


def _first_iteration_at(sched, density):
    start = 0
    for seg in sched.segments:
        if sched.overall_density(seg.densities) == pytest.approx(density, abs=1e-12):
            return start
        start += seg.steps
    return None


def test_ndsnn_updates_only_on_the_delta_t_grid():
    """Defaults of a 300-epoch CIFAR run (391 iterations/epoch, ΔT = 1000, t_end at 75 % =
    iteration 87,975): no extra update at t_end; the update at 88,000 lands on d_f."""
    method = NDSNN(density=0.01, distribution="uniform")
    method.setup(small_snn(), steps_per_epoch=391, epochs=300)
    assert method.t_end == 87_975
    updates = method.update_steps()
    assert updates == list(range(1000, 117_300, 1000))
    assert [s for s in range(117_300) if method.is_update_step(s)] == updates
    assert method.target_density(87_000) > 0.01
    assert method.target_density(88_000) == pytest.approx(0.01, abs=1e-15)
    sched = method.schedule()
    assert sched.dense_grad_steps == len(updates)
    assert _first_iteration_at(sched, 0.01) == 88_001  # masks change after the update step


def test_ndsnn_decrease_ends_at_the_last_update_when_t_end_is_past_it():
    method = NDSNN(density=0.01, distribution="uniform", t_end_fraction=1.0)
    method.setup(small_snn(), steps_per_epoch=391, epochs=300)
    assert method.last_update_step == 117_000 and method.t_end == 117_000
    assert method.target_density(117_000) == pytest.approx(0.01, abs=1e-15)
    assert _first_iteration_at(method.schedule(), 0.01) == 117_001
    short = NDSNN(density=0.1, delta_t=1000)  # 20 iterations: the decrease lasts 15 of them
    short.setup(small_snn(), steps_per_epoch=10, epochs=2)
    assert short.update_interval == 15 and short.update_steps() == [15] == [short.t_end]
    assert short.target_density(15) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no mask update falls inside the run"):
        NDSNN(density=0.1, t0_fraction=1.0, t_end_fraction=1.0).setup(
            small_snn(), steps_per_epoch=10, epochs=2
        )


def test_lth_round_densities_and_counts():
    assert LTH(density=0.01).rounds == 16
    assert LTH(density=0.1).rounds == 8
    assert LTH(density=0.05).rounds == 11
    d = LTH(density=0.01).round_densities()
    assert d[:16] == pytest.approx([0.75**k for k in range(16)])
    assert d[-1] == 0.01
    assert [p.epochs for p in LTH(density=0.5625, rewind_epoch=20).phases(300)] == [300, 280, 280]
    with pytest.raises(ValueError, match="rewind_epoch"):
        LTH(density=0.5, rewind_epoch=5).phases(5)


# ----------------------------------------------------------------------------- drop and grow


def _layer_with(weights, mask):
    layer = SpikeLinear(weights.shape[1], weights.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weights)
    layer.set_mask(mask)
    return layer


def test_rigl_growth_takes_the_largest_gradients_of_inactive_positions():
    w = torch.tensor([[0.9, -0.1, 0.5, 0.0], [0.3, 0.0, -0.7, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, True, False]])
    grads = torch.tensor(
        [[9.0, 0.0, 0.0, 0.2], [0.0, 0.8, 0.0, 0.5]]
    )  # 9.0 sits on an active weight
    layer = _layer_with(w, mask)
    drop_and_grow(layer, 2, grads, torch.Generator().manual_seed(0))
    # dropped: |−0.1| and |0.3| (smallest active); grown: 0.8 at (1,1) and 0.5 at (1,3)
    expected = torch.tensor([[True, False, True, False], [False, True, True, True]])
    assert torch.equal(layer.mask, expected)
    assert layer.weight[1, 1] == 0 and layer.weight[1, 3] == 0


def test_set_growth_is_random_over_inactive_positions():
    torch.manual_seed(0)
    w = torch.randn(6, 10)
    mask = torch.zeros(6, 10, dtype=torch.bool)
    mask[:, :3] = True
    grads = torch.zeros(6, 10)
    grads[0, 9] = 100.0  # a random grower must not prefer it
    hits = torch.zeros(6, 10)
    for seed in range(200):
        layer = _layer_with(w, mask)
        drop_and_grow(layer, 3, None, torch.Generator().manual_seed(seed))
        grown = layer.mask & ~mask
        assert int(grown.sum()) <= 3 and int(layer.mask.sum()) == 18
        hits += grown
    assert (hits[:, 3:] > 0).all()  # every inactive position is drawn at some point
    assert hits[0, 9] < 0.1 * 200  # no preference for the large gradient (expected ≈ 3/43 of draws)


UPDATE_CASES = [
    ("ndsnn", dict(density=0.3, delta_t=2, distribution="global")),  # starts dense
    ("ndsnn", dict(density=0.3, delta_t=2, distribution="erk", d_init=0.5)),
    ("ndsnn", dict(density=0.3, delta_t=2, distribution="uniform", d_init=0.5)),
    ("rigl", dict(density=0.3, delta_t=2, zeta=0.5, distribution="uniform")),
    ("set", dict(density=0.3, delta_t=2, zeta=0.5)),
    ("static", dict(density=0.3)),
    ("dense", {}),
]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize(("name", "kwargs"), UPDATE_CASES)
def test_newly_active_connections_start_with_zero_weight_and_optimizer_state(
    digits, name, kwargs, optimizer
):
    """Across a mask update, every connection active after it that was inactive at any moment of
    it (before it, or pruned/dropped inside it and grown back) has weight 0 and zero optimizer
    state; pruned ones too. "Inactive at any moment" is observed by a spy on ``set_mask``."""
    torch.manual_seed(0)
    model = small_snn(10, T=2)
    method = build_method(name, **kwargs)
    method.setup(model, steps_per_epoch=10, epochs=1)
    params = list(model.parameters())
    opt = (
        torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
        if optimizer == "sgd"
        else torch.optim.Adam(params, lr=1e-2)
    )
    ever_off: dict[str, torch.Tensor] = {}
    for layer_name, layer in masked_layers(model):
        original = layer.set_mask

        def spy(mask, _name=layer_name, _original=original):
            ever_off[_name] = ever_off.get(_name, torch.zeros_like(mask)) | ~mask
            _original(mask)

        layer.set_mask = spy
    x, y = digits.train.images[:32].float() / 255, digits.train.labels[:32]
    regrown_after_prune = 0
    for step in range(5):
        ever_off.clear()
        before = {n: ~m for n, m in get_masks(model).items()}
        with (
            dense_weight_grads(model) if method.needs_dense_grad(step) else contextlib.nullcontext()
        ):
            loss = temporal_cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step(step)
        opt.step()
        method.after_optimizer_step(step, opt)
        reset_net(model)
        for layer_name, layer in masked_layers(model):
            off = before[layer_name] | ever_off.get(layer_name, torch.zeros_like(layer.mask))
            fresh = layer.mask & off
            regrown_after_prune += int((fresh & ~before[layer_name]).sum())
            state = [v for v in opt.state[layer.weight].values() if v.shape == layer.weight.shape]
            assert len(state) == (1 if optimizer == "sgd" else 2)
            for where, what in ((fresh, "newly active"), (~layer.mask, "pruned")):
                assert (layer.weight[where] == 0).all(), (step, layer_name, what, "weight")
                for buf in state:
                    assert (buf[where] == 0).all(), (step, layer_name, what, "optimizer state")
    if name == "ndsnn":
        # the case the test is for: active before the update, pruned inside it, grown back
        assert regrown_after_prune > 0
    else:
        assert regrown_after_prune == 0


def test_a_connection_dropped_and_regrown_in_one_update_starts_from_zero():
    """RigL's rule: a weight dropped and grown back by the same update is a new connection."""
    model = torch.nn.Sequential(SpikeLinear(2, 2, bias=False, spike_input=False))
    method = build_method("rigl", density=0.75, delta_t=1, zeta=0.5, distribution="uniform")
    method.setup(model, steps_per_epoch=10, epochs=1)
    layer = model[0]
    layer.set_mask(torch.tensor([[True, True], [True, False]]))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 0.9], [0.5, 0.0]]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.state[layer.weight]["momentum_buffer"] = torch.full((2, 2), 0.3)
    # |dL/dW| largest at (0, 0): the smallest weight, dropped first, then regrown
    method._grow_scores = {"0": torch.tensor([[9.0, 0.0], [0.0, 1.0]])}
    method.after_optimizer_step(1, opt)
    assert layer.mask.tolist() == [[True, True], [True, False]]
    assert int(method.zeta(1) * 3) == 1  # of the 3 active weights one is dropped, one grown
    assert layer.weight.tolist() == [[0.0, pytest.approx(0.9)], [0.5, 0.0]]
    momentum = opt.state[layer.weight]["momentum_buffer"]
    assert momentum.tolist() == [[0.0, pytest.approx(0.3)], [pytest.approx(0.3), 0.0]]


def test_lth_rounds_only_prune_and_rewind(digits, tmp_path):
    """An LTH round never makes a connection active: each mask lies inside the previous one."""
    method = build_method("lth", density=0.5625, rewind_epoch=1)
    masks = []
    original = method.on_phase_end

    def recording(phase):
        before = get_masks(method.model)
        original(phase)
        masks.append((before, get_masks(method.model)))

    method.on_phase_end = recording
    _train(method, digits, tmp_path, epochs=2)
    assert len(masks) == 3
    for before, after in masks:
        assert all(not (after[n] & ~before[n]).any() for n in before)


# ----------------------------------------------------------------------------- schedule = training


def test_ndsnn_count_never_rises_and_updates_drop_more_than_they_grow(digits, tmp_path):
    method = NDSNN(density=0.1, delta_t=3, t_end_fraction=0.6, distribution="global", zeta=0.3)
    events = []
    original = method.update_masks

    def recording(step):
        before = get_masks(method.model)
        original(step)
        after = get_masks(method.model)
        dropped = sum(int((before[n] & ~after[n]).sum()) for n in before)
        grown = sum(int((after[n] & ~before[n]).sum()) for n in before)
        events.append(
            (
                step,
                sum(int(m.sum()) for m in before.values()),
                sum(int(m.sum()) for m in after.values()),
                dropped,
                grown,
            )
        )

    method.update_masks = recording
    _train(method, digits, tmp_path, epochs=3)
    total = sum(m.mask.numel() for _, m in masked_layers(method.model))
    assert len(events) == len(method.update_steps()) > 5
    for step, n_before, n_after, dropped, grown in events:
        assert n_after <= n_before
        assert n_after == n_before - dropped + grown
        if step <= method.t_end:  # the cubic target falls at every update until t_end
            assert grown < dropped, (step, dropped, grown)
    assert any(
        e[0] > method.t_end and e[3] == e[4] > 0 for e in events
    )  # fixed-density drop-and-grow after t_end
    assert events[-1][2] / total == pytest.approx(0.1, abs=1 / total)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("ndsnn", dict(density=0.2, delta_t=4, distribution="erk", t_end_fraction=0.7)),
        ("ndsnn", dict(density=0.2, delta_t=4, distribution="global", d_init=0.6)),
        ("rigl", dict(density=0.2, delta_t=5)),
        ("set", dict(density=0.2, delta_t=5, distribution="uniform")),
        ("static", dict(density=0.3)),
        ("lth", dict(density=0.5625, rewind_epoch=1, distribution="erk")),
        ("dense", dict()),
    ],
)
def test_schedule_is_what_training_does(name, kwargs, digits, tmp_path, monkeypatch):
    dense_steps = []
    real = ops_module.masked_conv2d_weight_grad_ref
    trainer_step = {"now": None}

    def spy(grad_out, x, mask, stride, padding, dilation, groups, dense, *rest):
        if dense:
            dense_steps.append(trainer_step["now"])
        return real(grad_out, x, mask, stride, padding, dilation, groups, dense, *rest)

    monkeypatch.setattr(ops_module, "masked_conv2d_weight_grad_ref", spy)
    method = build_method(name, **kwargs)
    # The trainer asks needs_dense_grad(step) before each forward: that tells the spy the step.
    original_needs = method.needs_dense_grad

    def needs(step):
        trainer_step["now"] = step
        return original_needs(step)

    method.needs_dense_grad = needs
    _train(method, digits, tmp_path, epochs=2)
    # the planned schedule was written before training; compare every iteration with the log
    schedule = json.loads((tmp_path / "schedule.json").read_text())
    names = schedule["layer_names"]
    planned = []
    for seg in schedule["segments"]:
        planned += [(seg["densities"], seg["dense_grad"])] * seg["steps"]
    log = _log(tmp_path)
    assert len(planned) == log[-1]["step"] + 1
    current = None
    logged = {r["step"]: r for r in log}
    sizes = schedule["layer_sizes"]
    for step, (densities, dense_grad) in enumerate(planned):
        if step in logged:
            current = logged[step]
            assert current["dense_grad"] == dense_grad, step
        actual = [current["densities"][n] for n in names]
        if schedule["exact"]:
            assert actual == pytest.approx(densities, abs=1.5 / min(sizes)), step
        else:
            overall = sum(d * s for d, s in zip(densities, sizes, strict=True)) / sum(sizes)
            assert current["density"] == pytest.approx(overall, abs=2e-4), step
    planned_dense = sorted(s for s, (_, flag) in enumerate(planned) if flag)
    assert sorted(set(dense_steps)) == planned_dense  # dense weight gradients on update steps only


def test_lth_rewinds_surviving_weights_exactly(digits, tmp_path):
    method = LTH(density=0.5625, rewind_epoch=1, distribution="global")
    snapshots = []
    original = method.on_phase_end

    def recording(phase):
        original(phase)
        if phase < method.rounds:
            snapshots.append((phase, {k: v.clone() for k, v in method.model.state_dict().items()}))

    method.on_phase_end = recording
    _train(method, digits, tmp_path, epochs=2)
    assert [p for p, _ in snapshots] == [0, 1]
    saved = method.rewind_state()
    layer_names = [name for name, _ in masked_layers(method.model)]
    for phase, state in snapshots:
        kept = sum(int(state[f"{n}.mask"].sum()) for n in layer_names)
        total = sum(state[f"{n}.mask"].numel() for n in layer_names)
        assert kept / total == pytest.approx(method.round_densities()[phase + 1], abs=1 / total)
        for key, value in saved.items():
            layer = key.removesuffix(".weight")
            if layer in layer_names:  # surviving weights rewound, pruned ones zero
                torch.testing.assert_close(
                    state[key], value * state[f"{layer}.mask"], rtol=0, atol=0
                )
            else:  # everything else (BN, biases, BN statistics) rewound as saved
                torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    total = sum(layer.mask.numel() for _, layer in masked_layers(method.model))
    kept = sum(int(layer.mask.sum()) for _, layer in masked_layers(method.model))
    assert kept / total == pytest.approx(0.5625, abs=1 / total)


def test_method_arguments_are_checked():
    with pytest.raises(ValueError, match="unknown sparse-training method"):
        build_method("magic")
    with pytest.raises(ValueError, match="density"):
        build_method("rigl", density=0.0)
    with pytest.raises(ValueError, match="d_init"):
        build_method("ndsnn", density=0.5, d_init=0.2)
    with pytest.raises(ValueError, match="distribution"):
        build_method("set", distribution="random")
    with pytest.raises(ValueError, match="delta_t"):
        build_method("rigl", delta_t=0)
    with pytest.raises(ValueError, match="density must be 1"):
        build_method("dense", density=0.5)
