"""Exercise 4.8: the key/value cache. ``KVCache.update``; logits computed through the cache equal those of
the whole sequence (one token at a time, or several), with learned and rotary positions; generation with the
cache gives exactly the tokens of generation without it, greedy and sampled, also past block_size (where the
documented behaviour is to rebuild the cache on the last block_size tokens); and each new token costs one
position's work: counted by the rows that reach every layer's c_attn and lm_head, not by timing.
"""

import numpy as np
import pytest

from stage1_autograd.tensor import Tensor
from stage4_gpt.model import GPT, GPTConfig, KVCache
from tests.helpers import assert_close, assert_equal, assert_raises, assert_tensor
from tests.stage4.student_side import assign_in_place

pytestmark = pytest.mark.exercise("4.8")

SMALL = dict(vocab_size=31, block_size=16, n_layer=2, n_head=2, n_embd=16)
VARIANTS = {
    "learned": dict(),
    "rope": dict(norm="rmsnorm", pos="rope", mlp="swiglu", bias=False, tie_weights=False),
}
# float32 logits through the cache vs without it, relative to the largest logit: different orders of the same
# sums (one query row against the cache instead of the whole causal matrix) differ by a few float32 ulps.
FLOAT32_RTOL = 1e-5


def model(variant: str, dtype=np.float64, seed: int = 0) -> GPT:
    """A small GPT with weights of a trained model's size (N(0, 0.3)): peaked, position-dependent predictions."""
    gpt = GPT(GPTConfig(**SMALL, **VARIANTS[variant]), rng=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 100)
    for _, p in gpt.named_parameters():
        if p.ndim > 1:
            assign_in_place(p, rng.normal(0, 0.3, p.shape))  # p.data[...] = ..., where p lives
    return gpt


def tokens(B: int, T: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, SMALL["vocab_size"], (B, T))


def test_kv_cache_update_appends_along_time():
    rng = np.random.default_rng(0)
    first_k, first_v = rng.standard_normal((2, 3, 4, 8)), rng.standard_normal((2, 3, 4, 8))
    next_k, next_v = rng.standard_normal((2, 3, 1, 8)), rng.standard_normal((2, 3, 1, 8))
    cache = KVCache()
    k, v = cache.update(Tensor(first_k), Tensor(first_v))
    assert_close(k, first_k, "KVCache().update(k (2, 3, 4, 8), v): the keys returned by the first update")
    assert_close(v, first_v, "KVCache().update(k, v (2, 3, 4, 8)): the values returned by the first update")
    k, v = cache.update(Tensor(next_k), Tensor(next_v))
    assert_tensor(k, "the keys after a second update with 1 position", shape=(2, 3, 5, 8))
    assert_close(k, np.concatenate([first_k, next_k], axis=2), "the keys after updates of 4 then 1 positions: the "
                 "old ones, then the new ones, along the time axis (-2)")
    assert_close(v, np.concatenate([first_v, next_v], axis=2), "the values after updates of 4 then 1 positions")
    assert_equal(len(cache), 5, "len(KVCache) after updates of 4 and 1 positions")


@pytest.mark.under_test("CausalSelfAttention.forward")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_cached_logits_equal_the_whole_sequences(variant, dtype):
    gpt = model(variant, dtype)
    gpt.eval()
    seq = tokens(2, 14, seed=1)
    full, _ = gpt(seq)
    scale = float(np.abs(full.data).max())
    tolerance = dict() if dtype == np.float64 else dict(atol=FLOAT32_RTOL * scale, rtol=FLOAT32_RTOL)
    cache = gpt.new_kv_cache()
    # A prompt of 5 tokens, then 6 single tokens, then 3 tokens at once: each call sees only what is new.
    start = 0
    for stop in (5, 6, 7, 8, 9, 10, 11, 14):
        logits, _ = gpt(seq[:, start:stop], kv_cache=cache)
        what = (f"GPT ({variant}, {np.dtype(dtype)}) with a KV cache holding positions 0..{start - 1}, given the tokens "
                f"of positions {start}..{stop - 1}: their logits vs those of the whole sequence")
        assert_close(logits, full.data[:, start:stop], what, **tolerance)
        lengths = [len(layer) for layer in cache]
        assert_equal(lengths, [stop] * SMALL["n_layer"], f"{what}: the number of positions in each layer's cache")
        start = stop


