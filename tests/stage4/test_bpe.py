"""Exercise 4.2: byte-level BPE.

Every expected value is computed here, independently of the code under test: a naive trainer that counts
every pair again after each merge (slow, obviously right) must learn exactly the merges of the incremental
one; a naive encoder that applies the merges one after the other, in order, must give the same ids; GPT-2's
pattern and its byte-to-unicode table are written out here again; GPT-2-format files are built in the test.
"""

import itertools
import json
import random
import re
from collections import Counter

import pytest
import regex

from stage4_gpt.bpe import BPETokenizer, bytes_to_unicode, pretokenize
from stage4_gpt.tokenizer import tokenizer_from_json
from tests.helpers import assert_equal, assert_raises
from tests.stage4.student_side import type_name
from tests.student_side import listed

pytestmark = [pytest.mark.exercise("4.2"), pytest.mark.under_test("BPETokenizer.train", "merge_pair")]

EOT = "<|endoftext|>"

# GPT-2's pre-tokenisation pattern, as published with its encoder.
GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


# ---------------------------------------------------------------------- the test's own reference
def split_specials(text, special_tokens):
    """[(piece, is_special)], longest special token first where several start at the same place."""
    if not special_tokens:
        return [(text, False)]
    alternatives = "|".join(re.escape(t) for t in sorted(special_tokens, key=len, reverse=True))
    return [(p, i % 2 == 1) for i, p in enumerate(re.split(f"({alternatives})", text)) if p]


def naive_train(text, vocab_size, special_tokens=()):
    """BPE the slow way: after each merge, count every pair of every word again."""
    words = Counter()
    for piece, special in split_specials(text, special_tokens):
        if not special:
            words.update(GPT2_PATTERN.findall(piece))
    words = {tuple(bytes([b]) for b in w.encode("utf-8")): n for w, n in words.items()}
    merges = []
    while 256 + len(merges) + len(special_tokens) < vocab_size:
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))  # ties: the greater pair of byte strings
        merges.append(best)
        words = {tuple(merge_everywhere(list(word), best)): n for word, n in words.items()}
    vocab = {i: bytes([i]) for i in range(256)}
    vocab.update({256 + k: a + b for k, (a, b) in enumerate(merges)})
    vocab.update({256 + len(merges) + k: t.encode("utf-8") for k, t in enumerate(special_tokens)})
    return vocab, merges


def merge_everywhere(parts, pair):
    out, i = [], 0
    while i < len(parts):
        if tuple(parts[i:i + 2]) == pair:
            out.append(parts[i] + parts[i + 1])
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return out


def naive_encode(text, vocab, merges, special_tokens=()):
    """Each pre-token's bytes with every merge applied in turn, in merge order; then bytes -> id."""
    id_of = {}
    for i in sorted(vocab):
        id_of.setdefault(vocab[i], i)
    special_ids = {t: max(i for i, b in vocab.items() if b == t.encode("utf-8")) for t in special_tokens}
    ids = []
    for piece, special in split_specials(text, special_tokens):
        if special:
            ids.append(special_ids[piece])
            continue
        for word in GPT2_PATTERN.findall(piece):
            parts = [bytes([b]) for b in word.encode("utf-8")]
            for pair in merges:
                parts = merge_everywhere(parts, pair)
            ids += [id_of[p] for p in parts]
    return ids


def gpt2_byte_table():
    """GPT-2's byte -> character table: the visible Latin-1 characters stand for themselves, the other 68
    bytes take chr(256), chr(257), ... in byte order."""
    visible = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, n = {}, 0
    for b in range(256):
        if b in visible:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


def corpus(num_words=700, seed=0):
    """A seeded text with repeated words, contractions, numbers, code, accents, CJK, emoji and odd spacing."""
    words = ["the", "cat", "sat", "on", "mat", "The", "then", "there", "they're", "don't", "I'll", "we've",
             "héllo", "naïve", "café", "日本語", "中文", "テキスト", "🙂", "🚀🚀",
             "42", "3.14", "1000",
             "def", "f(x):", "return", "x**2", "==", "!=", "->", "lower_case", "CamelCase", "a", "aa", "aaa"]
    separators = [" "] * 12 + ["  ", "\n", "\n\n", "\t", ", ", ". ", "\n    "]
    rng = random.Random(seed)
    return "".join(rng.choice(words) + rng.choice(separators) for _ in range(num_words))


