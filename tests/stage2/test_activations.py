"""Exercise 2.3: activations (functional and as layers) and inverted dropout, compared with PyTorch."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage2_mlp import functional as F
from stage2_mlp import nn
from tests.helpers import assert_close, assert_matches_central_differences, compare_with_torch
from tests.stage2.student_side import DropoutNet  # a subclass of the Module under test, kept beside it

pytestmark = [pytest.mark.exercise("2.3"), pytest.mark.under_test("relu", "sigmoid", "tanh", "gelu", "silu", "mish")]

TF = torch.nn.functional

# name: (ours, PyTorch's)
ACTIVATIONS = {
    "relu": (F.relu, TF.relu),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
    "gelu": (F.gelu, TF.gelu),
    "gelu(approximate='tanh')": (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    "silu": (F.silu, TF.silu),
    "mish": (F.mish, TF.mish),
}

LAYERS = {
    "ReLU": (nn.ReLU, torch.nn.ReLU, {}),
    "Sigmoid": (nn.Sigmoid, torch.nn.Sigmoid, {}),
    "Tanh": (nn.Tanh, torch.nn.Tanh, {}),
    "GELU": (nn.GELU, torch.nn.GELU, {}),
    "GELU(approximate='tanh')": (nn.GELU, torch.nn.GELU, {"approximate": "tanh"}),
    "SiLU": (nn.SiLU, torch.nn.SiLU, {}),
    "Mish": (nn.Mish, torch.nn.Mish, {}),
}

# A grid through the interesting range (0 included: ReLU's kink, where PyTorch's gradient is 0),
# tiny values, and large ones where a naive exp(x) or exp(-x) overflows.
GRID = np.linspace(-8, 8, 161)
TINY = np.array([1e-8, -1e-8, 1e-300, -1e-300])
LARGE = np.array([-1000.0, -50.0, -20.0, 20.0, 50.0, 1000.0])

# The tolerances are the float64 defaults of tests/helpers.py (rtol 1e-7, atol 1e-9) for every activation,
# the exact GELU included: functional.erf agrees with the true erf to ~5e-16 relative, so a correct GELU
# is off by rounding only. The tanh approximation of GELU is off by up to ~5e-4 and fails, as it should.


@pytest.mark.parametrize("inputs", ["grid", "tiny", "large", "random"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_torch(name, inputs):
    ours, theirs = ACTIVATIONS[name]
    x = {"grid": GRID, "tiny": TINY, "large": LARGE,
         "random": np.random.default_rng(0).standard_normal((3, 4, 5)) * 3}[inputs]
    out = compare_with_torch(ours, x, torch_fn=theirs, label=f"{name}(x) on {inputs} inputs", use_engine=True)
    assert np.all(np.isfinite(out.data)), f"{name}(x) on {inputs} inputs: the output has nan or inf"


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_central_differences(name):
    ours, _ = ACTIVATIONS[name]
    # Magnitudes 0.1 to 3, so no input sits within eps of ReLU's kink at 0.
    rng = np.random.default_rng(7)
    x = rng.uniform(0.1, 3.0, (2, 3)) * rng.choice([-1.0, 1.0], (2, 3))
    assert_matches_central_differences(ours, x, label=f"{name}(x)", use_engine=True)


@pytest.mark.parametrize("name", LAYERS)
def test_activation_layer_matches_torch(name):
    ours_cls, theirs_cls, kwargs = LAYERS[name]
    compare_with_torch(ours_cls(**kwargs), np.random.default_rng(1).standard_normal((4, 6)) * 3,
                       torch_fn=theirs_cls(**kwargs), label=f"nn.{name}()", use_engine=True)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_keeps_float32(name):
    ours, _ = ACTIVATIONS[name]
    x = Tensor(np.linspace(-3, 3, 7, dtype=np.float32), requires_grad=True)
    out = ours(x)
    assert out.dtype == np.float32, (
        f"{name} on a float32 Tensor: expected a float32 result, got {out.dtype} (a float64 constant promotes the "
        "result: use Python numbers or arrays of x's dtype)"
    )


# ---------------------------------------------------------------------- dropout
def positive_input(shape, seed=0):
    """Values in [1, 2): an element of the output is 0 exactly when dropout dropped it."""
    return Tensor(np.random.default_rng(seed).uniform(1.0, 2.0, shape), requires_grad=True)


@pytest.mark.under_test("dropout")
def test_dropout_in_eval_mode_is_the_identity():
    x = positive_input((4, 5))
    out = F.dropout(x, 0.5, training=False, rng=0)
    assert_close(out, x, "F.dropout(x, p=0.5, training=False) (not training: x unchanged)")
    layer = nn.Dropout(0.5, rng=0)
    assert layer.eval() is layer
    assert_close(layer(x), x, "nn.Dropout(0.5) after eval()")
    g = np.random.default_rng(1).standard_normal((4, 5))
    layer(x).backward(g)
    assert_close(x.grad, g, "gradient through nn.Dropout(0.5) in eval mode (the identity's: the upstream gradient)")


@pytest.mark.under_test("dropout")
def test_dropout_with_p_zero_is_the_identity():
    x = positive_input((4, 5))
    assert_close(F.dropout(x, 0.0, training=True, rng=0), x, "F.dropout(x, p=0, training=True)")


@pytest.mark.under_test("dropout")
def test_dropout_with_p_one_gives_zeros():
    out = F.dropout(positive_input((4, 5)), 1.0, training=True, rng=0)
    assert_close(out, np.zeros((4, 5)), "F.dropout(x, p=1, training=True) (every element dropped: zeros, "
                                       "not nan from dividing by 1 - p = 0)")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.under_test("dropout")
def test_dropout_drops_a_fraction_p_and_scales_the_rest(p):
    x = positive_input((200, 500))
    out = F.dropout(x, p, training=True, rng=0)
    dropped = out.data == 0
    n = dropped.size
    # The number dropped is Binomial(n, p): its fraction has standard deviation sqrt(p (1 - p) / n), at most
    # 0.0016 here. 5 standard deviations fail a correct dropout with probability < 1e-6 for any seed (and
    # the seed is fixed); dropping with probability 1 - p instead of p is off by >= 0.3 (or exactly 0 at 0.5,
    # which the scaling check below catches).
    tolerance = 5 * np.sqrt(p * (1 - p) / n)
    assert abs(dropped.mean() - p) < tolerance, (
        f"F.dropout(x, p={p}) on {n} elements: expected a fraction {p} +- {tolerance:.4f} of zeros, got {dropped.mean():.4f}"
    )
    kept = ~dropped
    assert_close(out.data[kept], x.data[kept] / (1 - p),
                 f"F.dropout(x, p={p}): the kept elements, which are scaled by 1/(1-p) = {1 / (1 - p):.4g}")


@pytest.mark.parametrize("p", [0.3, 0.5])
@pytest.mark.under_test("dropout")
def test_dropout_gradient_flows_through_kept_units_only(p):
    x = positive_input((50, 40))
    out = F.dropout(x, p, training=True, rng=1)
    g = np.random.default_rng(2).standard_normal(x.shape)
    out.backward(g)
    kept = out.data != 0
    assert_close(x.grad, np.where(kept, g / (1 - p), 0.0),
                 f"gradient of F.dropout(x, p={p}): g / (1 - p) where the element was kept, 0 where it was dropped")


@pytest.mark.under_test("dropout")
def test_dropout_is_reproducible_with_a_seeded_generator():
    x = positive_input((20, 30))
    a = F.dropout(x, 0.4, training=True, rng=np.random.default_rng(3))
    b = F.dropout(x, 0.4, training=True, rng=np.random.default_rng(3))
    assert_close(a, b, "F.dropout with rng=np.random.default_rng(3), called twice (draw the mask from rng)")
    first, second = nn.Dropout(0.4, rng=5), nn.Dropout(0.4, rng=5)
    a1, b1 = first(x), second(x)
    a2, b2 = first(x), second(x)
    assert_close(a1, b1, "two nn.Dropout(0.4, rng=5) layers: their first outputs")
    assert_close(a2, b2, "two nn.Dropout(0.4, rng=5) layers: their second outputs")
    assert not np.array_equal(a1.data == 0, a2.data == 0), (
        "one nn.Dropout layer called twice dropped the same elements: each call should draw a new mask from the "
        "layer's generator"
    )


@pytest.mark.under_test("dropout")
def test_dropout_layer_follows_train_and_eval():
    net, x = DropoutNet(), positive_input((10, 10))  # a Module whose forward is its nn.Dropout(0.5, rng=0), self.drop
    assert np.any(net(x).data == 0), "nn.Dropout(0.5) in training mode should drop some of 100 elements"
    net.eval()
    assert_close(net(x), x, "nn.Dropout inside a model after model.eval()")
    net.train()
    assert np.any(net(x).data == 0), "nn.Dropout(0.5) after model.train() should drop elements again"


@pytest.mark.under_test("dropout")
def test_dropout_keeps_float32():
    x = Tensor(np.ones((8, 8), dtype=np.float32))
    out = F.dropout(x, 0.5, training=True, rng=0)
    assert out.dtype == np.float32, (
        f"F.dropout on float32: expected a float32 result, got {out.dtype} (make the mask in x's dtype)"
    )
