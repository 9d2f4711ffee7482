"""Exercise 4.7: sampling. ``sampling_distribution`` (temperature, top-k, top-p) against distributions computed
here independently; ``generate``: greedy decoding equals the argmax rollout, top_k=1 equals greedy, seeded
runs repeat, the tokens drawn follow the distribution, every new token of a sampled run is the one drawn here
step by step as specified (inverse CDF, one rng.random() per row), stop_token, and clear errors for bad
settings.

Every ``generate`` here runs with ``use_cache=False``: the cache is exercise 4.8.
"""

import math

import numpy as np
import pytest
import torch

from stage4_gpt.model import GPT, GPTConfig, sampling_distribution
from tests.helpers import assert_close, assert_equal, assert_in_range, assert_raises, randomize_like_training

pytestmark = pytest.mark.exercise("4.7")

FIELDS = dict(vocab_size=29, block_size=16, n_layer=2, n_head=2, n_embd=16)


def expected_distribution(logits: np.ndarray, temperature: float = 1.0, top_k=None, top_p=None) -> np.ndarray:
    """What the lesson specifies, row by row with torch: softmax(logits / temperature) (one-hot argmax at
    temperature 0); top_k keeps the logits >= the k-th largest; top_p keeps, most likely first (ties: lower id
    first), each token while the mass before it is below top_p; each step renormalises."""
    rows = []
    for row in np.atleast_2d(logits):
        z = torch.tensor(row, dtype=torch.float64)
        if temperature == 0:
            rows.append(torch.nn.functional.one_hot(torch.argmax(z), len(z)).double().numpy())
            continue
        z = z / temperature
        if top_k is not None and top_k < len(z):
            kth = torch.topk(z, top_k).values[-1]
            z = torch.where(z >= kth, z, torch.tensor(-math.inf, dtype=torch.float64))
        p = torch.softmax(z, dim=-1)
        if top_p is not None:
            sorted_p, order = torch.sort(p, descending=True, stable=True)
            before = torch.cumsum(sorted_p, 0) - sorted_p
            p[order[before >= top_p]] = 0
            p = p / p.sum()
        rows.append(p.numpy())
    return np.array(rows).reshape(np.shape(logits))


