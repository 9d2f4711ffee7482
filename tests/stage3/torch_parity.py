"""Shared by the stage 3 tests: one of our modules and the same PyTorch module side by side.

The weights are copied from one to the other through their state dicts (the names must be PyTorch's), both
run on the same inputs, and the outputs, the gradients of the inputs and the gradient of every parameter are
compared. PyTorch always runs in float64, the exact answer up to rounding; ours runs in float64 (compared
with the helpers' default 1e-9 / 1e-7) or in float32 (compared with the float32 tolerances below, on inputs
and weights rounded to float32 first, so that only our float32 arithmetic differs).
"""

from __future__ import annotations

import numpy as np
import torch

from stage1_autograd.tensor import Tensor
from tests.helpers import ATOL, RTOL, assert_close, assert_equal, assert_tensor, parameter_shapes
from tests.student_side import read_each

# float32 has 24 bits of mantissa (6e-8 relative per rounding); the layers here chain a few dozen roundings
# through sums of tens of terms, which leaves ~1e-6 relative. 1e-4 relative (1e-5 absolute for values near 0)
# is ~100 times that, and still ~1000 times smaller than what a wrong formula changes.
F32_ATOL = 1e-5
F32_RTOL = 1e-4


def tolerances(dtype) -> tuple[float, float]:
    """(atol, rtol) for comparing our ``dtype`` results with PyTorch's float64 ones."""
    return (ATOL, RTOL) if np.dtype(dtype) == np.float64 else (F32_ATOL, F32_RTOL)


def _names_and_parameters(module) -> tuple[list[str], list]:
    pairs = list(module.named_parameters())
    return [name for name, _ in pairs], [p for _, p in pairs]


def assert_same_parameters(ours, theirs, what: str) -> None:
    """Our module has exactly PyTorch's parameter names (in any order), each with PyTorch's shape."""
    ours_shapes, theirs_shapes = parameter_shapes(ours), parameter_shapes(theirs)
    assert_equal(sorted(ours_shapes), sorted(theirs_shapes),
                 f"{what}: the names of named_parameters() (sorted), which must be PyTorch's for state dicts to load")
    for name, shape in theirs_shapes.items():
        assert_equal(ours_shapes[name], shape, f"{what}: the shape of parameter {name!r}")


