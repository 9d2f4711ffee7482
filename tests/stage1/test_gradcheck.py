"""Exercise 1.8: numerical gradients by central differences, and gradcheck.

The functions checked are built from reference ops made with ``Tensor._from_op`` (tests/helpers.py) or
from plain NumPy, so this exercise does not depend on the ops of 1.2-1.6. ``gradcheck`` itself calls
``backward()``, so it needs the engine of 1.7.
"""

import numpy as np
import pytest

from stage1_autograd.gradcheck import GradcheckError, gradcheck, numerical_grad
from stage1_autograd.tensor import Tensor
from tests.helpers import assert_close, assert_equal, ref_add, ref_matmul, ref_mul, ref_sin, ref_sum

pytestmark = [pytest.mark.exercise("1.8"), pytest.mark.under_test("gradcheck")]

# How close central differences with eps = 1e-6 come to the true slope, in float64:
#   truncation error  eps**2 / 6 * |f'''|                      about 1e-13 here;
#   rounding error    ~1e-16 * (sum of |terms| of F) / eps      about 1e-9 for the small inputs used here.
# A one-sided difference is off by eps / 2 * |f''| (about 5e-7 here), so 1e-7 tells the two apart.
FD_ATOL = 1e-7
FD_RTOL = 1e-7


def tensor(*shape, seed=0, requires_grad=True):
    """A Tensor of the test's own values (checked: the expected gradients below are computed from them)."""
    values = np.random.default_rng(seed).uniform(-1.5, 1.5, shape)
    t = Tensor(values.copy(), requires_grad=requires_grad)
    assert_equal(t.data, values, f"Tensor(values of shape {shape}).data (the given constructor keeps the values)")
    return t


def values_of(*shape, seed=0):
    """The values ``tensor(*shape, seed=seed)`` holds."""
    return np.random.default_rng(seed).uniform(-1.5, 1.5, shape)


def values_only(numpy_fn):
    """A function of Tensors computed with NumPy: numerical_grad only needs its values."""
    return lambda *xs: Tensor(numpy_fn(*(x.data for x in xs)))


# ---------------------------------------------------------------------- numerical_grad
# f, and its derivative with respect to each input (elementwise functions, seed of ones).
KNOWN = {
    "x ** 2": (values_only(lambda x: x**2), lambda x: [2 * x]),
    "sin(x)": (values_only(np.sin), lambda x: [np.cos(x)]),
    "exp(x) * x": (values_only(lambda x: np.exp(x) * x), lambda x: [np.exp(x) * (1 + x)]),
    "x ** 3 + 2 x": (values_only(lambda x: x**3 + 2 * x), lambda x: [3 * x**2 + 2]),
}


@pytest.mark.parametrize("name", KNOWN)
@pytest.mark.under_test("numerical_grad")
def test_numerical_grad_matches_known_derivatives(name):
    f, derivative = KNOWN[name]
    x = tensor(3, 4)
    (got,) = numerical_grad(f, x)
    (expected,) = derivative(values_of(3, 4))
    assert isinstance(got, np.ndarray), (
        f"numerical_grad should return a list of np.ndarray, got a list of {type(got).__name__}"
    )
    assert_close(got, expected, f"numerical_grad of sum({name}) with x of shape (3, 4)", atol=FD_ATOL, rtol=FD_RTOL)


@pytest.mark.under_test("numerical_grad")
def test_numerical_grad_of_several_inputs_of_different_shapes():
    a, b, c = tensor(2, 3), tensor(3, seed=1), tensor(seed=2)  # c is 0-d
    f = values_only(lambda a, b, c: a * b * c + np.sin(b))  # (2, 3)
    grads = numerical_grad(f, a, b, c)
    assert isinstance(grads, list) and len(grads) == 3, (
        f"numerical_grad of 3 inputs should return a list of 3 arrays, got {grads!r}"
    )
    a_, b_, c_ = values_of(2, 3), values_of(3, seed=1), values_of(seed=2)
    expected = [
        np.broadcast_to(b_ * c_, (2, 3)),  # d/da
        (a_ * c_).sum(axis=0) + 2 * np.cos(b_),  # d/db: b is broadcast over the 2 rows
        (a_ * b_).sum(),  # d/dc
    ]
    for i, (got, want) in enumerate(zip(grads, expected)):
        assert_close(got, want, f"numerical_grad of sum(a * b * c + sin(b)): gradient of input {i}",
                     atol=FD_ATOL, rtol=FD_RTOL)


