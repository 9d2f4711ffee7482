"""Tokenizers: text to a list of integer ids, and back.

A language model reads and writes integers. A tokenizer decides what each integer stands for:

    CharTokenizer    one id per distinct character of a training text (Karpathy's char-level models)
    ByteTokenizer    one id per UTF-8 byte, 0-255: any text encodes, nothing is unknown
    BPETokenizer     (in ``bpe.py``) byte pairs merged into longer tokens, as GPT-2 does

Every tokenizer has the same surface: ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``vocab_size``
(the number of ids, which is the size of the model's embedding table), ``special_tokens``,
``special_token_id(token)``, ``to_json()``, ``save(path)`` and ``Class.load(path)``. A training checkpoint
stores ``tokenizer.to_json()``, and ``tokenizer_from_json`` rebuilds whichever kind it was.

Special tokens are strings such as ``<|endoftext|>`` that stand for one id of their own, outside the
ordinary vocabulary. They mark where a document ends (GPT-2 puts ``<|endoftext|>`` between documents) or,
for short items such as names, where one begins and ends (``<|bos|>emma<|eos|>``). In a text they are
found first, as whole strings, before anything else is looked at: ``split_on_special_tokens`` below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

ENDOFTEXT = "<|endoftext|>"  # GPT-2's separator between documents
BOS = "<|bos|>"  # beginning of a sequence, for short items such as names
EOS = "<|eos|>"  # end of a sequence


def split_on_special_tokens(text: str, special_tokens: Sequence[str]) -> list[tuple[str, bool]]:
    """Cut ``text`` at every occurrence of a special token: ``[(piece, is_special), ...]`` in order.

    The text is read from left to right; where several special tokens start at the same position, the
    longest one wins (with ``<|a|>`` and ``<|a|><|b|>`` both special, ``<|a|><|b|>`` is one token, not two).
    Ordinary pieces lie between the special ones; empty ordinary pieces are left out, so
    ``"".join(piece for piece, _ in result) == text``.

        >>> split_on_special_tokens("hi<|endoftext|>yo", ["<|endoftext|>"])
        [('hi', False), ('<|endoftext|>', True), ('yo', False)]
    """
    if not special_tokens:
        return [(text, False)] if text else []
    # An alternation tries its branches in the order written: longest first makes the longest token win.
    longest_first = sorted(set(special_tokens), key=len, reverse=True)
    pattern = "(" + "|".join(re.escape(token) for token in longest_first) + ")"
    # With one capturing group, re.split returns ordinary, special, ordinary, special, ..., ordinary.
    parts = re.split(pattern, text)
    return [(part, i % 2 == 1) for i, part in enumerate(parts) if part]


def validate_special_tokens(special_tokens: Iterable[str]) -> tuple[str, ...]:
    """The special tokens as a tuple, refusing an empty string or a repeated token."""
    special_tokens = tuple(special_tokens)
    if any(not isinstance(token, str) or not token for token in special_tokens):
        raise ValueError(f"special tokens must be non-empty strings, got {special_tokens!r}")
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"special tokens must be distinct, got {special_tokens!r}")
    return special_tokens


class Tokenizer:
    """What every tokenizer shares: saving to and loading from a JSON file. A subclass defines
    ``to_json() -> str`` and the classmethod ``from_json(text)``."""

    special_tokens: tuple[str, ...] = ()

    def to_json(self) -> str:
        raise NotImplementedError

    @classmethod
    def from_json(cls, text: str):
        raise NotImplementedError

    def save(self, path) -> None:
        """Write ``to_json()`` to ``path`` (UTF-8)."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path):
        """The tokenizer saved in ``path`` by ``save``."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


class CharTokenizer(Tokenizer):
    """One id per character: the ordinary characters ``chars`` get ids ``0 .. len(chars) - 1`` in their
    order, then each special token one more id in its order. ``vocab_size = len(chars) + len(special_tokens)``.

    Build one from a training text with ``CharTokenizer.fit(text)``: ``chars`` are the distinct characters
    of the text (outside its special tokens), sorted. A character that is not in ``chars`` cannot be encoded:
    ``encode`` raises a ``ValueError`` naming it and its position.

        >>> tok = CharTokenizer.fit("hello")          # chars e, h, l, o; <|endoftext|> is id 4
        >>> tok.encode("hole<|endoftext|>")
        [1, 3, 2, 0, 4]
    """

    def __init__(self, chars: Sequence[str], special_tokens: Sequence[str] = (ENDOFTEXT,)):
        # BEGIN SOLUTION 4.1: keep chars and special tokens as tuples; build both tables, text -> id (ordinary and special) and id -> text
        chars = tuple(chars)
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct single characters")
        self.chars = chars
        self.special_tokens = validate_special_tokens(special_tokens)
        self.char_to_id = {c: i for i, c in enumerate(chars)}
        self.special_to_id = {token: len(chars) + i for i, token in enumerate(self.special_tokens)}
        self.id_to_text = list(chars) + list(self.special_tokens)
        # END SOLUTION

    @classmethod
    def fit(cls, text: str, special_tokens: Sequence[str] = (ENDOFTEXT,)) -> CharTokenizer:
        """The tokenizer of ``text``: its distinct characters, sorted, then ``special_tokens``. The characters
        of the special tokens' own occurrences in ``text`` do not count (they are not ordinary text)."""
        # BEGIN SOLUTION 4.1: the sorted set of the characters of the ordinary pieces only
        ordinary = set()
        for piece, is_special in split_on_special_tokens(text, special_tokens):
            if not is_special:
                ordinary.update(piece)
        return cls(sorted(ordinary), special_tokens)
        # END SOLUTION

    @property
    def vocab_size(self) -> int:
        """The number of ids: ordinary characters plus special tokens."""
        # BEGIN SOLUTION 4.1: ordinary plus special
        return len(self.chars) + len(self.special_tokens)
        # END SOLUTION

    def special_token_id(self, token: str) -> int:
        """The id of the special token ``token`` (a ``KeyError`` if it is not one of them)."""
        # BEGIN SOLUTION 4.1: look it up
        return self.special_to_id[token]
        # END SOLUTION

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``: one per character, one per special token. ``ValueError`` for a character
        that is not in the vocabulary, with the character and its position in ``text``."""
        # BEGIN SOLUTION 4.1: special tokens first (split_on_special_tokens), then one lookup per character; a ValueError naming an unknown character and its position
        ids: list[int] = []
        position = 0
        for piece, is_special in split_on_special_tokens(text, self.special_tokens):
            if is_special:
                ids.append(self.special_to_id[piece])
            else:
                try:
                    ids.extend([self.char_to_id[c] for c in piece])
                except KeyError as error:
                    char = error.args[0]
                    where = position + piece.index(char)
                    raise ValueError(f"character {char!r} (U+{ord(char):04X}) at position {where} is not in the "
                                     f"vocabulary of this CharTokenizer ({len(self.chars)} characters)") from None
            position += len(piece)
        return ids
        # END SOLUTION

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``: each id's character or special token, joined. ``ValueError`` for an id
        outside ``[0, vocab_size)``."""
        # BEGIN SOLUTION 4.1: look each id back up and join; a ValueError naming an id out of range
        pieces = []
        for i in ids:
            if not 0 <= i < len(self.id_to_text):
                raise ValueError(f"id {i} is not in [0, {len(self.id_to_text)}), the ids of this CharTokenizer")
            pieces.append(self.id_to_text[i])
        return "".join(pieces)
        # END SOLUTION

    def to_json(self) -> str:
        """``{"type": "char", "chars": [...], "special_tokens": [...]}`` as a JSON string."""
        # BEGIN SOLUTION 4.1: everything the constructor needs, with type "char"
        return json.dumps({"type": "char", "chars": list(self.chars), "special_tokens": list(self.special_tokens)},
                          ensure_ascii=False)
        # END SOLUTION

    @classmethod
    def from_json(cls, text: str) -> CharTokenizer:
        """The tokenizer that ``to_json`` described."""
        # BEGIN SOLUTION 4.1: parse and call the constructor
        data = json.loads(text)
        return cls(data["chars"], data["special_tokens"])
        # END SOLUTION


