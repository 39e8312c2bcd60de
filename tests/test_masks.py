"""Layer-wise densities (uniform, ERK, global magnitude) and mask utilities."""

import math

import pytest
import torch

from ndsnn_triton.models import resnet19, vgg16
from ndsnn_triton.nn import SpikeConv2d, SpikeLinear, masked_layers
from ndsnn_triton.sparse import (
    boundary_layers,
    compare_masks,
    erk_densities,
    get_masks,
    global_magnitude_masks,
    load_masks,
    model_density,
    random_masks,
    save_masks,
    uniform_densities,
)
from ndsnn_triton.sparse.distribution import global_magnitude_split, layer_floors
from ndsnn_triton.sparse.masks import layer_shapes, topk_mask


def _erk_by_bisection(shapes, density, dense=()):
    """Independent ERK: water-filling Σ n_l·min(1, ε·s_l) = d·Σ n_l, solved by bisection on ε."""
    sparse = [(n, s) for n, s in shapes if n not in dense]
    sizes = [math.prod(s) for _, s in sparse]
    raw = [sum(s) / math.prod(s) for _, s in sparse]
    budget = density * sum(sizes)
    lo, hi = 0.0, 1e12
    for _ in range(300):
        mid = (lo + hi) / 2
        if sum(n * min(1.0, mid * r) for n, r in zip(sizes, raw, strict=True)) < budget:
            lo = mid
        else:
            hi = mid
    out = {n: min(1.0, lo * r) for (n, _), r in zip(sparse, raw, strict=True)}
    return {n: out.get(n, 1.0) for n, _ in shapes}


@pytest.mark.parametrize("density", [0.5, 0.1, 0.05, 0.01])
@pytest.mark.parametrize("make", [vgg16, resnet19])
def test_erk_matches_independent_water_filling(make, density):
    shapes = layer_shapes(make())
    got = erk_densities(shapes, density)
    expected = _erk_by_bisection(shapes, density)
    for name, _ in shapes:
        assert got[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12)
    sizes = {n: math.prod(s) for n, s in shapes}
    assert sum(got[n] * sizes[n] for n in sizes) == pytest.approx(
        density * sum(sizes.values()), rel=1e-12
    )
    assert all(0 < p <= 1 for p in got.values())


def test_erk_makes_small_layers_denser_and_saturates():
    shapes = layer_shapes(vgg16())
    got = erk_densities(shapes, 0.5)
    assert got["encoder.conv"] == 1.0  # 3x64x3x3: ERK score above 1 at 50 %
    assert got["features.38"] < got["features.1"]  # 512x512x3x3 sparser than 64x64x3x3
    # proportionality among unsaturated layers: p ∝ sum(dims)/prod(dims)
    a, b = dict(shapes)["features.22"], dict(shapes)["features.38"]
    assert got["features.22"] < 1 and got["features.38"] < 1
    ratio = (sum(a) / math.prod(a)) / (sum(b) / math.prod(b))
    assert got["features.22"] / got["features.38"] == pytest.approx(ratio)


def test_dense_layers_are_outside_the_budget():
    model = vgg16()
    shapes = layer_shapes(model)
    dense = boundary_layers(model, dense_first=True, dense_last=True)
    assert dense == {"encoder.conv", "classifier"}
    for fn in (uniform_densities, erk_densities):
        got = fn(shapes, 0.1, dense)
        assert got["encoder.conv"] == 1.0 and got["classifier"] == 1.0
        sizes = {n: math.prod(s) for n, s in shapes if n not in dense}
        assert sum(got[n] * sizes[n] for n in sizes) == pytest.approx(0.1 * sum(sizes.values()))
    with pytest.raises(ValueError, match="not maskable"):
        uniform_densities(shapes, 0.1, {"nope"})


