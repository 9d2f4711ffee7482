"""Exercise 1.5: matrix multiplication with np.matmul semantics, compared with PyTorch in float64."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from tests.helpers import assert_matches_central_differences, compare_with_torch, run_backward

pytestmark = [pytest.mark.exercise("1.5"), pytest.mark.under_test("Tensor.__matmul__")]

SHAPE_PAIRS = [
    ((4,), (4,)),  # vector . vector -> a 0-d result
    ((4,), (4, 3)),  # a vector on the left is a row: (4) @ (4, 3) -> (3)
    ((2, 4), (4,)),  # a vector on the right is a column: (2, 4) @ (4) -> (2)
    ((2, 4), (4, 3)),
    ((1, 4), (4, 1)),
    ((5, 2, 4), (5, 4, 3)),  # a batch of 5 products
    ((5, 2, 4), (4, 3)),  # the matrix on the right is shared by the whole batch
    ((2, 4), (5, 4, 3)),  # ... or the one on the left
    ((2, 1, 3, 4), (5, 4, 3)),  # batch axes broadcast: (2, 1) with (5,) -> (2, 5)
    ((5, 3, 4), (2, 1, 4, 3)),  # ... the other way round
    ((4,), (5, 4, 3)),  # 1-D @ 3-D -> (5, 3)
    ((5, 2, 4), (4,)),  # 3-D @ 1-D -> (5, 2)
]


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
def test_matmul_matches_torch(shapes):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s) for s in shapes)
    compare_with_torch(lambda x, y: x @ y, a, b, label="a @ b")


@pytest.mark.parametrize("shapes", [
    ((3,), (3,)),  # 1-D @ 1-D -> 0-d
    ((3,), (3, 2)),  # 1-D on the left
    ((2, 3), (3,)),  # 1-D on the right
    ((2, 3), (3, 2)),
    ((2, 1, 2, 3), (3, 3, 2)),  # batch axes broadcast: (2, 1) with (3,)
    ((3,), (2, 3, 2)),  # 1-D @ a batch
    ((2, 2, 3), (3,)),  # a batch @ 1-D
], ids=str)
def test_matmul_matches_central_differences(shapes):
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal(s) for s in shapes)
    assert_matches_central_differences(lambda x, y: x @ y, a, b, label="a @ b")


@pytest.mark.parametrize("shapes", [((2, 4), (4, 3)), ((4,), (4, 3)), ((5, 2, 4), (4,))], ids=str)
@pytest.mark.parametrize("which", [0, 1])
def test_only_one_operand_requires_grad(shapes, which):
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(s) for s in shapes)
    compare_with_torch(lambda x, y: x @ y, a, b, grad_inputs=[which], label=f"a @ b (only input {which} requires grad)")


def test_numpy_array_on_either_side():
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((4, 3))
    compare_with_torch(lambda x: x @ weight, rng.standard_normal((2, 4)),
                       torch_fn=lambda t: t @ torch.tensor(weight), label="tensor @ array")
    compare_with_torch(lambda x: weight.T @ x, rng.standard_normal((4, 2)),
                       torch_fn=lambda t: torch.tensor(weight.T) @ t, label="array @ tensor")


def test_float32_stays_float32():
    a = Tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    b = Tensor(np.ones((3, 4), dtype=np.float32), requires_grad=True)
    out = a @ b
    assert out.dtype == np.float32, f"float32 @ float32: expected a float32 result, got {out.dtype}"
    run_backward(out, np.ones((2, 4), dtype=np.float32))
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float32, (
        f"float32 @ float32: expected float32 gradients, got {a.grad.dtype} and {b.grad.dtype}"
    )