@pytest.mark.under_test("GPT.forward")
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_cache_cannot_go_past_block_size(variant):
    gpt = model(variant)
    cache = gpt.new_kv_cache()
    gpt(tokens(1, SMALL["block_size"], seed=2), kv_cache=cache)
    assert_raises(ValueError, lambda: gpt(tokens(1, 1, seed=3), kv_cache=cache),
                  f"GPT ({variant}) given one more token with a KV cache that holds block_size={SMALL['block_size']} "
                  "positions", match="block_size")


@pytest.mark.under_test("GPT.next_token_logits")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("settings", [dict(temperature=0.0), dict(temperature=1.0, top_k=8),
                                      dict(temperature=0.9, top_p=0.9), dict(temperature=1.4)], ids=str)
def test_generation_with_the_cache_gives_the_same_tokens(variant, settings):
    gpt = model(variant)
    prompt = tokens(2, 4, seed=4)
    n = 24  # 4 + 24 tokens: past block_size = 16, where the window slides
    without = gpt.generate(prompt, n, rng=11, use_cache=False, **settings)
    cached = gpt.generate(prompt, n, rng=11, use_cache=True, **settings)
    assert_equal(cached, without, f"GPT ({variant}).generate(prompt (2, 4), {n}, rng=11, {settings}): the tokens with "
                 "use_cache=True vs use_cache=False (including the steps past block_size=16)")


def record_positions(gpt: GPT) -> dict[str, list[int]]:
    """Wrap every layer's attn.c_attn and the lm_head so that each call records how many positions it was given."""
    seen: dict[str, list[int]] = {}
    layers = {f"transformer.h.{i}.attn.c_attn": block.attn.c_attn for i, block in enumerate(gpt.transformer.h)}
    layers["lm_head"] = gpt.lm_head
    for name, layer in layers.items():
        seen[name] = []

        def counting(x, _forward=layer.forward, _seen=seen[name]):
            _seen.append(int(x.shape[1]))  # x (B, T, C): T positions
            return _forward(x)

        layer.forward = counting
    return seen


@pytest.mark.under_test("GPT.next_token_logits")
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_new_token_costs_one_position(variant):
    gpt = model(variant)
    seen = record_positions(gpt)
    prompt, n = tokens(2, 5, seed=5), 9  # 5 + 9 = 14 <= block_size: no sliding
    gpt.generate(prompt, n, rng=0, use_cache=True)
    for name, positions in seen.items():
        assert_equal(positions[:1], [5], f"generate(prompt (2, 5), {n}, use_cache=True): the positions {name} reads "
                     "on the first step (the whole prompt)")
        assert_equal(sorted(set(positions[1:])), [1], f"generate(prompt (2, 5), {n}, use_cache=True): the positions "
                     f"{name} reads on each later step (calls: {positions}); with the cache only the newest token is new")
        assert_equal(len(positions) in (n, n + 1), True, f"generate(prompt (2, 5), {n}, use_cache=True): the number "
                     f"of calls of {name} ({len(positions)}): one per new token")


@pytest.mark.under_test("GPT.next_token_logits")
@pytest.mark.parametrize("variant", VARIANTS)
def test_past_block_size_the_cache_is_rebuilt_on_the_last_block_size_tokens(variant):
    gpt = model(variant)
    seen = record_positions(gpt)
    block = SMALL["block_size"]
    prompt, n = tokens(1, 5, seed=6), 15  # the sequence reaches 20 > block_size = 16 tokens
    gpt.generate(prompt, n, temperature=0.0, use_cache=True)
    positions = seen["transformer.h.0.attn.c_attn"]
    # Steps that read a sequence of 5 (the prompt), 6, ..., 16 tokens: 1 new position each after the prompt.
    # Steps that read 17, 18, 19 tokens: the window slid, every position moved: the last 16 tokens, afresh.
    expected = [5] + [1] * (block - 5) + [block] * (n - 1 - (block - 5))
    assert_equal(positions, expected, f"generate(prompt (1, 5), {n}, use_cache=True) with block_size={block}: the "
                 "positions the first layer's c_attn reads at each step (one new token while the sequence fits, "
                 "then the cache rebuilt on the last block_size tokens at every step)")
