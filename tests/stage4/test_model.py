"""Exercise 4.3: the GPT model. nanoGPT's parameter names and shapes for every variant, tied weights,
GPT-2's initialisation, the number of parameters, the shapes of the logits, causality, dropout (every one at
config.dropout, the attention weights' included), sequences
longer than block_size, and GPT-2 checkpoints in Hugging Face's layout (compared with a PyTorch GPT-2)."""

import math

import numpy as np
import pytest
import torch

from stage4_gpt.model import GPT, GPTConfig, gpt2_config_from_state_dict
from tests.helpers import (assert_close, assert_equal, assert_in_range, assert_raises, assert_tensor,
                           randomize_like_training)
from tests.stage4.student_side import call_on_fake_gpt2_state
from tests.stage4.torch_reference import (ReferenceGPT, assert_gpt_matches_reference, hf_gpt2_state_dict, numpy_state,
                                         randomize)

pytestmark = pytest.mark.exercise("4.3")

SMALL = dict(vocab_size=53, block_size=16, n_layer=2, n_head=2, n_embd=16)
LLAMA = dict(norm="rmsnorm", pos="rope", mlp="swiglu", bias=False, tie_weights=False)
VARIANTS = {
    "gpt2": dict(),
    "gpt2-untied-without-biases": dict(tie_weights=False, bias=False),
    "llama": LLAMA,
    "llama-tied-with-ffn_hidden": dict(LLAMA, tie_weights=True, ffn_hidden=24),
    "rope-gelu": dict(pos="rope"),
    "learned-swiglu-rmsnorm-biased": dict(norm="rmsnorm", mlp="swiglu"),
}


def shapes(state: dict) -> dict:
    return {name: tuple(np.shape(a)) for name, a in state.items()}


# ---------------------------------------------------------------------- structure
@pytest.mark.under_test("GPT.__init__")
@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_names_and_shapes_are_nanogpts(variant):
    fields = dict(SMALL, **VARIANTS[variant])
    ours, reference = GPT(GPTConfig(**fields), rng=0), ReferenceGPT(**fields)
    assert_equal(shapes(ours.state_dict()), shapes(numpy_state(reference)),
                 f"GPT({fields}).state_dict(): the names and shapes of the parameters (nanoGPT's)")
    assert_equal([name for name, _ in ours.named_parameters()], [name for name, _ in reference.named_parameters()],
                 f"GPT({fields}).named_parameters(): the distinct parameters, in PyTorch's order")


@pytest.mark.under_test("GPT.__init__")
def test_tied_weights_are_one_parameter():
    tied = GPT(GPTConfig(**SMALL), rng=0)
    assert_equal(tied.lm_head.weight is tied.transformer.wte.weight, True,
                 "tie_weights=True: lm_head.weight should be the very Parameter transformer.wte.weight (`is`), not a copy")
    untied = GPT(GPTConfig(**SMALL, tie_weights=False), rng=0)
    assert_equal(untied.lm_head.weight is untied.transformer.wte.weight, False,
                 "tie_weights=False: lm_head.weight and transformer.wte.weight should be two Parameters")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.under_test("GPT.num_parameters")
def test_num_parameters_counts_each_distinct_parameter_once(variant):
    fields = dict(SMALL, **VARIANTS[variant])
    expected = sum(p.numel() for p in ReferenceGPT(**fields).parameters())  # torch lists a tied weight once
    assert_equal(GPT(GPTConfig(**fields), rng=0).num_parameters(), expected, f"GPT({fields}).num_parameters()")


