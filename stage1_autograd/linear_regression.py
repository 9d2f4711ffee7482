"""Linear regression by gradient descent: the whole training loop of a neural network, in miniature.

The model predicts ``y_hat = x @ w + b``. The loss is the mean squared error

    L(w, b) = mean((x @ w + b - y) ** 2)

and gradient descent repeats: compute L, let autograd find dL/dw and dL/db, step against them.
Every later stage trains the same way; only the model and the loss grow.

Run it (from the folder that holds ``stage1_autograd/``):

    python -m stage1_autograd.linear_regression
"""

from __future__ import annotations

import numpy as np

from stage1_autograd.tensor import Tensor, no_grad


def make_data(n: int = 200, w=(2.0, -3.0, 0.5), b: float = 1.0, noise: float = 0.1,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic data set: ``x`` of shape (n, D) drawn from N(0, 1), and ``y = x @ w + b + noise * N(0, 1)``
    of shape (n,), with D = len(w). The same seed gives the same data."""
    rng = np.random.default_rng(seed)
    w = np.asarray(w, dtype=np.float64)
    x = rng.standard_normal((n, w.size))  # (N, D)
    y = x @ w + b + noise * rng.standard_normal(n)  # (N,)
    return x, y


def fit_linear_regression(x: np.ndarray, y: np.ndarray, lr: float = 0.1,
                          steps: int = 200) -> tuple[np.ndarray, float, list[float]]:
    """Fit ``y ~ x @ w + b`` by ``steps`` steps of plain gradient descent on the mean squared error.

    ``x`` has shape (N, D) and ``y`` shape (N,). Returns ``(w, b, losses)``: ``w`` an ``np.ndarray`` of shape
    (D,), ``b`` a float, and ``losses`` a list of ``steps`` floats, the loss computed at each step (before
    that step's update).
    """
    x = Tensor(np.asarray(x, dtype=np.float64))  # (N, D), a constant: no gradient needed
    y = Tensor(np.asarray(y, dtype=np.float64))  # (N,)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must have shape (N, D) and y shape (N,), got {x.shape} and {y.shape}")
    # Starting from zero is fine: the loss is a convex bowl with a single minimum.
    w = Tensor(np.zeros(x.shape[1]), requires_grad=True)  # (D,)
    b = Tensor(np.zeros(()), requires_grad=True)  # () a scalar, broadcast over the N examples
    # TODO 1.9: each step: MSE loss, zero the grads, loss.backward(), then w.data -= lr * w.grad (and b)
    raise NotImplementedError("Exercise 1.9 (Linear regression by gradient descent) is not done yet")


def main() -> None:
    """Fit a known line and show how close the fit comes to it."""
    true_w, true_b = np.array([2.0, -3.0, 0.5]), 1.0
    x, y = make_data(n=200, w=true_w, b=true_b, noise=0.1, seed=0)
    w, b, losses = fit_linear_regression(x, y, lr=0.1, steps=200)
    print(f"true   w = {np.array2string(true_w, precision=3)}  b = {true_b:.3f}")
    print(f"fitted w = {np.array2string(w, precision=3)}  b = {b:.3f}")
    print(f"loss: {losses[0]:.4f} at step 1 -> {losses[-1]:.4f} at step {len(losses)} "
          f"(the noise alone gives about {0.1**2:.4f})")


if __name__ == "__main__":
    main()
