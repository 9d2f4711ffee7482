"""What the tests of stage 2 build on the student's classes or run beside their code (see tests/student_side.py).

In authoritative grading this module is imported in the student process: the models below subclass the
student's ``Module``, and the helpers look at arrays where they live (an array that crosses to the tests is a
copy, so "the same array", "updated in place" and "written into" can only be seen here). Every verdict stays in
the tests, on values; where a helper answers a yes/no question, its test also checks values of its own.
"""

from __future__ import annotations

import sys

import numpy as np

from stage1_autograd.tensor import Tensor
from stage2_mlp.nn import Dropout, Linear, Module, Parameter, Sequential
from tests.student_side import printed


# ---------------------------------------------------------------------- 2.1: a model built from Parameters
class Affine(Module):
    """x @ W^T + b, W (n_out, n_in)."""

    def __init__(self, n_in, n_out, rng):
        super().__init__()
        self.weight = Parameter(rng.standard_normal((n_out, n_in)))
        self.bias = Parameter(rng.standard_normal(n_out))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class Block(Module):
    def __init__(self, width, rng):
        super().__init__()
        self.gain = Parameter(rng.uniform(0.5, 1.5, width))
        self.inner = Affine(width, width, rng)
        self.layers = [Affine(width, width, rng), Affine(width, width, rng)]  # like nn.ModuleList
        self.offsets = [Parameter(rng.standard_normal(width)), Parameter(rng.standard_normal(width))]  # nn.ParameterList
        self.label = "block"  # not a parameter
        self.scratch = Tensor(np.zeros(width), requires_grad=True)  # a plain Tensor is not a parameter either
        self.sizes = [width, width]  # a list of numbers: nothing to register

    def forward(self, x):
        x = self.inner(x) * self.gain
        for layer in self.layers:
            x = layer(x).tanh()
        return x + self.offsets[0] - self.offsets[1]


class Net(Module):
    def __init__(self, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.embed = Affine(2, 3, rng)
        self.blocks = [Block(3, rng), Block(3, rng)]
        self.head = Affine(3, 1, rng)
        self.temperature = Parameter(np.array(1.5))  # assigned last, yet listed first: it is the root's own

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x) / self.temperature


def parameter_named(model, name):
    """The parameter ``name`` of ``model``, found by walking its attributes (not with the code under test)."""
    obj = model
    for part in name.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def write_into_state_dict(model, key, value):
    """``state = model.state_dict(); state[key][...] = value``: what a caller may do with the arrays it got."""
    state = model.state_dict()
    state[key][...] = value


def state_dict_then_shift_parameter(model, key, delta):
    """Take ``state = model.state_dict()``, then add ``delta`` in place to the parameter ``key``'s own array;
    returns ``state[key]`` as it is afterwards (a copy made before the change must not have moved)."""
    state = model.state_dict()
    parameter_named(model, key).data += delta
    return state[key]


def load_then_write_into_state(model, state, key, value):
    """``model.load_state_dict(state)``, then ``state[key][...] = value`` on the very dict that was loaded."""
    result = model.load_state_dict(state)
    state[key][...] = value
    return result


def load_npz_state_dict(model, path):
    """``with np.load(path, allow_pickle=False) as saved: model.load_state_dict(saved)``: an NpzFile, not a dict."""
    with np.load(path, allow_pickle=False) as saved:
        return model.load_state_dict(saved)


# ---------------------------------------------------------------------- 2.2, 2.3 and 2.9: small models
class TanhOp(Module):
    """tanh with stage 1's Tensor.tanh, so that the tests of 2.2 need nothing from exercise 2.3."""

    def forward(self, x):
        return x.tanh()


class Stack(Module):
    def __init__(self):
        super().__init__()
        self.stages = [Sequential(Linear(3, 3), TanhOp()), Sequential(Linear(3, 3))]
        self.head = Linear(3, 1)