# ---------------------------------------------------------------------- initialisation
@pytest.mark.under_test("GPT.initialize_weights")
@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_initialisation_is_gpt2s(variant):
    n_layer = 4
    fields = dict(vocab_size=256, block_size=64, n_layer=n_layer, n_head=4, n_embd=64, **VARIANTS[variant])
    model = GPT(GPTConfig(**fields), rng=0)
    residual_std = 0.02 / math.sqrt(2 * n_layer)
    for name, p in model.state_dict().items():
        what = f"GPT({fields}): {name} {p.shape} at initialisation"
        if p.ndim == 1:
            is_norm = ".ln_" in name or name.startswith("transformer.ln_f")
            expected = np.ones_like(p) if is_norm and name.endswith("weight") else np.zeros_like(p)
            assert_equal(p, expected, what + (" (a norm's weight starts at 1)" if expected[0] == 1 else " (0)"))
            continue
        residual = name.endswith(("attn.c_proj.weight", "mlp.c_proj.weight", "mlp.w2.weight"))
        std = residual_std if residual else 0.02
        values = p.astype(np.float64)
        # >= 4096 draws each: the sample std has a relative standard error <= 1.1%, the mean a standard error
        # of std / 64; the bounds below are 4.5 standard errors wide.
        label = f"0.02 / sqrt(2 * n_layer) = {residual_std:.4g}, a residual projection" if residual else "0.02"
        assert_in_range(values.std(), 0.95 * std, 1.05 * std, what + f": the std of N(0, std) draws, std = {label}")
        bound = 4.5 * std / math.sqrt(values.size)
        assert_in_range(values.mean(), -bound, bound, what + ": the mean of N(0, std) draws, 0")


@pytest.mark.under_test("GPT.initialize_weights")
def test_initialisation_is_seeded_by_rng():
    a, b = GPT(GPTConfig(**SMALL), rng=7), GPT(GPTConfig(**SMALL), rng=np.random.default_rng(7))
    for name, p in a.state_dict().items():
        assert_close(b.state_dict()[name], p, f"GPT(config, rng=7) and rng=default_rng(7): {name}", atol=0, rtol=0)
    c = GPT(GPTConfig(**SMALL), rng=8)
    difference = np.abs(c.state_dict()["transformer.wte.weight"] - a.state_dict()["transformer.wte.weight"]).max()
    assert_in_range(difference, 1e-3, None, "GPT(config, rng=8) vs rng=7: the largest difference of wte.weight "
                    "(different seeds should give different weights)")


@pytest.mark.under_test("GPT.__init__")
def test_dtype_option():
    model = GPT(GPTConfig(**SMALL), rng=0, dtype=np.float64)
    for name, p in model.named_parameters():
        assert_tensor(p, f"GPT(config, dtype=np.float64): parameter {name}", dtype=np.float64)


