"""Exercise 3.11: a Transformer that translates number words, byte by byte.

The byte vocabulary (UTF-8 bytes as ids, padding, <unk>, decoding that stops at </s>), the teacher-forcing
layout of a batch of phrase pairs, batches grouped by length, greedy decoding against a model whose answers are
known, a short training run that must learn a tiny set of pairs, and the command line: ``train`` writes a
checkpoint and a loss curve, ``ask`` translates and explains bad input, ``attention`` draws the cross-attention.
"""

import json

import numpy as np
import pytest
from num2words import num2words

from stage3_transformer.translate import (
    VOCAB,
    TranslationConfig,
    encode_pairs,
    greedy_decode,
    length_batches,
    load_checkpoint,
    main,
    split_numbers,
    train,
)
from tests.helpers import assert_equal, assert_in_range, assert_raises
# A Module of ours and the command-line launcher live beside the code under test.
from tests.stage3.student_side import ScriptedTranslator, run_translate
from tests.student_side import printed

pytestmark = pytest.mark.exercise("3.11")

PAD, START, END, UNK = 0, 1, 2, 3
OFFSET = 4  # byte b is id b + 4


def byte_ids(text, width=None):
    """The ids of the UTF-8 bytes of ``text``, padded with <pad> to ``width``."""
    ids = [b + OFFSET for b in text.encode("utf-8")]
    return ids + [PAD] * ((width or len(ids)) - len(ids))


# ---------------------------------------------------------------------- bytes and ids
@pytest.mark.under_test("ByteVocabulary.encode_texts")
def test_encode_texts_gives_the_ids_of_the_utf8_bytes_padded():
    texts = ["vingt", "dreiundzwanzig", "zwölf", "", "ß"]  # ö and ß are two bytes each
    width = max(len(t.encode("utf-8")) for t in texts)
    got = VOCAB.encode_texts(texts)
    assert_equal(np.asarray(got).dtype.kind, "i", "VOCAB.encode_texts(...): the dtype kind (integer ids)")
    assert_equal(got, np.array([byte_ids(t, width) for t in texts]),
                 f"VOCAB.encode_texts({texts}) (byte b is id b + 4; <pad> = 0 after each text, up to the longest "
                 f"text's {width} bytes)")
    assert_equal(VOCAB.encode_texts(["un", "a"], width=4), np.array([byte_ids("un", 4), byte_ids("a", 4)]),
                 "VOCAB.encode_texts(['un', 'a'], width=4)")
    assert_equal(len(VOCAB), 260, "len(VOCAB): 4 special tokens and 256 bytes")


@pytest.mark.under_test("ByteVocabulary.encode_texts")
def test_encode_texts_marks_bytes_outside_the_alphabet_and_refuses_long_texts():
    got = VOCAB.encode_texts(["abc", "cab!"], alphabet=b"abc")
    assert_equal(got, np.array([byte_ids("abc", 4), byte_ids("cab", 4)[:3] + [UNK]]),
                 "VOCAB.encode_texts(['abc', 'cab!'], alphabet=b'abc') ('!' is not in the alphabet: <unk> = 3)")
    zero_byte = VOCAB.encode_texts(["a\0", "a"])
    assert_equal(zero_byte, np.array([[ord("a") + OFFSET, OFFSET], [ord("a") + OFFSET, PAD]]),
                 "VOCAB.encode_texts(['a\\0', 'a']) (the byte 0 of the first text is id 4; padding is <pad> = 0)")
    assert_raises(ValueError, lambda: VOCAB.encode_texts(["trois cent douze"], width=8),
                  "VOCAB.encode_texts(['trois cent douze'], width=8): 16 bytes, more than 8")


