"""Exercise 3.7: TransformerEncoder, TransformerDecoder and Transformer against PyTorch's (names, outputs,
every gradient, state dicts both ways), generate_square_subsequent_mask, and the Xavier re-initialisation."""

import numpy as np
import pytest
import torch

from stage3_transformer import nn
from tests.helpers import assert_close, assert_equal, assert_in_range
from tests.stage3.torch_parity import compare_modules, load_ours_into_torch, load_torch_into_ours, perturb_vectors

pytestmark = [
    pytest.mark.exercise("3.7"),
    # PyTorch warns about a float tgt_mask with bool padding masks (a deprecated mix that still works, and the one
    # generate_square_subsequent_mask invites) and about nested tensors it does not use with norm_first.
    pytest.mark.filterwarnings("ignore:Support for mismatched", "ignore:enable_nested_tensor is True"),
]

D, NHEAD, FF, B, S, T = 16, 2, 32, 2, 5, 4  # d_model, heads, dim_feedforward, batch, source and target lengths
SMALL = dict(d_model=D, nhead=NHEAD, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=FF, dropout=0.0)


def padding_mask(length, blocked_at_end):
    """(B, length) bool, True = padding: batch b's last blocked_at_end[b] positions."""
    mask = np.zeros((B, length), dtype=bool)
    for b, n in enumerate(blocked_at_end):
        mask[b, length - n:] = True
    return mask


