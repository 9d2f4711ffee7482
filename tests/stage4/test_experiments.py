"""Exercise 4.3, the model of the lesson's experiments: every ablation of GPTConfig (no positions, no norm, no
residual connections, the norm after the addition, and all four at once) builds, runs forward and backward,
and computes what the PyTorch reference computes with the same weights (tests/stage4/torch_reference.py
writes each variant of the block out by hand). The block's variants are given code around the student's
parts; ``pos='none'`` is the student's: GPT builds no wpe and CausalSelfAttention no rotation."""

import numpy as np
import pytest

from stage4_gpt.model import GPT, GPTConfig
from tests.helpers import assert_close, assert_equal, assert_in_range
from tests.stage4.torch_reference import ReferenceGPT, assert_gpt_matches_reference, numpy_state, randomize

pytestmark = [pytest.mark.exercise("4.3"), pytest.mark.integration]  # whole models: after 4.3's unit tests

SMALL = dict(vocab_size=19, block_size=10, n_layer=2, n_head=2, n_embd=8)
EXPERIMENTS = {
    "no-positions": dict(pos="none"),
    "no-norm": dict(norm="none"),
    "no-residual": dict(residual=False),
    "post-norm": dict(norm_position="post"),
    "post-norm-rmsnorm-swiglu": dict(norm_position="post", norm="rmsnorm", mlp="swiglu", bias=False),
    "no-residual-post-norm": dict(residual=False, norm_position="post"),
    "all-four": dict(pos="none", norm="none", residual=False, norm_position="post"),
}


@pytest.mark.under_test("GPT.__init__")
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_have_the_parameters_of_the_reference(experiment):
    fields = dict(SMALL, **EXPERIMENTS[experiment])
    ours, reference = GPT(GPTConfig(**fields), rng=0), ReferenceGPT(**fields)
    assert_equal(sorted(ours.state_dict()), sorted(numpy_state(reference)),
                 f"GPT({fields}).state_dict(): the names of the parameters (pos='none': no transformer.wpe; "
                 "norm='none': no ln_1, ln_2, ln_f weights)")


@pytest.mark.under_test("GPT.forward", "Block.forward")
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_match_the_pytorch_reference(experiment):
    """Logits and the gradient of every parameter, in float64, with the reference's random weights."""
    fields = dict(SMALL, **EXPERIMENTS[experiment])
    assert_gpt_matches_reference(fields, f"GPT {experiment} {fields} in float64 with the reference's weights",
                                 weights_seed=3, data_seed=1, T=7)


@pytest.mark.under_test("GPT.forward")
def test_without_positions_one_layer_reads_the_prefix_as_a_set():
    """pos='none' and one layer: the last position attends to the earlier tokens with nothing to tell their
    order, so shuffling them leaves its logits unchanged (with learned positions they would change)."""
    fields = dict(SMALL, n_layer=1, pos="none")
    model = randomize_model(fields)
    idx = np.random.default_rng(2).integers(0, fields["vocab_size"], (2, 8))
    shuffled = idx.copy()
    shuffled[:, :-1] = idx[:, [4, 0, 6, 2, 1, 5, 3]]
    before, _ = model(idx)
    after, _ = model(shuffled)
    assert_close(after.data[:, -1], before.data[:, -1],
                 "GPT(pos='none', n_layer=1): the last position's logits after shuffling the 7 tokens before it "
                 "(without positions attention cannot see their order)")
    learned = randomize_model(dict(fields, pos="learned"))
    change = np.abs(learned(shuffled)[0].data[:, -1] - learned(idx)[0].data[:, -1]).max()
    assert_in_range(change, 1e-6, None, "GPT(pos='learned', n_layer=1): the largest change of the last position's "
                    "logits after the same shuffle (with positions the order matters)")


def randomize_model(fields: dict, seed: int = 5) -> GPT:
    """Our GPT in float64 with the reference's random weights (larger than the initialisation's)."""
    model = GPT(GPTConfig(**fields), rng=0, dtype=np.float64)
    model.load_state_dict(numpy_state(randomize(ReferenceGPT(**fields).double(), seed)))
    return model
