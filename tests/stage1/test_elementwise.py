"""Exercise 1.2: elementwise arithmetic with broadcasting, compared with PyTorch in float64."""

import numpy as np
import pytest

from stage1_autograd.tensor import Tensor, unbroadcast
from tests.helpers import assert_close, assert_matches_central_differences, compare_with_torch

pytestmark = [
    pytest.mark.exercise("1.2"),
    pytest.mark.under_test(
        "Tensor.__add__", "Tensor.__sub__", "Tensor.__mul__", "Tensor.__truediv__", "Tensor.__pow__", "Tensor.__neg__",
        "Tensor.__radd__", "Tensor.__rsub__", "Tensor.__rmul__", "Tensor.__rtruediv__",
    ),
]

BINARY_OPS = {
    "a + b": lambda a, b: a + b,
    "a - b": lambda a, b: a - b,
    "a * b": lambda a, b: a * b,
    "a / b": lambda a, b: a / b,
}

# Pairs of shapes: equal, broadcasting either way, size-1 axes, 0-d and new leading axes.
SHAPE_PAIRS = [
    ((3, 4), (3, 4)),
    ((3, 4), (4,)),
    ((4,), (3, 4)),
    ((3, 1), (1, 4)),
    ((2, 3, 4), (3, 1)),
    ((1,), (2, 3)),
    ((), (2, 3)),
    ((2, 3), ()),
    ((), ()),
    ((5, 1, 3), (1, 4, 1)),
]


