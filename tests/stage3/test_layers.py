"""Exercise 3.6: SwiGLU (against a PyTorch version written in torch_parity), and TransformerEncoderLayer and
TransformerDecoderLayer against PyTorch's: post-norm and pre-norm, relu and gelu, with and without bias,
masks and padding masks, state dicts both ways; then dropout in training and evaluation mode."""

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage3_transformer import nn
from tests.helpers import assert_close, assert_equal, assert_in_range
from tests.stage3.student_side import Scale  # a Module of ours: lives beside the code under test
from tests.stage3.torch_parity import (TorchSwiGLU, assert_same_parameters, compare_modules, load_ours_into_torch,
                                       load_torch_into_ours, perturb_vectors)

pytestmark = [
    pytest.mark.exercise("3.6"),
    # PyTorch warns about a float attn_mask with a bool padding mask: a deprecated mix that still works.
    pytest.mark.filterwarnings("ignore:Support for mismatched"),
]

D, NHEAD, FF, B, T, S = 8, 2, 16, 2, 4, 5  # d_model, heads, dim_feedforward, batch, target length, memory length


# ---------------------------------------------------------------------- SwiGLU
@pytest.mark.parametrize("x_shape", [(2, 3, D), (5, D)], ids=str)
@pytest.mark.under_test("SwiGLU.forward", "SwiGLU.__init__")
def test_swiglu_matches_torch(x_shape):
    torch.manual_seed(0)
    ours, theirs = nn.SwiGLU(D, FF, rng=0, dtype=np.float64), TorchSwiGLU(D, FF)
    assert_same_parameters(ours, theirs, f"SwiGLU({D}, {FF}) (w1, w3: Linear(d_model, d_ff), w2: Linear(d_ff, d_model), "
                                         "no bias)")
    load_torch_into_ours(ours, theirs, f"SwiGLU({D}, {FF})")
    x = np.random.default_rng(1).standard_normal(x_shape)
    compare_modules(ours, theirs, [x], call_ours=lambda m, t: m(t), call_theirs=lambda m, t: m(t),
                    what=f"SwiGLU({D}, {FF}): w2(silu(w1 x) * w3 x)", input_names=["x"])


@pytest.mark.under_test("SwiGLU.__init__", "SwiGLU.forward")
def test_swiglu_state_goes_to_torch_and_float32():
    ours, theirs = nn.SwiGLU(D, FF, rng=2), TorchSwiGLU(D, FF)
    for name, p in ours.named_parameters():
        assert_equal(p.dtype.name, "float32", f"SwiGLU({D}, {FF}).{name}: dtype by default")
    load_ours_into_torch(theirs, ours, f"SwiGLU({D}, {FF})")
    x = np.random.default_rng(3).standard_normal((3, D))
    compare_modules(ours, theirs, [x], call_ours=lambda m, t: m(t), call_theirs=lambda m, t: m(t),
                    what=f"SwiGLU({D}, {FF}) in float32, our initial state loaded into the PyTorch version",
                    input_names=["x"], dtype=np.float32)


# ---------------------------------------------------------------------- the layers against PyTorch's
def layer_pair(kind, **kwargs):
    """Our encoder or decoder layer (float64), holding the weights of PyTorch's (random biases and norms)."""
    settings = dict(dim_feedforward=FF, dropout=0.0, batch_first=True) | kwargs
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(D, NHEAD, dtype=torch.float64, **settings).eval()
    perturb_vectors(theirs)
    ours = getattr(nn, kind)(D, NHEAD, rng=0, dtype=np.float64, **settings).eval()
    load_torch_into_ours(ours, theirs, f"{kind}({D}, {NHEAD}, {settings})")
    return ours, theirs, f"{kind}({D}, {NHEAD}, {', '.join(f'{k}={v!r}' for k, v in settings.items())})"


