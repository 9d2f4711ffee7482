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
        # BEGIN SOLUTION 1.1: d(a+b)/da = 1 and d(a+b)/db = 1, so both inputs receive out.grad unchanged
        other = _as_value(other)
        out = Value(self.data + other.data, (self, other))

        def _backward():
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out
        # END SOLUTION

    def __mul__(self, other) -> Value:
        # BEGIN SOLUTION 1.1: d(a*b)/da = b and d(a*b)/db = a
        other = _as_value(other)
        out = Value(self.data * other.data, (self, other))

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out
        # END SOLUTION

    def __pow__(self, exponent: float) -> Value:
        """``self ** exponent`` for a number ``exponent`` (a Value exponent is not supported)."""
        # BEGIN SOLUTION 1.1: d(x**p)/dx = p * x**(p-1)
        if not isinstance(exponent, (int, float)):
            raise TypeError(f"Value ** only takes a number exponent, not {type(exponent).__name__}")
        out = Value(self.data**exponent, (self,))

        def _backward():
            self.grad += exponent * self.data ** (exponent - 1) * out.grad

        out._backward = _backward
        return out
        # END SOLUTION

    # The remaining operators are built from the ones above: their gradients then come for free.
    def __neg__(self) -> Value:
        # BEGIN SOLUTION 1.1: -x is x * -1
        return self * -1.0
        # END SOLUTION

    def __sub__(self, other) -> Value:
        # BEGIN SOLUTION 1.1: a - b is a + (-b)
        return self + (-_as_value(other))
        # END SOLUTION

    def __truediv__(self, other) -> Value:
        # BEGIN SOLUTION 1.1: a / b is a * b**-1
        return self * _as_value(other) ** -1
        # END SOLUTION

    # Python calls these for ``2 + v``, ``2 - v``, ... when the number on the left does not know Values.
    def __radd__(self, other) -> Value:
        # BEGIN SOLUTION 1.1: other + self
        return self + other
        # END SOLUTION

    def __rsub__(self, other) -> Value:
        # BEGIN SOLUTION 1.1: other - self (order matters)
        return _as_value(other) - self
        # END SOLUTION

    def __rmul__(self, other) -> Value:
        # BEGIN SOLUTION 1.1: other * self
        return self * other
        # END SOLUTION

    def __rtruediv__(self, other) -> Value:
        # BEGIN SOLUTION 1.1: other / self (order matters)
        return _as_value(other) / self
        # END SOLUTION

    # ------------------------------------------------------------------ functions of one value
    def exp(self) -> Value:
        # BEGIN SOLUTION 1.1: d(e**x)/dx = e**x, the output itself
        out = Value(math.exp(self.data), (self,))

        def _backward():
            self.grad += out.data * out.grad

        out._backward = _backward
        return out
        # END SOLUTION

    def log(self) -> Value:
        """Natural logarithm, for ``data > 0``."""
        # BEGIN SOLUTION 1.1: d(ln x)/dx = 1/x
        out = Value(math.log(self.data), (self,))

        def _backward():
            self.grad += out.grad / self.data

        out._backward = _backward
        return out
        # END SOLUTION

    def tanh(self) -> Value:
        # BEGIN SOLUTION 1.1: d(tanh x)/dx = 1 - tanh(x)**2
        out = Value(math.tanh(self.data), (self,))

        def _backward():
            self.grad += (1.0 - out.data**2) * out.grad

        out._backward = _backward
        return out
        # END SOLUTION

    def relu(self) -> Value:
        # BEGIN SOLUTION 1.1: the gradient passes where x > 0 and is 0 elsewhere (also at x == 0, as in PyTorch)
        out = Value(self.data if self.data > 0 else 0.0, (self,))

        def _backward():
            self.grad += (1.0 if self.data > 0 else 0.0) * out.grad

        out._backward = _backward
        return out
        # END SOLUTION

    def sigmoid(self) -> Value:
        """1 / (1 + e**-x)."""
        # BEGIN SOLUTION 1.1: e**-x overflows for x < -709; s = (1 + tanh(x/2)) / 2 does not. ds/dx = s(1-s)
        out = Value(0.5 * (1.0 + math.tanh(0.5 * self.data)), (self,))

        def _backward():
            self.grad += out.data * (1.0 - out.data) * out.grad

        out._backward = _backward
        return out
        # END SOLUTION

    def sin(self) -> Value:
        # BEGIN SOLUTION 1.1: d(sin x)/dx = cos x
        out = Value(math.sin(self.data), (self,))

        def _backward():
            self.grad += math.cos(self.data) * out.grad

        out._backward = _backward
        return out
        # END SOLUTION

    # ------------------------------------------------------------------ the backward pass
    def backward(self) -> None:
        """Set ``grad`` of every Value this one was computed from to d(self)/d(that value).

        Gradients add up: call it once per forward pass (and reset ``grad`` to 0.0 between passes).
        """
        # BEGIN SOLUTION 1.1: order the graph with an explicit stack (no recursion); seed 1; _backward outputs first
        # Depth-first search. A node is pushed twice: first to visit its parents, then (marked done)
        # to be appended once they all have been, so every node lands after everything it depends on.
        order: list[Value] = []
        visited: set[int] = set()  # by id(): a node reached by two paths is still one node
        stack: list[tuple[Value, bool]] = [(self, False)]
        while stack:
            node, parents_done = stack.pop()
            if parents_done:
                order.append(node)
            elif id(node) not in visited:
                visited.add(id(node))
                stack.append((node, True))
                stack.extend((parent, False) for parent in node._parents)

        # Reversed, every node comes before its parents: its grad is complete when it is propagated.
        self.grad = 1.0
        for node in reversed(order):
            node._backward()
        # END SOLUTION


def _as_value(x) -> Value:
    """Numbers in expressions like ``v * 2`` become constant Values (leaves nobody asks the gradient of)."""
    return x if isinstance(x, Value) else Value(x)


def _nothing_to_propagate() -> None:
    pass
