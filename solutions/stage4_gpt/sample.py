"""Write text with a trained GPT: ``python -m stage4_gpt.sample``.

    python -m stage4_gpt.sample                     # from runs/gpt/ckpt.npz, what python -m stage4_gpt.train wrote
    python -m stage4_gpt.sample --checkpoint runs/gpt/ckpt.npz --prompt "def main(" --max-new-tokens 300
    python -m stage4_gpt.sample --checkpoint runs/gpt/ckpt.npz --temperature 0.5 --top-k 20 --num-samples 3
    python -m stage4_gpt.sample --checkpoint runs/gpt/ckpt.npz --interactive      # one prompt per line

The checkpoint holds the model's settings, its weights and its tokenizer (see ``train.py``), so nothing
else is needed. ``--temperature`` below 1 makes the model surer of itself (0: always the most likely
token), above 1 more adventurous; ``--top-k`` and ``--top-p`` leave the unlikely tail out. A prompt with
newlines: ``--prompt $'def f(x):\\n    return'`` in bash. ``--seed`` makes a sample repeatable.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from stage4_gpt.model import GPT
from stage4_gpt.train import CHECKPOINT_NAME, DEFAULT_OUT, HelpWithDefaults, load_checkpoint, model_from_checkpoint

ENDOFTEXT = "<|endoftext|>"


def complete(model: GPT, tokenizer, prompt: str, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, rng: np.random.Generator | None = None,
             use_cache: bool = True) -> str:
    """The text ``model`` writes after ``prompt``: at most ``max_new_tokens`` new tokens, decoded.

    The prompt is encoded with ``tokenizer`` (a character it cannot encode is its ``ValueError``, which the
    caller shows); an empty prompt starts from the ``<|endoftext|>`` token, as GPT-2 does for text from
    nothing (a tokenizer without it cannot start from nothing: ValueError). ``model.generate`` writes the
    continuation, stopping early at ``<|endoftext|>`` if the tokenizer has that token; the result is the
    decoded new ids only, without the prompt and without the ``<|endoftext|>``.
    """
    # BEGIN SOLUTION 4.7: encode (or start from <|endoftext|>); generate with stop_token; decode the new ids before any stop token
    stop = tokenizer.special_token_id(ENDOFTEXT) if ENDOFTEXT in tokenizer.special_tokens else None
    if prompt:
        ids = tokenizer.encode(prompt)
    elif stop is not None:
        ids = [stop]
    else:
        raise ValueError(f"an empty prompt needs a tokenizer with {ENDOFTEXT} to start from; give a --prompt")
    out = model.generate(np.array([ids], dtype=np.int64), max_new_tokens, temperature=temperature, top_k=top_k,
                         top_p=top_p, rng=rng, stop_token=stop, use_cache=use_cache)
    new = out[0, len(ids):].tolist()
    if stop is not None and stop in new:
        new = new[:new.index(stop)]
    return tokenizer.decode(new)
    # END SOLUTION


def check_sampling_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject settings that define no distribution, with a message naming the flag."""
    if args.temperature < 0:
        parser.error(f"--temperature must be >= 0 (0 means: always the most likely token), got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        parser.error(f"--top-p must be in (0, 1] (the share of probability kept), got {args.top_p}")
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {args.top_k}")
    if args.max_new_tokens < 0:
        parser.error(f"--max-new-tokens must not be negative, got {args.max_new_tokens}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stage4_gpt.sample", description="Write text with a trained GPT.",
                                     formatter_class=HelpWithDefaults)
    parser.add_argument("--checkpoint", default=f"{DEFAULT_OUT}/{CHECKPOINT_NAME}",
                        help="an .npz written by python -m stage4_gpt.train (default: %(default)s, where it writes "
                             "without --out)")
    parser.add_argument("--prompt", default="", help="the text to continue (empty: start from nothing)")
    parser.add_argument("--interactive", action="store_true", help="read one prompt per line from the terminal")
    parser.add_argument("--max-new-tokens", type=int, default=300, help="tokens written after the prompt, at most")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="below 1: surer, above 1: more adventurous, 0: always the most likely token")
    parser.add_argument("--top-k", type=int, default=None, help="draw only from the k most likely tokens (default: all)")
    parser.add_argument("--top-p", type=float, default=None,
                        help="draw only from the most likely tokens that together reach this probability "
                             "(default: all)")
    parser.add_argument("--num-samples", type=int, default=1, help="continuations of each prompt")
    parser.add_argument("--seed", type=int, default=None, help="repeatable samples (default: fresh randomness)")
    parser.add_argument("--no-cache", action="store_true", help="recompute every position at every step (slow)")
    parser.add_argument("--stats", action="store_true", help="print tokens per second to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file; train a model first (python -m stage4_gpt.train "
                     f"writes {DEFAULT_OUT}/{CHECKPOINT_NAME}), or name a checkpoint with --checkpoint")
    try:
        model, tokenizer = model_from_checkpoint(load_checkpoint(args.checkpoint))
    except (OSError, ValueError, KeyError) as error:
        parser.error(f"--checkpoint {args.checkpoint}: cannot read it as a checkpoint ({error})")
    check_sampling_flags(parser, args)
    rng = np.random.default_rng(args.seed)

    def write(prompt: str) -> bool:
        """Print the prompt and its continuation(s); False (and a message) if the prompt cannot be encoded."""
        for i in range(args.num_samples):
            started = time.perf_counter()
            try:
                text = complete(model, tokenizer, prompt, args.max_new_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, rng=rng, use_cache=not args.no_cache)
            except ValueError as error:
                print(f"error: the prompt cannot be used: {error}", file=sys.stderr)
                return False
            if i:
                print("-" * 40)
            print(prompt + text, flush=True)
            if args.stats:
                print(f"[{len(text)} characters in {time.perf_counter() - started:.2f}s]", file=sys.stderr)
        return True

    if not args.interactive:
        return 0 if write(args.prompt) else 2
    print("Type a prompt and press Enter; an empty line or Ctrl-D quits.", file=sys.stderr)
    while True:
        print("prompt> ", end="", file=sys.stderr, flush=True)  # stderr: stdout holds only the texts
        try:
            prompt = input()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if not prompt:
            return 0
        write(prompt)


if __name__ == "__main__":
    sys.exit(main())
