"""Exercise 1.1: Value, scalar autograd, compared with PyTorch float64 scalars."""

import math

import pytest
import torch

from stage1_autograd.value import Value
from tests.helpers import assert_close
from tests.stage1.student_side import chain_of_values

pytestmark = [
    pytest.mark.exercise("1.1"),
    pytest.mark.under_test(
        "Value.__add__", "Value.__sub__", "Value.__mul__", "Value.__truediv__", "Value.__pow__", "Value.__neg__",
        "Value.__radd__", "Value.__rsub__", "Value.__rmul__", "Value.__rtruediv__", "Value.exp", "Value.log",
        "Value.tanh", "Value.relu", "Value.sigmoid", "Value.sin", "Value.backward",
    ),
]


def compare_value_with_torch(fn, *numbers, label):
    """Apply ``fn`` to Values and to torch float64 scalars; compare the result and every input's gradient."""
    ours = [Value(x) for x in numbers]
    theirs = [torch.tensor(float(x), dtype=torch.float64, requires_grad=True) for x in numbers]
    inputs = ", ".join(f"{x:g}" for x in numbers)
    what = f"{label} at ({inputs})"

    out = fn(*ours)
    expected = fn(*theirs)
    assert isinstance(out, Value), f"{what}: expected a Value as the result, got {type(out).__name__}"
    assert_close(out.data, expected, f"{what}: value")

    out.backward()
    expected.backward()
    for i, (v, t) in enumerate(zip(ours, theirs)):
        assert_close(v.grad, t.grad, f"{what}: gradient of input {i}")


BINARY = {
    "a + b": lambda a, b: a + b,
    "a - b": lambda a, b: a - b,
    "a * b": lambda a, b: a * b,
    "a / b": lambda a, b: a / b,
}


@pytest.mark.parametrize("a, b", [(2.0, -3.0), (-0.5, 0.25), (1.5, 1.5)])
@pytest.mark.parametrize("op", BINARY)
def test_binary_ops(op, a, b):
    compare_value_with_torch(BINARY[op], a, b, label=op)


WITH_A_NUMBER = {
    "a + 2.5": lambda a: a + 2.5,
    "a - 2.5": lambda a: a - 2.5,
    "a * 2.5": lambda a: a * 2.5,
    "a / 2.5": lambda a: a / 2.5,
    "2.5 + a": lambda a: 2.5 + a,
    "2.5 - a": lambda a: 2.5 - a,
    "2.5 * a": lambda a: 2.5 * a,
    "2.5 / a": lambda a: 2.5 / a,
    "2 + a (an int)": lambda a: 2 + a,
    "-a": lambda a: -a,
}


@pytest.mark.parametrize("op", WITH_A_NUMBER)
def test_operations_with_numbers_and_reflected_forms(op):
    compare_value_with_torch(WITH_A_NUMBER[op], -1.25, label=op)


@pytest.mark.parametrize("exponent", [2, 3, 0.5, -1, -2.5, 1])
@pytest.mark.under_test("Value.__pow__")
def test_power_with_number_exponent(exponent):
    compare_value_with_torch(lambda a: a**exponent, 1.7, label=f"a ** {exponent}")


UNARY = {
    "exp": (lambda a: a.exp(), [-2.0, 0.0, 1.5]),
    "log": (lambda a: a.log(), [0.3, 1.0, 4.0]),  # log needs x > 0
    "tanh": (lambda a: a.tanh(), [-2.0, 0.0, 0.7]),
    "relu": (lambda a: a.relu(), [-1.5, 0.0, 2.0]),  # at exactly 0 the gradient is 0, as in torch
    "sigmoid": (lambda a: a.sigmoid(), [-800.0, -3.0, 0.0, 2.0, 800.0]),  # no overflow at +-800
    "sin": (lambda a: a.sin(), [-2.0, 0.0, 1.0]),
}


@pytest.mark.parametrize("name", UNARY)
def test_unary_functions(name):
    fn, points = UNARY[name]
    for x in points:
        compare_value_with_torch(fn, x, label=f"{name}(a)")


@pytest.mark.under_test("Value.__mul__", "Value.__add__", "Value.backward")
def test_a_value_used_twice_accumulates_its_gradient():
    # a feeds both inputs of the product, and b reaches the output along two paths.
    compare_value_with_torch(lambda a: a * a, 3.0, label="a * a")
    compare_value_with_torch(lambda a: a + a, 3.0, label="a + a")
    compare_value_with_torch(lambda a: (lambda b: b * b.exp() + b)(a * 2.0), 0.4, label="b * exp(b) + b with b = 2a")


@pytest.mark.integration
def test_expression_mixing_everything():
    def fn(a, b):
        c = a * b + b**2 / a
        d = (c - 1).tanh() * 2 + (a / 3).sigmoid()
        e = (b.relu() + 1).log() + a.sin() - (-d).exp()
        return e * c + 1 / e

    compare_value_with_torch(fn, 1.3, 0.6, label="an expression using every operation")


@pytest.mark.under_test("Value.__add__")
def test_plus_equals_builds_new_values():
    xs = [0.5, -1.0, 2.0]
    values = [Value(x) for x in xs]
    total = Value(0.0)
    start = total
    for v in values:
        total += v * v
    assert total is not start, "total += ... must make a new Value (the old one is part of the graph)"
    assert start.data == 0.0, f"total += ... changed the Value it started from: its data is now {start.data}"
    assert_close(total.data, sum(x * x for x in xs), "sum of squares built with +=: value")
    total.backward()
    for i, (v, x) in enumerate(zip(values, xs)):
        assert_close(v.grad, 2 * x, f"sum of squares built with +=: gradient of input {i}")


@pytest.mark.under_test("Value.backward")
def test_deep_chain_of_5000_nodes_does_not_recurse():
    x = Value(0.5)
    y = chain_of_values(x, 1.0001, 5000)  # built beside the code under test: 5000 ops, one call
    try:
        y.backward()
    except RecursionError:
        raise AssertionError(
            "backward() on a chain of 5000 operations hit Python's recursion limit: order the graph "
            "with an explicit stack (a list you push to and pop from) instead of a recursive function"
        ) from None
    assert_close(y.data, 0.5 * 1.0001**5000, "a chain of 5000 multiplications by 1.0001: value")
    assert_close(x.grad, 1.0001**5000, "a chain of 5000 multiplications by 1.0001: gradient of the input")


@pytest.mark.under_test("Value.backward")
def test_gradient_of_an_unused_input_stays_zero():
    a, b = Value(1.0), Value(2.0)
    out = a.exp()
    out.backward()
    assert_close(a.grad, math.e, "exp(a) at a = 1: gradient of a")
    assert b.grad == 0.0, f"b is not used to compute exp(a); its grad should stay 0.0, got {b.grad}"