@pytest.mark.under_test("ByteVocabulary.decode")
def test_decode_reads_bytes_up_to_the_end_token():
    ids = byte_ids("dreiundzwanzig") + [END] + byte_ids("tail")
    assert_equal(VOCAB.decode(np.array(ids)), "dreiundzwanzig", "VOCAB.decode(ids of 'dreiundzwanzig', </s>, more)")
    assert_equal(VOCAB.decode(np.array(byte_ids("zwölf"))), "zwölf",
                 "VOCAB.decode of the bytes of 'zwölf' (ö is two bytes, decoded together as UTF-8)")
    assert_equal(VOCAB.decode(np.array([START] + byte_ids("ab") + [PAD])), "<s>ab<pad>",
                 "VOCAB.decode([<s>, a, b, <pad>]) (special tokens are shown by their names)")
    broken = byte_ids("zwö")[:-1] + byte_ids("x")  # the first byte of ö without its second
    assert_equal(VOCAB.decode(np.array(broken)), "zw\ufffdx",
                 "VOCAB.decode of 'zw', half of 'ö', 'x' (a broken UTF-8 sequence decodes as U+FFFD)")


# ---------------------------------------------------------------------- batches
@pytest.mark.under_test("encode_pairs")
def test_encode_pairs_lays_out_source_decoder_input_and_target():
    sources = ["twenty-three", "twelve", "zero"]
    targets = ["dreiundzwanzig", "zwölf", "null"]
    batch = encode_pairs(sources, targets)
    S = max(len(s.encode("utf-8")) for s in sources)
    T = max(len(t.encode("utf-8")) for t in targets)
    expected = {
        "source": [byte_ids(s, S) for s in sources],
        "decoder_input": [[START] + byte_ids(t, T) for t in targets],
        "target": [byte_ids(t) + [END] + [PAD] * (T - len(t.encode("utf-8"))) for t in targets],
    }
    for name, rows in expected.items():
        got = getattr(batch, name)
        assert_equal(np.asarray(got).dtype.kind, "i", f"encode_pairs(...).{name}: the dtype kind (integer ids)")
        assert_equal(got, np.array(rows), f"encode_pairs({sources}, {targets}).{name} (padded to the longest of the "
                     f"batch: the source to {S} bytes, the decoder input and the target to {T} + 1)")


@pytest.mark.under_test("length_batches")
def test_length_batches_groups_similar_lengths_and_visits_every_pair_once():
    lengths = np.random.default_rng(50).integers(3, 40, size=103)
    batches = length_batches(lengths, 10, 7)
    rng = np.random.default_rng(7)
    order = rng.permutation(103)
    order = order[np.argsort(lengths[order], kind="stable")]
    chunks = [order[i:i + 10] for i in range(0, 103, 10)]
    expected = [chunks[i] for i in rng.permutation(len(chunks))]
    assert_equal(len(batches), 11, "length_batches(103 lengths, batch_size=10): the number of batches")
    for i, (got, want) in enumerate(zip(batches, expected)):
        assert_equal(np.asarray(got), want, f"length_batches(lengths, 10, rng=7): batch {i} (a permutation, stable-"
                     "sorted by length, cut into chunks of 10; the chunks in the order of a second permutation)")
    again = length_batches(lengths, 10, np.random.default_rng(7))
    for i, (a, b) in enumerate(zip(again, batches)):
        assert_equal(np.asarray(a), np.asarray(b), f"length_batches with rng=np.random.default_rng(7) and rng=7: batch {i}")


# ---------------------------------------------------------------------- greedy decoding
def reversed_words(phrase):
    return " ".join(reversed(phrase.split())) + "é"  # é: two bytes


