"""Optimizers: turn each parameter's gradient into a change of its values.

Every training step is::

    optimizer.zero_grad()      # forget the last step's gradients
    loss = loss_fn(model(x), y)
    loss.backward()            # fill p.grad for every parameter
    optimizer.step()           # p.data <- p.data - (a step computed from p.grad and the optimizer's memory)

``step`` follows ``torch.optim`` formula for formula, so both give the same parameters step after
step. It updates ``p.data`` in place (whoever holds the array sees the new values), never writes into
``p.grad`` (gradient arrays may be shared, and the caller may still want them), and skips a parameter
whose ``grad`` is None (it took no part in the loss).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from stage1_autograd.tensor import Tensor


class Optimizer:
    """Holds the parameters to update (``self.params``, a list) and the learning rate ``self.lr``
    (an attribute, so a schedule may change it between steps). Subclasses define ``step()``."""

    def __init__(self, params: Iterable[Tensor], lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty list of parameters: is model.parameters() empty?")
        if lr < 0:
            raise ValueError(f"{type(self).__name__}: the learning rate must not be negative, got lr={lr}")
        self.lr = lr

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (``p.grad = None``), ready for the next ``backward()``."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not define step()")


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay.

    For each parameter p with gradient g = p.grad, in torch.optim.SGD's order:

        g <- g + weight_decay * p                          L2 penalty (weight_decay/2)|p|^2 in the gradient
        b <- g  at the parameter's first step,             the velocity, a decaying sum of past gradients
             momentum * b + g  afterwards
        d <- g + momentum * b  with nesterov,  b  without  (d = g when momentum == 0: no velocity at all)
        p <- p - lr * d
    """

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: momentum ({momentum}) and weight_decay ({weight_decay}) must not be negative")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs a momentum > 0")
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        # b for each parameter, in the order of self.params; None until that parameter's first step.
        self.velocities: list[np.ndarray | None] = [None] * len(self.params)

    def step(self) -> None:
        # TODO 2.5: g = grad + wd * p; b = g, later momentum * b + g; p.data -= lr * (b, or g + momentum * b)
        raise NotImplementedError("Exercise 2.5 (SGD with momentum and weight decay) is not done yet")


class Adam(Optimizer):
    """Adam: a step along a running mean of the gradients, divided per element by the root of a
    running mean of their squares, so every coordinate moves at a similar pace.

    For each parameter p with gradient g = p.grad, at its t-th step (t counts the steps in which p had a
    gradient), in torch.optim.Adam's order:

        g <- g + weight_decay * p                 (Adam: L2 penalty in the gradient; AdamW: see below)
        m <- beta1 * m + (1 - beta1) * g          m, v start at 0 ...
        v <- beta2 * v + (1 - beta2) * g^2
        m_hat = m / (1 - beta1^t)                 ... which biases them towards 0 early on; this undoes it
        v_hat = v / (1 - beta2^t)
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)
    """

    # AdamW sets this: weight decay then shrinks p directly instead of entering the gradient.
    decoupled_weight_decay = False

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: eps ({eps}) and weight_decay ({weight_decay}) must be >= 0")
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        # Per parameter, in the order of self.params: the running means m and v, and its step count t.
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self.steps = [0] * len(self.params)

    def step(self) -> None:
        # TODO 2.6: wd: g + wd * p, or p *= 1 - lr * wd; t += 1; m, v; p -= lr * m_hat / (sqrt(v_hat) + eps)
        raise NotImplementedError("Exercise 2.6 (Adam and AdamW) is not done yet")


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): before each Adam step,

        p <- p * (1 - lr * weight_decay)

    and the gradient stays the loss's own. In Adam, an L2 term in the gradient gets divided by
    sqrt(v_hat) like the rest, so parameters with large gradients would hardly decay; here every
    parameter decays at the same rate. The default weight_decay is 1e-2, as in PyTorch.
    """

    decoupled_weight_decay = True

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
