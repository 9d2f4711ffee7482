"""Exercise 2.4: softmax, log_softmax and the losses, compared with PyTorch in float64 (values and gradients),
including logits of 1e4, where a formula without the max subtracted overflows."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage2_mlp import functional as F
from tests.helpers import compare_with_torch

pytestmark = [pytest.mark.exercise("2.4"), pytest.mark.under_test("cross_entropy")]

TF = torch.nn.functional

# Rows of logits around 1e4: exp(1e4) overflows float64 (its largest value is ~1.8e308 = e^709.8).
HUGE_LOGITS = np.array([
    [1e4, 0.0, -1e4, 5.0],
    [-1e4, -1e4, -1e4, -1e4],
    [5e3, 1e4, 1e4, -3e3],
    [1e4 + 1.0, 1e4, 1e4 - 2.0, 1e4 - 0.5],
])


def check_finite(out, what):
    assert np.all(np.isfinite(out.data)), f"{what}: the result has nan or inf: {out.data}"


# ---------------------------------------------------------------------- softmax and log_softmax
@pytest.mark.parametrize("shape, axis", [((4, 6), -1), ((4, 6), 0), ((2, 3, 5), 1), ((7,), 0)], ids=str)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.under_test("softmax", "log_softmax")
def test_softmax_matches_torch(name, shape, axis):
    ours, theirs = getattr(F, name), getattr(torch, name)
    x = np.random.default_rng(0).standard_normal(shape) * 3
    compare_with_torch(lambda t: ours(t, axis=axis), x, torch_fn=lambda t: theirs(t, dim=axis),
                       label=f"{name}(x, axis={axis})", use_engine=True)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.under_test("softmax", "log_softmax")
def test_softmax_is_stable_for_huge_logits(name):
    ours, theirs = getattr(F, name), getattr(torch, name)
    out = compare_with_torch(lambda t: ours(t, axis=-1), HUGE_LOGITS, torch_fn=lambda t: theirs(t, dim=-1),
                             label=f"{name} of logits around 1e4 (subtract each row's max first)", use_engine=True)
    check_finite(out, f"{name} of logits around 1e4")


# ---------------------------------------------------------------------- cross-entropy
def logits_and_targets(n=8, c=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)) * 2, rng.integers(0, c, n)


def check_cross_entropy(logits, targets, **kwargs):
    settings = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    torch_kwargs = dict(kwargs)
    if torch_kwargs.get("ignore_index") is None:
        torch_kwargs.pop("ignore_index", None)  # PyTorch's default, -100, is not among these targets
    return compare_with_torch(
        lambda x: F.cross_entropy(x, targets, **kwargs), logits,
        torch_fn=lambda x: TF.cross_entropy(x, torch.tensor(np.asarray(targets)), **torch_kwargs),
        label=f"cross_entropy(logits, targets{', ' + settings if settings else ''}) with targets {list(targets)}",
        use_engine=True,
    )


def test_cross_entropy_matches_torch():
    logits, targets = logits_and_targets()
    check_cross_entropy(logits, targets)


def test_cross_entropy_accepts_a_list_or_a_tensor_of_targets():
    logits, targets = logits_and_targets(seed=1)
    check_cross_entropy(logits, [int(t) for t in targets])
    out = F.cross_entropy(Tensor(logits), Tensor(targets.astype(np.float32)))
    expected = TF.cross_entropy(torch.tensor(logits), torch.tensor(targets))
    assert np.isclose(out.item(), expected.item(), rtol=1e-7), (
        f"cross_entropy with the targets given as a Tensor: expected {expected.item():.10g}, got {out.item():.10g}"
    )


@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_ignore_index(ignore_index):
    logits, targets = logits_and_targets(n=10, seed=2)
    targets[[1, 4, 5]] = ignore_index  # with ignore_index=2 a real class is ignored, wherever it occurs
    check_cross_entropy(logits, targets, ignore_index=ignore_index)


@pytest.mark.parametrize("label_smoothing", [0.1, 0.3])
def test_cross_entropy_label_smoothing(label_smoothing):
    logits, targets = logits_and_targets(seed=3)
    check_cross_entropy(logits, targets, label_smoothing=label_smoothing)


def test_cross_entropy_label_smoothing_with_ignore_index():
    logits, targets = logits_and_targets(n=10, seed=4)
    targets[[0, 7]] = -1
    check_cross_entropy(logits, targets, ignore_index=-1, label_smoothing=0.2)


@pytest.mark.parametrize("bad, ignore_index", [(9, None), (5, None), (-3, None), (-1, -100), (5, 4)], ids=str)
def test_cross_entropy_rejects_a_target_that_is_not_a_class(bad, ignore_index):
    # 5 classes: 5 is one too many, and a negative target would silently index from the end of the row.
    logits, targets = logits_and_targets(n=6, c=5, seed=5)
    targets[3] = bad
    if ignore_index is not None:
        targets[1] = ignore_index  # ignored samples are fine, whatever their target
    what = f"cross_entropy(logits of shape (6, 5), targets={list(targets)}, ignore_index={ignore_index})"
    with pytest.raises(ValueError) as info:
        F.cross_entropy(Tensor(logits), targets, ignore_index=ignore_index)
    assert str(bad) in str(info.value), (
        f"{what} raised a ValueError, as it should, but its message does not name the bad target {bad}: {info.value}"
    )


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_is_stable_for_huge_logits(label_smoothing):
    targets = np.array([2, 0, 3, 1])  # the first row's target has the lowest logit: a loss of 2e4
    out = check_cross_entropy(HUGE_LOGITS, targets, label_smoothing=label_smoothing)
    check_finite(out, "cross_entropy of logits around 1e4")


# ---------------------------------------------------------------------- mse and binary cross-entropy
@pytest.mark.under_test("mse_loss")
def test_mse_loss_matches_torch():
    rng = np.random.default_rng(5)
    pred, target = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    compare_with_torch(F.mse_loss, pred, target, torch_fn=TF.mse_loss, label="mse_loss(pred, target)", use_engine=True)
    compare_with_torch(lambda p: F.mse_loss(p, target), pred, torch_fn=lambda p: TF.mse_loss(p, torch.tensor(target)),
                       label="mse_loss(pred, target as an ndarray)", use_engine=True)


@pytest.mark.under_test("binary_cross_entropy_with_logits")
def test_binary_cross_entropy_with_logits_matches_torch():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((5, 4)) * 3
    targets = rng.uniform(0, 1, (5, 4))  # soft targets
    targets[0] = [0.0, 1.0, 0.0, 1.0]
    compare_with_torch(F.binary_cross_entropy_with_logits, logits, targets,
                       torch_fn=TF.binary_cross_entropy_with_logits,
                       label="binary_cross_entropy_with_logits(logits, targets)", use_engine=True)


@pytest.mark.under_test("binary_cross_entropy_with_logits")
def test_binary_cross_entropy_with_logits_at_zero_and_huge_logits():
    # At x = 0 the gradient is sigmoid(0) - y = 0.5 - y; at |x| = 1e4, log(sigmoid(x)) would be log(0).
    logits = np.array([0.0, 0.0, 1e4, -1e4, 1e4, -1e4, 40.0, -40.0])
    targets = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.3, 0.7])
    out = compare_with_torch(
        lambda x: F.binary_cross_entropy_with_logits(x, targets), logits,
        torch_fn=lambda x: TF.binary_cross_entropy_with_logits(x, torch.tensor(targets)),
        label=f"binary_cross_entropy_with_logits(logits={logits.tolist()}, targets={targets.tolist()})",
        use_engine=True,
    )
    check_finite(out, "binary_cross_entropy_with_logits with logits of 0 and +-1e4")
