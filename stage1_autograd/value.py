"""Value: one number that remembers how it was computed (automatic differentiation on scalars).

Every operation on Values returns a new Value holding
  * ``data``       the number (a Python float);
  * ``grad``       dL/d(this value), filled in by ``backward()`` (0.0 until then);
  * ``_parents``   the Values it was computed from;
  * ``_backward``  a function of no arguments that applies the chain rule one step: it reads this
                   node's ``grad`` and adds (local derivative * grad) into each parent's ``grad``.

``backward()`` puts the graph in topological order (every node after the nodes it was computed from),
then calls ``_backward`` from the output down to the inputs. Gradients are added with ``+=``, never
assigned: a Value used twice receives one contribution per use.

This is the scalar version of ``tensor.py``; the Tensor does the same thing with whole arrays at once.
"""

from __future__ import annotations

import math


class Value:
    def __init__(self, data: float, _parents: tuple[Value, ...] = ()):
        self.data = float(data)
        self.grad = 0.0
        self._parents = _parents
        self._backward = _nothing_to_propagate  # a leaf (an input or a constant) has no parents

    def __repr__(self) -> str:
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other) -> Value:
        # TODO 1.1: d(a+b)/da = 1 and d(a+b)/db = 1, so both inputs receive out.grad unchanged
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def __mul__(self, other) -> Value:
        # TODO 1.1: d(a*b)/da = b and d(a*b)/db = a
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def __pow__(self, exponent: float) -> Value:
        """``self ** exponent`` for a number ``exponent`` (a Value exponent is not supported)."""
        # TODO 1.1: d(x**p)/dx = p * x**(p-1)
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    # The remaining operators are built from the ones above: their gradients then come for free.
    def __neg__(self) -> Value:
        # TODO 1.1: -x is x * -1
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def __sub__(self, other) -> Value:
        # TODO 1.1: a - b is a + (-b)
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def __truediv__(self, other) -> Value:
        # TODO 1.1: a / b is a * b**-1
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    # Python calls these for ``2 + v``, ``2 - v``, ... when the number on the left does not know Values.
    def __radd__(self, other) -> Value:
        # TODO 1.1: other + self
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def __rsub__(self, other) -> Value:
        # TODO 1.1: other - self (order matters)
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def __rmul__(self, other) -> Value:
        # TODO 1.1: other * self
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def __rtruediv__(self, other) -> Value:
        # TODO 1.1: other / self (order matters)
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    # ------------------------------------------------------------------ functions of one value
    def exp(self) -> Value:
        # TODO 1.1: d(e**x)/dx = e**x, the output itself
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def log(self) -> Value:
        """Natural logarithm, for ``data > 0``."""
        # TODO 1.1: d(ln x)/dx = 1/x
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def tanh(self) -> Value:
        # TODO 1.1: d(tanh x)/dx = 1 - tanh(x)**2
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def relu(self) -> Value:
        # TODO 1.1: the gradient passes where x > 0 and is 0 elsewhere (also at x == 0, as in PyTorch)
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def sigmoid(self) -> Value:
        """1 / (1 + e**-x)."""
        # TODO 1.1: e**-x overflows for x < -709; s = (1 + tanh(x/2)) / 2 does not. ds/dx = s(1-s)
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    def sin(self) -> Value:
        # TODO 1.1: d(sin x)/dx = cos x
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")

    # ------------------------------------------------------------------ the backward pass
    def backward(self) -> None:
        """Set ``grad`` of every Value this one was computed from to d(self)/d(that value).

        Gradients add up: call it once per forward pass (and reset ``grad`` to 0.0 between passes).
        """
        # TODO 1.1: order the graph with an explicit stack (no recursion); seed 1; _backward outputs first
        raise NotImplementedError("Exercise 1.1 (Value: scalar autograd) is not done yet")


def _as_value(x) -> Value:
    """Numbers in expressions like ``v * 2`` become constant Values (leaves nobody asks the gradient of)."""
    return x if isinstance(x, Value) else Value(x)


def _nothing_to_propagate() -> None:
    pass
