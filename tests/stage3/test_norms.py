"""Exercise 3.2: layer_norm and rms_norm as fused ops, and the LayerNorm and RMSNorm modules, compared with
PyTorch (values, the gradients of x, weight and bias), by central differences, in float64 and float32."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage3_transformer import functional as F
from stage3_transformer import nn
from tests.helpers import assert_close, assert_equal, assert_matches_central_differences, compare_with_torch
from tests.stage3.torch_parity import (compare_functions, compare_modules, load_ours_into_torch, load_torch_into_ours,
                                       perturb_vectors)

pytestmark = [pytest.mark.exercise("3.2"), pytest.mark.under_test("layer_norm", "rms_norm")]

TF = torch.nn.functional


def as_tuple(normalized_shape):
    return (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)


def norm_inputs(x_shape, normalized_shape, affine, seed=0):
    """x, then weight and bias of the normalized shape (as many as ``affine`` asks: 0, 1 or 2)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape) * 2 + 0.5  # a mean and a scale that normalising must remove
    params = [1 + 0.5 * rng.standard_normal(as_tuple(normalized_shape)) for _ in range(affine)]
    return [x, *params]


# ---------------------------------------------------------------------- the functions
LAYER_NORM_CASES = [  # x shape, normalized_shape, how many of (weight, bias), eps
    ((2, 3, 6), 6, 2, 1e-5),
    ((2, 3, 6), (3, 6), 2, 1e-5),
    ((4, 5), (5,), 0, 1e-5),
    ((4, 5), 5, 1, 1e-2),
    ((6,), [6], 2, 1e-5),
]


def call_layer_norm(normalized_shape, eps, library):
    def ours(x, weight=None, bias=None):
        return F.layer_norm(x, normalized_shape, weight=weight, bias=bias, eps=eps)

    def theirs(x, weight=None, bias=None):
        return TF.layer_norm(x, as_tuple(normalized_shape), weight=weight, bias=bias, eps=eps)

    return ours if library == "ours" else theirs


@pytest.mark.parametrize("x_shape, normalized_shape, affine, eps", LAYER_NORM_CASES, ids=str)
@pytest.mark.under_test("layer_norm")
def test_layer_norm_matches_torch(x_shape, normalized_shape, affine, eps):
    inputs = norm_inputs(x_shape, normalized_shape, affine)
    compare_with_torch(call_layer_norm(normalized_shape, eps, "ours"), *inputs,
                       torch_fn=call_layer_norm(normalized_shape, eps, "torch"), use_engine=True,
                       label=f"layer_norm(x, {normalized_shape!r}, {['no weight, no bias', 'weight', 'weight, bias'][affine]}, "
                             f"eps={eps}) (inputs: x, weight, bias)")


RMS_NORM_CASES = [  # x shape, normalized_shape, with weight, eps
    ((2, 3, 6), 6, 1, None),
    ((2, 3, 6), (3, 6), 1, None),
    ((4, 5), (5,), 0, None),
    ((4, 5), 5, 1, 1e-3),
]


def call_rms_norm(normalized_shape, eps, library):
    def ours(x, weight=None):
        return F.rms_norm(x, normalized_shape, weight=weight, eps=eps)

    def theirs(x, weight=None):
        return TF.rms_norm(x, as_tuple(normalized_shape), weight=weight, eps=eps)

    return ours if library == "ours" else theirs


@pytest.mark.parametrize("x_shape, normalized_shape, affine, eps", RMS_NORM_CASES, ids=str)
@pytest.mark.under_test("rms_norm")
def test_rms_norm_matches_torch(x_shape, normalized_shape, affine, eps):
    inputs = norm_inputs(x_shape, normalized_shape, affine, seed=1)
    compare_with_torch(call_rms_norm(normalized_shape, eps, "ours"), *inputs,
                       torch_fn=call_rms_norm(normalized_shape, eps, "torch"), use_engine=True,
                       label=f"rms_norm(x, {normalized_shape!r}, {'weight' if affine else 'no weight'}, eps={eps}) "
                             "(inputs: x, weight; eps=None means np.finfo(x.dtype).eps)")


