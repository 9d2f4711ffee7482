"""Byte-level byte-pair encoding (BPE), the tokenizer of GPT-2.

Start from the 256 bytes. Count every pair of neighbouring tokens in a training text, merge the most
frequent pair into a new token, and repeat: each merge adds one token to the vocabulary. A text is then
encoded by replaying the merges, in the order they were learned, on its bytes. Frequent words end up as
one token, rare ones as a few pieces, and any string at all still encodes, down to single bytes.

    BPETokenizer.train(text, vocab_size)           learn merges from a text
    BPETokenizer.from_gpt2_files(vocab, merges)    read GPT-2's published vocab.json and merges.txt
    tok.encode(text) -> list[int], tok.decode(ids) -> str, tok.encode_iterable(lines)

Ids: the 256 bytes first, then one id per merge in merge order, then the special tokens. A tokenizer is its
``vocab`` (id -> bytes), its ``merges`` (the pairs of byte strings, in merge order) and its special tokens.

Before counting, the text is cut into pre-tokens with GPT-2's pattern (words with their leading space,
numbers, runs of punctuation, whitespace), and merges never cross a pre-token: " the" can become a token,
"the cat" cannot.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import regex  # the `re` module knows no \p{L} (any letter) or \p{N} (any digit)

from stage4_gpt.tokenizer import Tokenizer, validate_special_tokens, split_on_special_tokens

# GPT-2's pre-tokenisation (Radford et al., 2019): English contractions; an optional space and a run of
# letters; an optional space and a run of digits; an optional space and a run of other symbols; a run of
# whitespace not followed by a non-space (so that the last space goes with the next word); any whitespace.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_SPLIT = regex.compile(GPT2_SPLIT_PATTERN)

# A place where encode_iterable may cut a stream: just before a line break that a non-space follows.
SAFE_CUT = regex.compile(r"\n(?=\S)")


def pretokenize(text: str) -> list[str]:
    """``text`` cut into GPT-2's pre-tokens (no special tokens here; see ``split_on_special_tokens``).

        >>> pretokenize("I'm here  now!!")
        ['I', "'m", ' here', ' ', ' now', '!!']
    """
    # TODO 4.2: every match of the compiled GPT-2 pattern, in order
    raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, used in its files ``vocab.json`` and ``merges.txt``.

    The bytes of the visible characters ``!`` to ``~``, ``¡`` to ``¬`` and ``®`` to ``ÿ`` (188 of them) stand
    for themselves: byte b is ``chr(b)``. The other 68 bytes (controls, space, 127-160, 173) get the
    characters ``chr(256)``, ``chr(257)``, ... in increasing byte order, so the space (byte 32) is
    ``chr(256 + 32) = "Ġ"`` and the line feed (10) is ``"Ċ"``. Every token's bytes thus become a string
    without spaces or control characters, which a text file can hold.
    """
    # TODO 4.2: the three visible ranges map to themselves; the rest, in byte order, to chr(256), chr(257), ...
    raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")


def merge_pair(tokens: list, pair: tuple, merged) -> list:
    """``tokens`` with every occurrence of ``pair`` (two neighbours) replaced by ``merged``, scanning from
    the left: ``merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]``. Works on ids and on byte strings alike."""
    # TODO 4.2: one scan from the left; a merged pair's second token cannot start the next pair
    raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")


