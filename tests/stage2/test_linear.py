"""Exercise 2.2: Linear (PyTorch's layout and initialisation) and Sequential, compared with PyTorch."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage2_mlp.nn import Linear, Parameter, ReLU, Sequential, Tanh
from tests.helpers import assert_close
from tests.stage2.student_side import Stack, TanhOp  # subclasses of the Module under test, kept beside it

pytestmark = [pytest.mark.exercise("2.2"), pytest.mark.under_test("Linear.__init__", "Linear.forward")]


def names(module):
    return [name for name, _ in module.named_parameters()]


def to_torch_state(module):
    return {k: torch.tensor(v) for k, v in module.state_dict().items()}


def check_against_torch(ours, theirs, x, what):
    """Same output and the same gradient for the input and for every parameter, in float64."""
    x_ours, x_theirs = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, expected = ours(x_ours), theirs(x_theirs)
    assert isinstance(out, Tensor), f"{what}: expected a Tensor as the output, got {type(out).__name__}"
    assert_close(out, expected, f"{what}: output for an input of shape {x.shape}")
    upstream = np.random.default_rng(1).standard_normal(expected.shape)
    out.backward(upstream)
    expected.backward(torch.tensor(upstream))
    assert_close(x_ours.grad, x_theirs.grad, f"{what}: gradient of the input")
    theirs_named = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, theirs_named[name].grad, f"{what}: gradient of parameter {name!r}")


# ---------------------------------------------------------------------- Linear
def test_linear_parameters_shapes_and_dtype():
    layer = Linear(5, 3)
    assert isinstance(layer.weight, Parameter) and isinstance(layer.bias, Parameter), (
        f"Linear's weight and bias should be Parameters, got {type(layer.weight).__name__} and {type(layer.bias).__name__}"
    )
    assert layer.weight.shape == (3, 5), (
        f"Linear(5, 3).weight: expected shape (out_features, in_features) = (3, 5), got {layer.weight.shape}"
    )
    assert layer.bias.shape == (3,), f"Linear(5, 3).bias: expected shape (3,), got {layer.bias.shape}"
    for name, p in (("weight", layer.weight), ("bias", layer.bias)):
        assert p.dtype == np.float32, f"Linear(5, 3).{name}: expected dtype float32 by default, got {p.dtype}"
    assert Linear(5, 3, dtype=np.float64).weight.dtype == np.float64, "Linear(5, 3, dtype=np.float64).weight should be float64"
    assert names(layer) == names(torch.nn.Linear(5, 3)), (
        f"Linear's named_parameters(): expected {names(torch.nn.Linear(5, 3))}, got {names(layer)}"
    )


def test_linear_initialisation_is_uniform_within_one_over_sqrt_fan_in():
    n_in, n_out = 400, 250
    layer = Linear(n_in, n_out, rng=0)
    bound = 1 / np.sqrt(n_in)  # 0.05; 1/sqrt(n_out) would be 0.063
    std_uniform = bound / np.sqrt(3)  # the standard deviation of U(-bound, bound)
    for name, p in (("weight", layer.weight.data), ("bias", layer.bias.data)):
        worst = np.abs(p).max()
        assert worst <= bound, (
            f"Linear({n_in}, {n_out}).{name}: every value should lie in [-1/sqrt(in_features), 1/sqrt(in_features)] "
            f"= [-{bound:.4g}, {bound:.4g}], but one is {worst:.4g}"
        )
    w = layer.weight.data.astype(np.float64)
    n = w.size  # 100 000 draws: the statistics below are sharp, each tolerance is >= 5 standard errors
    assert abs(w.mean()) < 5 * std_uniform / np.sqrt(n), f"weight: the mean should be about 0, got {w.mean():.3g}"
    # The sample std of n uniforms has a relative standard error of sqrt(0.8 / (4 n)) ~ 0.0014.
    assert abs(w.std() / std_uniform - 1) < 0.01, (
        f"weight: the values should be uniform in +-{bound:.4g}, whose std is {std_uniform:.4g}; got std {w.std():.4g}"
    )
    assert np.abs(w).max() > 0.99 * bound, f"weight: uniform values in +-{bound:.4g} should reach near the bound"
    b = layer.bias.data.astype(np.float64)  # 250 draws: relative standard error of the std ~ 0.028
    assert abs(b.std() / std_uniform - 1) < 0.2, (
        f"bias: the values should be uniform in +-{bound:.4g} (std {std_uniform:.4g}), got std {b.std():.4g}"
    )


def test_linear_initialisation_is_seeded_by_rng():
    a = Linear(4, 3, rng=np.random.default_rng(7))
    b = Linear(4, 3, rng=np.random.default_rng(7))
    c = Linear(4, 3, rng=7)  # an int seed means np.random.default_rng(7)
    for name in ("weight", "bias"):
        assert_close(getattr(b, name), getattr(a, name), f"Linear(4, 3, rng=default_rng(7)).{name}, built twice")
        assert_close(getattr(c, name), getattr(a, name), f"Linear(4, 3, rng=7).{name} vs rng=default_rng(7)")
    shared = np.random.default_rng(7)
    first, second = Linear(4, 3, rng=shared), Linear(4, 3, rng=shared)
    assert not np.allclose(first.weight.data, second.weight.data), (
        "two layers built from one generator should get different weights: draw from rng, don't reseed it"
    )
    assert not np.allclose(Linear(4, 3, rng=8).weight.data, a.weight.data), "different seeds should give different weights"


def assert_draws(layer, rng, what):
    """``layer``'s weight, then its bias (if any), must be the next rng.uniform(-b, b, size) draws of ``rng``."""
    bound = 1 / np.sqrt(layer.in_features)
    dtype = layer.weight.dtype
    # rtol 1e-6 (8 float32 ulps) forgives only another spelling of the bound (in_features ** -0.5); numbers from
    # another draw, or drawn in another order, differ by about the bound itself.
    expected = rng.uniform(-bound, bound, size=(layer.out_features, layer.in_features)).astype(dtype)
    assert_close(layer.weight, expected, f"{what}.weight: the next rng.uniform(-1/sqrt(in_features), "
                 f"1/sqrt(in_features), size=(out_features, in_features)) draw, cast to {dtype}", atol=0, rtol=1e-6)
    if layer.bias is not None:
        expected = rng.uniform(-bound, bound, size=layer.out_features).astype(dtype)
        assert_close(layer.bias, expected, f"{what}.bias: the next rng.uniform(-1/sqrt(in_features), "
                     f"1/sqrt(in_features), size=out_features) draw after the weight's, cast to {dtype}", atol=0, rtol=1e-6)