@pytest.mark.under_test("greedy_decode")
def test_greedy_decode_of_a_model_with_known_answers():
    phrases = ["trois cent douze", "un", "deux mille", "quatre-vingts"]
    model = ScriptedTranslator(reversed_words, max_bytes=16)
    model.train()
    got = greedy_decode(model, phrases)
    # at most max_bytes + 1 = 17 ids are written, </s> included: a longer answer is cut after 17 bytes
    expected = [reversed_words(p).encode("utf-8")[:17].decode("utf-8", errors="replace") for p in phrases]
    assert_equal(got, expected, f"greedy_decode of {phrases} with a model that writes the words in reverse order, "
                 "then 'é', then </s> (the most likely id of the LAST position at each step, at most max_bytes + 1 "
                 "= 17 ids, the text before </s>)")
    assert_equal([c.shape for c in model.calls], [(4, t) for t in range(1, 18)],
                 "greedy_decode of 4 phrases (max_bytes=16): the shapes of the decoder inputs, call after call")
    assert_equal(model.calls[0], np.full((4, 1), START), "greedy_decode: the first decoder input (<s> in every row)")
    last = model.calls[-1]
    after_end = np.cumsum(last == END, axis=1) > 0
    after_end[:, 1:], after_end[:, 0] = after_end[:, :-1].copy(), False  # strictly after the first </s>
    assert_equal(np.where(after_end, last, PAD), np.full(last.shape, PAD),
                 "greedy_decode: ids fed back after a row's </s> (the rows already complete receive <pad>)")
    assert_equal(model.training, False, "model.training after greedy_decode (it decodes in eval mode)")


@pytest.mark.under_test("greedy_decode")
def test_greedy_decode_stops_when_every_phrase_is_complete():
    model = ScriptedTranslator(lambda phrase: phrase[:3])
    assert_equal(greedy_decode(model, ["dix", "onze", "zwölf"]), ["dix", "onz", "zwö"],
                 "greedy_decode with a model that writes the first three characters then </s>")
    assert_equal(len(model.calls), 5, "greedy_decode: calls of decode when every answer is complete after 5 ids "
                 "('zwö' is 4 bytes, then </s>; stop as soon as every row has written </s>)")
    model = ScriptedTranslator(lambda phrase: phrase, max_bytes=30)
    assert_equal(greedy_decode(model, ["abcd"], max_bytes=1), ["ab"],
                 "greedy_decode(model, ['abcd'], max_bytes=1) with a model that copies its input (2 ids at most)")


# ---------------------------------------------------------------------- training
TINY = dict(numbers=100, held_out=10, d_model=32, nhead=2, layers=1, ff=64, batch=32, lr=3e-3, warmup=30,
            max_bytes=32, eval_every=100, eval_numbers=10)


@pytest.mark.under_test("greedy_decode", "encode_pairs", "length_batches")
@pytest.mark.integration
def test_a_short_run_learns_a_tiny_set_of_pairs():
    # English -> French for 0 ... 99, 90 pairs to train on. With seeds 0-2 the reference ends 300 steps at a loss
    # of 0.05-0.07 (ln 260 = 5.6 before training) and translates 92-98% of its training pairs exactly; a model
    # that learned only the frequent bytes gets none of them right.
    config = TranslationConfig(pair="en-fr", steps=300, seed=0, **TINY)
    lines = []
    model, history = train(config, log=lines.append)
    assert_equal(history["step"], [100, 200, 300], "train(..., steps=300, eval_every=100): history['step']")
    assert_in_range(history["loss"][-1], None, 0.3, "en -> fr, 0 ... 99, 300 steps: the mean training loss of the "
                    f"last 100 steps (by 100 steps: {', '.join(f'{v:.3f}' for v in history['loss'])})")
    trained_on = split_numbers(100, 10)[0]
    sources = [num2words(int(n), lang="en") for n in trained_on]
    targets = [num2words(int(n), lang="fr") for n in trained_on]
    right = np.mean([got == want for got, want in zip(greedy_decode(model, sources), targets)])
    assert_in_range(right, 0.7, None, "en -> fr, 0 ... 99, 300 steps: the fraction of the 90 training pairs that "
                    "greedy_decode translates exactly")


