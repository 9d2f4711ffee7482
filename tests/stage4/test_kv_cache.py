"""Exercise 4.8: the key/value cache. ``KVCache.update``; logits computed through the cache equal those of
the whole sequence (one token at a time, or several), with learned and rotary positions; generation with the
cache gives exactly the tokens of generation without it, greedy and sampled, also past block_size (where the
documented behaviour is to rebuild the cache on the last block_size tokens), and sampled generation with the
cache draws every token as replayed here; the cache holds the keys and values a PyTorch reference computes,
and keeps them when the weights change afterwards (a model that recomputes the past gets other logits); and
each new token costs one position's work: counted by the rows that reach every layer's c_attn and lm_head,
not by timing.
"""

import numpy as np
import pytest
import torch
from torch.nn import functional as TF

from stage1_autograd.tensor import Tensor
from stage4_gpt.model import GPT, GPTConfig, KVCache
from tests.helpers import (assert_close, assert_equal, assert_in_range, assert_raises, assert_tensor,
                           randomize_like_training)
from tests.stage4.student_side import assign_in_place
from tests.stage4.test_sampling import sampled_rollout
from tests.stage4.torch_reference import ReferenceGPT

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
    randomize_like_training(gpt, np.random.default_rng(seed + 100))
    return gpt


def tokens(B: int, T: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, SMALL["vocab_size"], (B, T))


@pytest.mark.under_test("KVCache.update")
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
@pytest.mark.integration
def test_generation_with_the_cache_gives_the_same_tokens(variant, settings):
    gpt = model(variant)
    prompt = tokens(2, 4, seed=4)
    n = 24  # 4 + 24 tokens: past block_size = 16, where the window slides
    without = gpt.generate(prompt, n, rng=11, use_cache=False, **settings)
    cached = gpt.generate(prompt, n, rng=11, use_cache=True, **settings)
    assert_equal(cached, without, f"GPT ({variant}).generate(prompt (2, 4), {n}, rng=11, {settings}): the tokens with "
                 "use_cache=True vs use_cache=False (including the steps past block_size=16)")


def rotate_at(x: torch.Tensor, theta: float, positions: torch.Tensor) -> torch.Tensor:
    """RoPE on x (B, h, T, hd) at the given positions (T,): each pair (x[..., 2i], x[..., 2i+1]) rotated by the
    angle position * theta^(-2i/hd), as tests/stage4/torch_reference.py's rotate_interleaved does from position 0."""
    hd = x.shape[-1]
    frequencies = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    angle = positions.to(torch.float64)[:, None] * frequencies[None, :]
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


@torch.no_grad()
def reference_with_cache(reference: ReferenceGPT, idx: np.ndarray, cache: list) -> np.ndarray:
    """The logits (B, T, vocab) of the reference GPT for tokens idx (B, T) that follow the positions held in
    ``cache`` (one (keys, values) per layer, or None while empty), whose keys and values it appends: what a
    KV cache computes, written here with the reference's modules. Keys are stored after RoPE."""
    c = reference.c
    idx = torch.tensor(idx)
    B, T = idx.shape
    C, nh = c["n_embd"], c["n_head"]
    start = 0 if cache[0] is None else cache[0][0].shape[-2]
    positions = torch.arange(start, start + T)
    x = reference.transformer.wte(idx)
    if "wpe" in reference.transformer:
        x = x + reference.transformer.wpe(positions)
    for i, block in enumerate(reference.transformer.h):
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
        if c["pos"] == "rope":
            q, k = rotate_at(q, c["rope_theta"], positions), rotate_at(k, c["rope_theta"], positions)
        if cache[i] is not None:
            k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
        cache[i] = (k, v)
        S = k.shape[-2]
        mask = torch.tensor(np.tri(T, S, S - T, dtype=bool))  # the new queries see the cache and themselves
        y = TF.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + block.attn.c_proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + block.mlp(block.ln_2(x))
    return reference.lm_head(reference.transformer.ln_f(x)).numpy()