def torch_kwargs(kwargs):
    return {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def source_and_target(seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((B, S, D)), rng.standard_normal((B, T, D))]


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.under_test("Transformer.forward", "Transformer.__init__")
@pytest.mark.integration
def test_transformer_matches_torch(norm_first):
    torch.manual_seed(0)
    theirs = perturb_vectors(torch.nn.Transformer(**SMALL, batch_first=True, norm_first=norm_first,
                                                  dtype=torch.float64)).eval()
    ours = nn.Transformer(**SMALL, norm_first=norm_first, rng=0, dtype=np.float64).eval()
    what = f"Transformer({', '.join(f'{k}={v}' for k, v in SMALL.items())}, norm_first={norm_first})"
    load_torch_into_ours(ours, theirs, what)  # names: encoder.layers.0..., encoder.norm, decoder.layers..., decoder.norm
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(T)
    masks = dict(tgt_mask=tgt_mask, src_key_padding_mask=padding_mask(S, (1, 2)),
                 tgt_key_padding_mask=padding_mask(T, (0, 1)), memory_key_padding_mask=padding_mask(S, (2, 0)))
    compare_modules(ours, theirs, source_and_target(), call_ours=lambda m, src, tgt: m(src, tgt, **masks),
                    call_theirs=lambda m, src, tgt: m(src, tgt, **torch_kwargs(masks)),
                    what=f"{what}, causal tgt_mask and padding masks", input_names=["src", "tgt"])


@pytest.mark.under_test("Transformer.forward")
@pytest.mark.integration
def test_transformer_without_masks_and_with_a_src_mask():
    torch.manual_seed(1)
    theirs = perturb_vectors(torch.nn.Transformer(**SMALL, batch_first=True, dtype=torch.float64), seed=1).eval()
    ours = nn.Transformer(**SMALL, rng=1, dtype=np.float64).eval()
    what = "Transformer(d_model=16, nhead=2, 2 + 2 layers)"
    load_torch_into_ours(ours, theirs, what)
    compare_modules(ours, theirs, source_and_target(2), call_ours=lambda m, src, tgt: m(src, tgt),
                    call_theirs=lambda m, src, tgt: m(src, tgt), what=f"{what}, no mask", input_names=["src", "tgt"])
    src_mask = np.zeros((S, S), dtype=bool)
    src_mask[:, 2] = True
    src_mask[2, 2] = False  # position 2 of the source is seen only by itself
    memory_mask = np.where(np.arange(S)[None, :] > np.arange(T)[:, None] + 1, -np.inf, 0.0)  # (T, S) float
    masks = dict(src_mask=src_mask, memory_mask=memory_mask)
    compare_modules(ours, theirs, source_and_target(3), call_ours=lambda m, src, tgt: m(src, tgt, **masks),
                    call_theirs=lambda m, src, tgt: m(src, tgt, **torch_kwargs(masks)),
                    what=f"{what}, a bool src_mask and a float memory_mask", input_names=["src", "tgt"])


@pytest.mark.under_test("Transformer.__init__")
def test_our_state_dict_loads_into_torch():
    ours = nn.Transformer(**SMALL, norm_first=True, rng=2, dtype=np.float64).eval()
    theirs = torch.nn.Transformer(**SMALL, batch_first=True, norm_first=True, dtype=torch.float64).eval()
    load_ours_into_torch(theirs, ours, "Transformer(d_model=16, nhead=2, 2 + 2 layers, norm_first=True)")
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(T)
    compare_modules(ours, theirs, source_and_target(4), call_ours=lambda m, src, tgt: m(src, tgt, tgt_mask=tgt_mask),
                    call_theirs=lambda m, src, tgt: m(src, tgt, tgt_mask=torch.tensor(tgt_mask)),
                    what="Transformer(norm_first=True), our initial state loaded into PyTorch's, causal tgt_mask",
                    input_names=["src", "tgt"])


@pytest.mark.under_test("Transformer.forward", "Transformer.__init__")
@pytest.mark.integration
def test_float32_transformer():
    # float32 against PyTorch in float64 on the same numbers; a 2 + 2 layer stack chains more roundings than
    # one layer, still far within torch_parity's float32 tolerances (rtol 1e-4, atol 1e-5).
    ours = nn.Transformer(**SMALL, rng=3).eval()
    theirs = torch.nn.Transformer(**SMALL, batch_first=True, dtype=torch.float64).eval()
    for name, p in ours.named_parameters():
        assert_equal(p.dtype.name, "float32", f"Transformer.{name}: dtype by default")
    load_ours_into_torch(theirs, ours, "Transformer(d_model=16, nhead=2, 2 + 2 layers)")
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(T)
    compare_modules(ours, theirs, source_and_target(5), call_ours=lambda m, src, tgt: m(src, tgt, tgt_mask=tgt_mask),
                    call_theirs=lambda m, src, tgt: m(src, tgt, tgt_mask=torch.tensor(tgt_mask)),
                    what="Transformer in float32, causal tgt_mask", input_names=["src", "tgt"], dtype=np.float32)


@pytest.mark.parametrize("stack", ["TransformerEncoder", "TransformerDecoder"])
@pytest.mark.parametrize("with_norm", [False, True], ids=["norm=None", "final LayerNorm"])
@pytest.mark.under_test("TransformerEncoder.forward", "TransformerDecoder.forward", "TransformerEncoder.__init__", "TransformerDecoder.__init__")
def test_encoder_and_decoder_stacks_match_torch(stack, with_norm):
    layer_kind = stack + "Layer"
    torch.manual_seed(4)
    torch_layer = getattr(torch.nn, layer_kind)(D, NHEAD, FF, dropout=0.0, batch_first=True, dtype=torch.float64)
    torch_norm = torch.nn.LayerNorm(D, dtype=torch.float64) if with_norm else None
    extra = {"enable_nested_tensor": False} if stack == "TransformerEncoder" else {}
    theirs = perturb_vectors(getattr(torch.nn, stack)(torch_layer, 3, norm=torch_norm, **extra), seed=4).eval()
    layer = getattr(nn, layer_kind)(D, NHEAD, FF, dropout=0.0, rng=4, dtype=np.float64)
    ours = getattr(nn, stack)(layer, 3, norm=nn.LayerNorm(D, dtype=np.float64) if with_norm else None).eval()
    what = f"{stack}({layer_kind}({D}, {NHEAD}, {FF}), num_layers=3, norm={'LayerNorm' if with_norm else None})"
    load_torch_into_ours(ours, theirs, what)  # layers.0..., layers.2...: three independent copies
    rng = np.random.default_rng(6)
    x = rng.standard_normal((B, T, D))
    if stack == "TransformerEncoder":
        compare_modules(ours, theirs, [x], call_ours=lambda m, src: m(src, src_key_padding_mask=padding_mask(T, (1, 0))),
                        call_theirs=lambda m, src: m(src, src_key_padding_mask=torch.tensor(padding_mask(T, (1, 0)))),
                        what=what, input_names=["src"])
    else:
        memory = rng.standard_normal((B, S, D))
        mask = nn.Transformer.generate_square_subsequent_mask(T)
        compare_modules(ours, theirs, [x, memory], call_ours=lambda m, tgt, mem: m(tgt, mem, tgt_mask=mask),
                        call_theirs=lambda m, tgt, mem: m(tgt, mem, tgt_mask=torch.tensor(mask)),
                        what=what, input_names=["tgt", "memory"])


@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.under_test("Transformer.generate_square_subsequent_mask")
def test_generate_square_subsequent_mask(size):
    got = nn.Transformer.generate_square_subsequent_mask(size)
    expected = torch.nn.Transformer.generate_square_subsequent_mask(size, dtype=torch.float64).numpy()
    what = f"Transformer.generate_square_subsequent_mask({size}) (0 on and below the diagonal, -inf above)"
    assert_equal(type(got).__name__, "ndarray", f"{what}: the type")
    assert_equal(got.dtype.kind, "f", f"{what}: the dtype's kind (a float mask)")
    assert_equal(got.astype(np.float64), expected, what)


@pytest.mark.under_test("Transformer.__init__")
def test_xavier_reinitialisation():
    d_model, ff = 64, 128
    ours = nn.Transformer(d_model=d_model, nhead=4, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=ff,
                          dropout=0.0, rng=0)
    what = f"Transformer(d_model={d_model}, nhead=4, 1 + 2 layers, dim_feedforward={ff})"
    torch_names = [name for name, _ in torch.nn.Transformer(d_model, 4, 1, 2, ff, batch_first=True).named_parameters()]
    assert_equal(sorted(name for name, _ in ours.named_parameters()), sorted(torch_names),
                 f"{what}: the names of named_parameters() (sorted)")
    matrices = {name: p.data.astype(np.float64) for name, p in ours.named_parameters() if p.ndim > 1}
    for name, w in matrices.items():
        fan_out, fan_in = w.shape
        bound = np.sqrt(6 / (fan_in + fan_out))  # Xavier-uniform, for each matrix (Linear's own would be 1/sqrt(fan_in))
        # (1 + 1e-6): a draw just below the bound may round up to it, or a hair above, in float32.
        assert_in_range(np.abs(w).max(), 0.9 * bound, bound * (1 + 1e-6),
                        f"{what}.{name} {w.shape}: the largest |value| (Xavier-uniform in +-{bound:.4g})")
        # std of U(-b, b) = b / sqrt(3); relative standard error of the sample std sqrt(0.8 / (4n)); 5 of them.
        tolerance = 5 * np.sqrt(0.8 / (4 * w.size))
        assert_in_range(w.std() / (bound / np.sqrt(3)), 1 - tolerance, 1 + tolerance,
                        f"{what}.{name} {w.shape}: its std divided by that of U(-{bound:.4g}, {bound:.4g})")
    first, second = (matrices[f"decoder.layers.{i}.linear1.weight"] for i in (0, 1))
    assert_in_range(np.abs(first - second).max(), 1e-3, None, f"{what}: the largest difference between decoder layers 0 "
                                                              "and 1's linear1.weight (independent copies, each drawn anew)")
    for name, p in ours.named_parameters():  # the 1-D parameters keep their layers' own initialisation
        if ".norm" in name:
            expected = np.ones(p.shape) if name.endswith(".weight") else np.zeros(p.shape)
            assert_close(p, expected, f"{what}.{name} (a LayerNorm's weight stays ones, its bias zeros)", 0, 0)
        elif name.endswith("in_proj_bias") or name.endswith("out_proj.bias"):
            assert_close(p, np.zeros(p.shape), f"{what}.{name} (MultiheadAttention's biases stay zeros)", 0, 0)
    # And the model runs: our initial state gives PyTorch's results.
    theirs = torch.nn.Transformer(d_model, 4, 1, 2, ff, dropout=0.0, batch_first=True, dtype=torch.float64).eval()
    ours = nn.Transformer(d_model=d_model, nhead=4, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=ff,
                          dropout=0.0, rng=0, dtype=np.float64).eval()
    load_ours_into_torch(theirs, ours, what)
    rng = np.random.default_rng(7)
    compare_modules(ours, theirs, [rng.standard_normal((1, 3, d_model)), rng.standard_normal((1, 2, d_model))],
                    call_ours=lambda m, src, tgt: m(src, tgt), call_theirs=lambda m, src, tgt: m(src, tgt),
                    what=f"{what}, initial state loaded into PyTorch's", input_names=["src", "tgt"])
