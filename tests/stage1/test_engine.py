"""Exercise 1.7: the backward engine (backward, zero_grad, detach, no_grad and freeing the graph).

The graphs here are built from a few reference ops made with ``Tensor._from_op`` (tests/helpers.py), so
this exercise is graded on the engine alone, whatever the state of the ops of 1.2-1.6.
"""

import gc

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor, no_grad
from tests.helpers import assert_close, assert_equal, ref_add, ref_matmul, ref_mul, ref_sin, ref_sum
from tests.stage1.student_side import chain_of_products, data_probe, still_alive

pytestmark = [pytest.mark.exercise("1.7"), pytest.mark.under_test("Tensor.backward", "_topological_order")]


def leaf(*shape, seed=0, requires_grad=True):
    """A leaf of the test's own values (checked: expected gradients are computed from its ``.data``)."""
    values = np.random.default_rng(seed).standard_normal(shape)
    t = Tensor(values.copy(), requires_grad=requires_grad)
    assert_equal(t.data, values, f"Tensor(values of shape {shape}).data (the given constructor keeps the values)")
    return t


def expect_error(kind, call, what):
    """``call()`` must raise ``kind``; returns the exception. A NotImplementedError (a RuntimeError too) is
    let through: it means the exercise is not written yet, not that it raised the right error."""
    try:
        call()
    except NotImplementedError:
        raise
    except kind as error:
        return error
    raise AssertionError(f"{what}: expected {kind.__name__}, but no error was raised")


# ---------------------------------------------------------------------- seeding the backward pass
def test_scalar_loss_needs_no_seed():
    x = leaf(3, 4)
    loss = ref_sum(ref_mul(x, x))  # sum(x**2), a 0-d tensor
    loss.backward()
    assert_close(x.grad, 2 * x.data, "loss = sum(x * x); loss.backward(): gradient of x")


def test_single_element_loss_of_shape_1_1_needs_no_seed():
    x = leaf(1, 1)
    loss = ref_sin(x)
    loss.backward()
    assert_close(x.grad, np.cos(x.data), "loss = sin(x) with x of shape (1, 1); loss.backward(): gradient of x")


def test_non_scalar_output_without_seed_raises_and_names_the_shape():
    y = ref_mul(leaf(2, 3), leaf(2, 3, seed=1))
    error = expect_error(RuntimeError, y.backward, "y.backward() on y of shape (2, 3) without a gradient")
    assert "(2, 3)" in str(error), (
        f"y.backward() on y of shape (2, 3) without a gradient: the error should name the shape (2, 3), "
        f"got: {error}"
    )


def test_explicit_seed_gradient():
    x, c = leaf(2, 3), leaf(2, 3, seed=1, requires_grad=False)
    seed = np.random.default_rng(2).standard_normal((2, 3))
    ref_mul(x, c).backward(seed)
    assert_close(x.grad, seed * c.data, "y = x * c; y.backward(seed): gradient of x")


def test_seed_of_the_wrong_shape_raises_value_error():
    y = ref_mul(leaf(2, 3), leaf(2, 3, seed=1))
    expect_error(ValueError, lambda: y.backward(np.ones((3, 2))),
                 "y of shape (2, 3): y.backward(a seed of shape (3, 2))")


def test_backward_on_a_tensor_that_requires_no_grad_raises():
    y = ref_mul(leaf(2, 3, requires_grad=False), leaf(2, 3, seed=1, requires_grad=False))
    expect_error(RuntimeError, lambda: ref_sum(y).backward(), "backward() on a result of inputs that require no grad")


def test_float32_tensors_get_float32_gradients():
    x = Tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    ref_sum(ref_mul(x, x)).backward()
    assert x.grad.dtype == np.float32, f"a float32 tensor should get a float32 .grad, got {x.grad.dtype}"


# ---------------------------------------------------------------------- the order of the walk
def test_value_used_twice_by_one_op():
    x = leaf(4)
    ref_sum(ref_mul(x, x)).backward()
    assert_close(x.grad, 2 * x.data, "sum(x * x): gradient of x (x is both inputs of the product)")


def test_diamond_graph_matches_torch():
    # a is used by two paths of different lengths; its gradient is complete only after both have reached it,
    # so a's backward must run after b's and c's: the reversed topological order.
    def graph(x, w, add, mul, sin, matmul, total):
        a = sin(matmul(x, w))  # (3, 2)
        b = mul(a, a)
        c = sin(mul(b, a))
        return total(add(add(c, a), b))

    x, w = leaf(3, 4), leaf(4, 2, seed=1)
    graph(x, w, ref_add, ref_mul, ref_sin, ref_matmul, ref_sum).backward()

    xt, wt = (torch.tensor(t.data, requires_grad=True) for t in (x, w))
    graph(xt, wt, torch.add, torch.mul, torch.sin, torch.matmul, torch.sum).backward()
    assert_close(x.grad, xt.grad, "a diamond graph (a value used along two paths): gradient of x")
    assert_close(w.grad, wt.grad, "a diamond graph (a value used along two paths): gradient of w")


