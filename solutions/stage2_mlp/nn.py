"""Neural-network building blocks: ``Parameter``, ``Module`` and the layers built on them.

A ``Module`` is a piece of a model: it owns ``Parameter``s (the tensors training changes) and other
Modules, and its ``forward`` computes an output from an input. Modules nest, so a whole network is a
tree of them, and every parameter has a dotted path in that tree, ``blocks.0.fc.weight``: the same
names PyTorch gives, so a PyTorch state dict loads into the equivalent model here, and back.

Nothing here differentiates anything: ``forward`` is written with Tensor operations, and stage 1's
autograd gives every parameter its gradient.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np

from stage1_autograd.tensor import Tensor
from stage2_mlp import functional as F


class Parameter(Tensor):
    """A Tensor that is a weight of a model: it requires grad, and assigning it to an attribute of a
    Module registers it there (a plain Tensor assigned to a Module is not a parameter).

    ``Parameter(data)`` copies ``data`` and keeps a float dtype as it is (see ``Tensor``).
    """

    __slots__ = ()  # no per-instance __dict__: a Parameter is exactly as small as a Tensor

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__().removeprefix("Tensor")


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` did not load (the same report as PyTorch's)."""

    missing_keys: list[str]  # parameters of the model that the state did not have
    unexpected_keys: list[str]  # entries of the state that are not parameters of the model


def _join(prefix: str, name: str) -> str:
    """``_join("blocks.0", "weight") == "blocks.0.weight"``; the root module's prefix is ''."""
    return f"{prefix}.{name}" if prefix else name


