"""Tensor: an n-dimensional NumPy array that remembers how it was computed.

Every operation returns a new Tensor holding
  * ``data``       the value, an ``np.ndarray``;
  * ``_parents``   the Tensors it was computed from;
  * ``_backward``  a function ``g -> (grad for parent 0, grad for parent 1, ...)`` that turns
                   dL/d(output) into dL/d(parent) for each parent (the chain rule, one step).

``backward()`` walks this graph from the output back to the leaves in reverse topological order,
calls each node's ``_backward`` and adds the results into ``.grad`` of the parents.

The contract every op follows (the tests of exercises 1.2-1.6 rely on it):
  * ``_backward(g)`` receives ``g`` with the shape of the output and returns one gradient per parent,
    each with that parent's shape (or ``None`` for a parent that does not require grad);
  * it never modifies ``g`` in place: the same array may be handed to several parents;
  * dtypes are kept: an op on float32 tensors gives a float32 result and float32 gradients (a float32
    tensor's gradient is float32; float64 likewise). A Python number next to a tensor takes the tensor's
    dtype; beware of float64 constants in a backward, which NumPy would silently promote a float32 g to.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

# Switched off by ``no_grad()``: ops then record no graph, which saves memory at inference time.
_grad_enabled = True


class Tensor:
    # __slots__ keeps each Tensor small and attribute access fast; a GPT step creates thousands.
    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward")
    # Makes ``ndarray * Tensor`` call ``Tensor.__rmul__`` instead of NumPy trying to handle a Tensor.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False):
        """Wrap ``data`` (a number, a nested list or an ndarray; always copied).

        NumPy floating arrays keep their dtype (float32 stays float32, float64 stays float64);
        everything else (Python numbers, lists, integer or bool arrays) becomes float32.
        """
        if isinstance(data, Tensor):
            data = data.data
        if isinstance(data, (np.ndarray, np.generic)) and data.dtype.kind == "f":
            self.data = np.array(data)
        else:
            self.data = np.array(data, dtype=np.float32)
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._parents: tuple[Tensor, ...] = ()
        self._backward: Callable | None = None

    # ------------------------------------------------------------------ plumbing (given)
    @staticmethod
    def _from_op(data, parents: tuple[Tensor, ...], backward: Callable) -> Tensor:
        """The result of an op: records parents and backward only when a gradient is needed."""
        out = Tensor.__new__(Tensor)
        out.data = np.asarray(data)  # reductions may return a NumPy scalar; keep an ndarray
        out.grad = None
        out.requires_grad = _grad_enabled and any(p.requires_grad for p in parents)
        out._parents = parents if out.requires_grad else ()
        out._backward = backward if out.requires_grad else None
        return out

    def _lift(self, other) -> Tensor:
        """Turn a number or array operand into a constant Tensor; numbers take this tensor's dtype."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (int, float)):
            return Tensor(np.asarray(other, dtype=self.data.dtype))
        return Tensor(other)

    def _accumulate(self, grad: np.ndarray) -> None:
        """Add ``grad`` into ``self.grad`` (allocated on first use), in this tensor's dtype."""
        if np.shape(grad) != self.data.shape:
            raise ValueError(
                f"a backward function returned a gradient of shape {np.shape(grad)} for a tensor of shape "
                f"{self.data.shape}: every gradient must have the shape of its tensor. Sum a larger one down to "
                "it (unbroadcast, for an operand that was broadcast), or spread a smaller one over it "
                "(np.expand_dims and np.broadcast_to, for the input of a reduction)"
            )
        if self.grad is None:
            # A leaf's .grad is handed to optimizers, which may update it in place, so it must own
            # its memory; an interior gradient may alias another node's (it is never written to).
            is_leaf = self._backward is None
            self.grad = np.array(grad, dtype=self.data.dtype) if is_leaf else np.asarray(grad, dtype=self.data.dtype)
        else:
            self.grad = np.add(self.grad, grad, dtype=self.data.dtype)

    # ------------------------------------------------------------------ conveniences (given)
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def item(self) -> float:
        return self.data.item()

    def numpy(self) -> np.ndarray:
        return self.data

    def __repr__(self) -> str:
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, separator=', ')}{flag})"

    # ------------------------------------------------------------------ 1.2 elementwise arithmetic
    def __add__(self, other) -> Tensor:
        # TODO 1.2: d(a+b)/da = 1 and d(a+b)/db = 1; sum each gradient back to its operand's shape
        raise NotImplementedError("Exercise 1.2 (Tensor elementwise arithmetic) is not done yet")

    def __mul__(self, other) -> Tensor:
        # TODO 1.2: d(a*b)/da = b and d(a*b)/db = a
        raise NotImplementedError("Exercise 1.2 (Tensor elementwise arithmetic) is not done yet")

    def __sub__(self, other) -> Tensor:
        # TODO 1.2: d(a-b)/da = 1 and d(a-b)/db = -1
        raise NotImplementedError("Exercise 1.2 (Tensor elementwise arithmetic) is not done yet")

    def __truediv__(self, other) -> Tensor:
        # TODO 1.2: d(a/b)/da = 1/b and d(a/b)/db = -a/b**2
        raise NotImplementedError("Exercise 1.2 (Tensor elementwise arithmetic) is not done yet")

    def __pow__(self, exponent: float) -> Tensor:
        """``self ** exponent`` for a number ``exponent``."""
        # TODO 1.2: d(x**p)/dx = p * x**(p-1)
        raise NotImplementedError("Exercise 1.2 (Tensor elementwise arithmetic) is not done yet")

    def __neg__(self) -> Tensor:
        # TODO 1.2: d(-x)/dx = -1
        raise NotImplementedError("Exercise 1.2 (Tensor elementwise arithmetic) is not done yet")

    def __radd__(self, other) -> Tensor:
        # TODO 1.2: other + self, where other is a number or an array
        raise NotImplementedError("Exercise 1.2 (Tensor elementwise arithmetic) is not done yet")

    def __rmul__(self, other) -> Tensor:
        # TODO 1.2: other * self
        raise NotImplementedError("Exercise 1.2 (Tensor elementwise arithmetic) is not done yet")

    def __rsub__(self, other) -> Tensor:
        # TODO 1.2: other - self (order matters)
        raise NotImplementedError("Exercise 1.2 (Tensor elementwise arithmetic) is not done yet")

    def __rtruediv__(self, other) -> Tensor:
        # TODO 1.2: other / self (order matters)
        raise NotImplementedError("Exercise 1.2 (Tensor elementwise arithmetic) is not done yet")

    # ------------------------------------------------------------------ 1.3 unary functions
    def exp(self) -> Tensor:
        # TODO 1.3: d(e**x)/dx = e**x, which is the output itself
        raise NotImplementedError("Exercise 1.3 (Unary functions) is not done yet")

    def log(self) -> Tensor:
        # TODO 1.3: d(ln x)/dx = 1/x
        raise NotImplementedError("Exercise 1.3 (Unary functions) is not done yet")

    def sqrt(self) -> Tensor:
        # TODO 1.3: d(sqrt x)/dx = 1 / (2 sqrt x)
        raise NotImplementedError("Exercise 1.3 (Unary functions) is not done yet")

    def tanh(self) -> Tensor:
        # TODO 1.3: d(tanh x)/dx = 1 - tanh(x)**2
        raise NotImplementedError("Exercise 1.3 (Unary functions) is not done yet")

    def sigmoid(self) -> Tensor:
        # TODO 1.3: s = 1/(1+e**-x) overflows for large -x; use s = (1 + tanh(x/2)) / 2. ds/dx = s(1-s)
        raise NotImplementedError("Exercise 1.3 (Unary functions) is not done yet")

    def relu(self) -> Tensor:
        # TODO 1.3: the gradient passes where x > 0 and is 0 elsewhere (also at x == 0, as in PyTorch)
        raise NotImplementedError("Exercise 1.3 (Unary functions) is not done yet")

    def sin(self) -> Tensor:
        # TODO 1.3: d(sin x)/dx = cos x
        raise NotImplementedError("Exercise 1.3 (Unary functions) is not done yet")

    def cos(self) -> Tensor:
        # TODO 1.3: d(cos x)/dx = -sin x
        raise NotImplementedError("Exercise 1.3 (Unary functions) is not done yet")

    def abs(self) -> Tensor:
        # TODO 1.3: d|x|/dx = sign(x), taken as 0 at x == 0 (as in PyTorch)
        raise NotImplementedError("Exercise 1.3 (Unary functions) is not done yet")

    # ------------------------------------------------------------------ 1.4 reductions
    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Sum over ``axis`` (an int, a tuple of ints, or None for all axes)."""
        # TODO 1.4: every input element contributes once, so its gradient is g, broadcast back
        raise NotImplementedError("Exercise 1.4 (Reductions: sum, mean, max) is not done yet")

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Mean over ``axis``: the sum divided by the number of elements reduced."""
        # TODO 1.4: a sum scaled by 1/count, so reuse sum()
        raise NotImplementedError("Exercise 1.4 (Reductions: sum, mean, max) is not done yet")

    def max(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Maximum over ``axis``. Where several elements tie for the maximum, they share the
        gradient equally (as ``torch.amax`` does)."""
        # TODO 1.4: the gradient flows to the maximal elements only, split evenly between ties
        raise NotImplementedError("Exercise 1.4 (Reductions: sum, mean, max) is not done yet")

    # ------------------------------------------------------------------ 1.5 matrix multiplication
    def __matmul__(self, other) -> Tensor:
        """``self @ other`` with ``np.matmul`` semantics: 1-D operands are promoted to a row (left)
        or column (right) and the added axis is dropped again; leading axes broadcast as batches."""
        # TODO 1.5: for C = A @ B, dA = dC @ B^T and dB = A^T @ dC, summed over broadcast batch axes
        raise NotImplementedError("Exercise 1.5 (Matrix multiplication) is not done yet")

    def __rmatmul__(self, other) -> Tensor:
        return self._lift(other) @ self

    # ------------------------------------------------------------------ 1.6 shape operations
    def reshape(self, *shape) -> Tensor:
        """``x.reshape(2, 3)`` or ``x.reshape((2, 3))``; one size may be -1."""
        # TODO 1.6: the gradient is reshaped back to the input's shape
        raise NotImplementedError("Exercise 1.6 (Shape ops: reshape, transpose, indexing, joining) is not done yet")

    def transpose(self, *axes) -> Tensor:
        """Permute the axes: ``x.transpose(1, 0, 2)``; with no arguments, reverse them all."""
        # TODO 1.6: undo the permutation on the gradient (np.argsort of the normalised axes inverts it)
        raise NotImplementedError("Exercise 1.6 (Shape ops: reshape, transpose, indexing, joining) is not done yet")

    @property
    def T(self) -> Tensor:
        """All axes reversed, as ``ndarray.T``."""
        return self.transpose()

    def __getitem__(self, index) -> Tensor:
        """NumPy indexing: ints, slices, None, Ellipsis, boolean masks and integer arrays."""
        # TODO 1.6: scatter g back into zeros; np.add.at adds (not overwrites) at repeated indices
        raise NotImplementedError("Exercise 1.6 (Shape ops: reshape, transpose, indexing, joining) is not done yet")

    # ------------------------------------------------------------------ 1.7 the backward engine
    def backward(self, grad=None) -> None:
        """Fill ``.grad`` of every tensor this one depends on with d(self)/d(tensor), weighted by ``grad``.

        ``grad`` is dL/d(self); it may be omitted for a single-element tensor (it is then 1).
        Gradients add up across calls until ``zero_grad()``. The graph is freed as it is walked,
        so a second ``backward()`` through it raises an error: compute the forward pass again.

        Raises ``RuntimeError`` if this tensor does not require grad, or if ``grad`` is omitted for a tensor
        of more than one element (the message names its shape); ``ValueError`` if ``grad`` has another shape.
        """
        # TODO 1.7: seed this tensor's grad, then call _backward on every node, outputs first
        raise NotImplementedError("Exercise 1.7 (The backward engine) is not done yet")

    def zero_grad(self) -> None:
        """Forget the accumulated gradient."""
        # TODO 1.7: None (not zeros) so the next backward allocates it only if it is needed
        raise NotImplementedError("Exercise 1.7 (The backward engine) is not done yet")

    def detach(self) -> Tensor:
        """The same values, cut from the graph: no gradient flows through the result."""
        # TODO 1.7: share the data, record no parents
        raise NotImplementedError("Exercise 1.7 (The backward engine) is not done yet")


# ---------------------------------------------------------------------- helpers used by the ops
def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` down to ``shape``, undoing NumPy broadcasting.

    An operand of shape ``shape`` that was broadcast to ``grad.shape`` was copied along the new
    leading axes and along its size-1 axes; each copy contributed to the output, so the gradient
    of the operand is the sum over those axes.
    """
    # TODO 1.2: sum over the leading axes broadcasting added, then over axes that were 1 in shape
    raise NotImplementedError("Exercise 1.2 (Tensor elementwise arithmetic) is not done yet")


def power(data: np.ndarray, p: float) -> np.ndarray:
    """data ** p. Speed-up: NumPy's x**3 calls pow() for every element (only x**2 and a few others are
    special-cased); for p = 2, 3, 4 a product of that many factors gives the same value, to rounding, several
    times faster."""
    if p in (2, 3, 4):
        result = data * data
        for _ in range(int(p) - 2):
            result *= data
        return result
    return data**p


def _matmul_of_rows(a: np.ndarray, b: np.ndarray, left: Tensor, right: Tensor):
    """The speed-up of ``__matmul__`` for a (..., m, k) @ b (k, n): the same product, and its gradients
    (dA = g @ b^T, dB = a^T @ g summed over the batch), as ONE 2-D product of all the rows of a: one BLAS call
    instead of one per batch item, and b's gradient one product instead of a batch of them summed.
    Returns (out (..., m, n), backward)."""
    rows = a.reshape(-1, a.shape[-1])  # (N, k), N = all the rows of the batch
    out = (rows @ b).reshape(*a.shape[:-1], b.shape[-1])

    def backward(g):
        g_rows = g.reshape(-1, b.shape[-1])  # (N, n)
        grad_a = (g_rows @ b.T).reshape(left.shape) if left.requires_grad else None
        grad_b = (rows.T @ g_rows).reshape(right.shape) if right.requires_grad else None
        return grad_a, grad_b

    return out, backward


def _normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """None -> all axes; an int or a tuple -> a tuple of non-negative axes."""
    return tuple(range(ndim)) if axis is None else normalize_axis_tuple(axis, ndim)


def _keep_reduced_dims(g: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """Give the gradient of a reduction's output size-1 axes where the reduction removed them,
    so that it broadcasts against the input."""
    return g if keepdims else np.expand_dims(g, axes)


def _is_basic_index(index) -> bool:
    """True for indexes made only of ints, slices, None and Ellipsis (NumPy's "basic" indexing)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in parts)


def _graph_already_freed(g):
    raise RuntimeError(
        "backward() went through a part of the graph that an earlier backward() already freed. "
        "Compute the forward pass again before calling backward() a second time."
    )


def _topological_order(root: Tensor) -> list[Tensor]:
    """Every tensor ``root`` depends on (that requires grad), each listed after all its parents.

    Iterative depth-first search: a recursive one hits Python's recursion limit on deep graphs
    (an RNN unrolled over a long sequence, a 10 000-step chain).
    """
    # TODO 1.7: depth-first search with an explicit stack; a node is appended once all its parents are
    raise NotImplementedError("Exercise 1.7 (The backward engine) is not done yet")


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """``with no_grad():`` ops inside record no graph (for evaluation and optimizer updates)."""
    # TODO 1.7: switch the module flag _grad_enabled off, and restore it even if the body raises
    raise NotImplementedError("Exercise 1.7 (The backward engine) is not done yet")


# ---------------------------------------------------------------------- 1.6 joining tensors
def concatenate(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis, as ``np.concatenate``."""
    # TODO 1.6: split the gradient back into pieces of the inputs' sizes along axis
    raise NotImplementedError("Exercise 1.6 (Shape ops: reshape, transpose, indexing, joining) is not done yet")


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join same-shaped tensors along a new axis, as ``np.stack``."""
    # TODO 1.6: the gradient of input i is the slice i of g along the new axis
    raise NotImplementedError("Exercise 1.6 (Shape ops: reshape, transpose, indexing, joining) is not done yet")
