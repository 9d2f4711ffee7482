"""Exercise 4.1: the character and byte tokenizers. The expected ids are built here from their definitions:
a character's id is its place among the sorted distinct characters; a byte's id is the byte."""

import json

import pytest

from stage4_gpt.tokenizer import BOS, ENDOFTEXT, EOS, ByteTokenizer, CharTokenizer, tokenizer_from_json
from tests.helpers import assert_equal, assert_raises
from tests.stage4.student_side import type_name, type_of

pytestmark = pytest.mark.exercise("4.1")

TEXT = "hello world\nthe cat sat on the mat: café, 日本語 🙂!\n"
UNICODE_STRINGS = ["", "plain ascii", "héllo wörld", "日本語のテキスト", "🙂🚀👩\u200d👩\u200d👧",
                   "mixed 日本 cat 🙂 42\t\n", "\x00\x7f\u200b\ufeff", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]


# ---------------------------------------------------------------------- CharTokenizer
@pytest.mark.under_test("CharTokenizer.fit", "CharTokenizer.__init__")
def test_char_fit_ids_are_sorted_characters_then_special_tokens():
    chars = sorted(set(TEXT))
    tok = CharTokenizer.fit(TEXT)
    assert_equal(tok.vocab_size, len(chars) + 1, "CharTokenizer.fit(text).vocab_size: distinct characters + 1 special")
    assert_equal(tuple(tok.special_tokens), (ENDOFTEXT,), "CharTokenizer.fit(text).special_tokens (the default)")
    assert_equal(tok.encode(TEXT), [chars.index(c) for c in TEXT], f"encode({TEXT!r}): each character's sorted rank")
    assert_equal(tok.special_token_id(ENDOFTEXT), len(chars), "special_token_id('<|endoftext|>'): after the characters")
    text = "cat" + ENDOFTEXT + "hat"
    expected = [chars.index(c) for c in "cat"] + [len(chars)] + [chars.index(c) for c in "hat"]
    assert_equal(tok.encode(text), expected, f"encode({text!r})")


@pytest.mark.under_test("CharTokenizer.fit")
def test_char_fit_leaves_out_the_characters_of_special_tokens():
    text = "abba" + ENDOFTEXT + "baab" + ENDOFTEXT
    tok = CharTokenizer.fit(text)
    assert_equal(tok.vocab_size, 3, f"CharTokenizer.fit({text!r}).vocab_size: a, b and <|endoftext|>")
    assert_equal(tok.encode(text), [0, 1, 1, 0, 2, 1, 0, 0, 1, 2], f"encode({text!r})")


@pytest.mark.under_test("CharTokenizer.decode", "CharTokenizer.encode")
def test_char_decode_round_trip():
    text = "".join(UNICODE_STRINGS) + "café"
    tok = CharTokenizer.fit(text)
    for s in UNICODE_STRINGS + [ENDOFTEXT + "café" + ENDOFTEXT + ENDOFTEXT]:
        assert_equal(tok.decode(tok.encode(s)), s, f"decode(encode({s!r}))")


@pytest.mark.under_test("CharTokenizer.encode")
def test_char_unknown_character_names_it_and_its_position():
    tok = CharTokenizer.fit("abcdefgh ")
    text = "bad face" + ENDOFTEXT + "bag Ω"
    position = text.index("Ω")
    for part in ("Ω", str(position)):
        assert_raises(ValueError, lambda: tok.encode(text),
                      f"encode({text!r}) with 'Ω' not in the vocabulary: the error names the character and its "
                      f"position {position}", match=part)


@pytest.mark.under_test("CharTokenizer.decode")
def test_char_decode_refuses_an_unknown_id():
    tok = CharTokenizer.fit("abc")
    assert_raises(ValueError, lambda: tok.decode([0, 4]), "decode([0, 4]) with ids 0-3", match="4")
    assert_raises(ValueError, lambda: tok.decode([-1]), "decode([-1])", match="-1")


@pytest.mark.under_test("CharTokenizer.special_token_id", "CharTokenizer.__init__", "CharTokenizer.encode")
def test_char_names_with_bos_and_eos():
    names = ["emma", "olivia", "ava", "isabella", "sophia"]
    tok = CharTokenizer.fit("".join(names), special_tokens=(BOS, EOS))
    chars = sorted(set("".join(names)))
    bos, eos = len(chars), len(chars) + 1
    assert_equal((tok.special_token_id(BOS), tok.special_token_id(EOS)), (bos, eos), "ids of <|bos|> and <|eos|>")
    text = "".join(BOS + name + EOS for name in names[:2])
    expected = [bos, *(chars.index(c) for c in "emma"), eos, bos, *(chars.index(c) for c in "olivia"), eos]
    assert_equal(tok.encode(text), expected, f"encode({text!r})")
    assert_equal(tok.decode(expected), text, "decode of two names with <|bos|> and <|eos|>")