TEXT = corpus()
STRINGS = [
    "",
    "the cat sat on the mat",
    "They're here, aren't they? I'll see... we've 3 cats & 42 dogs!!",
    "héllo wörld, naïve café",
    "日本語のテキストと中文",
    "🙂🚀 emoji 👩\u200d👩\u200d👧 family",
    "   leading and trailing spaces   ",
    "tabs\tand\nnew\n\n\nlines\r\n",
    "def f(x):\n    return x**2 != 3.14\n",
    "a" * 50,
    "mixed: 日本 cat 🙂 42 ",
]


def trained(vocab_size=390, special_tokens=(EOT,), text=TEXT):
    return BPETokenizer.train(text, vocab_size, special_tokens=special_tokens)


# ---------------------------------------------------------------------- pre-tokenisation and the byte table
@pytest.mark.under_test("pretokenize")
def test_pretokenize_follows_gpt2_pattern():
    assert_equal(pretokenize("I'm here  now!!"), ["I", "'m", " here", " ", " now", "!!"],
                 "pretokenize(\"I'm here  now!!\")")
    for text in STRINGS + [TEXT[:300]]:
        assert_equal(pretokenize(text), GPT2_PATTERN.findall(text), f"pretokenize({text!r})")


@pytest.mark.under_test("bytes_to_unicode")
def test_bytes_to_unicode_is_gpt2s_table():
    assert_equal(bytes_to_unicode(), gpt2_byte_table(), "bytes_to_unicode() (byte -> character)")
    assert_equal(bytes_to_unicode()[ord(" ")], "Ġ", "bytes_to_unicode()[32], the space")


# ---------------------------------------------------------------------- training
@pytest.mark.parametrize("vocab_size, special_tokens", [(300, ()), (390, (EOT,)), (360, (EOT, "<|pad|>"))])
def test_train_learns_the_merges_of_a_naive_trainer(vocab_size, special_tokens):
    text = EOT.join([TEXT[:1500], TEXT[1500:3000], TEXT[3000:]])
    tok = BPETokenizer.train(text, vocab_size, special_tokens=special_tokens)
    vocab, merges = naive_train(text, vocab_size, special_tokens)
    what = f"BPETokenizer.train(text, {vocab_size}, special_tokens={special_tokens})"
    assert_equal(list(tok.merges), merges, f"{what}.merges (pairs of byte strings, in merge order)")
    assert_equal(dict(tok.vocab), vocab, f"{what}.vocab (id -> bytes: bytes, then merges, then special tokens)")
    assert_equal(tok.vocab_size, vocab_size, f"{what}.vocab_size")


def test_ties_go_to_the_greater_pair_of_byte_strings():
    # Pre-tokens "ab", " ab", " xy", " xy": (a, b), (x, y) and (" ", x) all occur twice.
    text = "ab ab xy xy"
    counts = Counter(p for w in GPT2_PATTERN.findall(text) for p in zip(w.encode(), w.encode()[1:]))
    top = max(counts.values())
    tied = [(bytes([a]), bytes([b])) for (a, b), n in counts.items() if n == top]
    tok = BPETokenizer.train(text, 257)
    assert_equal(list(tok.merges), [max(tied)],
                 f"the first merge of {text!r}, where the pairs {sorted(tied)} are tied with {top} occurrences")
    # b"a" < b"ab": a byte string that another one starts with is the smaller.
    text = "aab aab ab ab"
    tok = BPETokenizer.train(text, 259)
    assert_equal(list(tok.merges), naive_train(text, 259)[1], f"the three merges of {text!r}")


def test_special_tokens_take_no_part_in_training():
    # Without the special token, "z<" and ">a" would be among the frequent pairs.
    text = ("xyz" + EOT + "abc") * 40
    tok = BPETokenizer.train(text, 260, special_tokens=[EOT])
    vocab, merges = naive_train(text, 260, [EOT])
    assert_equal(list(tok.merges), merges, "the merges of a text that is mostly <|endoftext|>")
    assert_equal(tok.vocab[259], EOT.encode(), "the special token's id: after the bytes and the merges")


def test_training_stops_when_nothing_is_left_to_merge():
    tok = BPETokenizer.train("abab abab", 1000, special_tokens=[EOT])
    vocab, merges = naive_train("abab abab", 1000, [EOT])
    assert_equal(list(tok.merges), merges, "merges of 'abab abab' (stops once every word is one token)")
    assert_equal(dict(tok.vocab), vocab, "vocab of 'abab abab' with fewer merges than asked for")


