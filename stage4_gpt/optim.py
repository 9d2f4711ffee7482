"""Optimising a GPT: AdamW with two parameter groups, the learning-rate schedule, and gradient clipping.

A GPT is trained with stage 2's AdamW, with three additions that every GPT recipe uses:

  * **Two parameter groups.** Weight decay shrinks the matrices (the linear layers' weights and the
    embedding tables, ndim >= 2) and leaves the vectors alone (biases and the gains of the norms,
    ndim == 1): decaying a norm's gain towards 0 or a bias towards 0 is no regularisation, just a bias.
  * **A schedule.** The learning rate rises linearly from near 0 over the first ``warmup`` steps (Adam's
    second moments are still poor estimates there, and a full step would be a leap in a random
    direction), then follows half a cosine down to ``min_lr`` at step ``total``.
  * **Gradient clipping.** If the norm of all gradients together exceeds ``max_norm``, every gradient
    is scaled down by the same factor: one bad batch cannot throw the weights far away.

Gradient accumulation needs no code of its own: ``backward()`` adds into ``.grad``, so the losses of
several micro-batches, each divided by their number, accumulate the gradient of their mean
(see ``train_step`` in ``train.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from stage1_autograd.tensor import Tensor
from stage2_mlp.nn import Module, Parameter
from stage2_mlp.optim import AdamW


class GroupedAdamW:
    """AdamW over named groups of parameters, each with its own weight decay and one shared learning rate.

    ``groups`` maps a group's name to ``(named_parameters, weight_decay)``, where ``named_parameters`` is a
    list of ``(name, Parameter)``. Each group is one stage 2 ``AdamW``; this class only keeps them in step:
    ``lr`` (settable, for the schedule) is the same for every group, and ``step()``/``zero_grad()`` go to
    all of them. An empty group is left out. It is ``torch.optim.AdamW`` with a list of param groups.

    ``state_dict()`` gives the optimizer's whole memory as NumPy arrays named after the parameters, ready
    for ``np.savez``: ``m.<name>`` and ``v.<name>`` (the running means of each parameter's gradient and
    squared gradient) and ``t.<name>`` (its step count, a 0-d int64 array). ``load_state_dict`` puts such a
    dict back, so that a resumed run takes exactly the steps the uninterrupted one would have taken.
    """

    def __init__(self, groups: dict[str, tuple[list[tuple[str, Parameter]], float]], lr: float,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8):
        self.names: dict[str, list[str]] = {}  # group -> the names of its parameters, in order
        self.optimizers: dict[str, AdamW] = {}  # group -> the stage 2 AdamW that updates it
        for group, (named, weight_decay) in groups.items():
            if named:
                self.names[group] = [name for name, _ in named]
                self.optimizers[group] = AdamW([p for _, p in named], lr=lr, betas=betas, eps=eps,
                                               weight_decay=weight_decay)
        if not self.optimizers:
            raise ValueError("GroupedAdamW got no parameters at all")
        self._lr = lr

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = value
        for optimizer in self.optimizers.values():
            optimizer.lr = value

    def step(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.step()

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad()

    def _entries(self):
        """(parameter name, its AdamW, its index in that AdamW) for every parameter."""
        for group, optimizer in self.optimizers.items():
            for i, name in enumerate(self.names[group]):
                yield name, optimizer, i

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every moment and step count, keyed ``m.<name>``, ``v.<name>``, ``t.<name>``."""
        state = {}
        for name, optimizer, i in self._entries():
            state[f"m.{name}"] = optimizer.m[i].copy()
            state[f"v.{name}"] = optimizer.v[i].copy()
            state[f"t.{name}"] = np.array(optimizer.steps[i], dtype=np.int64)
        return state

    def load_state_dict(self, state) -> None:
        """Restore what ``state_dict()`` gave (or the same arrays read back from an .npz). Every key must be
        present with the right shape; nothing is changed unless all are."""
        missing = [f"{kind}.{name}" for name, _, _ in self._entries() for kind in "mvt" if f"{kind}.{name}" not in state]
        if missing:
            raise KeyError(f"the optimizer state lacks {len(missing)} entries, e.g. {missing[:3]}")
        for name, optimizer, i in self._entries():
            for kind in "mv":
                if np.shape(state[f"{kind}.{name}"]) != optimizer.params[i].shape:
                    raise ValueError(f"optimizer state {kind}.{name} has shape {np.shape(state[f'{kind}.{name}'])}, "
                                     f"but the parameter has shape {optimizer.params[i].shape}")
        for name, optimizer, i in self._entries():
            dtype = optimizer.params[i].dtype
            optimizer.m[i] = np.array(state[f"m.{name}"], dtype=dtype)
            optimizer.v[i] = np.array(state[f"v.{name}"], dtype=dtype)
            optimizer.steps[i] = int(state[f"t.{name}"])


def configure_optimizer(model: Module, lr: float, weight_decay: float,
                        betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> GroupedAdamW:
    """AdamW for ``model`` with nanoGPT's two parameter groups.

    * ``"decay"``: every parameter with ``ndim >= 2`` (linear weights, embedding tables), weight decay
      ``weight_decay``;
    * ``"no_decay"``: every parameter with ``ndim < 2`` (biases, the gains of LayerNorm/RMSNorm), no decay.

    Each distinct parameter goes into exactly one group, once (``model.named_parameters()`` lists a tied
    parameter once). Returns a ``GroupedAdamW`` whose ``lr`` the schedule sets before each step.
    """
    # TODO 4.5: split model.named_parameters() by p.ndim >= 2; GroupedAdamW({"decay": (..., wd), "no_decay": (..., 0.0)}, ...)
    raise NotImplementedError("Exercise 4.5 (Optimiser groups, schedule and clipping) is not done yet")


def get_lr(step: int, max_lr: float, min_lr: float, warmup: int, total: int) -> float:
    """The learning rate for ``step`` (counted from 0): linear warmup, then cosine decay, then a floor.

        step < warmup:            max_lr * (step + 1) / warmup           (reaches max_lr at step warmup - 1)
        warmup <= step <= total:  min_lr + (max_lr - min_lr) * (1 + cos(pi * r)) / 2,
                                  r = (step - warmup) / (total - warmup)  (max_lr at warmup, min_lr at total)
        step > total:             min_lr

    ``warmup == 0`` means no warmup; ``total <= warmup`` means min_lr from step ``warmup`` on.
    """
    # TODO 4.5: three cases; the cosine's progress r goes from 0 at warmup to 1 at total
    raise NotImplementedError("Exercise 4.5 (Optimiser groups, schedule and clipping) is not done yet")


def clip_grad_norm_(parameters: Iterable[Tensor], max_norm: float) -> float:
    """Scale all gradients together so that their total norm is at most ``max_norm``; return the norm
    they had before (``torch.nn.utils.clip_grad_norm_``, norm_type 2).

        total = sqrt(sum over parameters p with a gradient of sum(p.grad ** 2))
        every p.grad <- p.grad * min(1, max_norm / (total + 1e-6))        (in place)

    A parameter whose ``grad`` is None is skipped. The scaling keeps the direction of the whole gradient,
    only shortening it. ``1e-6`` is PyTorch's guard against dividing by zero. Returns ``total`` as a float.
    """
    # TODO 4.5: total = sqrt(sum of squared norms); factor = min(1, max_norm / (total + 1e-6)); p.grad *= factor
    raise NotImplementedError("Exercise 4.5 (Optimiser groups, schedule and clipping) is not done yet")