def test_linear_draws_the_weight_then_the_bias_from_rng():
    # Pinned so that a model built from one generator (build_mlp in 2.9) starts from exactly the reference's
    # numbers: one uniform draw for the weight (out, in), then one for the bias (out,), from the same rng.
    layer = Linear(5, 3, rng=np.random.default_rng(11))
    assert_draws(layer, np.random.default_rng(11), "Linear(5, 3, rng=default_rng(11))")
    shared, replay = np.random.default_rng(12), np.random.default_rng(12)
    layers = [Linear(4, 6, rng=shared, dtype=np.float64), Linear(6, 2, bias=False, rng=shared), Linear(2, 3, rng=shared)]
    for i, layer in enumerate(layers):
        assert_draws(layer, replay, f"layer {i} of Linear(4, 6), Linear(6, 2, bias=False), Linear(2, 3) built in "
                                    f"this order from one generator")


@pytest.mark.parametrize("x_shape", [(5, 4), (2, 5, 4), (4,)], ids=str)
@pytest.mark.under_test("Linear.forward")
def test_linear_matches_torch(x_shape):
    ours = Linear(4, 3, rng=0, dtype=np.float64)
    theirs = torch.nn.Linear(4, 3, dtype=torch.float64)
    theirs.load_state_dict(to_torch_state(ours))
    x = np.random.default_rng(2).standard_normal(x_shape)
    check_against_torch(ours, theirs, x, "Linear(4, 3)")


@pytest.mark.under_test("Linear.forward", "Linear.__init__")
def test_linear_without_bias():
    ours = Linear(4, 3, bias=False, rng=0, dtype=np.float64)
    assert ours.bias is None, f"Linear(4, 3, bias=False).bias should be None, got {type(ours.bias).__name__}"
    assert names(ours) == ["weight"], f"Linear(4, 3, bias=False): expected the parameters ['weight'], got {names(ours)}"
    theirs = torch.nn.Linear(4, 3, bias=False, dtype=torch.float64)
    theirs.load_state_dict(to_torch_state(ours))
    check_against_torch(ours, theirs, np.random.default_rng(3).standard_normal((5, 4)), "Linear(4, 3, bias=False)")


@pytest.mark.under_test("Linear.forward")
def test_linear_float32_stays_float32():
    out = Linear(4, 3, rng=0)(Tensor(np.ones((2, 4), dtype=np.float32)))
    assert out.dtype == np.float32, f"Linear (float32) on a float32 input: expected a float32 output, got {out.dtype}"


# ---------------------------------------------------------------------- Sequential
@pytest.mark.under_test("Sequential.__init__")
def test_sequential_names_match_torch():
    ours = Sequential(Linear(2, 8), ReLU(), Sequential(Linear(8, 8), Tanh()), Linear(8, 3))
    theirs = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(),
                                 torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh()), torch.nn.Linear(8, 3))
    assert names(ours) == names(theirs), (
        f"named_parameters() of a nested Sequential: expected {names(theirs)}, got {names(ours)} "
        "(Sequential registers its modules under the names '0', '1', ...)"
    )
    assert len(ours) == 4 and isinstance(ours[2], Sequential) and isinstance(ours[3], Linear), (
        "Sequential(a, b, c, d): len should be 4 and seq[i] the i-th module"
    )


@pytest.mark.under_test("Sequential.__init__")
def test_list_of_sequentials_names_match_torch():
    # Stack (student_side.py): stages = [Sequential(Linear(3, 3), TanhOp()), Sequential(Linear(3, 3))], head = Linear(3, 1)
    class TorchStack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stages = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh()),
                                               torch.nn.Sequential(torch.nn.Linear(3, 3))])
            self.head = torch.nn.Linear(3, 1)

    assert names(Stack()) == names(TorchStack()), (
        f"named_parameters() of a list of Sequentials: expected {names(TorchStack())}, got {names(Stack())}"
    )


@pytest.mark.under_test("Sequential.forward")
def test_sequential_matches_torch():
    ours = Sequential(Linear(3, 5, rng=0, dtype=np.float64), TanhOp(), Linear(5, 5, rng=1, dtype=np.float64),
                      TanhOp(), Linear(5, 2, rng=2, dtype=np.float64))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 5), torch.nn.Tanh(),
                                 torch.nn.Linear(5, 2)).double()
    theirs.load_state_dict(to_torch_state(ours))
    check_against_torch(ours, theirs, np.random.default_rng(4).standard_normal((6, 3)), "Sequential(Linear, Tanh, ...)")