class DropoutNet(Module):
    def __init__(self):
        super().__init__()
        self.drop = Dropout(0.5, rng=0)

    def forward(self, x):
        return self.drop(x)


class RecordsGraph(Module):
    """Wraps a model and remembers whether its output was part of a graph."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.output_required_grad = None

    def forward(self, x):
        out = self.inner(x)
        self.output_required_grad = out.requires_grad
        return out


def printed_without_matplotlib(fn, *args, **kwargs):
    """``printed(fn, ...)`` with ``import matplotlib`` raising ImportError (as where it is not installed)."""
    saved = {name: module for name, module in sys.modules.items() if name == "matplotlib" or name.startswith("matplotlib.")}
    try:
        for name in saved:
            del sys.modules[name]
        sys.modules["matplotlib"] = None  # makes `import matplotlib` raise ImportError
        return printed(fn, *args, **kwargs)
    finally:
        sys.modules.pop("matplotlib", None)
        sys.modules.update(saved)


# ---------------------------------------------------------------------- 2.5, 2.6: the optimizers' arrays
class DataArrays:
    """Holds the ``.data`` arrays of some tensors, to tell later which tensors got a new array instead of an
    update in place (an array that crosses to the tests is a copy, so only this side can tell). An extra check:
    the tests compare every parameter's values with torch.optim's after every step."""

    def __init__(self, tensors):
        self.tensors = list(tensors)
        self.arrays = [t.data for t in self.tensors]

    def replaced(self) -> list[bool]:
        return [t.data is not array for t, array in zip(self.tensors, self.arrays)]


def set_one_gradient_array(tensors, grad):
    """``p.grad = grad`` for every tensor, one and the same array (sent one by one, each would get a copy)."""
    grad = np.asarray(grad)
    for p in tensors:
        p.grad = grad


# ---------------------------------------------------------------------- 2.8: the manual MLP's arrays
def parameters_and_grads_are_the_layers_own(mlp) -> list[tuple[str, bool, bool]]:
    """For each ``(name, param, grad)`` of ``mlp.parameters_and_grads()``: whether ``param`` is the layer's own
    array and ``grad`` its ``grad_<kind>`` (identity, seen only here). An extra check: the test of the names
    and exercise 2.8's value tests check the numbers."""
    layers = {"fc1": mlp.fc1, "fc2": mlp.fc2}
    result = []
    for name, param, grad in mlp.parameters_and_grads():
        layer, kind = layers.get(name.split(".")[0]), name.rpartition(".")[2]
        result.append((name, layer is not None and param is getattr(layer, kind, None),
                       layer is not None and grad is getattr(layer, f"grad_{kind}", None)))
    return result


def set_parameter_entry(mlp, name, index, value):
    """``param[index] = value`` in the array ``mlp.parameters_and_grads()`` gives for ``name`` (in place)."""
    for param_name, param, _ in mlp.parameters_and_grads():
        if param_name == name:
            param[tuple(index)] = value
            return
    raise KeyError(name)


def gradient_descent_step(mlp, lr):
    """``param -= lr * grad`` in place, for every ``(name, param, grad)`` of ``mlp.parameters_and_grads()``."""
    for _, param, grad in mlp.parameters_and_grads():
        param -= lr * grad


def train_by_hand(mlp, x, targets, steps: int, lr: float) -> list:
    """``steps`` steps of gradient descent with the manual gradients (forward, ManualCrossEntropy, backward,
    ``gradient_descent_step``); the losses. A training loop only drives the code under test, so it runs here, in
    one round trip; the test judges the model it leaves."""
    from stage2_mlp.manual import ManualCrossEntropy  # noqa: PLC0415 - exercise 2.7's file, imported when used

    losses = []
    for _ in range(steps):
        loss_fn = ManualCrossEntropy()
        losses.append(loss_fn.forward(mlp.forward(x), targets))
        mlp.backward(loss_fn.backward())
        gradient_descent_step(mlp, lr)
    return losses