@pytest.mark.under_test("numerical_grad")
def test_numerical_grad_weights_the_output_by_seed_grad():
    x = tensor(2, 3)
    seed = np.random.default_rng(5).standard_normal((2, 3))
    (got,) = numerical_grad(values_only(np.sin), x, seed_grad=seed)
    assert_close(got, seed * np.cos(values_of(2, 3)), "numerical_grad of sum(seed_grad * sin(x))", atol=FD_ATOL,
                 rtol=FD_RTOL)


@pytest.mark.under_test("numerical_grad")
def test_numerical_grad_of_a_reduction():
    x = tensor(3, 4)
    (got,) = numerical_grad(values_only(lambda x: (x**2).sum(axis=1)), x, seed_grad=np.array([1.0, -2.0, 0.5]))
    expected = 2 * values_of(3, 4) * np.array([1.0, -2.0, 0.5])[:, None]
    assert_close(got, expected, "numerical_grad of sum(seed_grad * (x**2).sum(axis=1))", atol=FD_ATOL, rtol=FD_RTOL)


@pytest.mark.under_test("numerical_grad")
def test_numerical_grad_restores_inputs_and_records_no_graph():
    # Values of the size of eps: for them (x - eps) + eps is often not exactly x in floating point.
    x = Tensor(np.random.default_rng(0).uniform(-3e-6, 3e-6, (2, 3)), requires_grad=True)
    before = x.data.copy()
    graph_recorded = []

    def f(x):
        out = ref_mul(x, x)
        graph_recorded.append(out.requires_grad)
        return out

    numerical_grad(f, x)
    assert np.array_equal(x.data, before), (
        "numerical_grad changed the input's values: after moving an element by +-eps, put back the value "
        "it had (store it; x + eps - eps is not always x in floating point)"
    )
    assert graph_recorded, "numerical_grad never called f"
    assert not any(graph_recorded), "numerical_grad should evaluate f under no_grad(): f's result recorded a graph"
    assert x.grad is None, "numerical_grad should not call backward(): x.grad was set"


# ---------------------------------------------------------------------- gradcheck on correct ops
CORRECT = {
    "sum(sin(a) * b)": (lambda a, b: ref_sum(ref_mul(ref_sin(a), b)), [(3, 4), (3, 4)]),
    "a @ b": (ref_matmul, [(2, 3), (3, 4)]),
    "sin(a @ b) + a @ b": (lambda a, b: ref_add(ref_sin(ref_matmul(a, b)), ref_matmul(a, b)), [(3, 2), (2, 2)]),
    "a * a": (lambda a: ref_mul(a, a), [(5,)]),
}


@pytest.mark.parametrize("name", CORRECT)
def test_gradcheck_passes_on_correct_ops(name):
    f, shapes = CORRECT[name]
    inputs = [tensor(*s, seed=i) for i, s in enumerate(shapes)]
    try:
        result = gradcheck(f, *inputs)
    except GradcheckError as error:
        raise AssertionError(f"gradcheck of {name}, whose gradients are right, failed: {error}") from None
    assert result is True, f"gradcheck of {name} should return True when the gradients agree, got {result!r}"


def test_gradcheck_ignores_stale_gradients():
    a, b = tensor(2, 3), tensor(3, 2, seed=1)
    a.grad, b.grad = np.full((2, 3), 100.0), np.full((3, 2), -7.0)  # left over from some earlier backward
    assert gradcheck(ref_matmul, a, b) is True, "gradcheck should return True for a @ b"


def test_gradcheck_checks_only_inputs_that_require_grad():
    a, c = tensor(2, 3), tensor(2, 3, seed=1, requires_grad=False)
    assert gradcheck(lambda a, c: ref_mul(a, c), a, c) is True, "gradcheck should return True for a * c"
    assert c.grad is None, "c does not require grad; gradcheck should not give it a gradient"


# ---------------------------------------------------------------------- gradcheck on wrong ops
def mul_with_a_wrong_element(a, b):
    """a * b whose gradient for b is wrong at element (1, 2) only."""
    def backward(g):
        grad_b = g * a.data
        grad_b[1, 2] += 0.5
        return g * b.data, grad_b

    return Tensor._from_op(a.data * b.data, (a, b), backward)