def random_logits(seed: int, shape=(5, 29), scale: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


def model(dtype=np.float64, seed: int = 0) -> GPT:
    """A small GPT whose weights are large enough (N(0, 0.3)) to give peaked, position-dependent predictions."""
    gpt = GPT(GPTConfig(**FIELDS), rng=seed, dtype=dtype)
    randomize_like_training(gpt, np.random.default_rng(seed + 100))
    return gpt


def prompts(B: int = 2, T: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, FIELDS["vocab_size"], (B, T))


def greedy_rollout(gpt: GPT, idx: np.ndarray, n: int) -> np.ndarray:
    """n argmax steps, each on the model's logits for the last position of (at most) block_size tokens."""
    for _ in range(n):
        logits, _ = gpt(idx[:, -FIELDS["block_size"]:])
        idx = np.concatenate([idx, logits.data[:, -1].argmax(axis=-1)[:, None]], axis=1)
    return idx


def distribution(logits: np.ndarray, *settings, **named) -> np.ndarray:
    """``sampling_distribution(logits, ...)``, first checked to leave every row a token to draw: a top_k or top_p
    that removes them all gives 0 / 0 = NaN on renormalising, which would read as a mere difference."""
    probs = sampling_distribution(logits, *settings, **named)
    kept = np.nan_to_num(np.atleast_1d(np.asarray(probs, dtype=np.float64)), nan=0.0) > 0
    emptied = np.flatnonzero(~kept.reshape(-1, kept.shape[-1]).any(axis=-1)).tolist()
    call = ", ".join([f"logits {np.shape(logits)}", *map(repr, settings), *(f"{k}={v!r}" for k, v in named.items())])
    assert_equal(emptied, [], f"sampling_distribution({call}): every token was removed in these rows (the most likely "
                 "token must always be kept)")
    return probs


# ---------------------------------------------------------------------- the distribution
@pytest.mark.under_test("sampling_distribution")
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_temperature_scales_the_logits(temperature):
    logits = random_logits(0)
    assert_close(distribution(logits, temperature), expected_distribution(logits, temperature),
                 f"sampling_distribution(logits (5, 29), temperature={temperature}): softmax(logits / temperature)")


@pytest.mark.under_test("sampling_distribution")
def test_temperature_zero_puts_all_the_mass_on_the_argmax():
    logits = random_logits(1)
    assert_close(distribution(logits, 0.0), expected_distribution(logits, 0.0),
                 "sampling_distribution(logits, temperature=0): one-hot at each row's argmax (greedy)")


@pytest.mark.under_test("sampling_distribution")
@pytest.mark.parametrize("top_k", [1, 3, 10, 29, 100])
def test_top_k_keeps_the_k_largest(top_k):
    logits = random_logits(2)
    assert_close(distribution(logits, 0.8, top_k=top_k), expected_distribution(logits, 0.8, top_k=top_k),
                 f"sampling_distribution(logits (5, 29), temperature=0.8, top_k={top_k})")


@pytest.mark.under_test("sampling_distribution")
def test_top_k_keeps_every_token_tied_at_the_kth_logit():
    logits = np.array([[3.0, 1.0, 2.0, 1.0, 0.0, 1.0]])
    assert_close(distribution(logits, 1.0, top_k=3), expected_distribution(logits, 1.0, top_k=3),
                 f"sampling_distribution({logits.tolist()}, top_k=3): the 3rd largest logit, 1.0, is shared by three "
                 "tokens, and all of them are kept")


@pytest.mark.under_test("sampling_distribution")
def test_top_p_stops_at_the_token_that_reaches_p():
    # Before the random cases below: an off-by-one top_p is easiest to see in this worked example.
    # Probabilities 0.5, 0.25, 0.125, 0.125 (token 1, token 3, then tokens 0 and 2): 0.5 alone is below 0.74,
    # 0.5 + 0.25 reaches it, so tokens 1 and 3 are kept and the rest is dropped.
    logits = np.log(np.array([[0.125, 0.5, 0.125, 0.25]]))
    assert_close(distribution(logits, 1.0, top_p=0.74), np.array([[0, 2 / 3, 0, 1 / 3]]),
                 "sampling_distribution(log([0.125, 0.5, 0.125, 0.25]), top_p=0.74): tokens 1 and 3 (0.5 + 0.25) "
                 "reach 0.74, renormalised")


@pytest.mark.under_test("sampling_distribution")
@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.6, 0.9, 0.999, 1.0])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p):
    logits = random_logits(3)
    assert_close(distribution(logits, 1.0, top_p=top_p), expected_distribution(logits, 1.0, top_p=top_p),
                 f"sampling_distribution(logits (5, 29), top_p={top_p}): the most likely tokens while the mass before "
                 "each is below top_p, renormalised")


@pytest.mark.under_test("sampling_distribution")
@pytest.mark.parametrize("temperature, top_k, top_p", [(0.7, 5, 0.8), (1.5, 12, 0.5), (1.0, 2, 0.99)])
def test_temperature_then_top_k_then_top_p(temperature, top_k, top_p):
    logits = random_logits(4)
    assert_close(distribution(logits, temperature, top_k, top_p),
                 expected_distribution(logits, temperature, top_k, top_p),
                 f"sampling_distribution(logits, temperature={temperature}, top_k={top_k}, top_p={top_p}): top_p "
                 "applies to the distribution left by temperature and top_k")


@pytest.mark.under_test("check_sampling_settings")
@pytest.mark.parametrize("settings, match", [
    (dict(temperature=-0.5), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=-0.2), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=0), "top_k"),
], ids=["temperature<0", "top_p=0", "top_p<0", "top_p>1", "top_k=0"])
def test_bad_settings_are_a_clear_value_error(settings, match):
    logits = random_logits(5)
    assert_raises(ValueError, lambda: sampling_distribution(logits, **settings),
                  f"sampling_distribution(logits, {settings})", match=match)
    gpt = model()
    assert_raises(ValueError, lambda: gpt.generate(prompts(), 3, use_cache=False, **settings),
                  f"generate(idx, 3, {settings})", match=match)


