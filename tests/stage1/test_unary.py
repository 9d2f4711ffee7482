"""Exercise 1.3: unary functions, compared with PyTorch in float64 on several shapes."""

import numpy as np
import pytest

from stage1_autograd.tensor import Tensor
from tests.helpers import assert_matches_central_differences, compare_with_torch, run_backward

pytestmark = [
    pytest.mark.exercise("1.3"),
    pytest.mark.under_test(
        "Tensor.exp", "Tensor.log", "Tensor.sqrt", "Tensor.tanh", "Tensor.sigmoid", "Tensor.relu", "Tensor.sin",
        "Tensor.cos", "Tensor.abs",
    ),
]

# Each function with a way to draw inputs inside its domain.
FUNCTIONS = {
    "exp": lambda rng, s: rng.uniform(-3, 3, s),
    "log": lambda rng, s: rng.uniform(0.1, 5, s),  # x > 0
    "sqrt": lambda rng, s: rng.uniform(0.1, 5, s),  # x > 0 (the slope is infinite at 0)
    "tanh": lambda rng, s: rng.uniform(-3, 3, s),
    "sigmoid": lambda rng, s: rng.uniform(-6, 6, s),
    "relu": lambda rng, s: rng.uniform(-2, 2, s),
    "sin": lambda rng, s: rng.uniform(-4, 4, s),
    "cos": lambda rng, s: rng.uniform(-4, 4, s),
    "abs": lambda rng, s: rng.uniform(-2, 2, s),
}

SHAPES = [(), (5,), (3, 4), (2, 3, 4)]


def call(name):
    """``lambda x: x.<name>()``, which works on our Tensor and on a torch tensor alike."""
    return lambda x: getattr(x, name)()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_unary_function_matches_torch(name, shape):
    x = FUNCTIONS[name](np.random.default_rng(0), shape)
    compare_with_torch(call(name), x, label=f"x.{name}()")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_unary_function_matches_central_differences(name):
    x = FUNCTIONS[name](np.random.default_rng(4), (2, 3))
    # relu and abs have no slope at 0: keep every input at least 0.1 away from it (central differences
    # there would measure the average of the two one-sided slopes).
    x = np.where(np.abs(x) < 0.1, 0.1, x) if name in ("relu", "abs") else x
    assert_matches_central_differences(call(name), x, label=f"x.{name}()")


@pytest.mark.parametrize("name", ["relu", "abs"])
@pytest.mark.under_test("Tensor.relu", "Tensor.abs")
def test_kink_at_exactly_zero_matches_torch(name):
    # Both have no derivative at 0; PyTorch (and we) take the gradient there to be 0.
    compare_with_torch(call(name), np.array([-1.5, -0.0, 0.0, 0.0, 2.0]), label=f"x.{name}() with zeros in x")


@pytest.mark.under_test("Tensor.sigmoid")
def test_sigmoid_of_large_inputs():
    # 1 / (1 + exp(-x)) computes exp(800) on the way; the result must still be exact.
    compare_with_torch(call("sigmoid"), np.array([-800.0, -40.0, 0.0, 40.0, 800.0]), label="x.sigmoid() at +-800")


@pytest.mark.integration
def test_chain_of_unary_functions():
    x = np.random.default_rng(1).uniform(0.2, 2, (3, 4))
    compare_with_torch(lambda x: x.sin().exp().tanh().abs().sqrt().log(), x,
                       label="x.sin().exp().tanh().abs().sqrt().log()")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_float32_stays_float32_and_g_is_not_modified(name):
    x = Tensor(FUNCTIONS[name](np.random.default_rng(2), (3, 4)).astype(np.float32), requires_grad=True)
    out = getattr(x, name)()
    assert out.dtype == np.float32, f"x.{name}() with float32 x: expected a float32 result, got {out.dtype}"
    g = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    g_before = g.copy()
    run_backward(out, g)
    assert np.array_equal(g, g_before), (
        f"x.{name}(): _backward changed the array g it was given; it must compute new arrays "
        "(the same g may be handed to several parents)"
    )
    assert x.grad.dtype == np.float32, f"x.{name}() with float32 x: expected a float32 gradient, got {x.grad.dtype}"