@pytest.mark.parametrize("density", [0.0, 1.5, float("nan"), -0.1])
def test_bad_density_is_rejected(density):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        erk_densities([("a", (4, 4))], density)


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_random_masks_realise_the_exact_counts(distribution):
    model = resnet19()
    realised = random_masks(model, 0.05, distribution, seed=3)
    targets = (uniform_densities if distribution == "uniform" else erk_densities)(
        layer_shapes(model), 0.05
    )
    for name, layer in masked_layers(model):
        n = layer.mask.numel()
        assert int(layer.mask.sum()) == round(targets[name] * n)
        assert realised[name] == pytest.approx(int(layer.mask.sum()) / n)
        assert (layer.weight[~layer.mask] == 0).all()
    assert model_density(model) == pytest.approx(0.05, abs=1e-4)
    # same seed, same masks; other seed, other masks
    again = resnet19()
    random_masks(again, 0.05, distribution, seed=3)
    assert all(
        torch.equal(a, b)
        for a, b in zip(get_masks(model).values(), get_masks(again).values(), strict=True)
    )
    random_masks(again, 0.05, distribution, seed=4)
    assert not torch.equal(get_masks(model)["layers.0.conv1"], get_masks(again)["layers.0.conv1"])


def _toy():
    torch.manual_seed(0)
    return torch.nn.Sequential(SpikeConv2d(2, 3, 3), SpikeLinear(5, 4))


def test_global_magnitude_keeps_the_largest_weights():
    model = _toy()
    with torch.no_grad():
        model[0].weight.mul_(3.0)  # the conv's weights dominate
    all_w = torch.cat([m.weight.detach().abs().flatten() for _, m in masked_layers(model)])
    k = round(0.25 * all_w.numel())
    realised = global_magnitude_masks(model, 0.25, min_kept_per_output=0)  # no floor
    kept = torch.cat([m.weight.detach().abs()[m.mask] for _, m in masked_layers(model)])
    pruned_mags = torch.cat([m.weight.detach().abs()[~m.mask] for _, m in masked_layers(model)])
    assert kept.numel() == k
    assert (pruned_mags == 0).all()  # pruned weights are zeroed
    threshold = torch.sort(all_w, descending=True).values[k - 1]
    assert kept.min() >= threshold
    assert realised["0"] > realised["1"]


def test_global_magnitude_never_regrows_and_split_matches_masks():
    model = _toy()
    global_magnitude_masks(model, 0.5)
    before = get_masks(model)
    scores = {n: m.weight.detach().abs().masked_fill(~m.mask, 0) for n, m in masked_layers(model)}
    predicted = global_magnitude_split(scores, [0.2], floors=layer_floors(layer_shapes(model)))[0]
    realised = global_magnitude_masks(model, 0.2)
    for name, mask in get_masks(model).items():
        assert not (mask & ~before[name]).any()
        assert realised[name] == pytest.approx(predicted[name])


def test_global_magnitude_holds_a_layer_at_its_floor():
    """The conv's weights dominate, so one threshold would leave the 4-output linear layer 1 of
    its 20 weights; the floor (one per output) keeps its 4 largest, and the threshold over the conv
    takes the rest of the same budget (18 of 74 weights)."""
    model = _toy()
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    plain = global_magnitude_split(
        {n: m.weight.detach().abs() for n, m in masked_layers(model)}, [0.25]
    )[0]
    assert round(plain["1"] * 20) < 4
    lin = model[1].weight.detach().abs().flatten()
    conv = model[0].weight.detach().abs().flatten()
    scores = {n: m.weight.detach().abs() for n, m in masked_layers(model)}
    floors = layer_floors(layer_shapes(model))
    assert floors == {"0": 3, "1": 4}
    predicted = global_magnitude_split(scores, [0.25], floors=floors)[0]
    realised = global_magnitude_masks(model, 0.25)
    assert realised == pytest.approx({"0": 14 / 54, "1": 4 / 20}) == predicted
    assert set(torch.nonzero(model[1].mask.flatten()).flatten().tolist()) == set(
        torch.topk(lin, 4).indices.tolist()
    )
    assert set(torch.nonzero(model[0].mask.flatten()).flatten().tolist()) == set(
        torch.topk(conv, 14).indices.tolist()
    )