# ---------------------------------------------------------------------- generate
@pytest.mark.under_test("GPT.generate")
def test_greedy_is_the_argmax_rollout():
    gpt, idx = model(), prompts()
    n = 20  # past block_size = 16: the context is cropped to the last 16 tokens
    got = gpt.generate(idx, n, temperature=0.0, use_cache=False)
    assert_equal(got, greedy_rollout(gpt, idx, n), f"generate(idx {idx.shape}, {n}, temperature=0): the tokens "
                 "(each the argmax of the logits of the last position, of the last block_size tokens)")


@pytest.mark.under_test("GPT.generate")
def test_top_k_one_is_greedy():
    gpt, idx = model(), prompts(seed=2)
    got = gpt.generate(idx, 10, temperature=1.0, top_k=1, rng=0, use_cache=False)
    assert_equal(got, greedy_rollout(gpt, idx, 10), "generate(idx, 10, top_k=1, rng=0): the tokens (top_k=1 "
                 "leaves only the most likely token)")


@pytest.mark.under_test("GPT.generate")
def test_output_keeps_the_prompt_and_is_int64():
    gpt, idx = model(), prompts(B=3, T=4)
    got = gpt.generate(idx, 5, rng=0, use_cache=False)
    assert_equal((type(got).__name__, got.dtype.name, got.shape), ("ndarray", "int64", (3, 9)),
                 "generate(idx (3, 4), 5): (type, dtype, shape) of the result")
    assert_equal(got[:, :4], idx, "generate(idx, 5)[:, :4]: the prompt comes first, unchanged")
    assert_equal(gpt.generate(idx, 0, use_cache=False), idx, "generate(idx, max_new_tokens=0)")
    gpt.train()
    gpt.generate(idx, 2, rng=0, use_cache=False)
    assert_equal(gpt.training, True, "model.training after generate() on a model in training mode (restore it)")


@pytest.mark.under_test("GPT.generate")
def test_seeded_runs_repeat():
    gpt, idx = model(), prompts()
    settings = dict(temperature=1.3, top_k=20, top_p=0.95, use_cache=False)
    first = gpt.generate(idx, 12, rng=123, **settings)
    assert_equal(gpt.generate(idx, 12, rng=123, **settings), first, "generate(..., rng=123) run twice")
    assert_equal(gpt.generate(idx, 12, rng=np.random.default_rng(123), **settings), first,
                 "generate(..., rng=np.random.default_rng(123)) vs rng=123")
    other = gpt.generate(idx, 12, rng=124, **settings)
    assert_in_range(np.sum(other != first), 1, None, "the number of tokens that differ between rng=123 and rng=124")


