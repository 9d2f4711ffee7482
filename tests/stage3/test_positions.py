"""Exercise 3.3: Embedding (against torch.nn.Embedding), sinusoidal positions (against the formula of
Vaswani et al.) and rotary positions, RoPE (its angles and rotation, then the whole against a PyTorch version
written here, and by its properties: each pair keeps its norm, and the dot product of a rotated query and key
depends only on their distance)."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage3_transformer import functional as F
from stage3_transformer import nn
from tests.helpers import (assert_close, assert_equal, assert_in_range, assert_raises, assert_tensor,
                           compare_with_torch)
from tests.stage3.torch_parity import compare_functions, compare_modules, load_ours_into_torch, load_torch_into_ours

pytestmark = pytest.mark.exercise("3.3")


# ---------------------------------------------------------------------- Embedding
def lookup(ids):
    """A call of an embedding on fixed ids, for compare_modules (which passes no inputs here)."""
    return (lambda module: module(ids)), (lambda module: module(torch.as_tensor(np.asarray(ids))))


@pytest.mark.parametrize("ids", [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [[0, 9, 9], [9, 0, 2]], [[[7]]], 4],
                         ids=["repeated", "2-D", "3-D", "0-D"])
@pytest.mark.under_test("Embedding.forward")
def test_embedding_matches_torch(ids):
    # Repeated ids: each occurrence adds its upstream row into the same row of the weight's gradient.
    torch.manual_seed(0)
    ours, theirs = nn.Embedding(10, 5, dtype=np.float64), torch.nn.Embedding(10, 5, dtype=torch.float64)
    load_torch_into_ours(ours, theirs, "Embedding(10, 5)")
    call_ours, call_theirs = lookup(ids)
    got, _ = compare_modules(ours, theirs, [], call_ours=call_ours, call_theirs=call_theirs,
                             what=f"Embedding(10, 5) of ids {ids}")
    assert_equal(tuple(got[0].shape), np.shape(ids) + (5,), f"Embedding(10, 5) of ids of shape {np.shape(ids)}: "
                                                            "the output's shape (*ids.shape, embedding_dim)")


@pytest.mark.under_test("Embedding.forward")
def test_embedding_takes_ids_as_an_array_or_a_tensor_and_loads_into_torch():
    ours = nn.Embedding(8, 3, rng=0, dtype=np.float64)
    theirs = torch.nn.Embedding(8, 3, dtype=torch.float64)
    load_ours_into_torch(theirs, ours, "Embedding(8, 3)")
    ids = np.array([[1, 7], [0, 1]])
    expected = theirs(torch.tensor(ids)).detach()
    assert_close(ours(ids), expected, "Embedding(8, 3) of an int ndarray of ids, vs PyTorch with our state dict")
    assert_close(ours(Tensor(ids)), expected, "Embedding(8, 3) of ids given as a Tensor (float32 data holding ints)")
    assert_close(ours(ids.tolist()), expected, "Embedding(8, 3) of ids given as a nested list")


@pytest.mark.under_test("Embedding.__init__", "Embedding.forward")
def test_embedding_padding_row_is_zero_and_gets_no_gradient():
    ours = nn.Embedding(6, 4, padding_idx=2, rng=1, dtype=np.float64)
    assert_close(ours.weight.data[2], np.zeros(4), "Embedding(6, 4, padding_idx=2).weight[2] at initialisation", 0, 0)
    torch.manual_seed(1)
    theirs = torch.nn.Embedding(6, 4, padding_idx=2, dtype=torch.float64)
    with torch.no_grad():
        theirs.weight[2] = torch.tensor([0.5, -1.0, 2.0, 0.25])  # a padding row that was trained or loaded
    load_torch_into_ours(ours, theirs, "Embedding(6, 4, padding_idx=2)")
    call_ours, call_theirs = lookup([[2, 0, 2], [5, 2, 1]])
    got, _ = compare_modules(ours, theirs, [], call_ours=call_ours, call_theirs=call_theirs,
                             what="Embedding(6, 4, padding_idx=2) of ids [[2, 0, 2], [5, 2, 1]]")
    assert_close(ours.weight.grad[2], np.zeros(4), "the gradient of the padding row 2 (always zero, as in PyTorch)", 0, 0)


@pytest.mark.under_test("Embedding.__init__")
def test_embedding_initialisation_is_standard_normal():
    num, dim = 1000, 64
    layer = nn.Embedding(num, dim, padding_idx=0, rng=0)
    assert_tensor(layer.weight, f"Embedding({num}, {dim}).weight", shape=(num, dim), dtype=np.float32)
    layer(np.array([1, 2]))  # the forward pass is part of the exercise, too
    w = layer.weight.data[1:].astype(np.float64)  # the padding row 0 is zero
    n = w.size
    # N(0, 1): the sample mean has standard error 1/sqrt(n) and the sample std sqrt(1/(2n)); 5 standard errors.
    assert_in_range(w.mean(), -5 / np.sqrt(n), 5 / np.sqrt(n), f"the mean of Embedding({num}, {dim}).weight (N(0, 1))")
    assert_in_range(w.std(), 1 - 5 / np.sqrt(2 * n), 1 + 5 / np.sqrt(2 * n),
                    f"the standard deviation of Embedding({num}, {dim}).weight (N(0, 1))")
    assert_close(nn.Embedding(7, 3, rng=5).weight, nn.Embedding(7, 3, rng=np.random.default_rng(5)).weight,
                 "Embedding(7, 3, rng=5).weight vs rng=np.random.default_rng(5): the same draws", 0, 0)
    other = nn.Embedding(7, 3, rng=6).weight.data
    assert_in_range(np.abs(other - nn.Embedding(7, 3, rng=5).weight.data).max(), 1e-3, None,
                    "the largest difference between Embedding(7, 3).weight built with rng=5 and with rng=6")


@pytest.mark.parametrize("bad", [6, 9, -1, -6])
@pytest.mark.under_test("Embedding.forward")
def test_embedding_rejects_an_id_out_of_range(bad):
    layer = nn.Embedding(6, 3, rng=0)
    layer(np.array([0, 5]))  # the ends of the range are fine
    ids = np.array([[0, 1], [bad, 2]])
    what = f"Embedding(6, 3) of ids {ids.tolist()} (ids must lie in [0, 6); a negative id would silently count from the end)"
    assert_raises(IndexError, lambda: layer(ids), what, match=str(bad))
    assert_raises(IndexError, lambda: layer(ids), f"{what}: the message names the number of embeddings", match="6")


# ---------------------------------------------------------------------- sinusoidal positions
def sinusoidal_formula(seq_len, dim):
    """PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(p / 10000^(2i/dim)), in float64, element by element."""
    pe = np.zeros((seq_len, dim))
    for p in range(seq_len):
        for i in range(dim // 2):
            angle = p / 10000 ** (2 * i / dim)
            pe[p, 2 * i], pe[p, 2 * i + 1] = np.sin(angle), np.cos(angle)
    return pe


@pytest.mark.parametrize("seq_len, dim", [(50, 16), (7, 2), (1, 6), (12, 10)], ids=str)
@pytest.mark.under_test("sinusoidal_positions")
def test_sinusoidal_positions_follow_the_formula(seq_len, dim):
    out = F.sinusoidal_positions(seq_len, dim)
    assert_tensor(out, f"sinusoidal_positions({seq_len}, {dim})", shape=(seq_len, dim), dtype=np.float32)
    # float32 holds each value to 6e-8; an angle rounded to float32 before sin/cos is off by up to
    # position * 6e-8 = 3e-6 at position 50. 1e-5 allows that, and no wrong formula.
    assert_close(out, sinusoidal_formula(seq_len, dim), f"sinusoidal_positions({seq_len}, {dim}) vs PE[p, 2i] = "
                 f"sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(same)", atol=1e-5, rtol=0)


@pytest.mark.under_test("sinusoidal_positions")
def test_sinusoidal_positions_reject_an_odd_dim():
    F.sinusoidal_positions(4, 6)
    assert_raises(ValueError, lambda: F.sinusoidal_positions(4, 7), "sinusoidal_positions(4, 7): the sin/cos pairs need "
                  "an even dim", match="7")


# ---------------------------------------------------------------------- rotary positions (RoPE)
def torch_rope(x, positions, theta=10000.0):
    """RoFormer's rotation in PyTorch: the pair (x[..., 2i], x[..., 2i+1]) turns by the angle
    positions[t] * theta^(-2i/d), for x (..., seq, d) and positions (seq,)."""
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angle = torch.as_tensor(np.asarray(positions), dtype=torch.float64)[:, None] * inv_freq  # (seq, d/2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


ROPE_CASES = [  # x shape, positions, theta
    ((5, 8), np.arange(5), 10000.0),
    ((2, 3, 4, 8), np.arange(4), 10000.0),
    ((2, 4, 6), [3, 7, 0, 11], 10000.0),
    ((3, 4), np.array([9, 2, 2]), 100.0),
    ((1, 2, 2), [5, 1000], 10000.0),
]


@pytest.mark.parametrize("positions, head_dim, theta", [([0, 1, 2], 4, 10000.0), ([3, 7, 0, 11], 6, 100.0)], ids=str)
@pytest.mark.under_test("rope_angles")
def test_rope_angles_are_the_cos_and_sin_of_position_times_frequency(positions, head_dim, theta):
    cos, sin = F.rope_angles(positions, head_dim, theta)
    angle = np.outer(positions, theta ** (-np.arange(0, head_dim, 2) / head_dim))  # (seq, head_dim/2)
    what = f"rope_angles({positions}, head_dim={head_dim}, theta={theta}): the (seq, head_dim/2)"
    assert_close(cos, np.cos(angle), f"{what} cos of positions[p] * theta^(-2i/head_dim)")
    assert_close(sin, np.sin(angle), f"{what} sin of positions[p] * theta^(-2i/head_dim)")


def torch_rotate_pairs(x, cos, sin):
    """The pair (x[..., 2i], x[..., 2i+1]) of position p turned by the angle of cos[p, i], sin[p, i], in PyTorch."""
    cos, sin = torch.as_tensor(cos), torch.as_tensor(sin)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


@pytest.mark.under_test("rotate_pairs")
def test_rotate_pairs_turns_each_pair_and_its_gradient_back():
    rng = np.random.default_rng(5)
    x, angle = rng.standard_normal((2, 3, 6)), rng.uniform(-np.pi, np.pi, (3, 3))
    cos, sin = np.cos(angle), np.sin(angle)
    compare_with_torch(lambda t: F.rotate_pairs(t, cos, sin), x, torch_fn=lambda t: torch_rotate_pairs(t, cos, sin),
                       label="rotate_pairs(x (2, 3, 6), cos, sin (3, 3)) (out[..., 2i] = x[..., 2i] cos - x[..., 2i+1] "
                             "sin, out[..., 2i+1] = x[..., 2i] sin + x[..., 2i+1] cos)")


@pytest.mark.parametrize("x_shape, positions, theta", ROPE_CASES, ids=str)
@pytest.mark.under_test("rotate_pairs", "rope_angles", "apply_rope")
def test_apply_rope_matches_torch(x_shape, positions, theta):
    x = np.random.default_rng(0).standard_normal(x_shape)
    compare_with_torch(lambda t: F.apply_rope(t, positions, theta=theta), x,
                       torch_fn=lambda t: torch_rope(t, positions, theta),
                       label=f"apply_rope(x, positions={list(np.asarray(positions))}, theta={theta}) (interleaved pairs "
                             f"(x[..., 2i], x[..., 2i+1]) turned by positions * theta^(-2i/head_dim))",
                       use_engine=True)


@pytest.mark.under_test("rotate_pairs", "apply_rope")
def test_apply_rope_keeps_float32():
    x = np.random.default_rng(1).standard_normal((2, 3, 8))
    compare_functions(lambda t: F.apply_rope(t, np.arange(3)), lambda t: torch_rope(t, np.arange(3)), [x],
                      "apply_rope(x, arange(3)) on a float32 x", dtype=np.float32)


@pytest.mark.under_test("rope_angles", "apply_rope")
def test_apply_rope_rejects_an_odd_head_dim():
    F.apply_rope(Tensor(np.ones((3, 4))), np.arange(3))
    assert_raises(ValueError, lambda: F.apply_rope(Tensor(np.ones((3, 5))), np.arange(3)),
                  "apply_rope on x of shape (3, 5): the pairs need an even head_dim", match="5")


@pytest.mark.under_test("rotate_pairs", "apply_rope")
def test_rope_keeps_the_norm_of_every_pair():
    x = np.random.default_rng(2).standard_normal((2, 6, 8))
    out = F.apply_rope(Tensor(x), np.array([0, 1, 5, 17, 100, 3])).data
    norms = lambda a: np.hypot(a[..., 0::2], a[..., 1::2])  # noqa: E731  (..., seq, head_dim/2)
    assert_close(norms(out), norms(x), "the length of each pair (x[..., 2i], x[..., 2i+1]) after apply_rope: a "
                                       "rotation keeps it")


@pytest.mark.under_test("rope_angles", "rotate_pairs", "apply_rope")
def test_rope_dot_product_depends_only_on_the_distance():
    rng = np.random.default_rng(3)
    q, k = rng.standard_normal(8), rng.standard_normal(8)
    m = np.array([3, 10, 2, 57, 7])  # query positions
    n = m - 2  # key positions, each 2 before its query
    rotated_q = F.apply_rope(Tensor(np.tile(q, (5, 1))), m).data  # (5, 8)
    rotated_k = F.apply_rope(Tensor(np.tile(k, (5, 1))), n).data
    dots = np.sum(rotated_q * rotated_k, axis=-1)  # <rope(q, m), rope(k, m - 2)> for each m
    assert_close(dots, np.full(5, dots[0]), f"<rope(q, m), rope(k, m - 2)> for m = {m.tolist()}: the same for every m, "
                                            "since the rotations differ by the angle of the distance only")
    same_place = np.sum(F.apply_rope(Tensor(np.stack([q, q])), [4, 9]).data *
                        F.apply_rope(Tensor(np.stack([k, k])), [4, 9]).data, axis=-1)
    assert_close(same_place, np.full(2, q @ k), "<rope(q, m), rope(k, m)>: at distance 0 the rotations cancel")


# ---------------------------------------------------------------------- RotaryEmbedding
@pytest.mark.under_test("RotaryEmbedding.forward", "RotaryEmbedding.__init__")
@pytest.mark.integration
def test_rotary_embedding_equals_apply_rope():
    x = np.random.default_rng(4).standard_normal((2, 2, 5, 8))
    rope = nn.RotaryEmbedding(8, max_seq_len=16, theta=500.0)
    assert_equal([name for name, _ in rope.named_parameters()], [], "RotaryEmbedding's parameters (none: fixed tables)")
    assert_close(rope(Tensor(x)), F.apply_rope(Tensor(x), np.arange(5), theta=500.0),
                 "RotaryEmbedding(8, 16, theta=500)(x) vs apply_rope(x, arange(5), theta=500)")
    positions = np.array([15, 0, 3, 3, 8])
    compare_with_torch(lambda t: rope(t, positions), x, torch_fn=lambda t: torch_rope(t, positions, 500.0),
                       label=f"RotaryEmbedding(8, 16, theta=500)(x, positions={positions.tolist()})", use_engine=True)


@pytest.mark.under_test("RotaryEmbedding.forward", "RotaryEmbedding.__init__")
@pytest.mark.integration
def test_rotary_embedding_keeps_float32():
    x = np.random.default_rng(5).standard_normal((3, 4))
    rope = nn.RotaryEmbedding(4, max_seq_len=8)
    compare_functions(lambda t: rope(t), lambda t: torch_rope(t, np.arange(3)), [x],
                      "RotaryEmbedding(4, 8)(x) on a float32 x", dtype=np.float32)


@pytest.mark.under_test("RotaryEmbedding.forward")
def test_rotary_embedding_rejects_positions_beyond_its_table():
    rope = nn.RotaryEmbedding(4, max_seq_len=6)
    rope(Tensor(np.ones((6, 4))))  # six positions, 0..5, fit
    assert_raises(ValueError, lambda: rope(Tensor(np.ones((7, 4)))),
                  "RotaryEmbedding(4, max_seq_len=6) on a sequence of 7 positions", match="6")
    assert_raises(ValueError, lambda: rope(Tensor(np.ones((2, 4))), np.array([1, 6])),
                  "RotaryEmbedding(4, max_seq_len=6) at positions [1, 6]", match="6")