def test_uniform_and_erk_hold_small_layers_at_their_floor():
    shapes = [("a", (10, 100)), ("b", (2, 5))]
    # uniform at 5 %: b would keep 0.5 of its 10 weights; held at 2, a takes 50.5 - 2 = 48.5
    assert uniform_densities(shapes, 0.05) == pytest.approx({"a": 48.5 / 1000, "b": 0.2})
    assert uniform_densities(shapes, 0.05, min_kept_per_output=0) == {"a": 0.05, "b": 0.05}
    got = erk_densities([("a", (10, 1000)), ("b", (2, 5))], 0.002)
    assert got["b"] == pytest.approx(0.2)
    assert got["a"] * 10_000 + got["b"] * 10 == pytest.approx(0.002 * 10_010)
    floor_free = erk_densities([("a", (10, 1000)), ("b", (2, 5))], 0.002, (), 0)
    assert floor_free["b"] * 10 < 2  # ERK alone would leave b below one weight per output


SPARSITIES = (0.9, 0.95, 0.98, 0.99, 0.999)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "resnet19"])
def test_no_method_or_cost_row_has_an_empty_layer(name):
    """Every method's schedule (what the cost model prices) and every mask the methods draw keep
    weights in every layer, at every sparsity up to 99.9 %, under every distribution."""
    from ndsnn_triton.profiler.claim import Assumptions, schedule_of, setup_model

    a = Assumptions(epochs=30, rewind_epoch=2)  # shorter runs: the same per-layer splits
    setup = setup_model(name, a)
    for sparsity in SPARSITIES:
        for method in ("static", "set", "rigl", "ndsnn", "lth"):
            for distribution in (None, "uniform", "erk", "global"):
                sched = schedule_of(setup, method, a, 1 - sparsity, distribution)
                empty = [
                    n
                    for seg in sched.segments
                    for n, d in zip(sched.layer_names, seg.densities, strict=True)
                    if d * sched.layer_sizes[sched.layer_names.index(n)] < 1
                ]
                assert not empty, (method, distribution, sparsity, sorted(set(empty)))
        for distribution in ("uniform", "erk", "global"):  # the masks themselves
            model = setup.model_for("static", {"d_init": 0.5})
            random_masks(model, 1 - sparsity, distribution, seed=1)
            kept = {n: int(m.mask.sum()) for n, m in masked_layers(model)}
            assert min(kept.values()) >= 1, (distribution, sparsity, kept)


def test_topk_mask_is_deterministic_on_ties():
    scores = torch.tensor([1.0, 2.0, 2.0, 0.5, 2.0])
    assert topk_mask(scores, 2).tolist() == [False, True, True, False, False]


def test_save_load_compare_masks(tmp_path):
    model = _toy()
    random_masks(model, 0.5, seed=1)
    path = tmp_path / "masks.pt"
    save_masks(model, path)
    loaded = load_masks(path)
    same = compare_masks(get_masks(model), loaded)
    assert all(c.jaccard == 1.0 for c in same.values())
    other = _toy()
    random_masks(other, 0.5, seed=2)
    diff = compare_masks(get_masks(model), get_masks(other))
    for name, c in diff.items():
        a, b = get_masks(model)[name], get_masks(other)[name]
        assert c.intersection == int((a & b).sum())
        assert c.jaccard == pytest.approx(int((a & b).sum()) / int((a | b).sum()))
        assert c.density_a == pytest.approx(a.float().mean().item())
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable mask file"):
        load_masks(tmp_path / "bad.pt")
    torch.save({"x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an ndsnn mask file"):
        load_masks(tmp_path / "foreign.pt")