def draw_as_specified(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The lesson's draw, computed here: one u = rng.random() per row (a single call for the batch), scaled to the
    row's total, and the first token whose cumulative probability exceeds u (never one of probability 0)."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random((len(probs), 1)) * cdf[:, -1:]
    tokens = (cdf <= u).sum(axis=-1)
    last_possible = probs.shape[-1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=-1)
    return np.minimum(tokens, last_possible)


def sampled_rollout(gpt: GPT, idx: np.ndarray, n: int, seed: int, block_size: int = FIELDS["block_size"],
                    **settings) -> np.ndarray:
    """n sampling steps replayed here, without any cache: each on the model's logits for the last position of (at
    most) block_size tokens, the distribution computed here (expected_distribution), the token drawn here from
    default_rng(seed)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        logits, _ = gpt(idx[:, -block_size:])
        last = np.asarray(logits.data[:, -1], dtype=np.float64)
        probs = np.stack([expected_distribution(row, **settings) for row in last])
        idx = np.concatenate([idx, draw_as_specified(probs, rng)[:, None]], axis=1)
    return idx


@pytest.mark.under_test("GPT.generate")
@pytest.mark.parametrize("settings", [dict(temperature=1.3, top_k=20, top_p=0.95), dict(temperature=0.8, top_k=6),
                                      dict(temperature=1.2, top_p=0.7), dict(temperature=1.0)], ids=str)
def test_every_new_token_is_drawn_from_its_distribution(settings):
    gpt, idx = model(), prompts(B=3, T=3, seed=6)
    n = 16  # 3 + 16 tokens: past block_size = 16, where the context is cropped
    got = gpt.generate(idx, n, rng=21, use_cache=False, **settings)
    assert_equal(got, sampled_rollout(gpt, idx, n, 21, **settings),
                 f"generate(idx (3, 3), {n}, rng=21, {settings}, use_cache=False): the tokens of every step, each drawn "
                 "with one rng.random() per row from the distribution of that step's logits (temperature, then top_k, "
                 "then top_p), the first token whose cumulative probability exceeds it")


@pytest.mark.under_test("draw_tokens")
@pytest.mark.parametrize("settings", [dict(temperature=0.8, top_k=6), dict(temperature=1.2, top_p=0.7),
                                      dict(temperature=1.0)], ids=str)
def test_drawn_tokens_follow_the_distribution(settings):
    gpt = model()
    N = 2500
    idx = np.repeat(prompts(B=1, T=2, seed=3), N, axis=0)  # one prompt, N draws of the next token
    logits, _ = gpt(idx[:1])
    expected = expected_distribution(logits.data[0, -1], **settings)
    drawn = gpt.generate(idx, 1, rng=7, use_cache=False, **settings)[:, -1]
    counts = np.bincount(drawn, minlength=FIELDS["vocab_size"])
    impossible = counts[expected == 0].sum()
    assert_equal(int(impossible), 0, f"generate(idx, 1, {settings}) x {N}: draws of tokens whose probability is 0 "
                 f"(tokens {np.flatnonzero((expected == 0) & (counts > 0)).tolist()})")
    # A token expected >= 10 times has a count about normal with std sqrt(N p (1 - p)): with at most 29 tokens,
    # a z-score above 5 happens by chance with probability < 2e-5 (and the seed is fixed). The rarer tokens
    # are counted together, against the same bound on their total.
    frequent = expected * N >= 10
    rare = (expected > 0) & ~frequent
    observed = np.append(counts[frequent], counts[rare].sum())
    mean = np.append(expected[frequent], expected[rare].sum()) * N
    z = np.abs(observed - mean) / np.sqrt(mean * (1 - mean / N) + 1)
    assert_in_range(z.max(), None, 5.0, f"generate(idx, 1, {settings}) x {N}: the largest z-score of a token's "
                    f"count against N times its probability (expected {np.round(mean, 1).tolist()}, drawn "
                    f"{observed.tolist()}; the last entry counts the tokens of probability < 10/N together)")


@pytest.mark.under_test("GPT.generate")
def test_stop_token_ends_generation():
    gpt, idx = model(), prompts(B=1, T=3, seed=4)
    rollout = greedy_rollout(gpt, idx, 12)
    new = rollout[0, 3:]
    stop = int(new[3])
    first = int(np.flatnonzero(new == stop)[0])
    got = gpt.generate(idx, 12, temperature=0.0, stop_token=stop, use_cache=False)
    assert_equal(got, rollout[:, :3 + first + 1], f"generate(idx (1, 3), 12, temperature=0, stop_token={stop}): the "
                 f"greedy tokens up to and including the first {stop}, then stop")


@pytest.mark.under_test("GPT.generate")
def test_stop_token_in_a_batch_pads_finished_rows():
    # With these seeds the rows first produce the stop token (8) at steps 0, 5 and 12: row 0 is finished
    # long before the others, and its greedy continuation is not all 8s, so the padding shows.
    gpt, idx = model(seed=1), prompts(B=3, T=3, seed=5)
    n = 14
    rollout = greedy_rollout(gpt, idx, n)
    new = rollout[:, 3:]
    stop = int(new[0, 0])
    hits = [np.flatnonzero(row == stop) for row in new]
    length = max(h[0] + 1 for h in hits) if all(len(h) for h in hits) else n
    expected = new[:, :length].copy()
    for row, h in zip(expected, hits):
        if len(h):
            row[h[0] + 1:] = stop
    got = gpt.generate(idx, n, temperature=0.0, stop_token=stop, use_cache=False)
    assert_equal(got, np.concatenate([idx, expected], axis=1),
                 f"generate(idx (3, 3), {n}, temperature=0, stop_token={stop}): each row's greedy tokens, then "
                 f"stop_token after its first {stop}; generation ends once every row has produced it")
