"""Exercise 3.1: softmax and log_softmax as fused ops (one graph node each, backward derived by hand),
compared with PyTorch in float64 and float32, by central differences, and for logits of +-1e4; then the
given cross_entropy, which is built on them."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage3_transformer import functional as F
from tests.helpers import assert_close, assert_equal, assert_matches_central_differences, compare_with_torch
from tests.stage3.torch_parity import F32_ATOL, F32_RTOL, compare_functions

pytestmark = [pytest.mark.exercise("3.1"), pytest.mark.under_test("softmax", "log_softmax")]

TF = torch.nn.functional
NAMES = ["softmax", "log_softmax"]

# Logits around 1e4: exp(1e4) overflows float64 (its largest value is ~1.8e308 = e^709.8).
HUGE_LOGITS = np.array([
    [1e4, 0.0, -1e4, 5.0],
    [-1e4, -1e4, -1e4, -1e4],
    [5e3, 1e4, 1e4, -3e3],
    [1e4 + 1.0, 1e4, 1e4 - 2.0, 1e4 - 0.5],
])


def ours_and_torch(name, axis):
    ours, theirs = getattr(F, name), getattr(torch, name)
    return (lambda t: ours(t, axis=axis)), (lambda t: theirs(t, dim=axis))


@pytest.mark.parametrize("shape, axis", [((4, 6), -1), ((4, 6), 0), ((2, 3, 5), 1), ((2, 3, 5), -2), ((2, 3, 5), 0),
                                         ((2, 3, 5), -1), ((7,), 0), ((7,), -1)], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_matches_torch_in_float64(name, shape, axis):
    ours, theirs = ours_and_torch(name, axis)
    x = np.random.default_rng(0).standard_normal(shape) * 3
    compare_with_torch(ours, x, torch_fn=theirs, label=f"{name}(x, axis={axis})", use_engine=True)


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32_and_matches_torch(name, axis):
    # Within the float32 tolerances of torch_parity (rtol 1e-4, atol 1e-5): the value and gradient must stay
    # float32, and agree with the float64 answer on the same (float32-rounded) logits.
    ours, theirs = ours_and_torch(name, axis)
    x = np.random.default_rng(1).standard_normal((3, 5)) * 3
    compare_functions(ours, theirs, [x], f"{name}(x, axis={axis}) on float32 logits", dtype=np.float32,
                      atol=F32_ATOL, rtol=F32_RTOL)


@pytest.mark.parametrize("name", NAMES)
def test_is_one_fused_graph_node(name):
    x = Tensor(np.random.default_rng(2).standard_normal((3, 4)), requires_grad=True)
    out = getattr(F, name)(x, axis=-1)
    why = (f"{name}(x) must be ONE graph node, made with Tensor._from_op, whose only parent is x itself. A composition "
           "of Tensor ops (x - max, exp, sum, division) records a chain of nodes, keeps each intermediate array alive "
           "until backward and is slower: write the value in NumPy and the backward by hand")
    assert_equal(len(out._parents), 1, f"{why}; the number of parents of the output node")
    assert_equal(out._parents[0] is x, True, f"{why}; the output node's parent is x (the very input tensor)")


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("name", NAMES)
def test_is_stable_for_huge_logits(name, axis):
    ours, theirs = ours_and_torch(name, axis)
    logits = HUGE_LOGITS if axis == -1 else HUGE_LOGITS.T
    out = compare_with_torch(ours, logits, torch_fn=theirs, use_engine=True,
                             label=f"{name}(x, axis={axis}) of logits around +-1e4 (subtract the max along the axis first)")
    assert_equal(bool(np.isfinite(out.data).all()), True, f"{name} of logits around +-1e4: every value is finite")


@pytest.mark.parametrize("shape, axis", [((3, 4), -1), ((3, 4), 0), ((2, 2, 3), 1)], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_central_differences(name, shape, axis):
    x = np.random.default_rng(3).standard_normal(shape)
    assert_matches_central_differences(lambda t: getattr(F, name)(t, axis=axis), x, label=f"{name}(x, axis={axis})",
                                       use_engine=True)


def test_softmax_is_exp_of_log_softmax_and_sums_to_one():
    x = Tensor(np.random.default_rng(4).standard_normal((2, 3, 5)) * 4)
    for axis in (0, 1, -1):
        soft = F.softmax(x, axis=axis).data
        total = np.sum(soft, axis=axis)
        assert_close(total, np.ones_like(total), f"softmax(x, axis={axis}) summed along axis {axis}")
        assert_close(np.exp(F.log_softmax(x, axis=axis).data), soft, f"exp(log_softmax(x, axis={axis})) vs softmax")


# ---------------------------------------------------------------------- the given cross_entropy, on top
def check_cross_entropy(logits, targets, **kwargs):
    settings = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    torch_kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return compare_with_torch(
        lambda x: F.cross_entropy(x, targets, **kwargs), logits,
        torch_fn=lambda x: TF.cross_entropy(x, torch.tensor(np.asarray(targets)), **torch_kwargs),
        label=f"cross_entropy(logits, targets={list(targets)}{', ' + settings if settings else ''}) "
              "(given, built on your log_softmax)",
        use_engine=True,
    )


@pytest.mark.under_test("log_softmax")
@pytest.mark.integration
def test_cross_entropy_matches_torch():
    rng = np.random.default_rng(5)
    check_cross_entropy(rng.standard_normal((8, 5)) * 2, rng.integers(0, 5, 8))


@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.under_test("log_softmax")
@pytest.mark.integration
def test_cross_entropy_with_ignore_index_matches_torch(ignore_index):
    rng = np.random.default_rng(6)
    logits, targets = rng.standard_normal((10, 5)) * 2, rng.integers(0, 5, 10)
    targets[[1, 4, 5]] = ignore_index  # with ignore_index=2, a real class is ignored wherever it occurs
    check_cross_entropy(logits, targets, ignore_index=ignore_index)


@pytest.mark.under_test("log_softmax")
@pytest.mark.integration
def test_cross_entropy_of_huge_logits_matches_torch():
    out = check_cross_entropy(HUGE_LOGITS, np.array([2, 0, 3, 1]), label_smoothing=0.1)
    assert_equal(bool(np.isfinite(out.data).all()), True, "cross_entropy of logits around +-1e4 is finite")
