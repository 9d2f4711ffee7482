"""Exercise 1.6: reshape, transpose, indexing, concatenate and stack, compared with PyTorch in float64."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor, concatenate, stack
from tests.helpers import assert_matches_central_differences, compare_with_torch

pytestmark = [
    pytest.mark.exercise("1.6"),
    pytest.mark.under_test("Tensor.reshape", "Tensor.transpose", "Tensor.__getitem__", "concatenate", "stack"),
]


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------------- reshape and transpose
RESHAPES = {
    "x.reshape(4, 6)": (lambda x: x.reshape(4, 6), lambda t: t.reshape(4, 6)),
    "x.reshape((4, 6))": (lambda x: x.reshape((4, 6)), lambda t: t.reshape((4, 6))),
    "x.reshape(-1)": (lambda x: x.reshape(-1), lambda t: t.reshape(-1)),
    "x.reshape(2, -1, 3)": (lambda x: x.reshape(2, -1, 3), lambda t: t.reshape(2, -1, 3)),
    "x.reshape((3, 1, -1))": (lambda x: x.reshape((3, 1, -1)), lambda t: t.reshape((3, 1, -1))),
}


@pytest.mark.parametrize("label", RESHAPES)
@pytest.mark.under_test("Tensor.reshape")
def test_reshape(label):
    ours, theirs = RESHAPES[label]
    compare_with_torch(ours, randn(2, 3, 4), torch_fn=theirs, label=label)


@pytest.mark.under_test("Tensor.reshape")
def test_reshape_of_a_0d_tensor():
    compare_with_torch(lambda x: x.reshape(1, 1), np.array(2.5), label="x.reshape(1, 1) of a 0-d x")


TRANSPOSES = {
    "x.transpose(1, 0, 2)": (lambda x: x.transpose(1, 0, 2), lambda t: t.permute(1, 0, 2)),
    "x.transpose((2, 0, 1))": (lambda x: x.transpose((2, 0, 1)), lambda t: t.permute(2, 0, 1)),
    "x.transpose(1, 2, 0)": (lambda x: x.transpose(1, 2, 0), lambda t: t.permute(1, 2, 0)),
    "x.transpose()": (lambda x: x.transpose(), lambda t: t.permute(2, 1, 0)),
    "x.T": (lambda x: x.T, lambda t: t.permute(2, 1, 0)),
}


@pytest.mark.parametrize("label", TRANSPOSES)
@pytest.mark.under_test("Tensor.transpose")
def test_transpose(label):
    # (2, 3, 4): distinct sizes, so a wrong permutation gives a wrong shape.
    ours, theirs = TRANSPOSES[label]
    compare_with_torch(ours, randn(2, 3, 4), torch_fn=theirs, label=label)


@pytest.mark.under_test("Tensor.transpose")
def test_transpose_of_a_matrix():
    compare_with_torch(lambda x: x.T, randn(3, 5), torch_fn=lambda t: t.T, label="x.T of a matrix")


# Negative axes count from the end, as everywhere in NumPy: on 3 axes, -1 is 2. The same permutation in torch.
NEGATIVE_AXES = {
    "x.transpose(-1, 0) of a (2, 3) x": ((2, 3), (-1, 0), (1, 0)),
    "x.transpose(0, -1, 1) of a (2, 3, 4) x": ((2, 3, 4), (0, -1, 1), (0, 2, 1)),
    "x.transpose(-1, -3, -2) of a (2, 3, 4) x": ((2, 3, 4), (-1, -3, -2), (2, 0, 1)),
    "x.transpose((-2, 0, -1)) of a (2, 3, 4) x": ((2, 3, 4), ((-2, 0, -1),), (1, 0, 2)),
}


@pytest.mark.parametrize("label", NEGATIVE_AXES)
@pytest.mark.under_test("Tensor.transpose")
def test_transpose_with_negative_axes(label):
    shape, axes, permutation = NEGATIVE_AXES[label]
    compare_with_torch(lambda x: x.transpose(*axes), randn(*shape), torch_fn=lambda t: t.permute(*permutation),
                       label=label)


# ---------------------------------------------------------------------- indexing
MASK = randn(4, 5, seed=1) > 0
ROW_MASK = np.array([True, False, True, True])

# label: (our index, the same selection written for torch). torch has no negative slice steps, so those
# are written with flip or with explicit index tensors.
INDEXES = {
    "x[1]": (1, 1),
    "x[-1]": (-1, -1),
    "x[1, 2] (a 0-d result)": ((1, 2), (1, 2)),
    "x[1:3]": (slice(1, 3), slice(1, 3)),
    "x[:, -2:]": ((slice(None), slice(-2, None)), (slice(None), slice(-2, None))),
    "x[::2, 1::2]": ((slice(None, None, 2), slice(1, None, 2)), (slice(None, None, 2), slice(1, None, 2))),
    "x[None, 1, ..., 0]": ((None, 1, Ellipsis, 0), (None, 1, Ellipsis, 0)),
    "x[..., None]": ((Ellipsis, None), (Ellipsis, None)),
    "x[mask] (a boolean mask of x's shape)": (MASK, torch.from_numpy(MASK)),
    "x[row_mask] (a boolean mask of axis 0)": (ROW_MASK, torch.from_numpy(ROW_MASK)),
    "x[[0, 2, 3]]": ([0, 2, 3], [0, 2, 3]),
    "x[[1, 1, 3, 1]] (repeated rows)": ([1, 1, 3, 1], [1, 1, 3, 1]),
    "x[:, [4, 0, 4]] (repeated columns)": ((slice(None), [4, 0, 4]), (slice(None), [4, 0, 4])),
    "x[[0, 0, 2], [1, 1, 3]] (a repeated element)": (([0, 0, 2], [1, 1, 3]), ([0, 0, 2], [1, 1, 3])),
    "x[int array of shape (2, 2)]": (np.array([[0, 1], [1, 1]]), torch.tensor([[0, 1], [1, 1]])),
}


@pytest.mark.parametrize("label", INDEXES)
@pytest.mark.under_test("Tensor.__getitem__")
def test_getitem(label):
    ours, theirs = INDEXES[label]
    compare_with_torch(lambda x: x[ours], randn(4, 5), torch_fn=lambda t: t[theirs], label=label)


NEGATIVE_STEPS = {
    "x[::-1]": (lambda x: x[::-1], lambda t: t.flip(0)),
    "x[:, ::-2]": (lambda x: x[:, ::-2], lambda t: t[:, torch.tensor([4, 2, 0])]),
    "x[3:0:-2, 1]": (lambda x: x[3:0:-2, 1], lambda t: t[torch.tensor([3, 1]), 1]),
}


@pytest.mark.parametrize("label", NEGATIVE_STEPS)
@pytest.mark.under_test("Tensor.__getitem__")
def test_getitem_with_negative_steps(label):
    ours, theirs = NEGATIVE_STEPS[label]
    compare_with_torch(ours, randn(4, 5), torch_fn=theirs, label=label)


@pytest.mark.under_test("Tensor.__getitem__")
def test_getitem_with_a_tensor_of_indices():
    # Tensors hold floats; as an index they stand for the integers they contain (how embeddings look up rows).
    rows = Tensor(np.array([2, 0, 2, 2]))
    compare_with_torch(lambda x: x[rows], randn(3, 4), torch_fn=lambda t: t[torch.tensor([2, 0, 2, 2])],
                       label="x[Tensor([2, 0, 2, 2])]")


@pytest.mark.under_test("Tensor.__getitem__")
def test_getitem_on_a_3d_tensor():
    compare_with_torch(lambda x: x[..., [1, 1]][1:, None], randn(3, 2, 4),
                       torch_fn=lambda t: t[..., [1, 1]][1:, None], label="x[..., [1, 1]][1:, None]")


# ---------------------------------------------------------------------- concatenate and stack
CONCATENATIONS = [
    (((2, 3), (4, 3), (1, 3)), 0),
    (((2, 3), (2, 1), (2, 2)), 1),
    (((2, 3), (2, 5)), -1),
    (((2, 1, 4), (2, 3, 4)), 1),
    (((2, 3, 1), (2, 3, 2)), -1),
    (((3, 2, 2), (1, 2, 2)), -3),
]


@pytest.mark.parametrize("shapes, axis", CONCATENATIONS, ids=str)
@pytest.mark.under_test("concatenate")
def test_concatenate(shapes, axis):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in shapes]
    compare_with_torch(lambda *xs: concatenate(xs, axis=axis), *arrays,
                       torch_fn=lambda *ts: torch.cat(ts, dim=axis), label=f"concatenate(..., axis={axis})")


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.under_test("stack")
def test_stack(axis):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2, 3)) for _ in range(4)]
    compare_with_torch(lambda *xs: stack(xs, axis=axis), *arrays,
                       torch_fn=lambda *ts: torch.stack(ts, dim=axis),
                       label=f"stack(4 tensors of shape (2, 3), axis={axis})")


@pytest.mark.under_test("stack")
def test_stack_of_0d_tensors():
    compare_with_torch(lambda *xs: stack(xs), np.array(1.0), np.array(2.0), np.array(3.0),
                       torch_fn=lambda *ts: torch.stack(ts), label="stack(three 0-d tensors)")


@pytest.mark.under_test("concatenate")
def test_concatenate_a_tensor_with_itself():
    # The same input appears twice: its gradient is the sum of its two pieces.
    compare_with_torch(lambda x: concatenate([x, x], axis=1), randn(2, 3),
                       torch_fn=lambda t: torch.cat([t, t], dim=1), label="concatenate([x, x], axis=1)")


# ---------------------------------------------------------------------- central differences
# The backward of each kind of shape op checked against the slope measured numerically (not against PyTorch).
CENTRAL_DIFFERENCE_CASES = {
    "x.reshape(3, -1) of a (2, 3, 2) x": (lambda x: x.reshape(3, -1), [(2, 3, 2)]),
    "x.transpose(-1, 0) of a (2, 3) x": (lambda x: x.transpose(-1, 0), [(2, 3)]),
    "x.transpose(0, -1, 1) of a (2, 3, 4) x": (lambda x: x.transpose(0, -1, 1), [(2, 3, 4)]),
    "x[[1, 1, 0, 1]] (repeated rows)": (lambda x: x[[1, 1, 0, 1]], [(3, 2)]),
    "x[[0, 0, 2], [1, 1, 0]] (a repeated element)": (lambda x: x[[0, 0, 2], [1, 1, 0]], [(3, 2)]),
    "x[1:, ::-1]": (lambda x: x[1:, ::-1], [(3, 2)]),
    "concatenate([a, b], axis=-1)": (lambda a, b: concatenate([a, b], axis=-1), [(2, 1), (2, 3)]),
    "stack([a, b, c], axis=1)": (lambda a, b, c: stack([a, b, c], axis=1), [(2, 2), (2, 2), (2, 2)]),
}


@pytest.mark.parametrize("label", CENTRAL_DIFFERENCE_CASES)
def test_shape_op_matches_central_differences(label):
    fn, shapes = CENTRAL_DIFFERENCE_CASES[label]
    arrays = [randn(*shape, seed=i) for i, shape in enumerate(shapes)]
    assert_matches_central_differences(fn, *arrays, label=label)


@pytest.mark.integration
def test_chain_of_shape_ops():
    def ours(x):
        return stack([x.reshape(3, 8).T[::2], x.transpose(2, 0, 1).reshape(4, 6)[:, 1:4]], axis=-1)

    def theirs(t):
        return torch.stack([t.reshape(3, 8).T[::2], t.permute(2, 0, 1).reshape(4, 6)[:, 1:4]], dim=-1)

    compare_with_torch(ours, randn(2, 3, 4), torch_fn=theirs,
                       label="stack([x.reshape(3, 8).T[::2], x.transpose(2, 0, 1).reshape(4, 6)[:, 1:4]], axis=-1)")
