"""Exercise 3.4: scaled_dot_product_attention against torch.nn.functional.scaled_dot_product_attention
(masks, is_causal, scale, batch dimensions, gradients of q, k and v), fully masked rows, dropout on the
attention weights, and the masks' own functions, causal_mask and additive_mask (their tests run first: see
the integration marker in tests/conftest.py)."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage3_transformer import functional as F
from tests.helpers import assert_close, assert_equal, assert_in_range, compare_with_torch
from tests.stage3.torch_parity import compare_functions

pytestmark = [pytest.mark.exercise("3.4"), pytest.mark.under_test("attention")]

TF = torch.nn.functional


def qkv(batch, L, S, E=4, Ev=6, seed=0):
    """q (*batch, L, E), k (*batch, S, E), v (*batch, S, Ev); a batch entry may be a tuple of three shapes."""
    rng = np.random.default_rng(seed)
    qb, kb, vb = batch if batch and isinstance(batch[0], tuple) else (batch, batch, batch)
    return (rng.standard_normal((*qb, L, E)), rng.standard_normal((*kb, S, E)), rng.standard_normal((*vb, S, Ev)))


def check_sdpa(q, k, v, label, attn_mask=None, **kwargs):
    """Values and the gradients of q, k and v against PyTorch, float64. ``attn_mask`` is a NumPy array."""
    torch_mask = None if attn_mask is None else torch.tensor(attn_mask)
    shapes = f"q {q.shape}, k {k.shape}, v {v.shape}"
    if attn_mask is not None:
        shapes += f", {attn_mask.dtype} attn_mask {attn_mask.shape}"
    return compare_with_torch(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=attn_mask, **kwargs), q, k, v,
        torch_fn=lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, attn_mask=torch_mask, **kwargs),
        label=f"scaled_dot_product_attention({label}; {shapes}) (inputs: q, k, v)", use_engine=True)


@pytest.mark.parametrize("batch, L, S", [((2, 3), 3, 5), ((2,), 4, 4), ((), 5, 3), ((2, 2, 3), 2, 3),
                                         (((2, 3), (1, 3), (2, 1)), 3, 4)],
                         ids=["B,h", "B", "no batch", "three batch dims", "broadcast batch dims"])
def test_matches_torch_without_mask(batch, L, S):
    check_sdpa(*qkv(batch, L, S), "no mask")


def bool_mask(shape, seed=1):
    """A random boolean mask (True: takes part) in which every row of the last two axes keeps a key."""
    mask = np.random.default_rng(seed).random(shape) < 0.6
    mask[..., 0] |= ~mask.any(axis=-1)
    return mask


@pytest.mark.parametrize("mask_shape", [(3, 5), (2, 1, 3, 5), (2, 4, 3, 5), (1, 5)], ids=str)
@pytest.mark.under_test("attention", "additive_mask")
@pytest.mark.integration
def test_matches_torch_with_a_bool_mask(mask_shape):
    check_sdpa(*qkv((2, 4), 3, 5, seed=2), "a bool attn_mask, True where a query may attend", attn_mask=bool_mask(mask_shape))


@pytest.mark.parametrize("mask_shape", [(3, 5), (2, 1, 3, 5)], ids=str)
@pytest.mark.under_test("attention", "additive_mask")
@pytest.mark.integration
def test_matches_torch_with_a_float_mask(mask_shape):
    mask = np.random.default_rng(3).standard_normal(mask_shape)
    mask[~bool_mask(mask_shape, seed=4)] = -np.inf
    check_sdpa(*qkv((2, 4), 3, 5, seed=5), "a float attn_mask added to the scores (with some -inf)", attn_mask=mask)


@pytest.mark.parametrize("L, S", [(4, 4), (3, 5), (5, 3)], ids=str)
@pytest.mark.under_test("attention", "causal_mask")
@pytest.mark.integration
def test_matches_torch_when_causal(L, S):
    check_sdpa(*qkv((2, 2), L, S, seed=6), f"is_causal=True, L={L}, S={S}", is_causal=True)


@pytest.mark.parametrize("scale", [0.3, 1.0])
@pytest.mark.under_test("attention", "causal_mask")
@pytest.mark.integration
def test_matches_torch_with_a_custom_scale(scale):
    check_sdpa(*qkv((2,), 3, 4, seed=7), f"scale={scale}", scale=scale)
    check_sdpa(*qkv((2,), 4, 4, seed=8), f"scale={scale}, is_causal=True", scale=scale, is_causal=True)


@pytest.mark.under_test("attention", "additive_mask")
@pytest.mark.integration
def test_float32_stays_float32():
    q, k, v = qkv((2, 2), 3, 5, seed=9)
    mask = bool_mask((3, 5), seed=10)
    compare_functions(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask),
                      lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, attn_mask=torch.tensor(mask)),
                      [q, k, v], "scaled_dot_product_attention(q, k, v, bool attn_mask) in float32", dtype=np.float32)


# ---------------------------------------------------------------------- fully masked rows
@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.under_test("attention", "additive_mask")
@pytest.mark.integration
def test_a_fully_masked_row_gives_zero_output_and_gradient(kind):
    q, k, v = qkv((2, 2), 4, 5, seed=11)
    allowed = bool_mask((2, 1, 4, 5), seed=12)
    allowed[0, :, 1] = False  # batch 0, query 1 may attend to nothing
    allowed[1, :, 3] = False
    mask = allowed if kind == "bool" else np.where(allowed, 0.0, -np.inf)
    out = check_sdpa(q, k, v, f"a {kind} attn_mask with fully masked rows (PyTorch gives 0 there)", attn_mask=mask)
    assert_equal(bool(np.isfinite(out.data).all()), True, "the output with fully masked rows is finite (no NaN)")
    assert_close(out.data[0, :, 1], np.zeros((2, 6)), "the output of the fully masked query 1 of batch 0", 0, 0)

    q_t, k_t, v_t = (Tensor(a, requires_grad=True) for a in (q, k, v))
    out = F.scaled_dot_product_attention(q_t, k_t, v_t, attn_mask=mask)
    out.backward(np.ones(out.shape))
    for name, t in (("q", q_t), ("k", k_t), ("v", v_t)):
        assert_equal(bool(np.isfinite(t.grad).all()), True, f"the gradient of {name} with fully masked rows is finite")
    assert_close(q_t.grad[0, :, 1], np.zeros((2, 4)), "the gradient of the fully masked query 1 of batch 0", 0, 0)


@pytest.mark.under_test("attention", "additive_mask")
@pytest.mark.integration
def test_every_row_masked():
    q, k, v = qkv((2,), 3, 4, seed=13)
    out = check_sdpa(q, k, v, "an attn_mask of all False", attn_mask=np.zeros((3, 4), dtype=bool))
    assert_close(out, np.zeros((2, 3, 6)), "the output when every key is masked", 0, 0)


# ---------------------------------------------------------------------- dropout
def uniform_attention(B=4, L=50, S=50):
    """q = 0 gives every key the weight 1/S; v = identity makes the output the attention weights themselves."""
    q = Tensor(np.zeros((B, L, 8)), requires_grad=True)
    k = Tensor(np.random.default_rng(14).standard_normal((B, S, 8)), requires_grad=True)
    v = Tensor(np.broadcast_to(np.eye(S), (B, S, S)).copy(), requires_grad=True)
    return q, k, v


def test_dropout_zeroes_weights_and_scales_the_rest():
    p, S = 0.25, 50
    q, k, v = uniform_attention(S=S)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, rng=0)  # (4, 50, 50): the dropped-out weights
    weights = out.data
    what = f"scaled_dot_product_attention(..., dropout_p={p}) with uniform weights 1/{S} (v = identity shows them)"
    kept_value = (1 / S) / (1 - p)  # inverted dropout: survivors scaled by 1/(1-p)
    off = np.minimum(np.abs(weights), np.abs(weights - kept_value))
    assert_in_range(off.max(), None, 1e-12, f"{what}: every weight is 0 or (1/{S})/(1-{p}); the largest distance to both")
    n = weights.size
    # The fraction dropped has standard error sqrt(p (1-p) / n) = 0.0043 for n = 10 000; 5 standard errors.
    tolerance = 5 * np.sqrt(p * (1 - p) / n)
    assert_in_range(np.mean(weights == 0), p - tolerance, p + tolerance, f"{what}: the fraction of weights zeroed")
    mean_tolerance = 5 * (1 / S) * np.sqrt(p / (1 - p) / n)
    assert_in_range(weights.mean(), 1 / S - mean_tolerance, 1 / S + mean_tolerance,
                    f"{what}: the mean weight (1/{S} on average: dropout keeps the expectation)")

    upstream = np.random.default_rng(15).standard_normal(out.shape)
    out.backward(upstream)
    # out = dropped_weights @ v, so dL/dv = dropped_weights^T @ upstream: the same mask as the forward pass.
    assert_close(v.grad, weights.swapaxes(-1, -2) @ upstream, f"{what}: the gradient of v (weights^T @ upstream, with "
                                                               "the forward pass's dropout mask)")


def test_dropout_is_seeded_and_zero_dropout_is_exact():
    q, k, v = qkv((2,), 6, 6, seed=16)
    q, k, v = Tensor(q), Tensor(k), Tensor(v)
    plain = F.scaled_dot_product_attention(q, k, v).data
    assert_equal(F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, rng=3).data, plain,
                 "scaled_dot_product_attention with dropout_p=0.0 vs without dropout (exactly equal)")
    first = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5, rng=3).data
    assert_equal(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5, rng=np.random.default_rng(3)).data, first,
                 "scaled_dot_product_attention(dropout_p=0.5) with rng=3 and with rng=np.random.default_rng(3)")
    other = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5, rng=4).data
    assert_in_range(np.abs(other - first).max(), 1e-6, None,
                    "the largest difference between dropout_p=0.5 with rng=3 and with rng=4 (other draws)")
    assert_in_range(np.abs(first - plain).max(), 1e-6, None,
                    "the largest difference between dropout_p=0.5 and no dropout")


# ---------------------------------------------------------------------- causal_mask
@pytest.mark.parametrize("L, S", [(4, None), (1, None), (3, 5), (5, 3)], ids=str)
@pytest.mark.under_test("causal_mask")
def test_causal_mask(L, S):
    got = F.causal_mask(L) if S is None else F.causal_mask(L, S)
    expected = torch.ones(L, L if S is None else S, dtype=torch.bool).tril().numpy()  # top-left aligned, as is_causal
    what = f"causal_mask({L}{'' if S is None else f', {S}'}) (True on and below the diagonal)"
    assert_equal(type(got).__name__, "ndarray", f"{what}: the type")
    assert_equal(got.dtype.name, "bool", f"{what}: the dtype")
    assert_equal(got, expected, what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.under_test("additive_mask")
def test_additive_mask_of_a_bool_mask_is_zero_or_minus_infinity(dtype):
    mask = bool_mask((2, 3, 5), seed=13)
    got = F.additive_mask(mask, dtype)
    what = f"additive_mask(a bool mask (2, 3, 5), {np.dtype(dtype).name}) (0 where True, -inf where False)"
    assert_equal(np.asarray(got).dtype.name, np.dtype(dtype).name, f"{what}: the dtype")
    assert_equal(np.asarray(got), np.where(mask, 0.0, -np.inf).astype(dtype), what)


@pytest.mark.under_test("additive_mask")
def test_additive_mask_takes_a_float_mask_as_it_is_and_a_tensor_as_a_constant():
    mask = np.random.default_rng(14).standard_normal((3, 5))
    mask[0, 1] = -np.inf
    what = "additive_mask(a float64 mask (3, 5) with a -inf, float32)"
    got = F.additive_mask(mask, np.float32)
    assert_equal(np.asarray(got).dtype.name, "float32", f"{what}: the dtype")
    assert_equal(np.asarray(got), mask.astype(np.float32), f"{what}: the values, as they are")
    got = F.additive_mask(Tensor(mask, requires_grad=True), np.float64)
    what = "additive_mask(Tensor(that mask, requires_grad=True), float64)"
    assert_equal(type(got).__name__, "ndarray", f"{what}: the type (an array: a mask is a constant, no gradient "
                 "flows into it)")
    assert_equal(got, mask, f"{what}: the values")