@pytest.mark.under_test("rms_norm")
def test_rms_norm_default_eps_is_the_machine_epsilon_of_the_dtype():
    # A row of zeros: x / sqrt(mean(x**2) + eps) is 0 whatever eps, but its gradient is 1/sqrt(eps).
    x = np.zeros((2, 4))
    x[1] = [1.0, -2.0, 0.5, 3.0]
    compare_with_torch(lambda t: F.rms_norm(t, 4), x, torch_fn=lambda t: TF.rms_norm(t, (4,)), use_engine=True,
                       label="rms_norm(x, 4) with eps=None on a row of zeros (the gradient there is 1/sqrt(eps), "
                             "eps = np.finfo(np.float64).eps)")


@pytest.mark.parametrize("x_shape, normalized_shape", [((2, 5), 5), ((2, 2, 3), (2, 3))], ids=str)
@pytest.mark.parametrize("function", ["layer_norm", "rms_norm"])
def test_gradients_match_central_differences(function, x_shape, normalized_shape):
    inputs = norm_inputs(x_shape, normalized_shape, 2 if function == "layer_norm" else 1, seed=2)
    fn = call_layer_norm(normalized_shape, 1e-5, "ours") if function == "layer_norm" else \
        call_rms_norm(normalized_shape, 1e-6, "ours")
    assert_matches_central_differences(fn, *inputs, use_engine=True,
                                       label=f"{function}(x, {normalized_shape!r}, weight{', bias' if function == 'layer_norm' else ''})")


@pytest.mark.parametrize("function", ["layer_norm", "rms_norm"])
def test_is_one_fused_graph_node(function):
    x, weight, bias = (Tensor(a, requires_grad=True) for a in norm_inputs((3, 4), 4, 2, seed=3))
    if function == "layer_norm":
        out, parents = F.layer_norm(x, 4, weight=weight, bias=bias), {"x": x, "weight": weight, "bias": bias}
    else:
        out, parents = F.rms_norm(x, 4, weight=weight), {"x": x, "weight": weight}
    why = (f"{function} must be ONE graph node, made with Tensor._from_op, whose parents are the very tensors "
           f"{', '.join(parents)}: a chain of Tensor ops (mean, subtract, square, sqrt, divide, ...) records a node per "
           "op and keeps their arrays alive until backward. Compute the statistics in NumPy, the backward by hand")
    assert_equal(len(out._parents), len(parents), f"{why}; the number of parents of the output node")
    for name, tensor in parents.items():
        assert_equal(any(p is tensor for p in out._parents), True, f"{why}; {name} is a parent of the output node")


@pytest.mark.parametrize("function", ["layer_norm", "rms_norm"])
def test_float32_stays_float32_and_matches_torch(function):
    # The float32 tolerances of torch_parity (rtol 1e-4, atol 1e-5) against the float64 answer.
    affine = 2 if function == "layer_norm" else 1
    inputs = norm_inputs((3, 2, 8), 8, affine, seed=4)
    if function == "layer_norm":
        ours, theirs = call_layer_norm(8, 1e-5, "ours"), call_layer_norm(8, 1e-5, "torch")
    else:  # eps=None would be float32's eps for ours and float64's for PyTorch's float64 run: give it explicitly
        ours, theirs = call_rms_norm(8, 1e-6, "ours"), call_rms_norm(8, 1e-6, "torch")
    compare_functions(ours, theirs, inputs, f"{function}(x, 8) with float32 x, weight{', bias' if affine == 2 else ''}",
                      dtype=np.float32)


# ---------------------------------------------------------------------- the modules
LAYER_NORM_MODULES = [  # normalized_shape, keyword arguments
    (6, {}),
    ((3, 6), {}),
    (6, {"eps": 1e-3}),
    (6, {"elementwise_affine": False}),
    (6, {"bias": False}),
]


def layer_norm_pair(normalized_shape, kwargs, dtype=np.float64):
    ours = nn.LayerNorm(normalized_shape, **kwargs, dtype=dtype)
    theirs = torch.nn.LayerNorm(normalized_shape, **kwargs, dtype=torch.float64)
    return ours, theirs


def call(module, x):
    return module(x)


