"""Shared by the optimizer tests (2.5, 2.6): our optimizer and torch.optim's, side by side on the same
small model and data, with every parameter compared after every step.

The model is a tiny tanh MLP written with Tensor operations directly (no nn.Module), so these tests
need stage 1 and optim.py only. Two of its parameters make the bookkeeping visible:
  * ``unused`` never enters the loss: its grad stays None, and step() must skip it;
  * ``sometimes`` enters the loss on even steps only: on odd steps it has no gradient and must not move,
    and its Adam step count t advances only on the steps where it had one (as in torch.optim).
"""

from __future__ import annotations

import numpy as np
import torch

from stage1_autograd.tensor import Tensor
from tests.helpers import assert_close
from tests.stage2.student_side import DataArrays, set_one_gradient_array
from tests.student_side import read_each

SHAPES = {"w1": (4, 3), "b1": (4,), "w2": (2, 4), "b2": (2,), "sometimes": (2,), "unused": (3,)}


def initial_values(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}


def loss_of(p: dict, x, y, step: int):
    """The same formula for our Tensors and torch tensors: both have @, .T, .tanh(), ** and .mean()."""
    out = (x @ p["w1"].T + p["b1"]).tanh() @ p["w2"].T + p["b2"]
    if step % 2 == 0:
        out = out * p["sometimes"]
    return ((out - y) ** 2).mean()


def batch(step: int):
    rng = np.random.default_rng(100 + step)
    return rng.standard_normal((8, 3)), rng.standard_normal((8, 2))


def run_side_by_side(make_ours, make_theirs, label: str, steps: int = 12, seed: int = 0) -> None:
    """``make_ours(list of our Tensors)`` and ``make_theirs(list of torch tensors)`` build the optimizers."""
    start = initial_values(seed)
    ours = {name: Tensor(value, requires_grad=True) for name, value in start.items()}
    theirs = {name: torch.tensor(value, requires_grad=True) for name, value in start.items()}
    opt_ours, opt_theirs = make_ours(list(ours.values())), make_theirs(list(theirs.values()))
    arrays = DataArrays(list(ours.values()))  # each parameter's .data array, held where it lives to see it replaced

    names, params = list(ours), list(ours.values())
    for step in range(1, steps + 1):
        x, y = batch(step)
        opt_ours.zero_grad()
        opt_theirs.zero_grad()
        loss_of(ours, Tensor(x), Tensor(y), step).backward()
        loss_of(theirs, torch.tensor(x), torch.tensor(y), step).backward()
        # Every parameter's grad read in one round trip (read_each), and copied: in one process it is the very
        # array that step() must leave unchanged.
        grads_before = {name: None if g is None else np.array(g) for name, g in zip(names, read_each(params, "grad"))}
        for name, grad in grads_before.items():  # a difference here is stage 1's, not the optimizer's
            if theirs[name].grad is not None:
                assert_close(grad, theirs[name].grad, f"{label}: the gradient of {name!r} before step {step} "
                                                      "(computed by stage 1's backward, not by the optimizer)")

        opt_ours.step()
        opt_theirs.step()

        replaced = dict(zip(ours, arrays.replaced()))
        grads_after, values_after = read_each(params, "grad"), read_each(params, "data")
        for name, grad, value in zip(names, grads_after, values_after):
            assert not replaced[name], (
                f"{label}: step {step} replaced {name}.data by a new array; update it in place (p.data -= ...), "
                "so that everything holding the parameter's array sees the new values"
            )
            if grads_before[name] is not None:
                assert_close(grad, grads_before[name], f"{label}: {name}.grad after step {step} (step() must not "
                                                       "change p.grad: compute new arrays, e.g. g = p.grad + wd * p.data)")
            assert_close(value, theirs[name], f"{label}: parameter {name!r} after step {step}")
    assert_close(ours["unused"], start["unused"], f"{label}: parameter 'unused', whose grad is always None (skip it)")


def shared_gradient_step(make_ours, make_theirs, label: str) -> None:
    """Two parameters whose .grad is one and the same array: a step must update both as if they were
    separate (and so must not write into the gradient)."""
    rng = np.random.default_rng(9)
    values, g = rng.standard_normal((2, 5)), rng.standard_normal(5)
    ours = [Tensor(v, requires_grad=True) for v in values]
    theirs = [torch.tensor(v, requires_grad=True) for v in values]
    opt_ours, opt_theirs = make_ours(ours), make_theirs(theirs)
    for step in range(1, 4):
        set_one_gradient_array(ours, g)  # p.grad = g for both: the same array
        for p in theirs:
            p.grad = torch.tensor(g)
        opt_ours.step()
        opt_theirs.step()
        for i in range(2):
            assert_close(ours[i], theirs[i], f"{label}: parameter {i} after step {step}, where both parameters' "
                                             ".grad are one and the same array (if only this test fails: does step() "
                                             "write into p.grad?)")
