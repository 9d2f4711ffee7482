"""Exercise 4.4: the GPT equals a PyTorch GPT (tests/stage4/torch_reference.py) in its logits, its loss and
the gradient of every parameter, for every variant of the config, in float64 and in float32.

Both models get the same seeded random weights (no bias 0, no norm weight 1, so each of them matters);
some targets are ignore_index (padding) and count for nothing in the loss.
"""

import numpy as np
import pytest
import torch

from stage4_gpt.model import GPT, GPTConfig
from tests.helpers import assert_close, assert_equal, assert_raises, assert_tensor
from tests.stage4.torch_reference import ReferenceGPT, numpy_state, randomize

pytestmark = [pytest.mark.exercise("4.4"), pytest.mark.under_test("GPT.forward")]

SMALL = dict(vocab_size=53, block_size=16, n_layer=2, n_head=2, n_embd=16)
LLAMA = dict(norm="rmsnorm", pos="rope", mlp="swiglu", bias=False, tie_weights=False)

# Every switch of GPT-2's and Llama's designs appears both ways among these (the experiments' switches:
# test_experiments.py).
VARIANTS = {
    "gpt2": dict(),
    "gpt2-tanh-gelu-untied": dict(gelu_approximate="tanh", tie_weights=False),
    "gpt2-without-biases": dict(bias=False, n_embd=24, n_head=3, norm_eps=1e-3),
    "llama": dict(LLAMA, n_embd=32, n_head=4),
    "llama-tied": dict(LLAMA, tie_weights=True),
    "rope-layernorm-gelu": dict(pos="rope", rope_theta=100.0, ffn_hidden=40),
    "rmsnorm-learned-swiglu-biased": dict(norm="rmsnorm", mlp="swiglu", bias=True, tie_weights=False, norm_eps=1e-6),
    "layernorm-rope-swiglu-unbiased-tied": dict(pos="rope", mlp="swiglu", bias=False, gelu_approximate="tanh"),
}

# float32 against the float64 reference: every value must agree to FLOAT32_RTOL of the largest magnitude in
# its array (atol = FLOAT32_RTOL * max|expected|). float32 carries 6e-8 relative precision; through the
# sums and softmaxes of a 2-layer model of width <= 32 the worst element of any array measured 4e-6 of its
# array's largest magnitude (every variant, three seeds): 25 times below the tolerance. A wrong formula is
# off by 1e-2 or more.
FLOAT32_RTOL = 1e-4


def build(fields: dict, dtype, seed: int = 0):
    """Our GPT and the reference, holding the same random weights, in ``dtype`` (the reference in float64)."""
    reference = randomize(ReferenceGPT(**fields).double(), seed)
    ours = GPT(GPTConfig(**fields), rng=seed, dtype=dtype)
    ours.load_state_dict(numpy_state(reference))
    return ours, reference


def batch(fields: dict, seed: int, B: int = 3, ignore_index: int = -1, T: int | None = None):
    """idx (B, T) and targets (B, T), a quarter of the targets replaced by ignore_index (padding)."""
    rng = np.random.default_rng(seed)
    T = T or fields["block_size"]
    idx = rng.integers(0, fields["vocab_size"], (B, T))
    targets = rng.integers(0, fields["vocab_size"], (B, T))
    targets[rng.random((B, T)) < 0.25] = ignore_index
    targets[0, -1] = ignore_index  # at least one, whatever the draw
    return idx, targets


def compare(fields: dict, dtype, what: str, seed: int = 0, ignore_index: int = -1, T: int | None = None):
    ours, reference = build(fields, dtype, seed)
    idx, targets = batch(fields, seed + 1, ignore_index=ignore_index, T=T)
    logits, loss = ours(idx, targets, ignore_index=ignore_index)
    expected_logits, expected_loss = reference(torch.tensor(idx), torch.tensor(targets), ignore_index=ignore_index)
    expected_loss.backward()
    assert_tensor(loss, f"{what}: the loss forward(idx, targets) returned", shape=())
    loss.backward()

    def close(got, expected, label):
        if dtype == np.float64:
            assert_close(got, expected, f"{what}: {label}")
        else:
            scale = float(np.abs(expected.detach().numpy()).max())
            assert_close(got, expected, f"{what}: {label} (float32, tolerance {FLOAT32_RTOL:g} relative)",
                         atol=FLOAT32_RTOL * scale, rtol=FLOAT32_RTOL)

    close(logits, expected_logits, f"logits for idx of shape {idx.shape}")
    close(loss, expected_loss, f"the loss (targets with {int((targets == ignore_index).sum())} positions = "
                               f"ignore_index={ignore_index}, which count for nothing)")
    theirs = dict(reference.named_parameters())
    named = dict(ours.named_parameters())
    assert_equal(sorted(named), sorted(theirs), f"{what}: the names of the distinct parameters")
    for name, p in named.items():
        tied = " (tied: the sum of its use in wte and in lm_head)" if name == "transformer.wte.weight" and \
            fields.get("tie_weights", True) else ""
        close(p.grad, theirs[name].grad, f"gradient of {name!r}{tied}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_pytorch_in_float64(variant):
    fields = dict(SMALL, **VARIANTS[variant])
    compare(fields, np.float64, f"GPT {variant} {fields} in float64")


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_matches_pytorch_in_float32(variant):
    fields = dict(SMALL, **VARIANTS[variant])
    compare(fields, np.float32, f"GPT {variant} {fields} in float32", seed=3)


def test_shorter_sequences_and_another_ignore_index():
    # T < block_size (positions 0..T-1 only), and padding marked by id 0 instead of -1.
    fields = dict(SMALL, **VARIANTS["gpt2"])
    compare(fields, np.float64, "GPT gpt2 on sequences of 7 tokens with ignore_index=0", seed=5, ignore_index=0, T=7)
    fields = dict(SMALL, **VARIANTS["llama"])
    compare(fields, np.float64, "GPT llama on sequences of 5 tokens with ignore_index=0", seed=6, ignore_index=0, T=5)


def test_targets_of_another_shape_are_rejected():
    fields = dict(SMALL)
    model = GPT(GPTConfig(**fields), rng=0, dtype=np.float64)
    idx, targets = batch(fields, 0, B=2, T=6)
    assert_raises(ValueError, lambda: model(idx, targets[:, :5]),
                  "GPT(idx (2, 6), targets (2, 5)): targets must have the shape of idx")