def torch_kwargs(kwargs):
    return {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def padding_mask(length, blocked_at_end=(1, 2), kind="bool"):
    """(B, length), True (-inf) = padding: batch b's last blocked_at_end[b] positions."""
    mask = np.zeros((B, length), dtype=bool)
    for b, n in enumerate(blocked_at_end):
        mask[b, length - n:] = True
    return mask if kind == "bool" else np.where(mask, -np.inf, 0.0)


def causal(length, kind="float"):
    blocked = np.triu(np.ones((length, length), dtype=bool), k=1)
    return blocked if kind == "bool" else np.where(blocked, -np.inf, 0.0)


def check_encoder(ours, theirs, label, batch_first=True, seed=1, **kwargs):
    shape = (B, T, D) if batch_first else (T, B, D)
    src = np.random.default_rng(seed).standard_normal(shape)
    compare_modules(ours, theirs, [src], call_ours=lambda m, x: m(x, **kwargs),
                    call_theirs=lambda m, x: m(x, **torch_kwargs(kwargs)), what=label, input_names=["src"])


def check_decoder(ours, theirs, label, batch_first=True, seed=2, **kwargs):
    rng = np.random.default_rng(seed)
    tgt = rng.standard_normal((B, T, D) if batch_first else (T, B, D))
    memory = rng.standard_normal((B, S, D) if batch_first else (S, B, D))
    compare_modules(ours, theirs, [tgt, memory], call_ours=lambda m, x, mem: m(x, mem, **kwargs),
                    call_theirs=lambda m, x, mem: m(x, mem, **torch_kwargs(kwargs)), what=label,
                    input_names=["tgt", "memory"])


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.under_test("TransformerEncoderLayer.forward", "TransformerEncoderLayer._self_attention_block", "TransformerEncoderLayer._feed_forward_block", "TransformerEncoderLayer.__init__")
def test_encoder_layer_matches_torch(norm_first, activation):
    ours, theirs, what = layer_pair("TransformerEncoderLayer", norm_first=norm_first, activation=activation)
    check_encoder(ours, theirs, f"{what}, no mask")
    check_encoder(ours, theirs, f"{what}, causal float src_mask and bool src_key_padding_mask",
                  src_mask=causal(T), src_key_padding_mask=padding_mask(T))


@pytest.mark.parametrize("settings", [{"bias": False}, {"layer_norm_eps": 1e-2}, {"batch_first": False}], ids=str)
@pytest.mark.under_test("TransformerEncoderLayer.forward", "TransformerEncoderLayer._self_attention_block", "TransformerEncoderLayer._feed_forward_block", "TransformerEncoderLayer.__init__")
def test_encoder_layer_options(settings):
    ours, theirs, what = layer_pair("TransformerEncoderLayer", norm_first=True, **settings)
    check_encoder(ours, theirs, f"{what}, bool src_mask and src_key_padding_mask", batch_first=settings.get("batch_first", True),
                  src_mask=causal(T, "bool"), src_key_padding_mask=padding_mask(T))


@pytest.mark.under_test("TransformerEncoderLayer.forward", "TransformerEncoderLayer._self_attention_block", "TransformerEncoderLayer._feed_forward_block", "TransformerEncoderLayer.__init__")
def test_encoder_layer_with_is_causal():
    ours, theirs, what = layer_pair("TransformerEncoderLayer")
    check_encoder(ours, theirs, f"{what}, src_mask = the causal mask, is_causal=True", src_mask=causal(T), is_causal=True)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.under_test("TransformerDecoderLayer.forward", "TransformerDecoderLayer._self_attention_block", "TransformerDecoderLayer._cross_attention_block", "TransformerDecoderLayer._feed_forward_block", "TransformerDecoderLayer.__init__")
def test_decoder_layer_matches_torch(norm_first, activation):
    ours, theirs, what = layer_pair("TransformerDecoderLayer", norm_first=norm_first, activation=activation)
    check_decoder(ours, theirs, f"{what}, no mask")
    check_decoder(ours, theirs, f"{what}, causal float tgt_mask, bool tgt_ and memory_key_padding_mask",
                  tgt_mask=causal(T), tgt_key_padding_mask=padding_mask(T, (0, 1)),
                  memory_key_padding_mask=padding_mask(S, (2, 1)))


@pytest.mark.parametrize("settings", [{"bias": False}, {"layer_norm_eps": 1e-2}, {"batch_first": False}], ids=str)
@pytest.mark.under_test("TransformerDecoderLayer.forward", "TransformerDecoderLayer._self_attention_block", "TransformerDecoderLayer._cross_attention_block", "TransformerDecoderLayer._feed_forward_block", "TransformerDecoderLayer.__init__")
def test_decoder_layer_options(settings):
    ours, theirs, what = layer_pair("TransformerDecoderLayer", **settings)
    memory_mask = np.zeros((T, S), dtype=bool)
    memory_mask[1:, 3] = True  # queries 1.. may not look at memory position 3
    check_decoder(ours, theirs, f"{what}, bool tgt_mask, memory_mask and padding masks",
                  batch_first=settings.get("batch_first", True), tgt_mask=causal(T, "bool"), memory_mask=memory_mask,
                  tgt_key_padding_mask=padding_mask(T, (1, 0)), memory_key_padding_mask=padding_mask(S, (0, 2)))


@pytest.mark.under_test("TransformerDecoderLayer.forward", "TransformerDecoderLayer._self_attention_block", "TransformerDecoderLayer._cross_attention_block", "TransformerDecoderLayer._feed_forward_block", "TransformerDecoderLayer.__init__")
def test_decoder_layer_with_is_causal_flags():
    ours, theirs, what = layer_pair("TransformerDecoderLayer", norm_first=True)
    check_decoder(ours, theirs, f"{what}, tgt_mask = the causal mask, tgt_is_causal=True",
                  tgt_mask=causal(T), tgt_is_causal=True)


@pytest.mark.parametrize("kind", ["TransformerEncoderLayer", "TransformerDecoderLayer"])
@pytest.mark.under_test("TransformerEncoderLayer.__init__", "TransformerDecoderLayer.__init__")
def test_our_state_dict_loads_into_torch(kind):
    settings = dict(dim_feedforward=FF, dropout=0.0, norm_first=True, activation="gelu")
    ours = getattr(nn, kind)(D, NHEAD, rng=3, dtype=np.float64, **settings).eval()
    theirs = getattr(torch.nn, kind)(D, NHEAD, batch_first=True, dtype=torch.float64, **settings).eval()
    load_ours_into_torch(theirs, ours, f"{kind}({D}, {NHEAD})")
    what = f"{kind}({D}, {NHEAD}, {settings}), our initial state loaded into PyTorch's"
    if kind == "TransformerEncoderLayer":
        check_encoder(ours, theirs, what, src_key_padding_mask=padding_mask(T))
    else:
        check_decoder(ours, theirs, what, tgt_mask=causal(T))


@pytest.mark.under_test("TransformerEncoderLayer.forward", "TransformerDecoderLayer.forward")
def test_float32_layers():
    # float32 parameters and inputs against PyTorch in float64 on the same numbers (torch_parity's float32
    # tolerances, rtol 1e-4 and atol 1e-5).
    ours = nn.TransformerDecoderLayer(D, NHEAD, dim_feedforward=FF, dropout=0.0, rng=4).eval()
    theirs = torch.nn.TransformerDecoderLayer(D, NHEAD, dim_feedforward=FF, dropout=0.0, batch_first=True,
                                              dtype=torch.float64).eval()
    for name, p in ours.named_parameters():
        assert_equal(p.dtype.name, "float32", f"TransformerDecoderLayer.{name}: dtype by default")
    load_ours_into_torch(theirs, ours, f"TransformerDecoderLayer({D}, {NHEAD})")
    rng = np.random.default_rng(5)
    tgt, memory = rng.standard_normal((B, T, D)), rng.standard_normal((B, S, D))
    compare_modules(ours, theirs, [tgt, memory], call_ours=lambda m, x, mem: m(x, mem, tgt_mask=causal(T)),
                    call_theirs=lambda m, x, mem: m(x, mem, tgt_mask=torch.tensor(causal(T))),
                    what=f"TransformerDecoderLayer({D}, {NHEAD}) in float32", input_names=["tgt", "memory"],
                    dtype=np.float32)


# ---------------------------------------------------------------------- dropout
@pytest.mark.parametrize("kind", ["TransformerEncoderLayer", "TransformerDecoderLayer"])
@pytest.mark.under_test("TransformerEncoderLayer.forward", "TransformerDecoderLayer.forward")
def test_dropout_only_in_training(kind):
    ours = getattr(nn, kind)(D, NHEAD, dim_feedforward=FF, dropout=0.5, rng=6, dtype=np.float64)
    theirs = getattr(torch.nn, kind)(D, NHEAD, dim_feedforward=FF, dropout=0.5, batch_first=True, dtype=torch.float64)
    load_ours_into_torch(theirs, ours, f"{kind}({D}, {NHEAD}, dropout=0.5)")
    rng = np.random.default_rng(7)
    x, memory = rng.standard_normal((B, T, D)), rng.standard_normal((B, S, D))
    args = (Tensor(x),) if kind == "TransformerEncoderLayer" else (Tensor(x), Tensor(memory))
    what = f"{kind}({D}, {NHEAD}, dropout=0.5)"

    first, second = ours(*args).data, ours(*args).data
    assert_in_range(np.abs(first - second).max(), 1e-3, None, f"{what} in training mode (the default), called twice on "
                                                               "the same input: the largest difference (new dropout masks)")
    ours.eval()
    evaluated = ours(*args).data
    assert_close(ours(*args).data, evaluated, f"{what} after eval(), called twice on the same input", 0, 0)
    assert_in_range(np.abs(first - evaluated).max(), 1e-3, None,
                    f"{what}: the largest difference between training mode and eval mode")
    with torch.no_grad():
        expected = theirs.eval()(*(torch.tensor(a) for a in (x, memory)[:len(args)]))
    assert_close(evaluated, expected, f"{what} after eval() vs PyTorch's in eval mode (dropout off)")
    ours.train()
    assert_in_range(np.abs(ours(*args).data - evaluated).max(), 1e-3, None,
                    f"{what} after train() again: the largest difference from eval mode")


class TorchScale(torch.nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("kind", ["TransformerEncoderLayer", "TransformerDecoderLayer"])
@pytest.mark.under_test("TransformerEncoderLayer.forward", "TransformerEncoderLayer._self_attention_block", "TransformerEncoderLayer._feed_forward_block", "TransformerDecoderLayer.forward", "TransformerDecoderLayer._self_attention_block", "TransformerDecoderLayer._cross_attention_block", "TransformerDecoderLayer._feed_forward_block")
def test_each_dropout_acts_where_torch_applies_it(kind, norm_first):
    # Each dropout sub-module (dropout, dropout1, dropout2, dropout3) is swapped, in both layers, for a
    # multiplication by its own factor: the outputs then agree only if ours applies each one at PyTorch's place
    # (dropout1 on the self-attention's output, dropout inside the feed-forward block after the activation, ...).
    ours, theirs, what = layer_pair(kind, norm_first=norm_first, activation="gelu")  # relu(c x) = c relu(x): no use
    factors = {"dropout": 0.5, "dropout1": 1.5, "dropout2": 2.0}
    if kind == "TransformerDecoderLayer":
        factors["dropout3"] = 3.0
    for name, factor in factors.items():
        setattr(ours, name, Scale(factor))
        setattr(theirs, name, TorchScale(factor))
    ours.train()
    theirs.train()
    label = f"{what}, training mode, with {', '.join(f'{k} -> x * {v}' for k, v in factors.items())}"
    if kind == "TransformerEncoderLayer":
        check_encoder(ours, theirs, label, src_key_padding_mask=padding_mask(T))
    else:
        check_decoder(ours, theirs, label, tgt_mask=causal(T))