@pytest.mark.under_test("_topological_order", "Tensor.backward")
def test_chain_of_10000_ops_does_not_recurse():
    x = leaf(3)
    factor = Tensor(np.full(3, 1.0001))
    total = chain_of_products(x, factor, 10_000)  # built beside the code under test: 10 000 ops, one call
    try:
        total.backward()
    except RecursionError:
        raise AssertionError(
            "backward() on a chain of 10 000 ops hit Python's recursion limit: order the graph with an "
            "explicit stack (a list you push to and pop from) instead of a recursive function"
        ) from None
    assert_close(x.grad, np.full(3, 1.0001**10_000), "a chain of 10 000 multiplications by 1.0001: gradient of x")


# ---------------------------------------------------------------------- accumulation, zero_grad, detach
def test_gradients_accumulate_across_backward_calls():
    x = leaf(3)
    for _ in range(2):
        ref_sum(ref_sin(x)).backward()  # a new forward pass each time
    assert_close(x.grad, 2 * np.cos(x.data),
                 "two forward/backward passes of sum(sin(x)) without zero_grad(): gradient of x (should add up)")


@pytest.mark.under_test("Tensor.zero_grad")
def test_zero_grad_forgets_the_gradient():
    x = leaf(3)
    ref_sum(ref_sin(x)).backward()
    x.zero_grad()
    assert x.grad is None or not np.any(x.grad), f"after x.zero_grad(), x.grad should be None or zeros, got {x.grad}"
    ref_sum(ref_sin(x)).backward()
    assert_close(x.grad, np.cos(x.data), "backward, zero_grad, backward again: gradient of x (only the last pass)")


def test_leaf_gradient_owns_its_memory():
    # An optimizer updates .grad in place; it must not write into an array the op or the caller still uses.
    x = leaf(2, 3)
    seed = np.ones((2, 3))
    ref_add(x, leaf(2, 3, seed=1, requires_grad=False)).backward(seed)
    x.grad *= 0
    assert np.all(seed == 1), "changing x.grad in place changed the seed passed to backward(): copy the leaf's gradient"


@pytest.mark.under_test("Tensor.detach")
def test_detach_stops_the_gradient():
    x = leaf(3)
    d = x.detach()
    assert not d.requires_grad, "x.detach() must return a tensor with requires_grad=False"
    assert np.array_equal(d.data, x.data), "x.detach() must have the same values as x"
    ref_sum(ref_mul(d, x)).backward()  # only the path through x itself counts
    assert_close(x.grad, x.data, "sum(x.detach() * x): gradient of x (nothing flows through the detached copy)")


def test_requires_grad_propagates_and_only_those_inputs_get_gradients():
    x, c = leaf(3), leaf(3, seed=1, requires_grad=False)
    assert ref_mul(x, c).requires_grad, "x * c with x requiring grad: the result must require grad"
    assert not ref_mul(c, c).requires_grad, "c * c with c requiring no grad: the result must not require grad"
    ref_sum(ref_mul(x, c)).backward()
    assert_close(x.grad, c.data, "sum(x * c): gradient of x")
    assert c.grad is None, f"c does not require grad: backward() must leave c.grad as None, got {c.grad}"


# ---------------------------------------------------------------------- no_grad
@pytest.mark.under_test("no_grad")
def test_no_grad_records_no_graph_and_restores_recording():
    x = leaf(3)
    with no_grad():
        y = ref_mul(x, x)
    assert not y.requires_grad and not y._parents, "an op inside `with no_grad():` must record no graph"
    z = ref_mul(x, x)
    assert z.requires_grad, "after the `with no_grad():` block, ops must record the graph again"


@pytest.mark.under_test("no_grad")
def test_no_grad_nests():
    x = leaf(3)
    with no_grad():
        with no_grad():
            pass
        y = ref_mul(x, x)
    assert not y.requires_grad, "inside an outer no_grad(), after an inner one ended, ops must still record nothing"
    assert ref_mul(x, x).requires_grad, "after both no_grad() blocks, ops must record the graph again"


@pytest.mark.under_test("no_grad")
def test_no_grad_restores_recording_after_an_exception():
    x = leaf(3)
    with pytest.raises(KeyError):
        with no_grad():
            raise KeyError("raised inside the block")
    assert ref_mul(x, x).requires_grad, (
        "an exception inside `with no_grad():` left gradient recording switched off: restore it in a finally:"
    )


# ---------------------------------------------------------------------- freeing the graph
def test_backward_releases_the_graph():
    x = leaf(1000)
    hidden = ref_sin(ref_mul(x, x))  # an intermediate result, held only by the graph below
    probe = data_probe(hidden)  # taken where the arrays live (the student process in authoritative grading)
    loss = ref_sum(ref_mul(hidden, hidden))
    del hidden
    gc.collect()
    held_before = still_alive(probe)
    loss.backward()
    gc.collect()
    released = not still_alive(probe)
    assert held_before, "test setup: the graph should hold the intermediate result before backward()"
    assert released, (
        "after loss.backward() the graph's intermediate arrays are still alive: once a node's _backward has run, "
        "drop its _parents and its _backward (they hold the inputs), so memory is freed at every step"
    )
    assert_close(x.grad, 4 * np.sin(x.data**2) * np.cos(x.data**2) * x.data, "sum(sin(x*x)**2): gradient of x")


def test_second_backward_through_a_freed_graph_raises():
    x = leaf(3)
    loss = ref_sum(ref_sin(x))
    loss.backward()
    expect_error(RuntimeError, loss.backward, "a second loss.backward() through a graph the first one freed")
    assert_close(x.grad, np.cos(x.data), "sum(sin(x)) after one backward and a refused second one: gradient of x")
