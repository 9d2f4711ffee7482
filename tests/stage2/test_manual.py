"""Exercise 2.8: backprop by hand. Every gradient is checked twice, in float64: against the same computation
built from stage 1 Tensors and differentiated by ``Tensor.backward()``, and against PyTorch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stage1_autograd.tensor import Tensor
from stage2_mlp.manual import ManualCrossEntropy, ManualLinear, ManualMLP, ManualReLU
from tests.helpers import assert_close
from tests.stage2.student_side import parameters_and_grads_are_the_layers_own, set_parameter_entry, train_by_hand

pytestmark = pytest.mark.exercise("2.8")


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def check_gradients(what, got: dict, autograd: dict, torch_grads: dict):
    """Each of ``got`` (name -> our manual gradient) against the autograd and the torch gradient."""
    for name, grad in got.items():
        assert_close(grad, torch_grads[name], f"{what}: {name}, compared with PyTorch")
        assert_close(grad, autograd[name], f"{what}: {name}, compared with stage 1 Tensor.backward()")


def tensor_log_softmax(z: Tensor) -> Tensor:
    shifted = z - Tensor(z.data.max(axis=1, keepdims=True))  # the max is a constant for the gradient
    return shifted - shifted.exp().sum(axis=1, keepdims=True).log()


def tensor_cross_entropy(z: Tensor, targets: np.ndarray) -> Tensor:
    return -tensor_log_softmax(z)[np.arange(len(targets)), targets].mean()


# ---------------------------------------------------------------------- ManualLinear
@pytest.mark.under_test("ManualLinear.__init__")
def test_linear_initialisation():
    layer = ManualLinear(4, 3, np.random.default_rng(0))
    assert layer.weight.shape == (3, 4) and layer.bias.shape == (3,), (
        f"ManualLinear(4, 3): expected weight (out, in) = (3, 4) and bias (3,), got {layer.weight.shape} and {layer.bias.shape}"
    )
    rng, bound = np.random.default_rng(0), 1 / np.sqrt(4)
    assert_close(layer.weight, rng.uniform(-bound, bound, (3, 4)),
                 "ManualLinear(4, 3, rng).weight: rng.uniform(-1/sqrt(4), 1/sqrt(4), (3, 4)), drawn before the bias")
    assert_close(layer.bias, rng.uniform(-bound, bound, (3,)),
                 "ManualLinear(4, 3, rng).bias: rng.uniform(-1/sqrt(4), 1/sqrt(4), (3,)), drawn after the weight")


@pytest.mark.parametrize("n, d_in, d_out", [(5, 4, 3), (1, 3, 2), (8, 1, 1), (6, 7, 5)])
@pytest.mark.under_test("ManualLinear.backward", "ManualLinear.forward")
def test_linear_forward_and_backward(n, d_in, d_out):
    layer = ManualLinear(d_in, d_out, np.random.default_rng(1))
    x, upstream = randn(n, d_in, seed=2), randn(n, d_out, seed=3)
    what = f"ManualLinear({d_in} -> {d_out}) on x of shape {x.shape}"

    out = layer.forward(x)
    grad_x = layer.backward(upstream)

    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, layer.weight, layer.bias))
    expected = F.linear(xt, wt, bt)
    expected.backward(torch.tensor(upstream))
    xa, wa, ba = (Tensor(a, requires_grad=True) for a in (x, layer.weight, layer.bias))
    (xa @ wa.T + ba).backward(upstream)

    assert_close(out, expected, f"{what}: forward x W^T + b")
    check_gradients(
        what,
        {"dL/dx (returned by backward)": grad_x, "grad_weight (dL/dW)": layer.grad_weight, "grad_bias (dL/db)": layer.grad_bias},
        {"dL/dx (returned by backward)": xa.grad, "grad_weight (dL/dW)": wa.grad, "grad_bias (dL/db)": ba.grad},
        {"dL/dx (returned by backward)": xt.grad, "grad_weight (dL/dW)": wt.grad, "grad_bias (dL/db)": bt.grad},
    )


@pytest.mark.under_test("ManualLinear.forward", "ManualLinear.backward")
def test_linear_backward_uses_the_latest_forward():
    layer = ManualLinear(3, 2, np.random.default_rng(0))
    layer.forward(randn(4, 3, seed=1))
    x = randn(4, 3, seed=2)
    layer.forward(x)
    upstream = randn(4, 2, seed=3)
    layer.backward(upstream)
    assert_close(layer.grad_weight, upstream.T @ x,
                 "grad_weight after two forwards: it must use the input of the latest forward")


# ---------------------------------------------------------------------- ManualReLU
@pytest.mark.under_test("ManualReLU.backward", "ManualReLU.forward")
def test_relu_forward_and_backward():
    x = randn(4, 5, seed=0)
    x[0, :3] = 0.0  # at exactly 0 the gradient is 0, as in PyTorch
    upstream = randn(4, 5, seed=1)
    relu = ManualReLU()
    out = relu.forward(x)
    grad_x = relu.backward(upstream)

    xt = torch.tensor(x, requires_grad=True)
    expected = torch.relu(xt)
    expected.backward(torch.tensor(upstream))
    xa = Tensor(x, requires_grad=True)
    xa.relu().backward(upstream)

    assert_close(out, expected, "ManualReLU forward max(x, 0)")
    check_gradients("ManualReLU on x of shape (4, 5) (with some x == 0)",
                    {"dL/dx": grad_x}, {"dL/dx": xa.grad}, {"dL/dx": xt.grad})


# ---------------------------------------------------------------------- ManualCrossEntropy
@pytest.mark.parametrize("n, c, scale", [(6, 4, 1.0), (1, 3, 1.0), (5, 10, 100.0)])
@pytest.mark.under_test("ManualCrossEntropy.backward", "ManualCrossEntropy.forward")
def test_cross_entropy_forward_and_backward(n, c, scale):
    logits = randn(n, c, seed=0) * scale  # scale 100: exp would overflow without the max shift
    logits[0, 0] += 1000.0
    targets = np.random.default_rng(1).integers(0, c, size=n)
    what = f"ManualCrossEntropy on logits of shape {logits.shape} (largest |logit| {np.abs(logits).max():.0f})"

    loss_fn = ManualCrossEntropy()
    loss = loss_fn.forward(logits, targets)
    grad = loss_fn.backward()

    zt = torch.tensor(logits, requires_grad=True)
    expected = F.cross_entropy(zt, torch.tensor(targets))
    expected.backward()
    za = Tensor(logits, requires_grad=True)
    tensor_cross_entropy(za, targets).backward()

    assert np.isfinite(loss), f"{what}: the loss is {loss}; subtract each row's max before exp"
    assert_close(np.float64(loss), expected, f"{what}: the mean loss")
    check_gradients(what, {"dL/dlogits": grad}, {"dL/dlogits": za.grad}, {"dL/dlogits": zt.grad})


# ---------------------------------------------------------------------- ManualMLP
def mlp_and_data(n=6, d_in=4, hidden=5, d_out=3):
    mlp = ManualMLP(d_in, hidden, d_out, np.random.default_rng(0))
    x = randn(n, d_in, seed=1)
    targets = np.random.default_rng(2).integers(0, d_out, size=n)
    return mlp, x, targets


def manual_loss_and_grads(mlp, x, targets):
    loss_fn = ManualCrossEntropy()
    loss = loss_fn.forward(mlp.forward(x), targets)
    grad_x = mlp.backward(loss_fn.backward())
    return loss, grad_x


@pytest.mark.under_test("ManualMLP.__init__", "ManualMLP.parameters_and_grads")
def test_mlp_layers_and_parameter_names():
    mlp = ManualMLP(4, 5, 3, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    fc1 = ManualLinear(4, 5, rng)
    fc2 = ManualLinear(5, 3, rng)
    assert_close(mlp.fc1.weight, fc1.weight, "ManualMLP(4, 5, 3, rng).fc1.weight (fc1 is built first, from rng)")
    assert_close(mlp.fc2.weight, fc2.weight, "ManualMLP(4, 5, 3, rng).fc2.weight (fc2 is built after fc1, from the same rng)")
    mlp.backward(mlp.forward(randn(2, 4)))
    triples = mlp.parameters_and_grads()
    names = [name for name, _, _ in triples]
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"], f"parameters_and_grads() names: got {names}"
    layers = {"fc1": mlp.fc1, "fc2": mlp.fc2}
    for name, param, grad in triples:
        layer, kind = layers[name.split(".")[0]], name.split(".")[1]
        assert_close(param, getattr(layer, kind), f"parameters_and_grads(): {name}")
        assert_close(grad, getattr(layer, f"grad_{kind}"), f"parameters_and_grads(): the gradient of {name}")
    # Identity can only be seen where the arrays live (arrays reach the tests as copies):
    for name, param_is_own, grad_is_own in parameters_and_grads_are_the_layers_own(mlp):
        kind = name.split(".")[1]
        assert param_is_own, f"parameters_and_grads(): {name} should be the layer's own array, not a copy"
        assert grad_is_own, f"parameters_and_grads(): the gradient of {name} should be the layer's grad_{kind}"


@pytest.mark.under_test("ManualMLP.backward", "ManualMLP.forward")
@pytest.mark.integration
def test_mlp_gradients_match_autograd_and_torch():
    mlp, x, targets = mlp_and_data()
    loss, grad_x = manual_loss_and_grads(mlp, x, targets)
    params = {name: p for name, p, _ in mlp.parameters_and_grads()}
    manual = {f"gradient of {name}": g for name, _, g in mlp.parameters_and_grads()}
    manual["dL/dx"] = grad_x

    tp = {name: torch.tensor(p, requires_grad=True) for name, p in params.items()}
    xt = torch.tensor(x, requires_grad=True)
    logits = F.linear(torch.relu(F.linear(xt, tp["fc1.weight"], tp["fc1.bias"])), tp["fc2.weight"], tp["fc2.bias"])
    expected = F.cross_entropy(logits, torch.tensor(targets))
    expected.backward()

    ap = {name: Tensor(p, requires_grad=True) for name, p in params.items()}
    xa = Tensor(x, requires_grad=True)
    hidden = (xa @ ap["fc1.weight"].T + ap["fc1.bias"]).relu()
    tensor_cross_entropy(hidden @ ap["fc2.weight"].T + ap["fc2.bias"], targets).backward()

    what = "ManualMLP(4, 5, 3) + ManualCrossEntropy on x (6, 4)"
    assert_close(np.float64(loss), expected, f"{what}: the loss")
    check_gradients(
        what,
        manual,
        {**{f"gradient of {name}": t.grad for name, t in ap.items()}, "dL/dx": xa.grad},
        {**{f"gradient of {name}": t.grad for name, t in tp.items()}, "dL/dx": xt.grad},
    )


@pytest.mark.under_test("ManualMLP.backward", "ManualMLP.forward")
@pytest.mark.integration
def test_mlp_gradients_match_central_differences():
    mlp, x, targets = mlp_and_data(n=5, d_in=3, hidden=4, d_out=3)
    manual_loss_and_grads(mlp, x, targets)
    eps = 1e-6
    for name, param, grad in mlp.parameters_and_grads():
        grad = grad.copy()  # the loss evaluations below run backward again
        numeric = np.zeros_like(param)
        for i in np.ndindex(param.shape):  # param[i] = ... in the array parameters_and_grads() gave (in place)
            original = param[i]
            set_parameter_entry(mlp, name, i, original + eps)
            up = ManualCrossEntropy().forward(mlp.forward(x), targets)
            set_parameter_entry(mlp, name, i, original - eps)
            down = ManualCrossEntropy().forward(mlp.forward(x), targets)
            set_parameter_entry(mlp, name, i, original)
            numeric[i] = (up - down) / (2 * eps)
        assert_close(grad, numeric, f"gradient of {name}, compared with central differences (L(p+eps) - L(p-eps)) / 2eps",
                     atol=1e-7, rtol=1e-5)


@pytest.mark.under_test("ManualMLP.backward", "ManualMLP.forward", "ManualMLP.parameters_and_grads")
@pytest.mark.integration
def test_gradient_descent_by_hand_learns():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR of the signs: needs the hidden layer
    mlp = ManualMLP(2, 16, 2, np.random.default_rng(1))
    # each step: param -= 0.5 * grad for each of parameters_and_grads(), in place
    losses = train_by_hand(mlp, x, y, steps=300, lr=0.5)
    accuracy = (mlp.forward(x).argmax(axis=1) == y).mean()
    assert accuracy > 0.9, (
        f"300 steps of gradient descent with the manual gradients on the XOR of signs reached accuracy "
        f"{accuracy:.2f} (loss {float(losses[0]):.3f} -> {float(losses[-1]):.3f}); expected > 0.9"
    )
