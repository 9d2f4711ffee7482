"""Exercise 1.4: sum, mean and max over axes, compared with PyTorch in float64."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from tests.helpers import assert_matches_central_differences, compare_with_torch, run_backward

pytestmark = [pytest.mark.exercise("1.4"), pytest.mark.under_test("Tensor.sum", "Tensor.mean", "Tensor.max")]

AXES = [None, 0, 1, 2, -1, -2, (0, 2), (-1, 0), (0, 1, 2)]


def torch_dims(axis, ndim):
    # torch reads dim=() as "all dims" where NumPy reads axis=() as "none": spell all of them out.
    return tuple(range(ndim)) if axis is None else axis


def reduction(name, axis, keepdims):
    """``x.<name>(axis=..., keepdims=...)`` for our Tensor, and the same reduction in torch."""
    ours = lambda x: getattr(x, name)(axis=axis, keepdims=keepdims)  # noqa: E731
    torch_op = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[name]
    theirs = lambda t: torch_op(t, dim=torch_dims(axis, t.ndim), keepdim=keepdims)  # noqa: E731
    return ours, theirs, f"x.{name}(axis={axis}, keepdims={keepdims})"


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reduction_matches_torch(name, axis, keepdims):
    ours, theirs, label = reduction(name, axis, keepdims)
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    compare_with_torch(ours, x, torch_fn=theirs, label=label)


@pytest.mark.parametrize("axis, keepdims", [(None, False), (1, True), (-1, False), ((0, 2), False)], ids=str)
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reduction_matches_central_differences(name, axis, keepdims):
    # 24 distinct values 0.25 apart (a shuffled grid): max has no ties, and a step of eps never changes
    # which element is the maximum, so the slope is well defined everywhere.
    rng = np.random.default_rng(6)
    x = (rng.permutation(24) * 0.25 - 3.0).reshape(2, 3, 4)
    ours, _, label = reduction(name, axis, keepdims)
    assert_matches_central_differences(ours, x, label=label)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reduction_of_a_0d_tensor(name, keepdims):
    ours, theirs, label = reduction(name, None, keepdims)
    compare_with_torch(ours, np.array(1.5), torch_fn=theirs, label=label)


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_default_arguments_reduce_everything(name):
    x = np.random.default_rng(1).standard_normal((3, 4))
    torch_op = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[name]
    compare_with_torch(lambda t: getattr(t, name)(), x, torch_fn=lambda t: torch_op(t, dim=(0, 1)),
                       label=f"x.{name}()")


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)], ids=str)
@pytest.mark.under_test("Tensor.max")
def test_max_shares_the_gradient_between_ties(axis, keepdims):
    # Many ties: values drawn from {0, 1, 2}. torch.amax splits the gradient evenly between the maximal elements.
    ours, theirs, label = reduction("max", axis, keepdims)
    x = np.random.default_rng(2).integers(0, 3, size=(4, 5)).astype(np.float64)
    compare_with_torch(ours, x, torch_fn=theirs, label=label + " with ties")


@pytest.mark.under_test("Tensor.max")
def test_max_with_all_elements_equal():
    ours, theirs, label = reduction("max", None, False)
    compare_with_torch(ours, np.full((2, 3), 7.0), torch_fn=theirs, label=label + " with all six elements equal")


def test_reduction_over_a_size_1_axis():
    x = np.random.default_rng(3).standard_normal((3, 1, 2))
    for name in ["sum", "mean", "max"]:
        ours, theirs, label = reduction(name, 1, False)
        compare_with_torch(ours, x, torch_fn=theirs, label=label)


@pytest.mark.under_test("Tensor.mean")
def test_mean_composed_with_other_reductions():
    x = np.random.default_rng(4).standard_normal((2, 3, 4))
    compare_with_torch(lambda t: t.max(axis=-1).mean(axis=0).sum(), x,
                       torch_fn=lambda t: torch.amax(t, dim=-1).mean(dim=0).sum(),
                       label="x.max(axis=-1).mean(axis=0).sum()")


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_float32_stays_float32(name):
    x = Tensor(np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    out = getattr(x, name)(axis=0)
    assert out.dtype == np.float32, f"x.{name}(axis=0) with float32 x: expected a float32 result, got {out.dtype}"
    run_backward(out, np.ones(4, dtype=np.float32))
    assert x.grad.dtype == np.float32, (
        f"x.{name}(axis=0) with float32 x: expected a float32 gradient, got {x.grad.dtype}"
    )
