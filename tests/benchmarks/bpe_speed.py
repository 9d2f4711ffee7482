"""How fast does BPE train and encode? Prints the times measured in one run.

    python -m tests.benchmarks.bpe_speed                       # the reference in solutions/
    python -m tests.benchmarks.bpe_speed --implementation .    # your stage folders

The text is 1 MB (1 000 000 UTF-8 bytes) of the Python standard library's own source files: its
top-level modules in name order, read from this interpreter's installation, so no download is needed
(another Python version gives a slightly different text). Two measurements:
  * training a 1000-token vocabulary (256 bytes, <|endoftext|>, 743 merges) on the whole text, once;
  * encoding the whole text with that tokenizer: once from a cold start (every word met for the first time)
    and once more (the words are known), in MB per second.
The course's target is training in 10 s or less. This is a benchmark, not a test: timings depend on the
machine and its load, so nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS_BYTES = 1_000_000
VOCAB_SIZE = 1000


def stdlib_text(num_bytes: int = CORPUS_BYTES) -> str:
    """The first ``num_bytes`` bytes of the standard library's top-level ``.py`` files, in name order,
    separated by ``<|endoftext|>`` (cut at a character boundary)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    pieces, size = [], 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace") + "<|endoftext|>"
        pieces.append(text)
        size += len(text.encode("utf-8"))
        if size >= num_bytes:
            break
    data = "".join(pieces).encode("utf-8")[:num_bytes]
    return data.decode("utf-8", errors="ignore")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--implementation", type=Path, default=REPO_ROOT / "solutions", metavar="DIR",
                        help="the folder holding stage4_gpt/ (default: solutions/)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.implementation.resolve()))  # ahead of the current folder's stage packages

    from stage4_gpt.bpe import BPETokenizer

    text = stdlib_text()
    megabytes = len(text.encode("utf-8")) / 1e6
    print(f"implementation: {args.implementation}   Python {sys.version.split()[0]}")
    print(f"text: {megabytes:.2f} MB of the standard library's source, {len(text):,} characters")

    start = time.perf_counter()
    tokenizer = BPETokenizer.train(text, VOCAB_SIZE, special_tokens=["<|endoftext|>"])
    train_seconds = time.perf_counter() - start
    print(f"train a {VOCAB_SIZE}-token vocabulary ({len(tokenizer.merges)} merges): {train_seconds:8.2f} s"
          f"   (target: 10 s or less)")

    for label in ("encode, cold (first time)", "encode, warm (words known)"):
        start = time.perf_counter()
        ids = tokenizer.encode(text)
        seconds = time.perf_counter() - start
        print(f"{label:<35} {seconds:8.2f} s   {megabytes / seconds:6.2f} MB/s   "
              f"{len(ids):,} tokens, {len(text.encode('utf-8')) / len(ids):.2f} bytes per token")

    start = time.perf_counter()
    streamed = sum(1 for _ in tokenizer.encode_iterable(text.splitlines(keepends=True)))
    seconds = time.perf_counter() - start
    print(f"{'encode_iterable, line by line':<35} {seconds:8.2f} s   {megabytes / seconds:6.2f} MB/s   "
          f"{streamed:,} tokens")


if __name__ == "__main__":
    main()