class BPETokenizer(Tokenizer):
    """A byte-level BPE tokenizer: ``vocab`` maps each id to its bytes, ``merges`` lists the merged pairs
    of byte strings in the order they were learned (earlier merges apply first), and each special token is
    one id of its own that is never merged or split.

    A special token whose UTF-8 bytes are already in ``vocab`` keeps that id (GPT-2's ``<|endoftext|>`` is
    id 50256 of its vocab.json); any other gets the next id after the largest one. ``vocab_size`` is the
    largest id plus one.

    ``decode`` joins the tokens' bytes and decodes them as UTF-8 with ``errors="replace"``: a sequence of ids
    that is not valid UTF-8 (a token can hold part of a character, and a model can stop in the middle of
    one) gives U+FFFD, the replacement character, in place of each broken piece, rather than failing.
    """

    def __init__(self, vocab: dict[int, bytes], merges: Sequence[tuple[bytes, bytes]],
                 special_tokens: Sequence[str] = ()):
        # TODO 4.2: keep vocab, merges, special_tokens; give each special token an id; build the rank of each merge and bytes -> id for encoding
        raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: Sequence[str] = ()) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        1. Cut ``text`` at the special tokens (which take no part in training) and the rest into pre-tokens;
           count how often each distinct pre-token occurs. Training works on these few thousand distinct
           "words" with their counts, never on the millions of positions of the text.
        2. Count every pair of neighbouring tokens inside each word, weighted by the word's count, and note
           which words contain each pair.
        3. Repeat: take the most frequent pair (ties: the lexicographically greater pair of byte strings,
           ``(b"b", b"a") > (b"a", b"z")``), give it the next id, and merge it in the words that contain it.
           Only those words change, so only their pairs' counts are updated: subtract the old word's pairs,
           add the new word's. Counting everything again after each merge would give the same merges,
           hundreds of times more slowly.

        Stops early, with fewer merges, when no pair is left (every word is one token). Ids: the 256 bytes,
        the merges in order, then the special tokens.
        """
        # TODO 4.2: distinct pre-tokens with counts; pair counts and pair -> words; then merge the best pair (count, then greater bytes) and update the affected words' pairs only
        raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")

    @classmethod
    def from_gpt2_files(cls, vocab_json, merges_txt,
                        special_tokens: Sequence[str] = ("<|endoftext|>",)) -> BPETokenizer:
        """Read GPT-2's ``vocab.json`` (token string -> id) and ``merges.txt`` (a ``#version`` line, then one
        merge per line: two token strings separated by a space). Token strings are written with
        ``bytes_to_unicode``'s characters: map each character back to its byte to get the token's bytes.

        GPT-2's ``<|endoftext|>`` is in its vocab.json (id 50256) and keeps that id; a special token that the
        file lacks gets the next id, as in the constructor."""
        # TODO 4.2: invert bytes_to_unicode; vocab.json to id -> bytes; each merges.txt line (skip #version and blank lines) to a pair of bytes
        raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")

    @property
    def vocab_size(self) -> int:
        """The number of ids the model needs: the largest id plus one."""
        # TODO 4.2: the largest id plus one
        raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")

    def special_token_id(self, token: str) -> int:
        """The id of the special token ``token`` (a ``KeyError`` if it is not one of them)."""
        # TODO 4.2: look it up
        raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")

    def _encode_pretoken(self, word: str) -> list[int]:
        """The ids of one pre-token: its bytes, then the merges replayed, lowest rank (earliest) first."""
        # TODO 4.2: from single bytes, repeatedly merge the neighbouring pair with the lowest rank until no pair has one; then bytes -> ids (cache per pre-token)
        raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``: special tokens first (the longest wins where they overlap), then each
        ordinary piece cut into pre-tokens, and each pre-token encoded by the merges."""
        # TODO 4.2: split_on_special_tokens, then pretokenize each ordinary piece and encode each pre-token
        raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")

    def encode_iterable(self, chunks: Iterable[str]) -> Iterator[int]:
        """The ids of the concatenation of ``chunks`` (the lines of an open file, say), produced lazily:
        memory holds about one line, not the whole text. The ids are those of ``encode("".join(chunks))``
        (special tokens must not contain a line break).

        Text is encoded up to a safe cut: just before a line break followed by a non-space character.
        GPT-2's pattern never puts that line break in a pre-token with what comes before it or after it,
        so cutting there changes no pre-token. Anywhere else a cut could: ``"a\\n\\n\\nb"`` pre-tokenises as
        ``"a", "\\n\\n", "\\n", "b"``, but line by line as ``"a", "\\n", "\\n", "\\n", "b"``.
        """
        # TODO 4.2: keep a pending buffer; after each chunk, encode and yield up to the last SAFE_CUT match, keep the rest; encode what is left at the end
        raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``: their bytes joined and decoded as UTF-8 with ``errors="replace"``.
        ``ValueError`` for an id that is not in the vocabulary."""
        # TODO 4.2: join the bytes of every id, then one decode with errors="replace"
        raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")

    def to_json(self) -> str:
        """``{"type": "bpe", "vocab": {id: token}, "merges": [[token, token], ...], "special_tokens": [...]}``
        as a JSON string, each token's bytes written with ``bytes_to_unicode``'s characters (as GPT-2's
        files do: readable, and valid JSON for any bytes)."""
        # TODO 4.2: bytes -> printable strings with bytes_to_unicode; type "bpe"
        raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        """The tokenizer that ``to_json`` described."""
        # TODO 4.2: map the strings back to bytes and call the constructor
        raise NotImplementedError("Exercise 4.2 (Byte-level BPE) is not done yet")
