"""Comparisons shared by the graded tests, with failure messages written for a student.

A failure says what was computed, what was expected and what came back: shapes, dtypes, the largest
absolute difference and where it is.
"""

from __future__ import annotations

import numpy as np
import torch

# float64 on both sides: differences beyond these come from a wrong formula, not from rounding.
ATOL = 1e-9
RTOL = 1e-7


def as_array(x) -> np.ndarray | None:
    """A NumPy view of our Tensor, a torch tensor, an ndarray or a number (None stays None)."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    if hasattr(x, "data") and isinstance(getattr(x, "data"), np.ndarray):  # our Tensor
        return x.data
    return np.asarray(x)


def assert_close(got, expected, what: str, atol: float = ATOL, rtol: float = RTOL) -> None:
    """Assert ``got`` equals ``expected`` elementwise within tolerance; ``what`` names the quantity."""
    got_arr, exp_arr = as_array(got), as_array(expected)
    if got_arr is None:
        raise AssertionError(f"{what}: expected an array of shape {exp_arr.shape}, got None")
    if got_arr.shape != exp_arr.shape:
        raise AssertionError(f"{what}: expected shape {exp_arr.shape}, got shape {got_arr.shape}")
    if got_arr.size == 0:
        return
    got64, exp64 = got_arr.astype(np.float64), exp_arr.astype(np.float64)
    bad = ~np.isclose(got64, exp64, atol=atol, rtol=rtol, equal_nan=True)
    if bad.any():
        diff = np.array(np.abs(got64 - exp64))  # np.array: for 0-d inputs np.abs returns a scalar, not an array
        diff[~bad] = 0  # locate the worst among the elements that are actually out of tolerance
        where = np.unravel_index(np.nanargmax(np.where(np.isnan(diff), np.inf, diff)), diff.shape)
        at = f" at index {tuple(int(i) for i in where)}" if got_arr.ndim else ""
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements differ (shape {got_arr.shape}, dtype {got_arr.dtype}); "
            f"largest difference {diff[where]:.3g}{at}: expected {exp64[where]:.6g}, got {got64[where]:.6g}"
        )


def describe(arrays) -> str:
    return ", ".join(f"input {i} of shape {np.shape(a)}" for i, a in enumerate(arrays))


def run_backward(out, grad: np.ndarray) -> None:
    """Push ``grad`` (dL/d out) back through the graph by calling each node's ``_backward``, exactly as
    ``Tensor.backward()`` does, but without using it: exercises 1.2-1.6 are graded before 1.7 is written."""
    order, seen, stack = [], set(), [(out, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents if p.requires_grad)
    grads = {id(out): grad}
    for node in reversed(order):
        if node._backward is None:
            node.grad = grads[id(node)]
            continue
        parent_grads = node._backward(grads[id(node)])
        assert len(parent_grads) == len(node._parents), (
            f"_backward returned {len(parent_grads)} gradients for an op with {len(node._parents)} inputs"
        )
        for parent, g in zip(node._parents, parent_grads):
            if g is not None and parent.requires_grad:
                g = np.asarray(g)
                assert g.shape == parent.shape, (
                    f"_backward returned a gradient of shape {g.shape} for an input of shape {parent.shape}: "
                    "each gradient must have its input's shape (unbroadcast it)"
                )
                grads[id(parent)] = grads[id(parent)] + g if id(parent) in grads else g


def compare_with_torch(fn, *arrays, torch_fn=None, label: str = "", seed: int = 0, use_engine: bool = False,
                       grad_inputs=None):
    """Run ``fn`` on our Tensors and ``torch_fn`` (default: ``fn``) on torch tensors, all float64, with the
    same random upstream gradient; assert the outputs and every input's gradient agree.

    ``grad_inputs`` lists the indices of the inputs that require grad (default: all).
    ``use_engine`` drives the gradients with the student's ``Tensor.backward()``; otherwise with
    ``run_backward`` (for the op exercises, which come before the engine).
    Returns our output tensor.
    """
    from stage1_autograd.tensor import Tensor

    grad_inputs = range(len(arrays)) if grad_inputs is None else grad_inputs
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    ours = [Tensor(a, requires_grad=i in grad_inputs) for i, a in enumerate(arrays)]
    theirs = [torch.tensor(a, requires_grad=i in grad_inputs) for i, a in enumerate(arrays)]
    what = label or getattr(fn, "__name__", "the operation")
    what = f"{what} with {describe(arrays)}"

    out = fn(*ours)
    expected = (torch_fn or fn)(*theirs)
    assert isinstance(out, Tensor), f"{what}: expected a Tensor as the result, got {type(out).__name__}"
    assert out.dtype == np.float64, f"{what}: float64 inputs must give a float64 result, got {out.dtype}"
    assert_close(out, expected, f"{what}: value")

    upstream = np.random.default_rng(seed).standard_normal(expected.shape)
    expected.backward(torch.tensor(upstream))
    if use_engine:
        out.backward(upstream)
    else:
        run_backward(out, upstream)
    for i in grad_inputs:
        assert_close(ours[i].grad, theirs[i].grad, f"{what}: gradient of input {i}")
    return out


# ---------------------------------------------------------------------- reference ops for 1.7 and 1.8
# The tests of the engine (1.7) and of gradient checking (1.8) build their graphs from these few ops,
# made directly with the given ``Tensor._from_op`` and textbook gradients. Those exercises are then graded
# on the engine and the checker alone, whatever the state of the student's ops (1.2-1.6).

def ref_add(a, b):
    """a + b, for tensors of the same shape."""
    return type(a)._from_op(a.data + b.data, (a, b), lambda g: (g, g))


def ref_mul(a, b):
    """a * b, for tensors of the same shape."""
    return type(a)._from_op(a.data * b.data, (a, b), lambda g: (g * b.data, g * a.data))


def ref_sin(a):
    return type(a)._from_op(np.sin(a.data), (a,), lambda g: (g * np.cos(a.data),))


def ref_sum(a):
    """The sum of all elements, a 0-d tensor."""
    return type(a)._from_op(a.data.sum(), (a,), lambda g: (np.broadcast_to(g, a.shape),))


def ref_matmul(a, b):
    """a @ b for 2-D a and b."""
    return type(a)._from_op(a.data @ b.data, (a, b), lambda g: (g @ b.data.T, a.data.T @ g))