def test_train_refuses_a_vocab_smaller_than_the_bytes_and_specials():
    assert_raises(ValueError, lambda: BPETokenizer.train("abc", 256, special_tokens=[EOT]),
                  "BPETokenizer.train('abc', vocab_size=256, special_tokens=['<|endoftext|>']): 257 ids are needed")


# ---------------------------------------------------------------------- encoding and decoding
@pytest.mark.under_test("BPETokenizer._encode_pretoken", "BPETokenizer.encode")
def test_encode_replays_the_merges():
    tok = trained()
    vocab, merges = naive_train(TEXT, 390, (EOT,))
    for text in STRINGS + [TEXT[:500], "x" + EOT + "y" + EOT]:
        assert_equal(tok.encode(text), naive_encode(text, vocab, merges, (EOT,)), f"encode({text!r})")


@pytest.mark.under_test("BPETokenizer.encode", "BPETokenizer.decode")
def test_encode_decode_round_trip_any_unicode():
    tok = trained()
    rng = random.Random(1)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F), (0x0, 0x1F)]
    made_up = ["".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(1, 40))) for _ in range(30)]
    for text in STRINGS + made_up + ["𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \x00\u200b\ufeff", EOT + "a" + EOT]:
        assert_equal(tok.decode(tok.encode(text)), text, f"decode(encode({text!r}))")


@pytest.mark.under_test("BPETokenizer.decode")
def test_decode_replaces_invalid_utf8():
    tok = trained()  # trained: byte b is id b
    for data in (b"\xff", "日".encode()[:2], b"ok \xe6\x97 \xc3", "🙂".encode()[1:]):
        assert_equal(tok.decode(list(data)), data.decode("utf-8", errors="replace"),
                     f"decode of the single-byte tokens of {data!r} (invalid UTF-8: U+FFFD for each broken piece)")


@pytest.mark.under_test("BPETokenizer.encode")
def test_special_tokens_are_single_ids_and_the_longest_wins():
    double = EOT + EOT
    specials = (EOT, double)
    tok = BPETokenizer.train(TEXT, 320, special_tokens=specials)
    vocab, merges = naive_train(TEXT, 320, specials)
    eot, eot2 = 256 + len(merges), 256 + len(merges) + 1
    assert_equal(tok.special_token_id(EOT), eot, "special_token_id('<|endoftext|>')")
    text = "the" + EOT + EOT + EOT + "cat" + EOT + " " + double
    expected = naive_encode("the", vocab, merges) + [eot2, eot] + naive_encode("cat", vocab, merges) + [eot] \
        + naive_encode(" ", vocab, merges) + [eot2]
    assert_equal(tok.encode(text), expected, f"encode({text!r}) with special tokens {specials} (longest first)")
    assert_equal(tok.decode(expected), text, "decode of the ids with special tokens")


@pytest.mark.under_test("BPETokenizer.__init__", "BPETokenizer.special_token_id")
def test_constructor_keeps_vocab_merges_and_gives_special_tokens_ids():
    vocab = {i: bytes([i]) for i in range(256)}
    vocab.update({256: b"th", 257: b"the", 258: b" the"})
    merges = [(b"t", b"h"), (b"th", b"e"), (b" ", b"the")]
    tok = BPETokenizer(vocab, merges, special_tokens=[EOT])
    assert_equal(dict(tok.vocab)[258], b" the", "BPETokenizer(vocab, merges).vocab[258]")
    assert_equal(list(tok.merges), merges, "BPETokenizer(vocab, merges).merges")
    assert_equal(tok.special_token_id(EOT), 259, "the id of a special token missing from vocab: the largest id + 1")
    assert_equal(tok.vocab_size, 260, "vocab_size: 256 bytes + 3 merges + 1 special token")
    for text in ["the", " the then", "bathe" + EOT + "the"]:
        expected = naive_encode(text, {**vocab, 259: EOT.encode()}, merges, (EOT,))
        assert_equal(tok.encode(text), expected, f"encode({text!r}) with merges {merges}")