def perturb_vectors(theirs: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Add noise to every 1-D parameter of a torch module (biases, norm weights): initialised to 0 or 1 they
    would hide a bias added twice or a weight never applied. The matrices keep PyTorch's random init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in theirs.parameters():
            if p.ndim == 1:
                p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return theirs


def load_torch_into_ours(ours, theirs: torch.nn.Module, what: str) -> None:
    """ours.load_state_dict(PyTorch's state dict as NumPy arrays), after checking the names and shapes."""
    assert_same_parameters(ours, theirs, what)
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    names, params = _names_and_parameters(ours)
    loaded = dict(zip(names, read_each(params, "data")))
    for name, value in theirs.state_dict().items():  # our parameters now hold PyTorch's numbers
        assert_close(loaded[name], value.detach().numpy().astype(loaded[name].dtype),
                     f"{what}: parameter {name!r} after load_state_dict of PyTorch's state dict", atol=0, rtol=0)


def load_ours_into_torch(theirs: torch.nn.Module, ours, what: str) -> None:
    """PyTorch's load_state_dict of our state dict, after checking the names and shapes."""
    assert_same_parameters(ours, theirs, what)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def compare_modules(ours, theirs: torch.nn.Module, inputs, *, call_ours, call_theirs, what: str,
                    input_names=None, dtype=np.float64, seed: int = 1, grad_inputs=None, atol=None, rtol=None,
                    unused_may_be_none: bool = False):
    """Run ``call_ours(ours, *our Tensors)`` and ``call_theirs(theirs, *torch tensors)`` on the same ``inputs``
    (NumPy arrays), and compare every output, then the gradients of the inputs and of every parameter under
    the same random upstream gradient (one per output; None outputs must be None on both sides).

    ``ours`` holds its parameters in ``dtype``; ``theirs`` is float64 with the same values. ``grad_inputs``:
    indices of the inputs that require grad (default all). ``unused_may_be_none``: a parameter whose PyTorch
    gradient is exactly zero may have no gradient at all (an expert no token was routed to). Returns (our outputs, PyTorch's), as tuples.
    """
    dtype = np.dtype(dtype)
    default_atol, default_rtol = tolerances(dtype)
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    grad_inputs = range(len(inputs)) if grad_inputs is None else grad_inputs
    input_names = input_names or [f"input {i}" for i in range(len(inputs))]
    arrays = [np.asarray(a, dtype=dtype) for a in inputs]
    ours_in = [Tensor(a, requires_grad=i in grad_inputs) for i, a in enumerate(arrays)]
    theirs_in = [torch.tensor(a, dtype=torch.float64, requires_grad=i in grad_inputs) for i, a in enumerate(arrays)]
    ours.zero_grad()
    theirs.zero_grad()
    shapes = ", ".join(f"{name} {a.shape}" for name, a in zip(input_names, arrays))
    what = f"{what} ({dtype}{', inputs: ' + shapes if shapes else ''})"

    got, expected = _as_tuple(call_ours(ours, *ours_in)), _as_tuple(call_theirs(theirs, *theirs_in))
    assert_equal(len(got), len(expected), f"{what}: the number of outputs")
    rng = np.random.default_rng(seed)
    upstream, total = [], None
    for i, (g, e) in enumerate(zip(got, expected)):
        name = f"output {i}" if len(got) > 1 else "output"
        if e is None:
            assert_equal(g is None, True, f"{what}: {name} should be None, as PyTorch's")
            continue
        assert_tensor(g, f"{what}: {name}", shape=tuple(e.shape), dtype=dtype)
        assert_close(g, e, f"{what}: {name}", atol=atol, rtol=rtol)
        u = rng.standard_normal(tuple(e.shape))
        upstream.append((e, u))
        term = (g * Tensor(u.astype(dtype))).sum()
        total = term if total is None else total + term
    sum((e * torch.tensor(u)).sum() for e, u in upstream).backward()
    total.backward()

    for i in grad_inputs:
        assert_close(ours_in[i].grad, theirs_in[i].grad, f"{what}: gradient of {input_names[i]}", atol=atol, rtol=rtol)
    theirs_params = dict(theirs.named_parameters())
    names, params = _names_and_parameters(ours)
    for name, grad in zip(names, read_each(params, "grad")):
        expected_grad = theirs_params[name].grad
        if expected_grad is None:
            expected_grad = torch.zeros(theirs_params[name].shape, dtype=torch.float64)
        if grad is None and unused_may_be_none and not expected_grad.any():
            continue
        if grad is not None:
            assert_equal(np.asarray(grad).dtype.name, dtype.name, f"{what}: dtype of the gradient of parameter {name!r}")
        assert_close(grad, expected_grad, f"{what}: gradient of parameter {name!r}", atol=atol, rtol=rtol)
    return got, expected


def compare_functions(fn, torch_fn, inputs, what: str, *, dtype=np.float64, seed: int = 1, grad_inputs=None,
                      atol=None, rtol=None):
    """``fn(*our Tensors)`` vs ``torch_fn(*torch float64 tensors)`` on the same inputs, rounded to ``dtype``:
    the output (its dtype must be ``dtype``) and the gradient of every input that requires grad."""
    class _NoParameters:  # lets compare_modules serve plain functions
        def named_parameters(self):
            return []

        def zero_grad(self):
            pass

    return compare_modules(_NoParameters(), _NoParameters(), inputs, call_ours=lambda _, *t: fn(*t),
                           call_theirs=lambda _, *t: torch_fn(*t), what=what, dtype=dtype, seed=seed,
                           grad_inputs=grad_inputs, atol=atol, rtol=rtol)


class TorchSwiGLU(torch.nn.Module):
    """The reference SwiGLU feed-forward block, w2(silu(w1 x) * w3 x), three Linears without bias, with the
    names of our SwiGLU (w1, w2, w3) so that state dicts go both ways."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.w1 = torch.nn.Linear(d_model, d_ff, bias=False, dtype=torch.float64)
        self.w2 = torch.nn.Linear(d_ff, d_model, bias=False, dtype=torch.float64)
        self.w3 = torch.nn.Linear(d_model, d_ff, bias=False, dtype=torch.float64)

    def forward(self, x):
        return self.w2(torch.nn.functional.silu(self.w1(x)) * self.w3(x))