# ---------------------------------------------------------------------- forward
@pytest.mark.under_test("GPT.forward")
@pytest.mark.parametrize("variant", ["gpt2", "llama"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_logits_for_every_position_and_no_loss_without_targets(variant, dtype):
    fields = dict(SMALL, **VARIANTS[variant])
    model = GPT(GPTConfig(**fields), rng=0, dtype=dtype)
    idx = np.random.default_rng(1).integers(0, fields["vocab_size"], (3, 11))
    logits, loss = model(idx)
    assert_tensor(logits, f"GPT({fields}, dtype={np.dtype(dtype)})(idx (3, 11)): the logits",
                  shape=(3, 11, fields["vocab_size"]), dtype=dtype)
    assert_equal(loss is None, True, "GPT(...)(idx) without targets: the loss should be None")
    assert_in_range(np.isfinite(logits.data).mean(), 1, 1, "the fraction of finite logits")


@pytest.mark.under_test("GPT.forward")
@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_longer_than_block_size_is_rejected(variant):
    fields = dict(SMALL, **VARIANTS[variant])
    model = GPT(GPTConfig(**fields), rng=0)
    block = fields["block_size"]
    idx = np.zeros((2, block + 1), dtype=np.int64)
    assert_raises(ValueError, lambda: model(idx), f"GPT with block_size={block} given idx of shape {idx.shape}",
                  match="block_size")
    logits, _ = model(idx[:, :block])  # exactly block_size is fine
    assert_tensor(logits, f"GPT with block_size={block} given {block} tokens", shape=(2, block, fields["vocab_size"]))


@pytest.mark.under_test("CausalSelfAttention.forward")
@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_attention_is_causal(variant):
    """Position t's logits depend on tokens 0..t only; and they do depend on earlier tokens."""
    fields = dict(SMALL, **VARIANTS[variant])
    model = GPT(GPTConfig(**fields), rng=0, dtype=np.float64)
    randomize_like_training(model, np.random.default_rng(0))
    rng = np.random.default_rng(2)
    idx = rng.integers(0, fields["vocab_size"], (2, 12))
    changed_future = idx.copy()
    changed_future[:, 7:] = (idx[:, 7:] + 1 + rng.integers(0, 10, (2, 5))) % fields["vocab_size"]
    before, _ = model(idx)
    after, _ = model(changed_future)
    assert_close(after.data[:, :7], before.data[:, :7],
                 f"GPT {variant}: logits of positions 0..6 after changing the tokens at positions 7..11 (a "
                 "position must not see later tokens: causal attention)")
    changed_past = idx.copy()
    changed_past[:, 2] = (idx[:, 2] + 1) % fields["vocab_size"]
    moved, _ = model(changed_past)
    difference = np.abs(moved.data[:, 3:] - before.data[:, 3:]).max(axis=-1).min()
    assert_in_range(difference, 1e-6, None, f"GPT {variant}: the smallest change of the logits of a position "
                    "after position 2 when the token at position 2 changes (each position should read the past)")


@pytest.mark.under_test("GPT.forward")
def test_dropout_only_in_training_mode():
    fields = dict(SMALL, dropout=0.2)
    model = GPT(GPTConfig(**fields), rng=0, dtype=np.float64)
    plain = GPT(GPTConfig(**SMALL), rng=1, dtype=np.float64)
    plain.load_state_dict(model.state_dict())
    idx = np.random.default_rng(3).integers(0, SMALL["vocab_size"], (2, 10))
    expected, _ = plain(idx)
    first, _ = model(idx)
    second, _ = model(idx)
    difference = np.abs(first.data - second.data).max()
    assert_in_range(difference, 1e-3, None, "GPT(dropout=0.2) in training mode: the largest difference between two "
                    "forward passes (dropout should draw new masks each time)")
    difference = np.abs(first.data - expected.data).max()
    assert_in_range(difference, 1e-3, None, "GPT(dropout=0.2) in training mode vs the same weights without dropout: "
                    "the largest difference of the logits")
    model.eval()
    evaluated, _ = model(idx)
    assert_close(evaluated, expected, "GPT(dropout=0.2) after eval(): the logits should equal those of the same "
                 "weights with dropout=0")


@pytest.mark.under_test("GPT.__init__")
@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_every_dropout_has_the_configs_rate(variant):
    """config.dropout is the rate of every dropout: after the embeddings (transformer.drop), at the end of each
    residual branch (attn.resid_dropout, mlp.dropout) and on the attention weights (attn.dropout)."""
    fields = dict(SMALL, **VARIANTS[variant], dropout=0.3)
    model = GPT(GPTConfig(**fields), rng=0, dtype=np.float64)
    what = f"GPT({variant}, dropout=0.3)"
    assert_equal(float(model.transformer.drop.p), 0.3, f"{what}: transformer.drop.p")
    for i, block in enumerate(model.transformer.h):
        assert_equal(float(block.attn.resid_dropout.p), 0.3, f"{what}: transformer.h.{i}.attn.resid_dropout.p")
        assert_equal(float(block.mlp.dropout.p), 0.3, f"{what}: transformer.h.{i}.mlp.dropout.p")
        assert_equal(float(block.attn.dropout), 0.3, f"{what}: transformer.h.{i}.attn.dropout (the probability of "
                     "dropout on the attention weights)")


@pytest.mark.under_test("CausalSelfAttention.forward")
def test_attention_weight_dropout_acts_in_training_mode():
    """Every Dropout module switched off (p = 0): what is left of dropout in training mode is the one on the
    attention weights, which must still change the logits; after eval() it must not."""
    model = GPT(GPTConfig(**dict(SMALL, dropout=0.3)), rng=0, dtype=np.float64)
    randomize_like_training(model, np.random.default_rng(5))
    model.transformer.drop.p = 0.0
    for block in model.transformer.h:
        block.attn.resid_dropout.p = 0.0
        block.mlp.dropout.p = 0.0
    idx = np.random.default_rng(4).integers(0, SMALL["vocab_size"], (2, 10))
    model.eval()
    expected, _ = model(idx)
    model.train()
    trained, _ = model(idx)
    difference = np.abs(trained.data - expected.data).max()
    assert_in_range(difference, 1e-3, None, "GPT(dropout=0.3) in training mode with transformer.drop, every "
                    "attn.resid_dropout and every mlp.dropout set to p=0, vs eval(): the largest difference of the "
                    "logits (dropout on the attention weights, at attn.dropout, must remain)")
    model.eval()
    evaluated, _ = model(idx)
    assert_close(evaluated, expected, "GPT(dropout=0.3) after eval() again: the logits (no dropout at all)")


# ---------------------------------------------------------------------- GPT-2 checkpoints
GPT2_LIKE = dict(vocab_size=61, block_size=12, n_layer=3, n_head=3, n_embd=24, gelu_approximate="tanh")


@pytest.mark.parametrize("prefix", ["transformer.", ""], ids=["GPT2LMHeadModel", "GPT2Model"])
@pytest.mark.under_test("GPT.from_gpt2_state_dict")
@pytest.mark.integration
def test_from_gpt2_state_dict_matches_pytorch(prefix):
    reference = randomize(ReferenceGPT(**GPT2_LIKE).double(), seed=4)
    state = hf_gpt2_state_dict(reference, prefix=prefix)
    if not prefix:
        del state["lm_head.weight"]  # GPT2Model has no head; the tied wte serves
    model = GPT.from_gpt2_state_dict(state, n_head=3, dtype=np.float64)
    what = f"GPT.from_gpt2_state_dict(a state dict with names {next(iter(state))!r}, ..., n_head=3)"
    config = model.config
    got = {k: getattr(config, k) for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "ffn_dim",
                                             "gelu_approximate", "tie_weights", "bias", "norm", "pos", "mlp")}
    expected = dict(vocab_size=61, block_size=12, n_layer=3, n_head=3, n_embd=24, ffn_dim=96, gelu_approximate="tanh",
                    tie_weights=True, bias=True, norm="layernorm", pos="learned", mlp="gelu")
    assert_equal(got, expected, f"{what}: the config read from the shapes")
    idx = np.random.default_rng(5).integers(0, 61, (2, 12))
    logits, _ = model(idx)
    expected_logits, _ = reference(torch.tensor(idx))
    try:
        assert_close(logits, expected_logits, f"{what}: logits, compared with the PyTorch GPT-2 the weights came from")
    except AssertionError as error:
        raise AssertionError(f"{error}. {where_gpt2_logits_go_wrong(reference, idx, expected_logits)}") from None


def where_gpt2_logits_go_wrong(reference, idx, expected_logits) -> str:
    """Advice for wrong logits of a loaded GPT-2: about the loader only if a plain GPT given the same weights by
    load_state_dict gets them right; otherwise the model itself is wrong, and 4.3's own tests say where."""
    plain = GPT(GPTConfig(**GPT2_LIKE), rng=0, dtype=np.float64)
    plain.load_state_dict(numpy_state(reference))
    plain_logits, _ = plain(idx)
    try:
        assert_close(plain_logits, expected_logits, "a plain GPT")
    except AssertionError:
        return ("A GPT of the same config given the same weights with load_state_dict is wrong too: the mistake is "
                "in the model (GPT.forward and its blocks), not in the loader; 4.3's comparison with PyTorch shows it")
    return ("A GPT of the same config given the same weights with load_state_dict is right, so the loader is wrong: "
            "Conv1D weights are (in, out): transpose them; GPT-2's GELU is the tanh one")


@pytest.mark.under_test("GPT.from_gpt2_state_dict")
def test_from_gpt2_state_dict_is_float32_by_default():
    reference = randomize(ReferenceGPT(**GPT2_LIKE), seed=6)  # float32, as Hugging Face's checkpoints
    model = GPT.from_gpt2_state_dict(hf_gpt2_state_dict(reference), n_head=3)
    idx = np.random.default_rng(7).integers(0, 61, (1, 9))
    logits, _ = model(idx)
    expected, _ = reference.double()(torch.tensor(idx))
    scale = float(np.abs(expected.detach().numpy()).max())
    assert_tensor(logits, "GPT.from_gpt2_state_dict(state): logits", dtype=np.float32)
    assert_close(logits, expected, "GPT.from_gpt2_state_dict(state) in float32 vs the reference (tolerance 1e-4 "
                 "relative)", atol=1e-4 * scale, rtol=1e-4)


@pytest.mark.under_test("gpt2_config_from_state_dict")
@pytest.mark.parametrize("n_embd, n_head", [(768, 12), (1024, 16), (1280, 20), (1600, 25)])
def test_gpt2_config_infers_the_published_sizes(n_embd, n_head):
    # The state's arrays are broadcast zeros, built beside the code under test (in full, GPT-2 XL's is 1 GB).
    config = call_on_fake_gpt2_state(gpt2_config_from_state_dict, n_embd, n_layer=3, vocab=50257, block=1024)
    got = (config.vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd, config.ffn_dim)
    assert_equal(got, (50257, 1024, 3, n_head, n_embd, 4 * n_embd),
                 f"gpt2_config_from_state_dict(GPT-2 of width {n_embd}, 3 layers): (vocab_size, block_size, n_layer, "
                 "n_head, n_embd, ffn_dim)")


@pytest.mark.under_test("gpt2_config_from_state_dict")
def test_n_head_is_required_for_other_widths():
    state = hf_gpt2_state_dict(ReferenceGPT(**GPT2_LIKE))
    assert_raises(ValueError, lambda: GPT.from_gpt2_state_dict(state),
                  "GPT.from_gpt2_state_dict(a GPT-2 of width 24, which is none of the published sizes) without n_head",
                  match="n_head")


@pytest.mark.under_test("GPT.forward", "Block.forward", "CausalSelfAttention.forward")
@pytest.mark.parametrize("variant", ["gpt2", "llama"])
@pytest.mark.integration
def test_logits_and_gradients_match_the_pytorch_reference(variant):
    """A plain GPT (no GPT-2 checkpoint): the logits of the PyTorch reference holding the same random weights, and
    the gradient of every parameter for the upstream gradient w of the logits (the loss is exercise 4.4's)."""
    fields = dict(SMALL, **VARIANTS[variant])
    assert_gpt_matches_reference(fields, f"GPT {variant} {fields} in float64 with the reference's weights",
                                 weights_seed=2, data_seed=4, T=9)


@pytest.mark.under_test("CausalSelfAttention.forward")
@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_causal_self_attention_alone_matches_the_pytorch_reference(variant):
    """One block's attention on its own (no norms, no residuals, no MLP), with the reference's weights: a
    mistake in how the heads are split, scaled or merged shows here before it shows in the whole model."""
    from stage1_autograd.tensor import Tensor  # noqa: PLC0415

    fields = dict(SMALL, **VARIANTS[variant])
    reference = randomize(ReferenceGPT(**fields).double(), seed=2)
    model = GPT(GPTConfig(**fields), rng=0, dtype=np.float64)
    model.load_state_dict(numpy_state(reference))
    x = np.random.default_rng(5).normal(size=(2, 9, fields["n_embd"]))
    got = model.transformer.h[0].attn(Tensor(x), np.arange(9))
    expected = reference.transformer.h[0].attn(torch.tensor(x))
    assert_close(got, expected, f"transformer.h[0].attn of GPT {variant} {fields} on x of shape {x.shape}, with the "
                 "reference's weights")