@pytest.mark.parametrize("normalized_shape, kwargs", LAYER_NORM_MODULES, ids=str)
@pytest.mark.under_test("LayerNorm.forward", "LayerNorm.__init__")
@pytest.mark.integration
def test_layer_norm_module_loads_torch_state_and_matches(normalized_shape, kwargs):
    ours, theirs = layer_norm_pair(normalized_shape, kwargs)
    what = f"LayerNorm({normalized_shape!r}, {kwargs})"
    load_torch_into_ours(ours, perturb_vectors(theirs), what)
    x = norm_inputs((2, 3, 6), normalized_shape, 0, seed=5)[0]
    compare_modules(ours, theirs, [x], call_ours=call, call_theirs=call, what=what, input_names=["x"])


@pytest.mark.parametrize("normalized_shape, kwargs", LAYER_NORM_MODULES, ids=str)
@pytest.mark.under_test("LayerNorm.__init__")
def test_layer_norm_module_initial_state_loads_into_torch(normalized_shape, kwargs):
    ours, theirs = layer_norm_pair(normalized_shape, kwargs)
    what = f"LayerNorm({normalized_shape!r}, {kwargs})"
    params = dict(ours.named_parameters())
    if "weight" in params:
        assert_close(params["weight"], np.ones(as_tuple(normalized_shape)), f"{what}.weight at initialisation (ones)", 0, 0)
    if "bias" in params:
        assert_close(params["bias"], np.zeros(as_tuple(normalized_shape)), f"{what}.bias at initialisation (zeros)", 0, 0)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for p in theirs.parameters():
            p.normal_(generator=generator)  # overwritten by our state: the comparison shows our initial state went across
    load_ours_into_torch(theirs, ours, what)
    x = norm_inputs((2, 3, 6), normalized_shape, 0, seed=6)[0]
    compare_modules(ours, theirs, [x], call_ours=call, call_theirs=call, what=what, input_names=["x"])


RMS_NORM_MODULES = [(6, {}), ((3, 6), {}), (6, {"eps": 1e-3}), (6, {"elementwise_affine": False})]


@pytest.mark.parametrize("normalized_shape, kwargs", RMS_NORM_MODULES, ids=str)
@pytest.mark.under_test("RMSNorm.forward", "RMSNorm.__init__")
@pytest.mark.integration
def test_rms_norm_module_matches_torch_both_ways(normalized_shape, kwargs):
    what = f"RMSNorm({normalized_shape!r}, {kwargs})"
    ours = nn.RMSNorm(normalized_shape, **kwargs, dtype=np.float64)
    theirs = torch.nn.RMSNorm(normalized_shape, **kwargs, dtype=torch.float64)
    x = norm_inputs((2, 3, 6), normalized_shape, 0, seed=7)[0]
    params = dict(ours.named_parameters())
    if "weight" in params:
        assert_close(params["weight"], np.ones(as_tuple(normalized_shape)), f"{what}.weight at initialisation (ones)", 0, 0)
    load_ours_into_torch(theirs, ours, what)
    compare_modules(ours, theirs, [x], call_ours=call, call_theirs=call, what=f"{what} at initialisation",
                    input_names=["x"])
    load_torch_into_ours(ours, perturb_vectors(theirs), what)
    compare_modules(ours, theirs, [x], call_ours=call, call_theirs=call, what=f"{what} with PyTorch's state",
                    input_names=["x"])


@pytest.mark.parametrize("module", ["LayerNorm", "RMSNorm"])
@pytest.mark.under_test("LayerNorm.__init__", "RMSNorm.__init__")
def test_modules_default_to_float32(module):
    ours = getattr(nn, module)(8, eps=1e-5)
    theirs = getattr(torch.nn, module)(8, eps=1e-5, dtype=torch.float64)
    for name, p in ours.named_parameters():
        assert_equal(p.dtype.name, "float32", f"{module}(8).{name}: dtype by default")
    load_torch_into_ours(ours, perturb_vectors(theirs), f"{module}(8)")
    x = norm_inputs((4, 8), 8, 0, seed=8)[0]
    compare_modules(ours, theirs, [x], call_ours=call, call_theirs=call, what=f"{module}(8) in float32",
                    input_names=["x"], dtype=np.float32)
