"""Exercise 3.10: fused_attention, scaled dot-product attention as ONE graph node with its backward written by
hand. Values and the gradients of q, k and v against torch.nn.functional.scaled_dot_product_attention in
float64 for every kind of mask, causal attention, fully masked rows, broadcast batch axes, cross-attention and a
custom scale; float32 in, float32 out; and dropout against PyTorch and against exercise 3.4's attention with the
same generator."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage3_transformer import functional as F
from tests.helpers import assert_close, assert_equal
from tests.stage3.torch_parity import compare_functions

pytestmark = [pytest.mark.exercise("3.10"), pytest.mark.under_test("fused_attention")]

TF = torch.nn.functional

# float64 on both sides, values and gradients of order 1: the two differ by rounding only, ~1e-15. A wrong
# term of the backward (a missing scale, the mask's rows, a transpose) is off by ~1e-1. 1e-9 absolute, as the
# derivation is exact.
ATOL = 1e-9


def qkv(batch, L, S, E=4, Ev=6, seed=0):
    """q (*batch, L, E), k (*batch, S, E), v (*batch, S, Ev); ``batch`` may be a tuple of three batch shapes."""
    rng = np.random.default_rng(seed)
    qb, kb, vb = batch if batch and isinstance(batch[0], tuple) else (batch, batch, batch)
    return (rng.standard_normal((*qb, L, E)), rng.standard_normal((*kb, S, E)), rng.standard_normal((*vb, S, Ev)))


def bool_mask(shape, seed=1):
    """A random boolean mask (True: takes part) in which every row of the last two axes keeps a key."""
    mask = np.random.default_rng(seed).random(shape) < 0.6
    mask[..., 0] |= ~mask.any(axis=-1)
    return mask


def check_fused(q, k, v, label, attn_mask=None, seed=0, **kwargs):
    """fused_attention and PyTorch's SDPA on the same float64 q, k, v (and NumPy ``attn_mask``): the values and,
    for one random upstream gradient, the gradients of q, k and v, each to ATOL. Returns our output."""
    shapes = f"q {q.shape}, k {k.shape}, v {v.shape}"
    if attn_mask is not None:
        shapes += f", {attn_mask.dtype} attn_mask {attn_mask.shape}"
    what = f"fused_attention({label}; {shapes})"
    ours = [Tensor(a, requires_grad=True) for a in (q, k, v)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = F.fused_attention(*ours, attn_mask=attn_mask, **kwargs)
    expected = TF.scaled_dot_product_attention(*theirs, attn_mask=None if attn_mask is None else torch.tensor(attn_mask),
                                               **kwargs)
    assert_equal(out.dtype.name, "float64", f"{what}: the dtype of the output of float64 inputs")
    assert_close(out, expected, f"{what}: value", atol=ATOL, rtol=0)
    upstream = np.random.default_rng(seed).standard_normal(expected.shape)
    expected.backward(torch.tensor(upstream))
    out.backward(upstream)
    for name, mine, torch_tensor in zip("qkv", ours, theirs):
        assert_close(mine.grad, torch_tensor.grad, f"{what}: the gradient of {name}", atol=ATOL, rtol=0)
    return out


def test_is_one_graph_node_whose_parents_are_q_k_v():
    q, k, v = (Tensor(a, requires_grad=True) for a in qkv((2,), 3, 4, seed=20))
    out = F.fused_attention(q, k, v, is_causal=True)
    why = ("fused_attention must be ONE graph node, made with Tensor._from_op, whose parents are q, k and v "
           "themselves; 3.4's attention composes several Tensor ops (matmul, scale, mask, softmax, matmul)")
    assert_equal(len(out._parents), 3, f"{why}; the number of parents of the output node")
    for i, (name, t) in enumerate(zip("qkv", (q, k, v))):
        assert_equal(out._parents[i] is t, True, f"{why}; parent {i} of the output node is {name}")


@pytest.mark.parametrize("batch, L, S", [((2, 3), 3, 5), ((2,), 4, 4), ((), 5, 3), ((2, 2, 3), 2, 3)],
                         ids=["B,h cross-attention L<S", "B self-attention", "no batch L>S", "three batch axes"])
def test_matches_torch_without_mask(batch, L, S):
    check_fused(*qkv(batch, L, S), "no mask")


def test_matches_torch_with_broadcast_batch_axes():
    # q (2, 3, ...), k (1, 3, ...), v (2, 1, ...): the gradients of k and v are summed over the broadcast axes.
    check_fused(*qkv(((2, 3), (1, 3), (2, 1)), 3, 4, seed=21), "batch axes that broadcast")


@pytest.mark.parametrize("mask_shape", [(3, 5), (2, 1, 3, 5), (2, 4, 3, 5), (1, 5)], ids=str)
def test_matches_torch_with_a_bool_mask(mask_shape):
    check_fused(*qkv((2, 4), 3, 5, seed=22), "a bool attn_mask, True where a query may attend",
                attn_mask=bool_mask(mask_shape, seed=23))


@pytest.mark.parametrize("mask_shape", [(3, 5), (2, 1, 3, 5)], ids=str)
def test_matches_torch_with_a_float_mask(mask_shape):
    mask = np.random.default_rng(24).standard_normal(mask_shape)
    mask[~bool_mask(mask_shape, seed=25)] = -np.inf
    check_fused(*qkv((2, 4), 3, 5, seed=26), "a float attn_mask added to the scores (with some -inf)", attn_mask=mask)


@pytest.mark.parametrize("L, S", [(4, 4), (3, 5), (5, 3)], ids=str)
def test_matches_torch_when_causal(L, S):
    check_fused(*qkv((2, 2), L, S, seed=29), f"is_causal=True, L={L}, S={S}", is_causal=True)


@pytest.mark.parametrize("scale", [0.3, 1.0])
def test_matches_torch_with_a_custom_scale(scale):
    check_fused(*qkv((2,), 3, 4, seed=30), f"scale={scale}", scale=scale)
    check_fused(*qkv((2,), 4, 4, seed=31), f"scale={scale}, is_causal=True", scale=scale, is_causal=True)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_a_fully_masked_row_gives_zero_output_and_gradient(kind):
    q, k, v = qkv((2, 2), 4, 5, seed=32)
    allowed = bool_mask((2, 1, 4, 5), seed=33)
    allowed[0, :, 1] = False  # batch 0, query 1 may attend to nothing
    allowed[1, :, 3] = False
    mask = allowed if kind == "bool" else np.where(allowed, 0.0, -np.inf)
    out = check_fused(q, k, v, f"a {kind} attn_mask with fully masked rows (PyTorch gives 0 there)", attn_mask=mask)
    assert_close(out.data[0, :, 1], np.zeros((2, 6)), "the output of the fully masked query 1 of batch 0", 0, 0)

    q_t, k_t, v_t = (Tensor(a, requires_grad=True) for a in (q, k, v))
    F.fused_attention(q_t, k_t, v_t, attn_mask=mask).backward(np.ones((2, 2, 4, 6)))
    assert_close(q_t.grad[0, :, 1], np.zeros((2, 4)), "the gradient of the fully masked query 1 of batch 0", 0, 0)


def test_every_row_masked():
    out = check_fused(*qkv((2,), 3, 4, seed=34), "an attn_mask of all False", attn_mask=np.zeros((3, 4), dtype=bool))
    assert_close(out, np.zeros((2, 3, 6)), "the output when every key is masked", 0, 0)


def test_float32_stays_float32():
    q, k, v = qkv((2, 2), 3, 5, seed=35)
    mask = bool_mask((3, 5), seed=36)
    compare_functions(lambda a, b, c: F.fused_attention(a, b, c, attn_mask=mask),
                      lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, attn_mask=torch.tensor(mask)),
                      [q, k, v], "fused_attention(q, k, v, bool attn_mask) in float32", dtype=np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_far_below_the_others_keep_their_softmax(dtype):
    # A float mask adds -200 to every key of query 1, and -100 to those of query 2: their scores lie far below
    # the other rows'. Softmax is unchanged by a shift per row, so their weights are those without the offsets.
    # Shifted by the largest score of the whole matrix instead of their own, their exponentials would be below
    # e^-90, zero in float32: 0 / 0.
    q, k, v = qkv((2, 2), 4, 5, seed=37)
    offsets = np.zeros((4, 5))
    offsets[1], offsets[2] = -200.0, -100.0
    if dtype == np.float64:
        out = check_fused(q, k, v, "a float attn_mask of -200 and -100 on two whole rows", attn_mask=offsets)
        assert_equal(bool(np.isfinite(out.data).all()), True, "fused_attention: every output finite")
        return
    compare_functions(lambda a, b, c: F.fused_attention(a, b, c, attn_mask=offsets.astype(np.float32)),
                      lambda a, b, c: TF.scaled_dot_product_attention(a, b, c, attn_mask=torch.tensor(offsets)),
                      [q, k, v], "fused_attention(q, k, v, float attn_mask of -200 and -100 on two whole rows) in "
                      "float32", dtype=np.float32)


# ---------------------------------------------------------------------- dropout
def torch_attention_with_dropout(q, k, v, keep, p, attn_mask=None):
    """softmax(q k^T / sqrt(E) + mask) * keep / (1 - p) @ v in PyTorch, float64, with the given keep mask."""
    scores = q @ k.transpose(-1, -2) / np.sqrt(q.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~torch.tensor(attn_mask), float("-inf"))
    weights = torch.softmax(scores, dim=-1) * torch.tensor(keep / (1 - p))
    return weights @ v


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_dropout_matches_torch_with_the_same_keep_mask(p):
    q, k, v = qkv((2, 2), 5, 6, seed=38)
    mask = bool_mask((5, 6), seed=39)
    # The keep mask D that np.random.default_rng(7) draws first for scores of shape (2, 2, 5, 6), as stage 2's dropout.
    keep = np.random.default_rng(7).random((2, 2, 5, 6)) >= p
    ours = [Tensor(a, requires_grad=True) for a in (q, k, v)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    what = f"fused_attention(dropout_p={p}, rng=7, bool attn_mask) against PyTorch with the same keep mask"
    out = F.fused_attention(*ours, attn_mask=mask, dropout_p=p, rng=7)
    expected = torch_attention_with_dropout(*theirs, keep, p, attn_mask=mask)
    assert_close(out, expected, f"{what}: value (the keep mask is np.random.default_rng(rng).random(scores.shape) >= p)",
                 atol=ATOL, rtol=0)
    upstream = np.random.default_rng(40).standard_normal(expected.shape)
    expected.backward(torch.tensor(upstream))
    out.backward(upstream)
    for name, mine, torch_tensor in zip("qkv", ours, theirs):
        assert_close(mine.grad, torch_tensor.grad, f"{what}: the gradient of {name} (dP = dP~ * D / (1 - p))",
                     atol=ATOL, rtol=0)


def test_dropout_matches_exercise_3_4_with_the_same_generator():
    q, k, v = qkv((2, 3), 4, 5, seed=41)
    mask = bool_mask((2, 1, 4, 5), seed=42)
    mask[1, :, 2] = False  # a fully masked row too
    results = {}
    for name, fn in (("fused_attention", F.fused_attention), ("scaled_dot_product_attention", F.scaled_dot_product_attention)):
        tensors = [Tensor(a, requires_grad=True) for a in (q, k, v)]
        out = fn(*tensors, attn_mask=mask, dropout_p=0.3, rng=np.random.default_rng(11))
        out.backward(np.random.default_rng(43).standard_normal((2, 3, 4, 6)))
        results[name] = (out, *(t.grad for t in tensors))
    what = ("fused_attention and scaled_dot_product_attention (3.4), dropout_p=0.3, rng=np.random.default_rng(11), "
            "a bool mask with a fully masked row")
    for i, part in enumerate(("the output", "the gradient of q", "the gradient of k", "the gradient of v")):
        assert_close(results["fused_attention"][i], results["scaled_dot_product_attention"][i], f"{what}: {part}",
                     atol=ATOL, rtol=0)