def random_inputs(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    # Keep divisors away from zero so division is well conditioned.
    return [rng.uniform(0.5, 2.0, size=s) * rng.choice([-1, 1], size=s) for s in shapes]


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
@pytest.mark.parametrize("op", BINARY_OPS)
def test_binary_op_matches_torch(op, shapes):
    compare_with_torch(BINARY_OPS[op], *random_inputs(*shapes), label=op)


# Broadcasting along a new leading axis, along size-1 axes of both operands, and from a 0-d operand.
CENTRAL_DIFFERENCE_SHAPES = [((2, 3), (3,)), ((3, 1), (1, 2)), ((), (2, 2))]


@pytest.mark.parametrize("shapes", CENTRAL_DIFFERENCE_SHAPES, ids=str)
@pytest.mark.parametrize("op", BINARY_OPS)
def test_binary_op_matches_central_differences(op, shapes):
    # The gradients checked against the slope of the op itself, measured numerically, rather than against PyTorch.
    assert_matches_central_differences(BINARY_OPS[op], *random_inputs(*shapes, seed=7), label=op)


@pytest.mark.parametrize("exponent", [3, -1.5, 0.5])
@pytest.mark.under_test("Tensor.__pow__")
def test_power_matches_central_differences(exponent):
    (x,) = random_inputs((2, 3), seed=8)
    assert_matches_central_differences(lambda a: a**exponent, np.abs(x), label=f"a ** {exponent} (a > 0)")


@pytest.mark.parametrize("op", ["a + 2.5", "a - 2.5", "a * 2.5", "a / 2.5", "2.5 + a", "2.5 - a", "2.5 * a", "2.5 / a"])
def test_operations_with_python_numbers(op):
    fn = eval(f"lambda a: {op}")
    compare_with_torch(fn, *random_inputs((3, 4)), label=op)


@pytest.mark.parametrize("exponent", [2, 3, 0.5, -1, -2.5, 0])
@pytest.mark.under_test("Tensor.__pow__")
def test_power_with_number_exponent(exponent):
    (x,) = random_inputs((3, 4))
    if exponent % 1:  # a fractional power needs positive bases
        x = np.abs(x)
    compare_with_torch(lambda a: a**exponent, x, label=f"a ** {exponent}")


@pytest.mark.under_test("Tensor.__neg__")
def test_negation():
    compare_with_torch(lambda a: -a, *random_inputs((2, 3)), label="-a")


@pytest.mark.integration
def test_chained_expression_shares_inputs():
    # a appears three times: its gradient is the sum of the three paths.
    compare_with_torch(lambda a, b: a * b - a / (b * b) + a, *random_inputs((3, 1), (1, 4)),
                       label="a * b - a / (b * b) + a")


@pytest.mark.parametrize("op", ["array + tensor", "array * tensor", "array - tensor", "array / tensor"])
@pytest.mark.under_test("Tensor.__radd__", "Tensor.__rsub__", "Tensor.__rmul__", "Tensor.__rtruediv__")
def test_numpy_array_on_the_left(op):
    arr = random_inputs((3, 4), seed=1)[0]
    fn = {
        "array + tensor": lambda a: arr + a,
        "array * tensor": lambda a: arr * a,
        "array - tensor": lambda a: arr - a,
        "array / tensor": lambda a: arr / a,
    }[op]
    import torch

    torch_fn = {
        "array + tensor": lambda a: torch.tensor(arr) + a,
        "array * tensor": lambda a: torch.tensor(arr) * a,
        "array - tensor": lambda a: torch.tensor(arr) - a,
        "array / tensor": lambda a: torch.tensor(arr) / a,
    }[op]
    compare_with_torch(fn, *random_inputs((3, 4)), torch_fn=torch_fn, label=op)


@pytest.mark.under_test("Tensor.__add__")
def test_in_place_add_operator_builds_a_new_node():
    a = Tensor([1.0, 2.0], requires_grad=True)
    b = a
    b += 3.0
    assert b is not a, "x += y must build a new Tensor (no in-place change of a tensor in the graph)"
    assert_close(b, [4.0, 5.0], "a += 3.0: value")
    assert_close(a, [1.0, 2.0], "a after b = a; b += 3.0 (a must be unchanged)")


@pytest.mark.parametrize(
    "grad_shape, shape",
    [((3, 4), (4,)), ((3, 4), (3, 1)), ((2, 3, 4), (1, 4)), ((2, 3), ()), ((5,), (1,)), ((2, 3), (2, 3))],
    ids=str,
)
@pytest.mark.under_test("unbroadcast")
def test_unbroadcast_sums_to_the_operand_shape(grad_shape, shape):
    grad = np.random.default_rng(0).standard_normal(grad_shape)
    got = unbroadcast(grad, shape)
    # An operand of `shape` broadcast to `grad_shape` is the linear map x -> broadcast_to(x); its adjoint
    # is what unbroadcast computes. Check it against torch's sum_to_size.
    import torch

    expected = torch.tensor(grad).sum_to_size(shape)
    assert_close(got, expected, f"unbroadcast(grad of shape {grad_shape}, {shape})")


class TestDtypes:
    def test_float32_stays_float32_with_python_numbers(self):
        x = Tensor(np.ones(3, dtype=np.float32))
        for result, op in [(x + 1, "x + 1"), (x * 2.5, "x * 2.5"), (2.0 - x, "2.0 - x"), (1 / x, "1 / x"),
                           (x**2, "x ** 2"), (-x, "-x")]:
            assert result.dtype == np.float32, f"{op} with float32 x: expected float32, got {result.dtype}"

    def test_float64_stays_float64(self):
        x = Tensor(np.ones(3, dtype=np.float64))
        for result, op in [(x + 1, "x + 1"), (x * 2.5, "x * 2.5"), (x / x, "x / x")]:
            assert result.dtype == np.float64, f"{op} with float64 x: expected float64, got {result.dtype}"

    @pytest.mark.parametrize("data", [[1, 2, 3], [1.5, 2.5], 3, np.arange(4), [[True, False]]], ids=repr)
    @pytest.mark.under_test("Tensor.__mul__")
    def test_ints_and_lists_become_float32(self, data):
        x = Tensor(data) * 2
        assert isinstance(x.data, np.ndarray), f"(Tensor({data!r}) * 2).data should be an np.ndarray, got {type(x.data)}"
        assert x.dtype == np.float32, f"Tensor({data!r}) * 2: expected dtype float32, got {x.dtype}"

    @pytest.mark.under_test("Tensor.__mul__", "Tensor.__add__")
    def test_gradient_has_the_dtype_of_its_tensor(self):
        from tests.helpers import run_backward

        a = Tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
        b = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
        out = a * b + 1.0
        run_backward(out, np.ones((2, 3), dtype=np.float32))
        assert a.grad.dtype == np.float32 and b.grad.dtype == np.float32, (
            f"float32 inputs should get float32 gradients, got {a.grad.dtype} and {b.grad.dtype}"
        )
