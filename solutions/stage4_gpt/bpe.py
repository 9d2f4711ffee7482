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
    # BEGIN SOLUTION 4.2: every match of the compiled GPT-2 pattern, in order
    return GPT2_SPLIT.findall(text)
    # END SOLUTION


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, used in its files ``vocab.json`` and ``merges.txt``.

    The bytes of the visible characters ``!`` to ``~``, ``¡`` to ``¬`` and ``®`` to ``ÿ`` (188 of them) stand
    for themselves: byte b is ``chr(b)``. The other 68 bytes (controls, space, 127-160, 173) get the
    characters ``chr(256)``, ``chr(257)``, ... in increasing byte order, so the space (byte 32) is
    ``chr(256 + 32) = "Ġ"`` and the line feed (10) is ``"Ċ"``. Every token's bytes thus become a string
    without spaces or control characters, which a text file can hold.
    """
    # BEGIN SOLUTION 4.2: the three visible ranges map to themselves; the rest, in byte order, to chr(256), chr(257), ...
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in visible}
    others = [b for b in range(256) if b not in mapping]
    mapping.update({b: chr(256 + n) for n, b in enumerate(others)})
    return dict(sorted(mapping.items()))
    # END SOLUTION


def merge_pair(tokens: list, pair: tuple, merged) -> list:
    """``tokens`` with every occurrence of ``pair`` (two neighbours) replaced by ``merged``, scanning from
    the left: ``merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]``. Works on ids and on byte strings alike."""
    # BEGIN SOLUTION 4.2: one scan from the left; a merged pair's second token cannot start the next pair
    first, second = pair
    out = []
    i = 0
    while i < len(tokens):
        if i + 1 < len(tokens) and tokens[i] == first and tokens[i + 1] == second:
            out.append(merged)
            i += 2
        else:
            out.append(tokens[i])
            i += 1
    return out
    # END SOLUTION


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
        # BEGIN SOLUTION 4.2: keep vocab, merges, special_tokens; give each special token an id; build the rank of each merge and bytes -> id for encoding
        self.vocab = {int(i): bytes(b) for i, b in vocab.items()}
        self.merges = [(bytes(a), bytes(b)) for a, b in merges]
        self.special_tokens = validate_special_tokens(special_tokens)
        self.special_to_id: dict[str, int] = {}
        for token in self.special_tokens:
            as_bytes = token.encode("utf-8")
            known = [i for i, b in self.vocab.items() if b == as_bytes]
            token_id = max(known) if known else max(self.vocab, default=-1) + 1
            self.vocab[token_id] = as_bytes
            self.special_to_id[token] = token_id
        # Encoding looks up ordinary tokens by their bytes; if two ids share their bytes, the smaller is used.
        special_ids = set(self.special_to_id.values())
        self.bytes_to_id: dict[bytes, int] = {}
        for i in sorted(self.vocab):
            if i not in special_ids:
                self.bytes_to_id.setdefault(self.vocab[i], i)
        self.merge_rank = {pair: rank for rank, pair in reversed(list(enumerate(self.merges)))}
        missing = [bytes([b]) for b in range(256) if bytes([b]) not in self.bytes_to_id]
        missing += [a + b for a, b in self.merges if a + b not in self.bytes_to_id]
        if missing:
            raise ValueError(f"the vocabulary lacks {len(missing)} token(s) that encoding can produce, "
                             f"e.g. {missing[:3]}: it needs the 256 single bytes and every merge's result")
        self._cache: dict[str, list[int]] = {}  # pre-token -> its ids: common words are encoded once
        # END SOLUTION

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
        # BEGIN SOLUTION 4.2: distinct pre-tokens with counts; pair counts and pair -> words; then merge the best pair (count, then greater bytes) and update the affected words' pairs only
        special_tokens = validate_special_tokens(special_tokens)
        num_merges = vocab_size - 256 - len(special_tokens)
        if num_merges < 0:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the 256 bytes plus "
                             f"{len(special_tokens)} special token(s)")

        word_counts: Counter[str] = Counter()
        for piece, is_special in split_on_special_tokens(text, special_tokens):
            if not is_special:
                word_counts.update(GPT2_SPLIT.findall(piece))
        words = [list(word.encode("utf-8")) for word in word_counts]  # each word as token ids
        counts = list(word_counts.values())

        token_bytes = [bytes([b]) for b in range(256)]  # id -> bytes, growing by one per merge
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        words_with: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> indices of words holding it
        for w, (word, count) in enumerate(zip(words, counts)):
            for pair in zip(word, word[1:]):
                pair_counts[pair] += count
                words_with[pair].add(w)

        merges: list[tuple[bytes, bytes]] = []
        for _ in range(num_merges):
            if not pair_counts:
                break
            top = max(pair_counts.values())
            best = max((pair for pair, count in pair_counts.items() if count == top),
                       key=lambda pair: (token_bytes[pair[0]], token_bytes[pair[1]]))
            new_id = len(token_bytes)
            token_bytes.append(token_bytes[best[0]] + token_bytes[best[1]])
            merges.append((token_bytes[best[0]], token_bytes[best[1]]))
            for w in words_with.pop(best):
                old, count = words[w], counts[w]
                new = merge_pair(old, best, new_id)
                words[w] = new
                old_pairs, new_pairs = list(zip(old, old[1:])), list(zip(new, new[1:]))
                for pair in old_pairs:
                    pair_counts[pair] -= count
                    if pair_counts[pair] == 0:
                        del pair_counts[pair]
                for pair in new_pairs:
                    pair_counts[pair] += count
                    words_with[pair].add(w)
                for pair in set(old_pairs) - set(new_pairs) - {best}:
                    words_with[pair].discard(w)

        vocab = dict(enumerate(token_bytes))
        for token in special_tokens:
            vocab[len(vocab)] = token.encode("utf-8")
        return cls(vocab, merges, special_tokens)
        # END SOLUTION

    @classmethod
    def from_gpt2_files(cls, vocab_json, merges_txt,
                        special_tokens: Sequence[str] = ("<|endoftext|>",)) -> BPETokenizer:
        """Read GPT-2's ``vocab.json`` (token string -> id) and ``merges.txt`` (a ``#version`` line, then one
        merge per line: two token strings separated by a space). Token strings are written with
        ``bytes_to_unicode``'s characters: map each character back to its byte to get the token's bytes.

        GPT-2's ``<|endoftext|>`` is in its vocab.json (id 50256) and keeps that id; a special token that the
        file lacks gets the next id, as in the constructor."""
        # BEGIN SOLUTION 4.2: invert bytes_to_unicode; vocab.json to id -> bytes; each merges.txt line (skip #version and blank lines) to a pair of bytes
        byte_of = {char: b for b, char in bytes_to_unicode().items()}

        def to_bytes(token: str) -> bytes:
            return bytes(byte_of[char] for char in token)

        token_ids = json.loads(Path(vocab_json).read_text(encoding="utf-8"))
        vocab = {int(i): to_bytes(token) for token, i in token_ids.items()}
        merges = []
        for line in Path(merges_txt).read_text(encoding="utf-8").splitlines():
            if line.startswith("#version") or not line.strip():
                continue
            first, second = line.split(" ")
            merges.append((to_bytes(first), to_bytes(second)))
        return cls(vocab, merges, special_tokens)
        # END SOLUTION

    @property
    def vocab_size(self) -> int:
        """The number of ids the model needs: the largest id plus one."""
        # BEGIN SOLUTION 4.2: the largest id plus one
        return max(self.vocab) + 1
        # END SOLUTION

    def special_token_id(self, token: str) -> int:
        """The id of the special token ``token`` (a ``KeyError`` if it is not one of them)."""
        # BEGIN SOLUTION 4.2: look it up
        return self.special_to_id[token]
        # END SOLUTION

    def _encode_pretoken(self, word: str) -> list[int]:
        """The ids of one pre-token: its bytes, then the merges replayed, lowest rank (earliest) first."""
        # BEGIN SOLUTION 4.2: from single bytes, repeatedly merge the neighbouring pair with the lowest rank until no pair has one; then bytes -> ids (cache per pre-token)
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        parts = [bytes([b]) for b in word.encode("utf-8")]
        while len(parts) > 1:
            pair = min(zip(parts, parts[1:]), key=lambda p: self.merge_rank.get(p, len(self.merge_rank)))
            if pair not in self.merge_rank:
                break
            parts = merge_pair(parts, pair, pair[0] + pair[1])
        ids = [self.bytes_to_id[part] for part in parts]
        if len(self._cache) < 100_000:  # bounded, for streams with ever new words
            self._cache[word] = ids
        return ids
        # END SOLUTION

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``: special tokens first (the longest wins where they overlap), then each
        ordinary piece cut into pre-tokens, and each pre-token encoded by the merges."""
        # BEGIN SOLUTION 4.2: split_on_special_tokens, then pretokenize each ordinary piece and encode each pre-token
        ids: list[int] = []
        for piece, is_special in split_on_special_tokens(text, self.special_tokens):
            if is_special:
                ids.append(self.special_to_id[piece])
            else:
                for word in GPT2_SPLIT.findall(piece):
                    ids.extend(self._encode_pretoken(word))
        return ids
        # END SOLUTION

    def encode_iterable(self, chunks: Iterable[str]) -> Iterator[int]:
        """The ids of the concatenation of ``chunks`` (the lines of an open file, say), produced lazily:
        memory holds about one line, not the whole text. The ids are those of ``encode("".join(chunks))``
        (special tokens must not contain a line break).

        Text is encoded up to a safe cut: just before a line break followed by a non-space character.
        GPT-2's pattern never puts that line break in a pre-token with what comes before it or after it,
        so cutting there changes no pre-token. Anywhere else a cut could: ``"a\\n\\n\\nb"`` pre-tokenises as
        ``"a", "\\n\\n", "\\n", "b"``, but line by line as ``"a", "\\n", "\\n", "\\n", "b"``.
        """
        # BEGIN SOLUTION 4.2: keep a pending buffer; after each chunk, encode and yield up to the last SAFE_CUT match, keep the rest; encode what is left at the end
        pending = ""
        for chunk in chunks:
            search_from = max(len(pending) - 1, 0)  # earlier places were searched already
            pending += chunk
            cut = 0
            for match in SAFE_CUT.finditer(pending, search_from):
                cut = match.start()
            if cut > 0:
                yield from self.encode(pending[:cut])
                pending = pending[cut:]
        yield from self.encode(pending)
        # END SOLUTION

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``: their bytes joined and decoded as UTF-8 with ``errors="replace"``.
        ``ValueError`` for an id that is not in the vocabulary."""
        # BEGIN SOLUTION 4.2: join the bytes of every id, then one decode with errors="replace"
        try:
            data = b"".join([self.vocab[i] for i in ids])
        except KeyError as error:
            raise ValueError(f"id {error.args[0]} is not in the vocabulary of this BPETokenizer "
                             f"(ids 0 to {self.vocab_size - 1})") from None
        return data.decode("utf-8", errors="replace")
        # END SOLUTION

    def to_json(self) -> str:
        """``{"type": "bpe", "vocab": {id: token}, "merges": [[token, token], ...], "special_tokens": [...]}``
        as a JSON string, each token's bytes written with ``bytes_to_unicode``'s characters (as GPT-2's
        files do: readable, and valid JSON for any bytes)."""
        # BEGIN SOLUTION 4.2: bytes -> printable strings with bytes_to_unicode; type "bpe"
        char_of = bytes_to_unicode()

        def to_text(token: bytes) -> str:
            return "".join(char_of[b] for b in token)

        return json.dumps({
            "type": "bpe",
            "vocab": {str(i): to_text(b) for i, b in sorted(self.vocab.items())},
            "merges": [[to_text(a), to_text(b)] for a, b in self.merges],
            "special_tokens": list(self.special_tokens),
        }, ensure_ascii=False)
        # END SOLUTION

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        """The tokenizer that ``to_json`` described."""
        # BEGIN SOLUTION 4.2: map the strings back to bytes and call the constructor
        byte_of = {char: b for b, char in bytes_to_unicode().items()}

        def to_bytes(token: str) -> bytes:
            return bytes(byte_of[char] for char in token)

        data = json.loads(text)
        vocab = {int(i): to_bytes(token) for i, token in data["vocab"].items()}
        merges = [(to_bytes(a), to_bytes(b)) for a, b in data["merges"]]
        return cls(vocab, merges, data["special_tokens"])
        # END SOLUTION
