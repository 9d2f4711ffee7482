"""Gradient checking: compare autograd's gradients with the slope measured by finite differences.

For a function F of one number, the central difference

    (F(x + eps) - F(x - eps)) / (2 eps)  =  F'(x) + eps**2 * F'''(x) / 6 + ...

has an error of order eps**2 (a one-sided difference (F(x + eps) - F(x)) / eps is only accurate to
order eps). With eps = 1e-6 that is about 1e-12, far below the size of a wrong formula.

A Tensor function f has many inputs and outputs, so we check one number: the weighted sum
F = sum(seed_grad * f(*inputs)). Its gradient with respect to the inputs is exactly what
``f(*inputs).backward(seed_grad)`` computes. Nudging one input element at a time measures it numerically.
A random ``seed_grad`` (rather than all ones) weights every output element differently, so a backward
that sends the right amounts to the wrong places (a transposed or shuffled gradient) cannot go unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stage1_autograd.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """Autograd and finite differences disagree: some backward rule is wrong."""


def numerical_grad(f: Callable[..., Tensor], *inputs: Tensor, eps: float = 1e-6,
                   seed_grad: np.ndarray | None = None) -> list[np.ndarray]:
    """The gradient of ``F = sum(seed_grad * f(*inputs))`` with respect to each input, by central differences.

    ``seed_grad`` has the shape of ``f``'s output (default: all ones, so F is the plain sum).
    Returns one ``np.ndarray`` per input, with that input's shape. Each element of each input is moved
    by +eps and -eps in turn (in ``x.data``, then restored exactly), and ``f`` is evaluated under
    ``no_grad()``: only values are needed, not a graph.
    """
    _require_float64(inputs)
    # TODO 1.8: per element: F at x_i + eps and at x_i - eps, then restore x_i; slope = (F+ - F-) / (2 eps)
    raise NotImplementedError("Exercise 1.8 (Numerical gradient check) is not done yet")


def gradcheck(f: Callable[..., Tensor], *inputs: Tensor, eps: float = 1e-6, atol: float = 1e-6,
              rtol: float = 1e-4) -> bool:
    """Check the gradients autograd gives for ``f`` against ``numerical_grad``.

    The inputs with ``requires_grad=True`` are checked (all must be float64). The upstream gradient is a
    random ``seed_grad`` drawn with a fixed seed, so the check is the same on every run. An element
    passes if ``|autograd - numerical| <= atol + rtol * |numerical|``.

    Returns True, or raises ``GradcheckError`` whose message names the worst element: the input by its
    position (``input 1``), the element index as a tuple (``(1, 2)``), and the two values.
    The inputs' ``.grad`` are zeroed first and hold autograd's gradients afterwards.
    """
    _require_float64(inputs)
    # TODO 1.8: a fixed-seed random seed_grad; compare numerical_grad with .grad after backward(seed_grad)
    raise NotImplementedError("Exercise 1.8 (Numerical gradient check) is not done yet")


def _require_float64(inputs) -> None:
    """Finite differences need float64: in float32 (about 7 significant digits), x + 1e-6 is rounded to a
    nearby float32 and F(x + eps) - F(x - eps) is mostly rounding noise, so the slope would be wrong in
    its first or second digit."""
    for position, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            raise TypeError(f"gradient checking takes Tensors as inputs; input {position} is a {type(x).__name__}")
        if x.dtype != np.float64:
            raise ValueError(
                f"gradient checking needs float64 inputs, but input {position} is {x.dtype}: in float32 a "
                "step of eps=1e-6 is lost to rounding (float32 keeps about 7 digits), so the finite differences "
                "would be noise. Make the input with Tensor(np.asarray(values, dtype=np.float64), ...)."
            )
