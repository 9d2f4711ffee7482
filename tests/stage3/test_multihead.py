"""Exercise 3.5: MultiheadAttention against torch.nn.MultiheadAttention: parameter names, shapes and
initialisation, state dicts both ways, self- and cross-attention, every kind of mask, the returned weights,
and the gradients of the inputs and of every parameter, in float64 and float32."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage3_transformer import nn
from tests.helpers import assert_close, assert_equal, assert_in_range
from tests.stage3.torch_parity import (assert_same_parameters, compare_modules, load_ours_into_torch,
                                       load_torch_into_ours, perturb_vectors)

pytestmark = [pytest.mark.exercise("3.5"), pytest.mark.under_test("MultiheadAttention.forward")]

E, H, B, L, S = 8, 2, 2, 3, 5  # embed_dim, num_heads, batch, query length, key length


def pair(embed_dim=E, num_heads=H, seed=0, **kwargs):
    """Our MultiheadAttention (float64) holding the weights of a PyTorch one with random biases."""
    torch.manual_seed(seed)
    theirs = perturb_vectors(torch.nn.MultiheadAttention(embed_dim, num_heads, dtype=torch.float64, **kwargs), seed)
    ours = nn.MultiheadAttention(embed_dim, num_heads, dtype=np.float64, **kwargs)
    load_torch_into_ours(ours, theirs, f"MultiheadAttention({embed_dim}, {num_heads}, {kwargs})")
    return ours, theirs


def calls(self_attention, **kwargs):
    """Calls of our module and PyTorch's with the same keyword arguments (NumPy masks become torch tensors)."""
    torch_kwargs = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    if self_attention:
        return (lambda m, x: m(x, x, x, **kwargs)), (lambda m, x: m(x, x, x, **torch_kwargs))
    return (lambda m, q, k, v: m(q, k, v, **kwargs)), (lambda m, q, k, v: m(q, k, v, **torch_kwargs))


def inputs(self_attention, batch_first=True, seed=1, length=L, key_length=S):
    rng = np.random.default_rng(seed)
    shape = (lambda n: (B, n, E)) if batch_first else (lambda n: (n, B, E))
    if self_attention:
        return [rng.standard_normal(shape(length))], ["x (query = key = value)"]
    return ([rng.standard_normal(shape(length)), rng.standard_normal(shape(key_length)),
             rng.standard_normal(shape(key_length))], ["query", "key", "value"])


def check(ours, theirs, self_attention, label, dtype=np.float64, batch_first=True, **kwargs):
    arrays, names = inputs(self_attention, batch_first)
    call_ours, call_theirs = calls(self_attention, **kwargs)
    settings = ", ".join(f"{k}={v.dtype} array {v.shape}" if isinstance(v, np.ndarray) else f"{k}={v}"
                         for k, v in kwargs.items())
    what = f"MultiheadAttention({E}, {H}), {label}, forward({settings}) -> (output, weights)"
    return compare_modules(ours, theirs, arrays, call_ours=call_ours, call_theirs=call_theirs, what=what,
                           input_names=names, dtype=dtype)


def padding(kind):
    """(B, S) key_padding_mask, PyTorch's convention: True (or -inf) = this key is padding, ignore it."""
    blocked = np.zeros((B, S), dtype=bool)
    blocked[0, -1:] = True
    blocked[1, -3:] = True
    if kind == "bool":
        return blocked
    return np.where(blocked, -np.inf, np.random.default_rng(2).standard_normal((B, S)))


def attention_mask(kind, shape):
    """An attn_mask of ``shape``, PyTorch's convention: True (or -inf) = may NOT attend. Key 0 stays open to
    every query (PyTorch gives NaN for a fully masked row)."""
    rng = np.random.default_rng(3)
    blocked = rng.random(shape) < 0.4
    blocked[..., 0] = False
    if kind == "bool":
        return blocked
    return np.where(blocked, -np.inf, rng.standard_normal(shape))


