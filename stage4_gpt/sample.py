"""Write text with a trained GPT: ``python -m stage4_gpt.sample``.

    python -m stage4_gpt.sample                     # from runs/gpt/ckpt.npz, what python -m stage4_gpt.train wrote
    python -m stage4_gpt.sample --checkpoint runs/gpt/ckpt.npz --prompt "def main(" --max-new-tokens 300
    python -m stage4_gpt.sample --checkpoint runs/gpt/ckpt.npz --temperature 0.5 --top-k 20 --num-samples 3
    python -m stage4_gpt.sample --checkpoint runs/gpt/ckpt.npz --interactive      # one prompt per line
    python -m stage4_gpt.sample --attention attention.png --prompt "def f(x):"   # where every head looks

The checkpoint holds the model's settings, its weights and its tokenizer (see ``train.py``), so nothing
else is needed. ``--temperature`` below 1 makes the model surer of itself (0: always the most likely
token), above 1 more adventurous; ``--top-k`` and ``--top-p`` leave the unlikely tail out. A prompt with
newlines: ``--prompt $'def f(x):\\n    return'`` in bash. ``--seed`` makes a sample repeatable.
``--attention PNG`` writes nothing new: it draws the causal self-attention of every layer and head on the
prompt's tokens (and prints it as tables for a short prompt).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from stage1_autograd.tensor import Tensor, no_grad
from stage3_transformer.plots import AttentionMaps, attention_grid, attention_tables
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
    # TODO 4.7: encode (or start from <|endoftext|>); generate with stop_token; decode the new ids before any stop token
    raise NotImplementedError("Exercise 4.7 (Sampling) is not done yet")


# ---------------------------------------------------------------------- a look inside (given)
def causal_attention_weights(attn, x: Tensor, positions: np.ndarray) -> np.ndarray:
    """The attention weights of every head of ``attn`` (a ``CausalSelfAttention``) on its input ``x`` (B, T, C)
    at ``positions``: (B, n_head, T, T), row t the weights with which position t reads positions 0 .. t.

    Computed again from ``attn``'s own layers, by the recipe of its docstring (q | k | v side by side out of
    c_attn, head h the features h*hd .. (h+1)*hd, RoPE on q and k), so that the model itself need not hand
    its weights out: softmax(q k^T / sqrt(hd)) with the future masked."""
    B, T, C = x.shape
    hd = C // attn.n_head
    qkv = attn.c_attn(x).data.reshape(B, T, 3, attn.n_head, hd)
    q = Tensor(qkv[:, :, 0].transpose(0, 2, 1, 3))  # (B, n_head, T, hd)
    k = Tensor(qkv[:, :, 1].transpose(0, 2, 1, 3))
    if attn.rotary is not None:
        q, k = attn.rotary(q, positions), attn.rotary(k, positions)
    scores = q.data.astype(np.float64) @ k.data.astype(np.float64).swapaxes(-1, -2) / np.sqrt(hd)  # (B, nh, T, T)
    scores = np.where(np.tri(T, dtype=bool), scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def attention_weights(model: GPT, ids: list[int]) -> np.ndarray:
    """The self-attention weights of every layer and head while ``model`` reads the token ids ``ids``:
    (n_layer, n_head, T, T). The model runs once, in evaluation mode, with each block's attention recording
    what it was given (``causal_attention_weights`` of its input)."""
    recorded: list[np.ndarray] = []

    def recording(attn):
        forward = attn.forward

        def forward_and_record(x, positions, kv_cache=None):
            recorded.append(causal_attention_weights(attn, x, positions)[0])
            return forward(x, positions, kv_cache)
        return forward_and_record

    attentions = [block.attn for block in model.transformer.h]
    model.eval()
    try:
        # An attribute on the instance comes before the class's method: Module.__call__ runs the recording.
        for attn in attentions:
            attn.forward = recording(attn)
        with no_grad():
            model(np.array([ids], dtype=np.int64))
    finally:
        for attn in attentions:
            vars(attn).pop("forward", None)  # the class's forward again
    return np.stack(recorded)


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """One readable label per token: its text, with a space shown as "␣" and a newline or tab as "\\n", "\\t"."""
    labels = []
    for i in ids:
        text = tokenizer.decode([i])
        labels.append(text.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t") or "∅")
    return labels


TABLE_TOKENS = 24  # the longest prompt whose tables are printed; a longer one is only drawn


def show_attention(model: GPT, tokenizer, prompt: str, path: str | Path) -> int:
    """Draw the self-attention of every layer and head on the tokens of ``prompt`` to the PNG ``path``, and
    print it as tables (a layer's heads side by side) when the prompt is short. Returns the exit status: 2,
    after a one-line message, for a prompt that cannot be drawn."""
    if not prompt:
        print("error: --attention draws the attention on a prompt; give one with --prompt", file=sys.stderr)
        return 2
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as error:
        print(f"error: the prompt cannot be used: {error}", file=sys.stderr)
        return 2
    if len(ids) > model.config.block_size:
        print(f"error: the prompt is {len(ids)} tokens, more than the {model.config.block_size} this model reads "
              "(its block_size); shorten it", file=sys.stderr)
        return 2
    weights = attention_weights(model, ids)  # (n_layer, n_head, T, T)
    labels = token_labels(tokenizer, ids)
    if len(ids) <= TABLE_TOKENS:
        for layer, heads in enumerate(weights):
            print(f"layer {layer}: each token (row) reads itself and the tokens before it (weights in tenths)")
            print(attention_tables(heads, labels, labels))
            print()
    else:
        print(f"({len(ids)} tokens: the tables are printed for prompts of at most {TABLE_TOKENS} tokens)")
    try:
        attention_grid(AttentionMaps("causal self-attention", weights, labels, labels, xlabel="reads (key)",
                                     ylabel="token (query)"), path, title=f"{prompt!r}: every layer and head")
    except OSError as error:  # a folder that does not exist, a file that may not be written
        print(f"error: cannot write the heatmaps to {path}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"heatmaps: {path}")
    return 0


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
    parser.add_argument("--attention", metavar="PNG", default=None,
                        help="instead of sampling, draw where every head looks on the prompt's tokens to this PNG "
                             "(and print tables for a short prompt)")
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
    if args.attention is not None:
        return show_attention(model, tokenizer, args.prompt, args.attention)
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