@pytest.mark.under_test("BPETokenizer.encode_iterable")
def test_encode_iterable_is_lazy_and_equals_encode():
    tok = trained()
    text = "a\n\n\nb  \n  c\r\n\r\n\td" + EOT + "\n" + TEXT[:800] + "\n\n  end  \n \n"
    expected = tok.encode(text)
    assert_equal(expected, naive_encode(text, *naive_train(TEXT, 390, (EOT,)), (EOT,)), "encode of the whole text")
    lines = text.splitlines(keepends=True)
    assert_equal(listed(tok.encode_iterable(lines)), expected, "encode_iterable(the text's lines)")
    assert_equal(listed(tok.encode_iterable(iter(lines))), expected, "encode_iterable(an iterator over the lines)")
    pieces = [text[i:i + 7] for i in range(0, len(text), 7)]
    assert_equal(listed(tok.encode_iterable(pieces)), expected, "encode_iterable(pieces of 7 characters)")

    def lines_then_failure():
        yield "the cat sat\n"
        yield "on the mat\n"
        raise RuntimeError("encode_iterable read the whole stream before yielding its first ids")

    first = list(itertools.islice(tok.encode_iterable(lines_then_failure()), 3))
    assert_equal(first, naive_encode("the cat sat", *naive_train(TEXT, 390, (EOT,)))[:3],
                 "the first 3 ids of a stream whose third line fails (encode_iterable must yield as it reads)")


# ---------------------------------------------------------------------- files
@pytest.mark.under_test("BPETokenizer.to_json", "BPETokenizer.from_json")
def test_save_load_and_from_json(student_tmp):
    tok = trained(special_tokens=(EOT, "<|pad|>"))
    path = student_tmp / "tokenizer.json"
    tok.save(str(path))
    assert_equal(json.loads(path.read_text())["type"], "bpe", "the 'type' field of the saved JSON")
    for how, loaded in (("BPETokenizer.load", BPETokenizer.load(str(path))),
                        ("tokenizer_from_json", tokenizer_from_json(tok.to_json()))):
        assert_equal(type_name(loaded), "BPETokenizer", f"{how}: the type of the rebuilt tokenizer")
        assert_equal(dict(loaded.vocab), dict(tok.vocab), f"{how}: vocab")
        assert_equal(list(loaded.merges), list(tok.merges), f"{how}: merges")
        assert_equal(tuple(loaded.special_tokens), (EOT, "<|pad|>"), f"{how}: special_tokens")
        for text in STRINGS[1:4] + ["<|pad|>x" + EOT]:
            assert_equal(loaded.encode(text), tok.encode(text), f"{how}: encode({text!r})")


def write_gpt2_files(folder, vocab, merges, table):
    """vocab.json (token string -> id) and merges.txt (a #version line, then 'first second' per line)."""
    as_text = lambda b: "".join(table[x] for x in b)  # noqa: E731
    (folder / "vocab.json").write_text(json.dumps({as_text(b): i for i, b in vocab.items()}))  # UTF-8
    lines = ["#version: 0.2"] + [f"{as_text(a)} {as_text(b)}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.under_test("BPETokenizer.from_gpt2_files")
def test_from_gpt2_files(student_tmp):
    table = gpt2_byte_table()
    _, merges = naive_train(TEXT, 330)
    # GPT-2 numbers its vocab.json as here: the visible bytes first, in byte order ("!" is 0), the 68 others
    # after them, then the merges, then <|endoftext|>. So a byte's id is not the byte.
    byte_order = sorted(range(256), key=lambda b: ord(table[b]))
    vocab = {i: bytes([b]) for i, b in enumerate(byte_order)}
    vocab.update({256 + k: a + b for k, (a, b) in enumerate(merges)})
    vocab[len(vocab)] = EOT.encode()
    write_gpt2_files(student_tmp, vocab, merges, table)

    tok = BPETokenizer.from_gpt2_files(str(student_tmp / "vocab.json"), str(student_tmp / "merges.txt"))
    assert_equal(dict(tok.vocab), vocab, "from_gpt2_files: vocab (id -> bytes)")
    assert_equal(list(tok.merges), merges, "from_gpt2_files: merges (pairs of bytes)")
    assert_equal(tok.special_token_id(EOT), len(vocab) - 1, "from_gpt2_files: the id of <|endoftext|> in vocab.json")
    assert_equal(tok.vocab_size, len(vocab), "from_gpt2_files: vocab_size")
    for text in STRINGS + [TEXT[:400] + EOT + "the end"]:
        assert_equal(tok.encode(text), naive_encode(text, vocab, merges, (EOT,)), f"from_gpt2_files: encode({text!r})")
        assert_equal(tok.decode(tok.encode(text)), text, f"from_gpt2_files: decode(encode({text!r}))")
