"""The radix-sort path for float32 scores gives exactly torch.sort's order and values."""

import pytest
import torch

from ndsnn_triton.sparse.ordering import argsort_descending, order_key, sorted_values


def _scores() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, generator=g)
    x[::7] = -1.0  # the pruned marker of global magnitude pruning: many ties
    x[::11] = 0.5
    x[3], x[4], x[5] = float("inf"), float("-inf"), 0.0
    return x


def test_keys_preserve_the_float_order():
    x = torch.tensor([-float("inf"), -2.5, -1.0, -1e-30, 0.0, 1e-30, 1.0, 3.0, float("inf")])
    keys = order_key(x)
    assert keys.dtype == torch.int32
    assert (keys[1:] > keys[:-1]).all()


@pytest.mark.parametrize("descending", [False, True])
def test_sorted_values_equal_torch_sort(descending):
    x = _scores()
    assert torch.equal(sorted_values(x, descending), torch.sort(x, descending=descending).values)
    assert torch.equal(sorted_values(x.view(100, 100)), torch.sort(x).values)


def test_argsort_descending_is_torch_stable_argsort():
    x = _scores()
    assert torch.equal(argsort_descending(x), torch.argsort(x, descending=True, stable=True))