@pytest.mark.under_test("CausalSelfAttention.forward")
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_cache_keeps_the_keys_and_values_computed_before(variant):
    """Fill the cache with a prompt, then change the first layer's c_attn weights in place and feed one more token:
    the cached positions keep the keys and values computed with the old weights (a cache computes them once), and
    only the new position's come from the new weights. A model that recomputes the past gets other logits."""
    gpt = model(variant)
    gpt.eval()
    reference = ReferenceGPT(**SMALL, **VARIANTS[variant]).double()
    reference.load_state_dict({name: torch.tensor(value) for name, value in gpt.state_dict().items()})
    seq = tokens(2, 6, seed=7)
    cache, reference_cache = gpt.new_kv_cache(), [None] * SMALL["n_layer"]
    logits, _ = gpt(seq[:, :5], kv_cache=cache)
    assert_close(logits, reference_with_cache(reference, seq[:, :5], reference_cache),
                 f"GPT ({variant}) with an empty KV cache, given a prompt of 5 tokens: the logits")
    for i, (layer, (keys, values)) in enumerate(zip(cache, reference_cache)):
        what = (f"GPT ({variant}) after a prompt (2, 5) through an empty KV cache: layer {i}'s cache.%s, (B, n_head, "
                "5, head_dim)")
        assert_close(np.asarray(layer.keys), keys.numpy(), what % "keys (after RoPE, if any)")
        assert_close(np.asarray(layer.values), values.numpy(), what % "values")
    # New values for the first layer's c_attn weight (a shift alone could vanish against a LayerNorm's output).
    name = "transformer.h.0.attn.c_attn.weight"
    changed = gpt.state_dict()[name] + np.random.default_rng(8).normal(0, 0.3, (3 * SMALL["n_embd"], SMALL["n_embd"]))
    assign_in_place(gpt.transformer.h[0].attn.c_attn.weight, changed)  # p.data[...] = changed, where p lives
    with torch.no_grad():
        reference.transformer.h[0].attn.c_attn.weight.copy_(torch.tensor(changed))
    expected = reference_with_cache(reference, seq[:, 5:], reference_cache)
    with torch.no_grad():
        recomputed = reference(torch.tensor(seq))[0][:, 5:].numpy()
    # The test itself checks that recomputing every position with the new weights would give other logits.
    assert_in_range(np.abs(recomputed - expected).max(), 1e-3, None, "the largest difference between the logits "
                    "with the cached keys and values and those recomputed with the changed weights")
    logits, _ = gpt(seq[:, 5:], kv_cache=cache)
    assert_close(logits, expected, f"GPT ({variant}) with a KV cache of a 5-token prompt, after transformer.h.0.attn."
                 "c_attn.weight was changed in place, given the 6th token: its logits (the cached positions "
                 "keep the keys and values computed with the old weights; only the new position uses the new ones)")
    assert_equal([len(layer) for layer in cache], [6] * SMALL["n_layer"], f"GPT ({variant}): the number of positions "
                 "in each layer's cache after the prompt of 5 and one more token")


@pytest.mark.under_test("GPT.next_token_logits")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("settings", [dict(temperature=1.0, top_k=8), dict(temperature=0.9, top_p=0.9),
                                      dict(temperature=1.4)], ids=str)
@pytest.mark.integration
def test_sampled_generation_with_the_cache_draws_every_token_from_its_distribution(variant, settings):
    gpt = model(variant)
    prompt = tokens(2, 4, seed=4)
    n = 24  # 4 + 24 tokens: past block_size = 16, where the window slides
    cached = gpt.generate(prompt, n, rng=11, use_cache=True, **settings)
    assert_equal(cached, sampled_rollout(gpt, prompt, n, 11, SMALL["block_size"], **settings),
                 f"GPT ({variant}).generate(prompt (2, 4), {n}, rng=11, {settings}, use_cache=True): the tokens vs "
                 "those drawn here step by step from the logits of the whole sequence (one rng.random() per row and "
                 "step, the first token whose cumulative probability exceeds it)")


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