# ---------------------------------------------------------------------- parameters
@pytest.mark.under_test("MultiheadAttention.__init__")
@pytest.mark.parametrize("bias", [True, False])
def test_parameters_and_initialisation(bias):
    embed_dim, heads = 64, 4
    ours = nn.MultiheadAttention(embed_dim, heads, bias=bias, rng=0)
    what = f"MultiheadAttention({embed_dim}, {heads}, bias={bias})"
    assert_same_parameters(ours, torch.nn.MultiheadAttention(embed_dim, heads, bias=bias), what)
    params = dict(ours.named_parameters())
    for name, p in params.items():
        assert_equal(p.dtype.name, "float32", f"{what}.{name}: dtype by default")

    # in_proj_weight (3E, E): Xavier-uniform, bound sqrt(6 / (fan_in + fan_out)) = sqrt(6 / (E + 3E)).
    w = params["in_proj_weight"].data.astype(np.float64)
    bound = np.sqrt(6 / (embed_dim + 3 * embed_dim))
    # (1 + 1e-6): a draw just below the bound may round up to it, or a hair above, in float32.
    assert_in_range(np.abs(w).max(), 0.98 * bound, bound * (1 + 1e-6), f"{what}.in_proj_weight: the largest |value| (Xavier-uniform "
                                                          f"in +-sqrt(6 / (E + 3E)) = +-{bound:.4g})")
    # The std of U(-b, b) is b/sqrt(3); the sample std of n draws has relative standard error sqrt(0.8 / (4n)).
    tolerance = 5 * np.sqrt(0.8 / (4 * w.size))
    assert_in_range(w.std() / (bound / np.sqrt(3)), 1 - tolerance, 1 + tolerance,
                    f"{what}.in_proj_weight: its std divided by that of U(-{bound:.4g}, {bound:.4g})")
    linear_bound = 1 / np.sqrt(embed_dim)  # out_proj keeps Linear's initialisation
    assert_in_range(np.abs(params["out_proj.weight"].data).max(), 0.95 * linear_bound, linear_bound * (1 + 1e-6),
                    f"{what}.out_proj.weight: the largest |value| (Linear's U(+-1/sqrt(E)) = +-{linear_bound:.4g})")
    for name in ("in_proj_bias", "out_proj.bias"):
        if bias:
            assert_close(params[name], np.zeros(params[name].shape), f"{what}.{name} at initialisation (zeros)", 0, 0)
    again = nn.MultiheadAttention(embed_dim, heads, bias=bias, rng=np.random.default_rng(0))
    for name, p in again.named_parameters():
        assert_close(p, params[name], f"{what}.{name} built with rng=0 and with rng=np.random.default_rng(0)", 0, 0)

    # Our initial state, loaded into PyTorch's module, gives PyTorch's results.
    small = nn.MultiheadAttention(E, H, bias=bias, rng=1, dtype=np.float64)
    theirs = torch.nn.MultiheadAttention(E, H, bias=bias, batch_first=True, dtype=torch.float64)
    load_ours_into_torch(theirs, small, f"MultiheadAttention({E}, {H}, bias={bias})")
    check(small, theirs, True, f"bias={bias}, our initial state loaded into PyTorch's")


# ---------------------------------------------------------------------- forward and backward
@pytest.mark.parametrize("average", [True, False])
def test_self_attention(average):
    ours, theirs = pair(batch_first=True)
    check(ours, theirs, True, "self-attention", average_attn_weights=average)


def test_self_attention_without_weights():
    ours, theirs = pair(batch_first=True)
    check(ours, theirs, True, "self-attention, the weights not asked for (None)", need_weights=False)


@pytest.mark.parametrize("average", [True, False])
def test_cross_attention(average):
    ours, theirs = pair(batch_first=True)
    check(ours, theirs, False, f"cross-attention (key length {S} != query length {L})", average_attn_weights=average)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_key_padding_mask(kind):
    ours, theirs = pair(batch_first=True)
    check(ours, theirs, False, f"a {kind} key_padding_mask (True/-inf: padding)", key_padding_mask=padding(kind))
    check(ours, theirs, False, f"a {kind} key_padding_mask, weights per head", key_padding_mask=padding(kind),
          average_attn_weights=False)


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("shape", [(L, S), (B * H, L, S)], ids=["2-D (L, S)", "3-D (B*num_heads, L, S)"])
def test_attn_mask(kind, shape):
    # A 3-D mask gives batch b and head i the mask [b * num_heads + i]: here each one differs.
    ours, theirs = pair(batch_first=True)
    check(ours, theirs, False, f"a {kind} attn_mask of shape {shape} (True/-inf: may NOT attend)",
          attn_mask=attention_mask(kind, shape), average_attn_weights=False)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_attn_mask_and_key_padding_mask_together(kind):
    ours, theirs = pair(batch_first=True)
    check(ours, theirs, False, f"a {kind} attn_mask (B*num_heads, L, S) and a {kind} key_padding_mask",
          attn_mask=attention_mask(kind, (B * H, L, S)), key_padding_mask=padding(kind))


def test_is_causal_without_a_mask_applies_the_causal_mask():
    ours, theirs = pair(batch_first=True)
    arrays, names = inputs(True)
    causal = np.triu(np.ones((L, L), dtype=bool), k=1)  # PyTorch's MHA needs the mask itself, with is_causal as a hint
    compare_modules(ours, theirs, arrays, call_ours=lambda m, x: m(x, x, x, is_causal=True),
                    call_theirs=lambda m, x: m(x, x, x, attn_mask=torch.tensor(causal), is_causal=True),
                    what=f"MultiheadAttention({E}, {H}), self-attention, forward(is_causal=True, attn_mask=None)",
                    input_names=names)


def test_without_bias():
    ours, theirs = pair(bias=False, batch_first=True)
    check(ours, theirs, False, "bias=False", key_padding_mask=padding("bool"))


