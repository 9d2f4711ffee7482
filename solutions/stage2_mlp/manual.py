"""Backprop by hand: a two-layer MLP and its loss on plain NumPy arrays, with no autograd.

Each layer has a ``forward`` that computes its output and keeps what its gradient will need, and a
``backward`` that receives g = dL/d(output) and returns dL/d(input), storing dL/d(parameter) on the side.
Chaining the backwards in reverse order of the forwards is exactly what ``Tensor.backward()`` automates;
doing it once by hand shows there is no magic, and the tests check that both give the same numbers
(and the same as PyTorch).

Notation: a batch of N samples; ``x`` (N, D_in); a Linear layer's ``weight`` W (D_out, D_in) and
``bias`` b (D_out,), PyTorch's layout. For a scalar loss L, "the gradient of L with respect to an
array" has that array's shape: dL/dW is (D_out, D_in), like W.
"""

from __future__ import annotations

import numpy as np


class ManualLinear:
    """``y = x W^T + b``: x (N, D_in) -> y (N, D_out), that is y[n, o] = sum_i x[n, i] W[o, i] + b[o].

    ``backward(g)``, with g = dL/dy (N, D_out), stores ``grad_weight`` = dL/dW (D_out, D_in) and
    ``grad_bias`` = dL/db (D_out,) and returns dL/dx (N, D_in). Deriving the three is the exercise:
    stage2_mlp/README.md, section 8, walks you through it. ``forward`` keeps whatever ``backward`` needs.
    """

    def __init__(self, in_features: int, out_features: int, rng: np.random.Generator | None = None):
        """``weight`` (out_features, in_features) and ``bias`` (out_features,), both uniform in
        ``+-1/sqrt(in_features)`` as PyTorch's ``nn.Linear`` starts, drawn from ``rng`` (weight first;
        ``rng=None``: a fresh ``np.random.default_rng()``)."""
        # BEGIN SOLUTION 2.8: weight then bias (float64), one rng.uniform(-1/sqrt(in_features), 1/sqrt(in_features), shape) draw each; grad_weight and grad_bias start as None
        rng = np.random.default_rng() if rng is None else rng
        bound = 1.0 / np.sqrt(in_features)
        self.weight = rng.uniform(-bound, bound, size=(out_features, in_features))  # (D_out, D_in) float64
        self.bias = rng.uniform(-bound, bound, size=(out_features,))  # (D_out,)
        self.grad_weight: np.ndarray | None = None  # dL/dW, filled by backward
        self.grad_bias: np.ndarray | None = None  # dL/db, filled by backward
        self._x: np.ndarray | None = None  # the input of the last forward
        # END SOLUTION

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, D_in) -> x W^T + b (N, D_out); remembers what ``backward`` will need."""
        # BEGIN SOLUTION 2.8: remember what backward needs, then compute y
        self._x = x
        return x @ self.weight.T + self.bias
        # END SOLUTION

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """grad_out = dL/dy (N, D_out) -> dL/dx (N, D_in), for the input of the last ``forward``. Stores
        ``grad_weight`` (D_out, D_in) and ``grad_bias`` (D_out,), replacing earlier values (unlike
        PyTorch, which adds to them)."""
        # BEGIN SOLUTION 2.8: your three results of README section 8, each one array expression (check the shapes)
        if self._x is None:
            raise ValueError("ManualLinear.backward() called before forward(): there is no input to differentiate at")
        self.grad_weight = grad_out.T @ self._x  # (D_out, N) @ (N, D_in)
        self.grad_bias = grad_out.sum(axis=0)  # (D_out,)
        return grad_out @ self.weight  # (N, D_out) @ (D_out, D_in)
        # END SOLUTION


class ManualReLU:
    """``y = max(x, 0)`` elementwise. At x == 0, where ReLU has no slope, take its derivative as 0, as
    PyTorch does. ``forward`` keeps what ``backward`` needs."""

    def __init__(self):
        self._positive: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (any shape) -> max(x, 0), same shape."""
        # BEGIN SOLUTION 2.8: remember what backward needs, then compute y
        self._positive = x > 0
        return np.where(self._positive, x, 0.0)
        # END SOLUTION

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """dL/dy -> dL/dx, same shape, for the input of the last ``forward``."""
        # BEGIN SOLUTION 2.8: the chain rule with ReLU's derivative at the input of the last forward
        if self._positive is None:
            raise ValueError("ManualReLU.backward() called before forward()")
        return np.where(self._positive, grad_out, 0.0)
        # END SOLUTION


