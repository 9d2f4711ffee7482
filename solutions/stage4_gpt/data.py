"""Data for a language model: one long array of token ids, cut into random windows.

A GPT learns to predict every next token of a text. The whole corpus is encoded once into a 1-D array
``tokens``; a training example is any window of ``block_size + 1`` consecutive tokens, read as an input
``x = window[:-1]`` and its targets ``y = window[1:]``: at each position t, the model sees x[0..t] and must
predict y[t] = x[t+1]. A window of T + 1 tokens therefore holds T examples, one per prefix.

The default corpus needs no download: it is the Python standard library's own source code, which is on
every machine that runs this course.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np

DEFAULT_CORPUS_CHARS = 1_000_000


def get_batch(tokens: np.ndarray, batch_size: int, block_size: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` random windows of ``tokens`` as inputs and targets, both int64 of shape (B, T).

    The start offsets are one draw ``rng.integers(0, len(tokens) - block_size, size=batch_size)`` (so any
    window of T + 1 tokens can be chosen, and a seeded generator gives the same batches every run); row b is

        x[b] = tokens[start_b     : start_b + T]
        y[b] = tokens[start_b + 1 : start_b + T + 1]

    Built with one fancy index (start offsets (B, 1) + arange(T + 1)), not a loop over the batch.
    Raises ValueError if ``tokens`` has no more than ``block_size`` tokens (no window fits).
    """
    # BEGIN SOLUTION 4.6: starts = rng.integers(0, n - T, size=B); windows = tokens[starts[:, None] + np.arange(T + 1)]
    tokens = np.asarray(tokens)
    if len(tokens) <= block_size:
        raise ValueError(f"get_batch: {len(tokens)} tokens are too few for a window of block_size + 1 = "
                         f"{block_size + 1} tokens; use a longer text or a smaller block_size")
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)
    windows = tokens[starts[:, None] + np.arange(block_size + 1)].astype(np.int64)  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]
    # END SOLUTION


def split_tokens(tokens: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The first ``1 - val_fraction`` of ``tokens`` for training, the rest for validation.

    A split in one place rather than at random positions: random windows of the training part never
    overlap the validation part (except across the one boundary), so the validation loss measures text
    the model has not been trained on. ``n_val = int(len(tokens) * val_fraction)``; the two parts are
    views of ``tokens`` (no copy). Raises ValueError unless 0 <= val_fraction < 1.
    """
    # BEGIN SOLUTION 4.6: n_val = int(len(tokens) * val_fraction); return tokens[:n - n_val], tokens[n - n_val:]
    if not 0 <= val_fraction < 1:
        raise ValueError(f"split_tokens: val_fraction must be in [0, 1), got {val_fraction}")
    tokens = np.asarray(tokens)
    n_train = len(tokens) - int(len(tokens) * val_fraction)
    return tokens[:n_train], tokens[n_train:]
    # END SOLUTION


def default_corpus_files() -> list[Path]:
    """The files of the default corpus: the public top-level modules of the Python standard library
    (``<stdlib>/*.py`` whose name does not start with ``_``) that are pure ASCII, sorted by name.

    Pure ASCII keeps the character vocabulary small (96 characters: newline, space and the 94 printable
    ones) and the same on every machine with this Python version. Another Python version ships other
    modules, so the corpus (and the losses) differ a little between versions.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [path for path in sorted(stdlib.glob("*.py"), key=lambda p: p.name)
            if not path.name.startswith("_") and path.read_bytes().isascii()]


def default_corpus(max_chars: int = DEFAULT_CORPUS_CHARS) -> str:
    """The first ``max_chars`` characters of ``default_corpus_files()`` joined with blank lines between
    them: about a megabyte of real Python (argparse, ast, base64, calendar, ...), with no download."""
    pieces, length = [], 0
    for path in default_corpus_files():
        text = path.read_text(encoding="ascii")
        pieces.append(text)
        length += len(text) + 2
        if length >= max_chars:
            break
    if not pieces:
        raise FileNotFoundError(f"no ASCII .py files found in {sysconfig.get_paths()['stdlib']}: "
                                "use --data FILE to train on a text file of your own")
    return "\n\n".join(pieces)[:max_chars]