class ByteTokenizer(Tokenizer):
    """One id per byte of the text's UTF-8 encoding: ids 0-255 are the bytes, then each special token one
    more id in its order. ``vocab_size = 256 + len(special_tokens)``. Every string encodes; nothing is
    unknown. The price: a character outside ASCII takes 2 to 4 ids (``"é"`` is ``[195, 169]``).

    ``decode`` joins the bytes and decodes them as UTF-8 with ``errors="replace"``: a sequence of ids that
    is not valid UTF-8 (a model can produce one, say a lone 195) decodes to U+FFFD, the replacement
    character, in place of each broken piece, rather than failing.
    """

    def __init__(self, special_tokens: Sequence[str] = (ENDOFTEXT,)):
        # BEGIN SOLUTION 4.1: keep the special tokens (a tuple) and their ids from 256 on
        self.special_tokens = validate_special_tokens(special_tokens)
        self.special_to_id = {token: 256 + i for i, token in enumerate(self.special_tokens)}
        # END SOLUTION

    @property
    def vocab_size(self) -> int:
        """256 bytes plus the special tokens."""
        # BEGIN SOLUTION 4.1: the bytes plus the special tokens
        return 256 + len(self.special_tokens)
        # END SOLUTION

    def special_token_id(self, token: str) -> int:
        """The id of the special token ``token`` (a ``KeyError`` if it is not one of them)."""
        # BEGIN SOLUTION 4.1: look it up
        return self.special_to_id[token]
        # END SOLUTION

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text`` as ids, with each special token as its own id."""
        # BEGIN SOLUTION 4.1: special tokens first; every other piece is its UTF-8 bytes
        ids: list[int] = []
        for piece, is_special in split_on_special_tokens(text, self.special_tokens):
            ids.extend([self.special_to_id[piece]] if is_special else piece.encode("utf-8"))
        return ids
        # END SOLUTION

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``: runs of byte ids decoded as UTF-8 with ``errors="replace"``, special ids as
        their token. ``ValueError`` for an id outside ``[0, vocab_size)``."""
        # BEGIN SOLUTION 4.1: collect byte runs and decode each with errors="replace"; a special id ends the run before it and adds its token
        pieces: list[str] = []
        run = bytearray()
        for i in ids:
            if 0 <= i < 256:
                run.append(i)
            elif 256 <= i < self.vocab_size:
                # A special token ends the byte run: its bytes are decoded on their own, not with the token.
                pieces.append(run.decode("utf-8", errors="replace"))
                run.clear()
                pieces.append(self.special_tokens[i - 256])
            else:
                raise ValueError(f"id {i} is not in [0, {self.vocab_size}), the ids of this ByteTokenizer")
        pieces.append(run.decode("utf-8", errors="replace"))
        return "".join(pieces)
        # END SOLUTION

    def to_json(self) -> str:
        """``{"type": "byte", "special_tokens": [...]}`` as a JSON string."""
        # BEGIN SOLUTION 4.1: the special tokens, with type "byte"
        return json.dumps({"type": "byte", "special_tokens": list(self.special_tokens)}, ensure_ascii=False)
        # END SOLUTION

    @classmethod
    def from_json(cls, text: str) -> ByteTokenizer:
        """The tokenizer that ``to_json`` described."""
        # BEGIN SOLUTION 4.1: parse and call the constructor
        return cls(json.loads(text)["special_tokens"])
        # END SOLUTION


def tokenizer_from_json(text: str):
    """Rebuild a tokenizer from ``to_json()``, whichever kind it is: the JSON's ``"type"`` says
    (``"char"``, ``"byte"`` or ``"bpe"``)."""
    kind = json.loads(text).get("type")
    if kind == "char":
        return CharTokenizer.from_json(text)
    if kind == "byte":
        return ByteTokenizer.from_json(text)
    if kind == "bpe":
        from stage4_gpt.bpe import BPETokenizer  # here, not at the top: bpe.py imports this module

        return BPETokenizer.from_json(text)
    raise ValueError(f"unknown tokenizer type {kind!r}; expected 'char', 'byte' or 'bpe'")


def load_tokenizer(path):
    """The tokenizer saved in ``path`` by any tokenizer's ``save``."""
    return tokenizer_from_json(Path(path).read_text(encoding="utf-8"))