class ManualCrossEntropy:
    """The mean cross-entropy of logits z (N, C) against integer targets t (N,):

        p = softmax(z) row by row,   L = -(1/N) sum_n log p[n, t_n]

    ``backward()`` returns dL/dz (N, C), which you derive in README section 8. Subtract each row's max
    from z before exponentiating, so that e^z cannot overflow (it changes no p: the max cancels between
    numerator and denominator).
    """

    def __init__(self):
        self._probs: np.ndarray | None = None
        self._targets: np.ndarray | None = None

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        """logits (N, C), targets (N,) integers in [0, C) -> the mean loss, a Python float."""
        # BEGIN SOLUTION 2.8: a stable log-softmax of each row, then the mean of -log p at the targets; keep what backward needs
        shifted = logits - logits.max(axis=1, keepdims=True)  # (N, C), every row's max is 0
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, C)
        self._probs, self._targets = np.exp(log_probs), targets
        return float(-log_probs[np.arange(len(targets)), targets].mean())
        # END SOLUTION

    def backward(self) -> np.ndarray:
        """dL/d(logits) (N, C), for the logits and targets of the last ``forward``."""
        # BEGIN SOLUTION 2.8: your result of README section 8, from what forward kept, without a loop over samples
        if self._probs is None:
            raise ValueError("ManualCrossEntropy.backward() called before forward()")
        n = len(self._targets)
        grad = self._probs.copy()
        grad[np.arange(n), self._targets] -= 1.0
        return grad / n
        # END SOLUTION


class ManualMLP:
    """``fc2(relu(fc1(x)))``: x (N, D_in) -> hidden (N, H) -> logits (N, D_out).

    ``backward`` runs the layers' backwards in reverse order, each turning dL/d(its output) into
    dL/d(its input), which is the dL/d(output) of the layer before: the chain rule, one layer at a time.
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int,
                 rng: np.random.Generator | None = None):
        """``fc1`` (in -> hidden) then ``fc2`` (hidden -> out), both initialised from ``rng`` in that order
        (``rng=None``: a fresh ``np.random.default_rng()``)."""
        # BEGIN SOLUTION 2.8: attributes fc1 (ManualLinear, in -> hidden), relu (ManualReLU), fc2 (hidden -> out), both layers drawing from rng
        rng = np.random.default_rng() if rng is None else rng
        self.fc1 = ManualLinear(in_features, hidden_features, rng)
        self.relu = ManualReLU()
        self.fc2 = ManualLinear(hidden_features, out_features, rng)
        # END SOLUTION

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, D_in) -> logits (N, D_out)."""
        # BEGIN SOLUTION 2.8: fc1, relu, fc2, in that order
        return self.fc2.forward(self.relu.forward(self.fc1.forward(x)))
        # END SOLUTION

    def backward(self, grad_logits: np.ndarray) -> np.ndarray:
        """dL/d(logits) (N, D_out) -> dL/dx (N, D_in); fills every layer's ``grad_weight`` and ``grad_bias``."""
        # BEGIN SOLUTION 2.8: each layer's backward, each feeding the next, in the reverse order of forward
        return self.fc1.backward(self.relu.backward(self.fc2.backward(grad_logits)))
        # END SOLUTION

    def parameters_and_grads(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(name, parameter, gradient)`` for each parameter, named as a state dict would name them:
        ``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``. The parameters are the layers' own
        arrays, so ``p -= lr * g`` on them is a step of gradient descent."""
        # BEGIN SOLUTION 2.8: the four (name, array, grad) triples, layer by layer, weight before bias
        return [
            (f"{name}.{kind}", getattr(layer, kind), getattr(layer, f"grad_{kind}"))
            for name, layer in (("fc1", self.fc1), ("fc2", self.fc2))
            for kind in ("weight", "bias")
        ]
        # END SOLUTION