@pytest.mark.under_test("CharTokenizer.encode")
def test_char_longest_special_token_wins():
    short, long = "<|a|>", "<|a|><|b|>"
    tok = CharTokenizer.fit("xy", special_tokens=(short, long))
    text = "x" + long + short + "y" + long
    assert_equal(tok.encode(text), [0, 3, 2, 1, 3], f"encode({text!r}) with special tokens {short!r} (id 2) and "
                 f"{long!r} (id 3): where both match, the longest wins")


# ---------------------------------------------------------------------- ByteTokenizer
@pytest.mark.under_test("ByteTokenizer.encode", "ByteTokenizer.decode")
def test_byte_ids_are_utf8_bytes():
    tok = ByteTokenizer()
    assert_equal(tok.vocab_size, 257, "ByteTokenizer().vocab_size: 256 bytes + <|endoftext|>")
    for s in UNICODE_STRINGS:
        assert_equal(tok.encode(s), list(s.encode("utf-8")), f"ByteTokenizer().encode({s!r})")
        assert_equal(tok.decode(tok.encode(s)), s, f"decode(encode({s!r}))")


@pytest.mark.under_test("ByteTokenizer.special_token_id", "ByteTokenizer.__init__", "ByteTokenizer.encode")
def test_byte_special_tokens():
    tok = ByteTokenizer(special_tokens=(ENDOFTEXT, BOS))
    assert_equal(tok.vocab_size, 258, "ByteTokenizer with 2 special tokens: vocab_size")
    assert_equal(tok.special_token_id(BOS), 257, "special_token_id('<|bos|>'), the second special token")
    text = BOS + "é" + ENDOFTEXT
    assert_equal(tok.encode(text), [257, *"é".encode(), 256], f"encode({text!r})")
    assert_equal(tok.decode([257, *"é".encode(), 256]), text, "decode of <|bos|>, é, <|endoftext|>")


@pytest.mark.under_test("ByteTokenizer.decode")
def test_byte_decode_replaces_invalid_utf8():
    tok = ByteTokenizer()
    for data in (b"\xff", "日".encode()[:2], b"ok \xe6\x97 \xc3", "🙂".encode()[1:]):
        assert_equal(tok.decode(list(data)), data.decode("utf-8", errors="replace"),
                     f"ByteTokenizer().decode({list(data)}) (invalid UTF-8: U+FFFD for each broken piece)")
    # A special token splits the bytes around it: they are not one character.
    ids = [*"é".encode()[:1], 256, *"é".encode()[1:]]
    expected = b"\xc3".decode(errors="replace") + ENDOFTEXT + b"\xa9".decode(errors="replace")
    assert_equal(tok.decode(ids), expected, f"decode({ids}): the halves of 'é' on either side of <|endoftext|>")
    assert_raises(ValueError, lambda: tok.decode([65, 257]), "ByteTokenizer().decode([65, 257]) with ids 0-256",
                  match="257")


# ---------------------------------------------------------------------- files
@pytest.mark.parametrize("kind", ["char", "byte"])
@pytest.mark.under_test("CharTokenizer.to_json", "CharTokenizer.from_json", "ByteTokenizer.to_json", "ByteTokenizer.from_json")
def test_save_load_and_from_json(kind, student_tmp):
    specials = (ENDOFTEXT, BOS, EOS)
    tok = CharTokenizer.fit(TEXT, special_tokens=specials) if kind == "char" else ByteTokenizer(specials)
    cls, name = type_of(tok), type_name(tok)
    path = student_tmp / "tokenizer.json"
    tok.save(str(path))
    saved = json.loads(path.read_text())
    assert_equal(saved["type"], kind, f"the 'type' field of a saved {name}")
    text = BOS + TEXT + EOS + ENDOFTEXT
    rebuilt = ((f"{name}.load", cls.load(str(path))), ("tokenizer_from_json", tokenizer_from_json(tok.to_json())))
    for how, loaded in rebuilt:
        assert_equal(type_name(loaded), name, f"{how}: the type of the rebuilt tokenizer")
        assert_equal(loaded.vocab_size, tok.vocab_size, f"{how}: vocab_size")
        assert_equal(tuple(loaded.special_tokens), specials, f"{how}: special_tokens")
        assert_equal(loaded.encode(text), tok.encode(text), f"{how}: encode({text!r})")
        assert_equal(loaded.decode(tok.encode(text)), text, f"{how}: decode")
