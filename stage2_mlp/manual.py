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
    """``y = x W^T + b``: x (N, D_in) -> y (N, D_out).

    Its gradients, with g = dL/dy (N, D_out). Written out element by element,
    y[n, o] = sum_i x[n, i] W[o, i] + b[o], so

        dL/dW[o, i] = sum_n g[n, o] x[n, i]      ->  dL/dW = g^T x        (D_out, N) @ (N, D_in)
        dL/db[o]    = sum_n g[n, o]              ->  dL/db = g.sum(0)     every sample adds its own b
        dL/dx[n, i] = sum_o g[n, o] W[o, i]      ->  dL/dx = g W          (N, D_out) @ (D_out, D_in)

    A shape check guards each: dL/dW must be (D_out, D_in), and the only product of g (N, D_out) and
    x (N, D_in) with that shape is g^T x. ``backward`` needs x, so ``forward`` keeps it.
    """

    def __init__(self, in_features: int, out_features: int, rng: np.random.Generator | None = None):
        """``weight`` (out_features, in_features) and ``bias`` (out_features,), both uniform in
        ``+-1/sqrt(in_features)`` as PyTorch's ``nn.Linear`` starts, drawn from ``rng`` (weight first)."""
        # TODO 2.8: bound = 1/sqrt(in_features); weight then bias from rng.uniform(-bound, bound, shape)
        raise NotImplementedError("Exercise 2.8 (Backprop by hand) is not done yet")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, D_in) -> x W^T + b (N, D_out); remembers x for ``backward``."""
        # TODO 2.8: keep x (backward needs it for dL/dW); return x @ W.T + b
        raise NotImplementedError("Exercise 2.8 (Backprop by hand) is not done yet")

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """grad_out = dL/dy (N, D_out) -> dL/dx (N, D_in). Stores ``grad_weight`` = g^T x and
        ``grad_bias`` = g summed over the batch (replacing earlier values, unlike PyTorch's ``+=``)."""
        # TODO 2.8: dW = g.T @ x (with the x of the last forward), db = g.sum(axis=0), return g @ W
        raise NotImplementedError("Exercise 2.8 (Backprop by hand) is not done yet")


class ManualReLU:
    """``y = max(x, 0)`` elementwise. dy/dx is 1 where x > 0 and 0 elsewhere (0 also at x == 0, as in
    PyTorch), so dL/dx = g * (x > 0): the gradient passes through the units that were on. ``forward``
    keeps that mask."""

    def __init__(self):
        self._positive: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (any shape) -> max(x, 0), same shape; remembers where x > 0."""
        # TODO 2.8: keep the mask x > 0; return x where it holds and 0 elsewhere
        raise NotImplementedError("Exercise 2.8 (Backprop by hand) is not done yet")

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """dL/dy -> dL/dx = dL/dy where the input was positive, 0 elsewhere."""
        # TODO 2.8: g where the mask from forward is true, 0 elsewhere
        raise NotImplementedError("Exercise 2.8 (Backprop by hand) is not done yet")


class ManualCrossEntropy:
    """The mean cross-entropy of logits z (N, C) against integer targets t (N,):

        p = softmax(z) row by row,   L = -(1/N) sum_n log p[n, t_n]

    Its gradient is the famous "prediction minus truth": with log p[n, c] = z[n, c] - log sum_j e^z[n, j],

        dL/dz[n, c] = -(1/N) (1[c == t_n] - p[n, c]) = (p - onehot(t))[n, c] / N

    (the derivative of log sum_j e^z[n, j] with respect to z[n, c] is e^z[n, c] / sum_j e^z[n, j] = p[n, c]).
    The forward subtracts each row's max before exponentiating so that e^z cannot overflow; this changes
    no p, since the max cancels between numerator and denominator.
    """

    def __init__(self):
        self._probs: np.ndarray | None = None
        self._targets: np.ndarray | None = None

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        """logits (N, C), targets (N,) integers in [0, C) -> the mean loss, a Python float."""
        # TODO 2.8: shift rows by their max; log p = shifted - log(sum(exp(shifted))); keep p and targets
        raise NotImplementedError("Exercise 2.8 (Backprop by hand) is not done yet")

    def backward(self) -> np.ndarray:
        """dL/d(logits) (N, C) = (softmax(logits) - onehot(targets)) / N, for the last forward."""
        # TODO 2.8: copy p, subtract 1 at each row's target column, divide by N
        raise NotImplementedError("Exercise 2.8 (Backprop by hand) is not done yet")


class ManualMLP:
    """``fc2(relu(fc1(x)))``: x (N, D_in) -> hidden (N, H) -> logits (N, D_out).

    ``backward`` runs the layers' backwards in reverse order, each turning dL/d(its output) into
    dL/d(its input), which is the dL/d(output) of the layer before: the chain rule, one layer at a time.
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int,
                 rng: np.random.Generator | None = None):
        """``fc1`` (in -> hidden) then ``fc2`` (hidden -> out), both initialised from ``rng`` in that order."""
        # TODO 2.8: self.fc1 = ManualLinear(in, hidden, rng), self.relu = ManualReLU(), self.fc2 = ManualLinear(hidden, out, rng)
        raise NotImplementedError("Exercise 2.8 (Backprop by hand) is not done yet")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, D_in) -> logits (N, D_out)."""
        # TODO 2.8: fc1, relu, fc2, in that order
        raise NotImplementedError("Exercise 2.8 (Backprop by hand) is not done yet")

    def backward(self, grad_logits: np.ndarray) -> np.ndarray:
        """dL/d(logits) (N, D_out) -> dL/dx (N, D_in); fills every layer's ``grad_weight`` and ``grad_bias``."""
        # TODO 2.8: the forward in reverse: fc2.backward, relu.backward, fc1.backward
        raise NotImplementedError("Exercise 2.8 (Backprop by hand) is not done yet")

    def parameters_and_grads(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(name, parameter, gradient)`` for each parameter, named as a state dict would name them:
        ``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``. The parameters are the layers' own
        arrays, so ``p -= lr * g`` on them is a step of gradient descent."""
        # TODO 2.8: the four (name, array, grad) triples, layer by layer, weight before bias
        raise NotImplementedError("Exercise 2.8 (Backprop by hand) is not done yet")