@pytest.mark.parametrize("self_attention", [True, False], ids=["self", "cross"])
def test_sequence_first(self_attention):
    ours, theirs = pair(batch_first=False)
    check(ours, theirs, self_attention, "batch_first=False: inputs (L, B, E), weights still (B, L, S)",
          batch_first=False, key_padding_mask=None if self_attention else padding("bool"))


def test_float32():
    # float32 parameters and inputs; compared with PyTorch in float64 on the same (rounded) numbers, within the
    # float32 tolerances of torch_parity.
    ours = nn.MultiheadAttention(E, H, rng=4)
    theirs = torch.nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64)
    perturbed = {name: p.data + 0.3 * np.random.default_rng(5).standard_normal(p.shape).astype(np.float32)
                 for name, p in ours.named_parameters()}  # non-zero biases
    ours.load_state_dict(perturbed)
    load_ours_into_torch(theirs, ours, f"MultiheadAttention({E}, {H})")
    check(ours, theirs, False, "float32", dtype=np.float32, key_padding_mask=padding("bool"),
          attn_mask=attention_mask("bool", (L, S)))


@pytest.mark.under_test("MultiheadAttention.__init__")
def test_state_dict_goes_to_torch_and_back():
    ours = nn.MultiheadAttention(E, H, rng=6, dtype=np.float64)
    torch.manual_seed(7)
    theirs = perturb_vectors(torch.nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64), seed=7)
    load_torch_into_ours(ours, theirs, f"MultiheadAttention({E}, {H})")
    check(ours, theirs, True, "PyTorch's state dict loaded into ours")
    fresh = torch.nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64)
    load_ours_into_torch(fresh, ours, f"MultiheadAttention({E}, {H})")
    check(ours, fresh, False, "that state dict taken back to a new PyTorch module", key_padding_mask=padding("bool"))


def test_fully_masked_query_gives_zero_not_nan():
    # PyTorch's MultiheadAttention returns NaN for a query that may attend to no key; ours returns 0 there (the
    # attention output is 0; with bias=False the projection of 0 is 0 too), with finite gradients.
    ours = nn.MultiheadAttention(E, H, bias=False, rng=8, dtype=np.float64)
    blocked = attention_mask("bool", (L, S))
    blocked[1] = True  # query 1 may attend to nothing
    q, k, v = (Tensor(a, requires_grad=True) for a in inputs(False)[0])
    out, weights = ours(q, k, v, attn_mask=blocked)
    what = "MultiheadAttention(bias=False) with an attn_mask blocking every key of query 1"
    assert_equal(bool(np.isfinite(out.data).all()), True, f"{what}: the output is finite (no NaN)")
    assert_close(out.data[:, 1], np.zeros((B, E)), f"{what}: the output of query 1", 0, 0)
    assert_close(weights.data[:, 1], np.zeros((B, S)), f"{what}: the attention weights of query 1", 0, 0)
    out.backward(np.ones(out.shape))
    for name, t in (("query", q), ("key", k), ("value", v)):
        assert_equal(bool(np.isfinite(t.grad).all()), True, f"{what}: the gradient of {name} is finite")
    for name, p in ours.named_parameters():
        assert_equal(bool(np.isfinite(p.grad).all()), True, f"{what}: the gradient of {name} is finite")


def test_dropout_on_the_attention_weights_in_training_only():
    p, batch, length = 0.25, 4, 10
    ours = nn.MultiheadAttention(E, H, dropout=p, rng=9, dtype=np.float64)
    x = Tensor(np.random.default_rng(10).standard_normal((batch, length, E)))
    what = f"MultiheadAttention({E}, {H}, dropout={p}), self-attention on x {x.shape}"
    ours.eval()
    out_eval, weights_eval = ours(x, x, x, average_attn_weights=False)
    again, _ = ours(x, x, x, average_attn_weights=False)
    assert_close(again, out_eval, f"{what}, after eval(): called twice (no dropout, the same output)", 0, 0)
    ours.train()
    out_train, weights_train = ours(x, x, x, average_attn_weights=False)
    # In training mode each weight is dropped (0) or kept and scaled by 1/(1-p); the output uses those weights.
    kept = weights_eval.data / (1 - p)
    off = np.minimum(np.abs(weights_train.data), np.abs(weights_train.data - kept))
    assert_in_range(off.max(), None, 1e-12, f"{what}, training mode: every weight per head is 0 or its eval-mode "
                                            f"value / (1 - {p}); the largest distance to both")
    n = weights_train.data.size  # 800: the fraction dropped has standard error sqrt(p (1-p) / n) = 0.015; 5 of them
    tolerance = 5 * np.sqrt(p * (1 - p) / n)
    assert_in_range(np.mean(weights_train.data == 0), p - tolerance, p + tolerance,
                    f"{what}, training mode: the fraction of attention weights dropped")
    assert_in_range(np.abs(out_train.data - out_eval.data).max(), 1e-3, None,
                    f"{what}: the largest difference between the outputs in training and in eval mode")