class Module:
    """The base class of every layer and model.

    A subclass calls ``super().__init__()`` first, assigns its parameters and sub-modules as
    attributes, and defines ``forward``::

        class MLP(Module):
            def __init__(self):
                super().__init__()
                self.fc1 = Linear(2, 16)                        # parameters fc1.weight, fc1.bias
                self.blocks = [Linear(16, 16), Linear(16, 16)]  # blocks.0.weight, ..., blocks.1.bias
                self.fc2 = Linear(16, 3)

            def forward(self, x):
                ...

    ``__setattr__`` files what is assigned:
      * ``self._parameters``  name -> Parameter owned directly by this module (``weight``, ``bias``);
      * ``self._modules``     name -> Module directly inside this one (``fc1``, ``blocks``).
    A list or tuple of Modules (or of Parameters) is filed as a ``ListedItems`` module that holds the
    items under the names ``0``, ``1``, ...: what PyTorch's ``ModuleList`` (``ParameterList``) does, so
    the names are the same, ``blocks.0.weight``. Assign the whole list at once: appending to it
    afterwards registers nothing. The attribute itself is stored as usual, so ``self.blocks`` is still
    the list and ``self.fc1`` the layer.

    ``training`` is True after construction; ``train()`` and ``eval()`` set it in the whole tree.
    Layers such as ``Dropout`` behave differently in the two modes.
    """

    def __init__(self):
        # object.__setattr__ skips our __setattr__, which needs these dicts to exist already.
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ 2.1 registration
    def __setattr__(self, name: str, value) -> None:
        """``self.name = value``. A Parameter is filed in ``_parameters`` and a Module in ``_modules``
        under ``name``. A non-empty list or tuple whose items are all Parameters or Modules is filed in
        ``_modules`` as a ``ListedItems`` module holding its items under ``"0"``, ``"1"``, ....
        Whatever ``name`` filed before is forgotten (overwritten by the same kind of thing, it keeps its
        place in the order, as in PyTorch). Any value is then stored as a normal attribute too.
        """
        # BEGIN SOLUTION 2.1: Parameter -> _parameters; Module, or ListedItems(list) -> _modules; forget the old entry
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() ran: "
                f"call super().__init__() first in {type(self).__name__}.__init__"
            )
        filed = value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, (Parameter, Module)) for v in value):
            filed = ListedItems(value)
        for registry, kind in ((self._parameters, Parameter), (self._modules, Module)):
            if isinstance(filed, kind):
                registry[name] = filed  # a name already there keeps its place in the order
            else:
                registry.pop(name, None)  # whatever name filed before is forgotten
        object.__setattr__(self, name, value)
        # END SOLUTION

    # ------------------------------------------------------------------ 2.1 walking the tree
    def named_modules(self, prefix: str = "") -> list[tuple[str, Module]]:
        """``(dotted name, module)`` for this module (named ``prefix``, '' at the root) and every module
        below it, depth first, each module before its children, children in the order they were assigned."""
        # BEGIN SOLUTION 2.1: (prefix, self), then each child's named_modules with prefix + "." + its name
        modules = [(prefix, self)]
        for name, child in self._modules.items():
            modules += child.named_modules(_join(prefix, name))
        return modules
        # END SOLUTION

    def _all_parameters_by_name(self) -> dict[str, Parameter]:
        """Dotted name -> parameter, for every module's own parameters: module by module as
        ``named_modules`` lists them, each module's own in the order they were assigned. A parameter
        shared by two modules (tied weights) appears under each of its names. The one walk over the tree
        that ``named_parameters``, ``state_dict`` and ``load_state_dict`` all build on."""
        # BEGIN SOLUTION 2.1: every (prefix, module) of named_modules(), each entry of its _parameters under its dotted name
        return {
            _join(prefix, name): p
            for prefix, module in self.named_modules()
            for name, p in module._parameters.items()
        }
        # END SOLUTION

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """``(dotted name, parameter)`` for every parameter in the tree, in the order (and with the names)
        PyTorch's ``named_parameters()`` gives: that of ``_all_parameters_by_name``, except that a parameter
        shared by two modules (tied weights) is listed once, under its first name, so an optimizer updates
        it once."""
        # BEGIN SOLUTION 2.1: walk _all_parameters_by_name(), keeping a parameter only the first time it is met (by identity)
        seen: set[int] = set()
        named = []
        for name, p in self._all_parameters_by_name().items():
            if id(p) not in seen:
                seen.add(id(p))
                named.append((name, p))
        return named
        # END SOLUTION

    def parameters(self) -> list[Parameter]:
        """Every parameter of the tree once: what an optimizer is given. (PyTorch returns an iterator.)"""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        """Forget the gradient of every parameter (set it to None, as PyTorch does by default)."""
        # BEGIN SOLUTION 2.1: p.grad = None for every parameter
        for p in self.parameters():
            p.grad = None
        # END SOLUTION

    def train(self, mode: bool = True) -> Module:
        """Set ``training = mode`` on this module and every module below it; returns ``self``."""
        # BEGIN SOLUTION 2.1: set .training on every module of named_modules()
        for _, module in self.named_modules():
            module.training = mode
        return self
        # END SOLUTION

    def eval(self) -> Module:
        """Evaluation mode (``train(False)``): dropout off. Returns ``self``."""
        return self.train(False)

    # ------------------------------------------------------------------ 2.1 checkpoints
    def state_dict(self) -> dict[str, np.ndarray]:
        """Dotted name -> a copy of that parameter's values, for every parameter of every module.

        Ready for ``np.savez(path, **model.state_dict())``. Unlike ``named_parameters``, a tied
        parameter appears under each of its names, as in PyTorch's state dict.
        """
        # BEGIN SOLUTION 2.1: every name of _all_parameters_by_name(), with a copy of its parameter's values
        return {name: p.data.copy() for name, p in self._all_parameters_by_name().items()}
        # END SOLUTION

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> IncompatibleKeys:
        """Copy the arrays of ``state`` (as ``state_dict()`` makes them; also what ``np.load`` of a saved
        ``.npz`` gives, or a PyTorch state dict converted by ``{k: v.numpy() for k, v in sd.items()}``)
        into the parameters with the same dotted names.

        Values are copied into each parameter's existing array, so it keeps its dtype. An array whose
        shape differs from its parameter's is always an error; with ``strict=True`` (the default) so is
        a parameter missing from ``state`` or an entry of ``state`` that is no parameter. The error
        names every such key, and is raised before anything is copied. Returns
        ``IncompatibleKeys(missing_keys, unexpected_keys)``, two lists of names (both empty after a
        strict load).
        """
        # BEGIN SOLUTION 2.1: collect every missing, unexpected and mis-shaped key first; raise naming them all, or copy in place
        own = self._all_parameters_by_name()
        missing = [key for key in own if key not in state]
        unexpected = [key for key in state if key not in own]
        mis_shaped = [
            f"{key}: the model's parameter has shape {own[key].shape}, the state's array {np.shape(state[key])}"
            for key in own
            if key in state and np.shape(state[key]) != own[key].shape
        ]
        problems = [f"mis-shaped keys: {'; '.join(mis_shaped)}"] if mis_shaped else []
        if strict and missing:
            problems.append(f"missing keys (parameters of the model not in the state): {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys (in the state, but not parameters of the model): {unexpected}")
        if problems:
            raise RuntimeError(
                f"load_state_dict: the state does not fit this {type(self).__name__} "
                f"(nothing was loaded):\n  " + "\n  ".join(problems)
            )
        for key, p in own.items():
            if key in state:
                np.copyto(p.data, state[key])  # in place: the parameter keeps its array and dtype
        return IncompatibleKeys(missing, unexpected)
        # END SOLUTION

    # ------------------------------------------------------------------ calling (given)
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        """``module(x)`` runs ``module.forward(x)``."""
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """The settings shown between the parentheses of ``repr``, e.g. ``in_features=2, ...``."""
        return ""

    def __repr__(self) -> str:
        children = [f"({name}): {child!r}".replace("\n", "\n  ") for name, child in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ")" if not children else head + "\n  " + "\n  ".join(children) + "\n)"


class ListedItems(Module):
    """How a Module files a list of Modules or Parameters assigned to one of its attributes: a module
    that holds the items under the names ``"0"``, ``"1"``, ..., so that their parameters are named
    ``blocks.0.weight`` (as by PyTorch's ``nn.ModuleList``) or ``offsets.0`` (``nn.ParameterList``)."""

    def __init__(self, items):
        super().__init__()
        for i, item in enumerate(items):
            setattr(self, str(i), item)


# ---------------------------------------------------------------------- 2.2 layers
class Linear(Module):
    """``y = x W^T + b``: x (..., in_features) -> y (..., out_features).

    ``weight`` W is (out_features, in_features) and ``bias`` b is (out_features,), PyTorch's layout and
    initialisation: both uniform in [-1/sqrt(in_features), +1/sqrt(in_features)]. Each output sums
    in_features products, so with Var(W) = 1/(3 in_features) its variance at the start is a third of
    the inputs', however wide the layer: the signal neither explodes nor vanishes with the width.

    ``rng`` makes the initialisation reproducible: a ``np.random.Generator`` (pass one generator to all
    the layers of a model: each draws the next numbers from it), an int seed, or None for fresh randomness
    from the operating system. With ``bound = 1/sqrt(in_features)`` the draws are, in this order,
    ``rng.uniform(-bound, bound, size=(out_features, in_features))`` for the weight, then
    ``rng.uniform(-bound, bound, size=out_features)`` for the bias (none without a bias), each cast to
    ``dtype`` (float32 unless given): one seed then fixes every number of a model, as in the reference.
    With ``bias=False`` there is no bias: ``self.bias`` is None and is not a parameter.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        rng = np.random.default_rng(rng)  # a Generator is returned as it is; an int or None seeds a new one
        # BEGIN SOLUTION 2.2: Parameters weight (out, in) then bias (out,), one rng.uniform draw each in that order, cast to dtype; with bias=False, self.bias is None
        bound = 1.0 / np.sqrt(in_features)
        self.weight = Parameter(rng.uniform(-bound, bound, size=(out_features, in_features)).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, size=out_features).astype(dtype)) if bias else None
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in_features) -> x @ W^T + b (..., out_features)."""
        # BEGIN SOLUTION 2.2: x @ self.weight.T, plus self.bias when there is one
        out = x @ self.weight.T  # (..., in) @ (in, out) -> (..., out)
        return out if self.bias is None else out + self.bias  # b (out,) broadcasts over the leading axes
        # END SOLUTION

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Sequential(Module):
    """Modules applied one after another: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    The modules are registered under the names ``"0"``, ``"1"``, ..., so the parameters are called
    ``0.weight``, ``2.bias``, ... exactly as in PyTorch. ``seq[i]``, ``len(seq)`` and ``for m in seq``
    work as on a list.
    """

    def __init__(self, *modules: Module):
        super().__init__()
        # BEGIN SOLUTION 2.2: register module i under the name str(i) (setattr), so its parameters are "i.weight", ...
        for i, module in enumerate(modules):
            setattr(self, str(i), module)
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION 2.2: x = module(x) for each registered module, in order
        for module in self._modules.values():
            x = module(x)
        return x
        # END SOLUTION

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


# ---------------------------------------------------------------------- activations and dropout as layers
# Each delegates to functional.py (exercise 2.3), so that they can sit in a Sequential.
class ReLU(Module):
    """``max(x, 0)`` elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class Sigmoid(Module):
    """``1 / (1 + e^-x)`` elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    """``tanh(x)`` elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class GELU(Module):
    """``x * Phi(x)`` elementwise; ``approximate="tanh"`` uses GPT-2's tanh approximation of Phi."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """``x * sigmoid(x)`` elementwise (also called swish)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)


class Mish(Module):
    """``x * tanh(softplus(x))`` elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return F.mish(x)


class Dropout(Module):
    """In training mode, zero each element with probability ``p`` and scale the rest by 1/(1-p);
    in evaluation mode (after ``eval()``), pass the input through unchanged.

    The random choices come from the layer's own generator ``self.rng = np.random.default_rng(rng)``
    (``rng``: a Generator, an int seed, or None), so a seeded model drops the same units on every run.
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | int | None = None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout(p={p}): p is a probability, it must be between 0 and 1")
        self.p = p
        self.rng = np.random.default_rng(rng)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=self.training, rng=self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"