def sin_with_the_wrong_sign(a):
    return Tensor._from_op(np.sin(a.data), (a,), lambda g: (-g * np.cos(a.data),))


def reverse_without_reversing_the_gradient(a):
    """a[::-1] whose backward forgets to reverse g: right for an all-ones upstream gradient, wrong otherwise."""
    return Tensor._from_op(a.data[::-1].copy(), (a,), lambda g: (g,))


def test_gradcheck_names_the_wrong_input_and_element():
    a, b = tensor(2, 3), tensor(2, 3, seed=1)
    with pytest.raises(GradcheckError) as info:
        gradcheck(mul_with_a_wrong_element, a, b)
    message = str(info.value)
    assert "input 1" in message, (
        f"the gradient of input 1 is wrong; gradcheck's message should say 'input 1', got: {message}"
    )
    assert "(1, 2)" in message, (
        f"the gradient is wrong at element (1, 2); gradcheck's message should name it, got: {message}"
    )


# Wrong gradients of a * b + c, (2, 3) * (2, 3) + (3,): (input, element) -> how far off autograd is. Each
# case puts the worst error in another input, with smaller errors before and after it (in an earlier input,
# a later input, and at an earlier element of the same input): a message that names the first or the last
# wrong input, or the first wrong element of the worst input, names the wrong place.
SEVERAL_WRONG = {
    "worst in input 0": {(1, (0, 0)): 0.3, (0, (0, 2)): 0.2, (0, (1, 1)): 0.8, (2, (2,)): 0.5},
    "worst in input 1": {(0, (0, 1)): 0.3, (1, (0, 0)): 0.2, (1, (1, 2)): 0.9, (2, (1,)): 0.5},
    "worst in input 2": {(0, (1, 0)): 0.4, (1, (0, 2)): 0.6, (2, (0,)): 0.1, (2, (2,)): 0.7},
}


@pytest.mark.parametrize("case", SEVERAL_WRONG)
def test_gradcheck_names_the_worst_of_several_wrong_elements(case):
    errors = SEVERAL_WRONG[case]

    def mul_add_with_wrong_elements(a, b, c):
        def backward(g):
            grads = [g * b.data, g * a.data, g.sum(axis=0)]
            for (position, index), amount in errors.items():
                grads[position][index] += amount
            return tuple(grads)

        return Tensor._from_op(a.data * b.data + c.data, (a, b, c), backward)

    (position, index), amount = max(errors.items(), key=lambda item: item[1])
    with pytest.raises(GradcheckError) as info:
        gradcheck(mul_add_with_wrong_elements, tensor(2, 3), tensor(2, 3, seed=1), tensor(3, seed=2))
    message = str(info.value)
    wrong = ", ".join(f"input {p} at {i} by {x}" for (p, i), x in errors.items())
    assert f"input {position}" in message and str(index) in message, (
        f"the gradients are wrong in several places ({wrong}); gradcheck's message should name the worst, "
        f"input {position} at element {index}, off by {amount}; got: {message}"
    )


def test_gradcheck_fails_on_a_wrong_sign():
    a = tensor(4, 2)
    with pytest.raises(GradcheckError) as info:
        gradcheck(sin_with_the_wrong_sign, a)
    assert "input 0" in str(info.value), f"gradcheck's message should name input 0, got: {info.value}"


def test_gradcheck_error_is_an_assertion_error():
    assert issubclass(GradcheckError, AssertionError), "GradcheckError should subclass AssertionError"
    with pytest.raises(AssertionError):
        gradcheck(sin_with_the_wrong_sign, tensor(3))


def test_gradcheck_uses_a_random_seed_gradient():
    # With a seed of all ones, g reversed equals g and this wrong backward would go unnoticed.
    a = tensor(6)
    with pytest.raises(GradcheckError):
        gradcheck(reverse_without_reversing_the_gradient, a)


def test_gradcheck_refuses_float32_inputs():
    assert gradcheck(ref_sin, tensor(3)) is True, "gradcheck of sin on float64 input should return True"
    x32 = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="float64"):
        gradcheck(ref_sin, x32)