# ---------------------------------------------------------------------- the command line
@pytest.mark.under_test("greedy_decode", "encode_pairs", "length_batches")
@pytest.mark.integration
def test_command_line_train_ask_and_attention(student_tmp):
    checkpoint = student_tmp / "tiny.npz"
    settings = {key: str(value) for key, value in TINY.items() if key not in ("eval_every", "eval_numbers")}
    args = ["train", "--steps", "40", "--eval-every", "20", "--eval-numbers", "5", "--checkpoint", str(checkpoint)]
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", value]
    status, out = printed(main, args)
    assert_equal(status, 0, "main(['train', ...]): the exit status")
    assert_equal(checkpoint.exists(), True, f"train --checkpoint {checkpoint}: the file exists afterwards")
    assert_equal((student_tmp / "tiny-loss.png").exists(), True, f"train --checkpoint {checkpoint}: the loss curve "
                 f"tiny-loss.png beside it; the output was:\n{out}")
    saved = json.loads(str(checkpoint.load_npz()["config"]))
    assert_equal((saved["pair"], saved["numbers"], saved["steps"]), ("en-fr", 100, 40),
                 "the checkpoint's config (JSON): pair, numbers and steps as given on the command line")

    model, _ = load_checkpoint(str(checkpoint))
    held_out = set(split_numbers(100, 10)[1].tolist())
    numbers = [23, 71, 80, 5]
    answers = greedy_decode(model, [num2words(n, lang="en") for n in numbers])
    expected = []
    for n, got in zip(numbers, answers):
        right, seen = num2words(n, lang="fr"), "held out" if n in held_out else "trained on"
        expected.append(f"Model > {got} ✓ ({n}, {seen})" if got == right else f"Model > {got} ✗ ({n}, {seen}: {right})")
    typed = ["twenty-three", "", "seventy-one", "Ω-seven", "one " * 20, "  Eighty ", "five"]
    run = run_translate("ask", "--checkpoint", str(checkpoint), stdin="\n".join(typed) + "\n", cwd=str(student_tmp))
    transcript = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert_equal(run.returncode, 0, f"ask with {typed} then end of input: the exit status; {transcript}")
    assert_equal("Traceback" in run.stderr, False, f"ask: a traceback on stderr; {transcript}")
    replies = run.stdout.split("Phrase > ")[1:]
    assert_equal(len(replies), len(typed) + 1, f"ask: the number of prompts 'Phrase > ' for {len(typed)} lines then "
                 f"end of input (the prompt goes on after bad input); {transcript}")
    replies = [reply.rstrip("\n") for reply in replies[:-1]]
    for line, reply in zip(typed, replies):
        assert_equal(reply.count("\n"), 0, f"ask: the reply to {line!r} must be one line; {transcript}")
    assert_equal([replies[i] for i in (0, 2, 5, 6)], expected,
                 f"ask: the replies to {[typed[i] for i in (0, 2, 5, 6)]} (the model's translation, ✓ or ✗ and the "
                 "right one, the number, and whether it was held out)")
    for i in (1, 3, 4):
        assert_equal(replies[i].startswith("Model >"), False, f"ask: the reply to the bad input {typed[i]!r} "
                     f"({replies[i]!r}) must explain the problem, not translate; {transcript}")

    picture = student_tmp / "flip.png"
    status, out = printed(main, ["attention", "twenty-three", "--checkpoint", str(checkpoint), "--out", str(picture)])
    assert_equal(status, 0, f"main(['attention', 'twenty-three', ...]): the exit status; it printed:\n{out}")
    assert_equal(picture.exists(), True, f"attention --out {picture}: the heatmap PNG exists; it printed:\n{out}")
    translation = greedy_decode(model, ["twenty-three"])[0]
    assert_equal(f"-> {translation!r}" in out, True,
                 f"attention 'twenty-three': the output names the translation {translation!r}; it printed:\n{out}")

    missing = student_tmp / "missing.npz"
    status, out = printed(main, ["ask", "--checkpoint", str(missing)])
    assert_equal(status, 1, "main(['ask', '--checkpoint', a missing file]): the exit status")
    assert_equal("python -m stage3_transformer.translate train" in out, True,
                 f"ask with a missing checkpoint should say how to train one; it printed {out!r}")
