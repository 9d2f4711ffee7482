"""A Transformer that learns to add: "23+45" -> "68", built from nothing but stages 1 to 3.

    python -m stage3_transformer.addition train              # 2-digit sums; >= 99% of unseen problems right
    python -m stage3_transformer.addition train --digits 3 --steps 6000   # longer numbers, more steps
    python -m stage3_transformer.addition ask                # type a sum, the model answers
    python -m stage3_transformer.addition attention "23+45"  # where each head looked: tables and attention.png

Addition is a sequence-to-sequence task, the one the original Transformer was built for (translation): the
encoder reads the source "23+45", the decoder writes the answer "68" one character at a time, each new
character looking at the source (cross-attention) and at the characters written so far (causal
self-attention). The model is never told the rules of arithmetic; it learns them from examples, and is judged
on problems it never saw.

The pieces, in the order a run uses them:
    all_problems, split_problems  every a+b with numbers of at most ``digits`` digits; a held-out set that
                                  training never sees
    Vocabulary, encode_batch      characters -> ids: the source "23+45", the decoder input "<s>68" and the
                                  target "68</s>" (teacher forcing), padded to fixed widths
    AdditionModel                 embeddings + sinusoidal positions -> nn.Transformer -> a Linear head that
                                  scores every token of the vocabulary at every target position
    loss_on_batch, train_step     cross-entropy of every next character, padding ignored; one AdamW step
    greedy_decode, exact_match    answering: start from <s>, append the most likely character, repeat
    train                         the loop: warmup then cosine decay of the learning rate, a progress line
                                  per evaluation
    save_checkpoint, load_checkpoint, ask, attention_maps, show_attention, main
                                  an .npz of plain arrays (no pickle), the prompt, the attention of every
                                  head as tables and a picture, the command line

One seed decides every random choice (the split, the initial weights, the batches): same seed, same model.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stage1_autograd.tensor import Tensor, no_grad
from stage2_mlp.nn import Linear, Module
from stage2_mlp.optim import AdamW, Optimizer
from stage3_transformer import functional as F
from stage3_transformer import nn
from stage3_transformer.plots import AttentionMaps, attention_grid, attention_tables, recorded_attention

DEFAULT_CHECKPOINT = "addition.npz"
MAX_DIGITS = 3  # 4-digit numbers make 10**8 problems: too many to list one by one
POSITIONS = ("sinusoidal", "none")  # AdditionConfig.pos


@dataclass
class AdditionConfig:
    """Everything that decides a run; saved inside every checkpoint.

    The defaults train a 2-digit adder to >= 99% exact match on the held-out problems in a minute or two on
    one CPU core: a small Transformer (d_model 64, 2 encoder and 2 decoder layers) gets there in about 750
    steps, and the rest of the 1500 makes that hold for every seed tried (99.7-100% with seeds 0-3).
    """

    digits: int = 2  # the numbers have at most this many digits
    d_model: int = 64  # width of every token's vector
    nhead: int = 4  # attention heads (d_model / nhead features each)
    layers: int = 2  # encoder layers, and as many decoder layers
    pos: str = "sinusoidal"  # the position table; "none" (an experiment of the lesson): the model gets no positions
    ff: int = 256  # hidden width of the feed-forward blocks
    dropout: float = 0.0  # not needed here: without it the held-out accuracy reaches 99.7-100% anyway
    lr: float = 2e-3  # AdamW's peak learning rate
    weight_decay: float = 0.01
    warmup: int = 100  # steps of linear warmup from 0 to lr, then cosine decay to 0 at the last step
    steps: int = 1500
    batch: int = 128
    held_out_fraction: float = 0.1  # of all problems, never trained on
    eval_every: int = 250  # steps between progress lines
    eval_problems: int = 1000  # held-out problems decoded for each progress line (all of them for 2 digits)
    seed: int = 0


# ---------------------------------------------------------------------- the problems
def all_problems(digits: int) -> list[str]:
    """Every problem ``"a+b"`` with 0 <= a, b < 10**digits, written without leading zeros, in the order
    a = 0, 1, ... and, for each a, b = 0, 1, ...: 10**(2 * digits) strings (``"0+0"``, ``"0+1"``, ...,
    ``"99+99"`` for 2 digits)."""
    # BEGIN SOLUTION 3.8: one f"{a}+{b}" for every pair, a in the outer loop
    numbers = range(10**digits)
    return [f"{a}+{b}" for a in numbers for b in numbers]
    # END SOLUTION


def split_problems(problems: list[str], held_out_fraction: float,
                   rng: np.random.Generator | int | None) -> tuple[list[str], list[str]]:
    """Shuffle ``problems`` and split them into ``(train, held_out)``.

    The order is ``np.random.default_rng(rng).permutation(N)`` (``rng``: a Generator, a seed or None); its
    first ``ceil(held_out_fraction * N)`` indices are the held-out problems, the rest the training problems,
    both lists in that shuffled order. Every problem lands in exactly one list; the same seed gives the same
    split. The held-out problems measure whether the model learned to add or only memorised.
    """
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be between 0 and 1, got {held_out_fraction}")
    # BEGIN SOLUTION 3.8: one permutation decides; the first ceil(fraction * N) of it are held out
    order = np.random.default_rng(rng).permutation(len(problems))
    n_held_out = math.ceil(held_out_fraction * len(problems))
    return [problems[i] for i in order[n_held_out:]], [problems[i] for i in order[:n_held_out]]
    # END SOLUTION


def answer_of(problem: str) -> str:
    """The true sum of ``"a+b"`` as a string: ``answer_of("23+45") == "68"``."""
    a, b = problem.split("+")
    return str(int(a) + int(b))


def source_length(digits: int) -> int:
    """Characters of the longest problem: two numbers and the '+'."""
    return 2 * digits + 1


def answer_length(digits: int) -> int:
    """Characters of the longest answer: one more digit than the numbers (99+99 = 198)."""
    return digits + 1


# ---------------------------------------------------------------------- characters and ids
class Vocabulary:
    """The tokens the model reads and writes, and their ids:

        id:     0      1     2      3   4  ...  12   13
        token:  <pad>  <s>   </s>   0   1  ...  9    +

    ``<pad>`` fills sequences up to a common width (attention and the loss ignore it), ``<s>`` starts every
    answer the decoder writes, and ``</s>`` ends it: the model itself says when the answer is complete.
    """

    PAD, START, END = "<pad>", "<s>", "</s>"

    def __init__(self, characters: str = "0123456789+"):
        self.tokens = [self.PAD, self.START, self.END, *characters]
        self.pad_id, self.start_id, self.end_id = 0, 1, 2
        self.characters = characters
        # Code point -> id, so that a whole batch of strings is translated by one array lookup (encode_texts).
        self._id_of_code = np.full(128, -1, dtype=np.int64)
        self._id_of_code[0] = self.pad_id  # NumPy pads short strings with code point 0
        for i, character in enumerate(characters, start=3):
            self._id_of_code[ord(character)] = i

    def __len__(self) -> int:
        return len(self.tokens)

    def encode_texts(self, texts: list[str], width: int) -> np.ndarray:
        """The ids of each text's characters, padded with ``<pad>`` to ``width``: (len(texts), width) int64.

        A text longer than ``width`` or a character outside the vocabulary is a ValueError naming it."""
        array = np.array(texts, dtype=str).reshape(-1)  # dtype <U(longest)
        longest = array.dtype.itemsize // 4
        if longest > width:
            worst = max(texts, key=len)
            raise ValueError(f"{worst!r} has {len(worst)} characters, more than the {width} this model reads")
        # Each character as its Unicode code point (a uint32); a text shorter than width ends in zeros.
        codes = array.astype(f"<U{width}").view(np.uint32).reshape(len(array), width)
        ids = self._id_of_code[np.minimum(codes, 127)]
        unknown = (ids < 0) | (codes > 127)
        if unknown.any():
            row, column = np.argwhere(unknown)[0]
            raise ValueError(f"{texts[row]!r}: the character {texts[row][column]!r} is not in the vocabulary "
                             f"({self.characters!r})")
        return ids

    def decode(self, ids) -> str:
        """The text of a sequence of ids, up to (not including) the first ``</s>``; a ``<pad>`` or ``<s>``
        the model wrote is shown by its name."""
        text = []
        for i in np.asarray(ids).tolist():
            if i == self.end_id:
                break
            text.append(self.tokens[i])
        return "".join(text)


VOCAB = Vocabulary()


class Batch(NamedTuple):
    """One batch for teacher forcing, three (B, ...) int64 arrays. For "23+45" = 68 with 2 digits:

        source         2 3 + 4 5         (B, 2*digits + 1)  what the encoder reads
        decoder_input  <s> 6 8 <pad>     (B, digits + 2)    what the decoder reads
        target         6 8 </s> <pad>    (B, digits + 2)    what it must predict at each position: the input
                                                            shifted left by one, ending with </s>
    """

    source: np.ndarray
    decoder_input: np.ndarray
    target: np.ndarray

    def take(self, rows) -> Batch:
        """The batch of the given rows (an index array or a slice) of the three arrays."""
        return Batch(self.source[rows], self.decoder_input[rows], self.target[rows])


def encode_batch(problems: list[str], digits: int) -> Batch:
    """The ``Batch`` of ``problems`` (strings "a+b" with numbers of at most ``digits`` digits) and their true
    answers, as in the picture of ``Batch``: every row padded with ``<pad>`` (id 0) to the fixed widths
    ``source_length(digits)`` and ``answer_length(digits) + 1``. No loop over positions: the answers' ids
    come from ``VOCAB.encode_texts``, the start and end tokens are placed with array operations."""
    # BEGIN SOLUTION 3.8: encode_texts for sources and answers; decoder_input = <s> column + answer; target = answer + </s> at each answer's length
    source = VOCAB.encode_texts(problems, source_length(digits))
    answers = VOCAB.encode_texts([answer_of(p) for p in problems], answer_length(digits))  # (B, digits + 1)
    rows = len(problems)
    decoder_input = np.concatenate([np.full((rows, 1), VOCAB.start_id), answers], axis=1)
    target = np.concatenate([answers, np.full((rows, 1), VOCAB.pad_id)], axis=1)
    lengths = (answers != VOCAB.pad_id).sum(axis=1)  # the answers' lengths: where each </s> goes
    target[np.arange(rows), lengths] = VOCAB.end_id
    return Batch(source, decoder_input, target)
    # END SOLUTION


# ---------------------------------------------------------------------- the model
class AdditionModel(Module):
    """An encoder-decoder Transformer over the characters of ``VOCAB``:

        memory = transformer.encoder(source_embedding(source) + P[:S])             (B, S, d_model)
        h      = transformer.decoder(target_embedding(decoder_input) + P[:T], memory,
                                     causal mask, source padding masked)            (B, T, d_model)
        logits = head(h)                                                            (B, T, len(VOCAB))

    ``P`` is the sinusoidal position table ``F.sinusoidal_positions(2 * digits + 1, d_model)`` (a constant,
    not a parameter): attention alone does not know where a character is, and in "23+45" the place of a digit
    is its value. Parameters: ``source_embedding.weight``, ``target_embedding.weight``, ``transformer.*``
    (PyTorch's names) and ``head.weight``, ``head.bias``. All are drawn from one generator seeded with
    ``config.seed``, in that order; ``dtype`` float32 (or float64, to compare with PyTorch).
    With ``config.pos == "none"`` (an experiment, given) the table is zeros: the model is told no positions.
    """

    def __init__(self, config: AdditionConfig, *, dtype=np.float32):
        super().__init__()
        self.config = config
        rng = np.random.default_rng(config.seed)
        # BEGIN SOLUTION 3.8: two nn.Embedding(len(VOCAB), d), the position table (a plain Tensor of dtype), nn.Transformer(..., batch_first=True), Linear head, all with rng and dtype
        d = config.d_model
        self.source_embedding = nn.Embedding(len(VOCAB), d, rng=rng, dtype=dtype)
        self.target_embedding = nn.Embedding(len(VOCAB), d, rng=rng, dtype=dtype)
        table = F.sinusoidal_positions(source_length(config.digits), d).data
        self.positions = Tensor(table.astype(dtype))  # a plain Tensor: a constant, not trained
        self.transformer = nn.Transformer(d, config.nhead, config.layers, config.layers, config.ff, config.dropout,
                                          batch_first=True, rng=rng, dtype=dtype)
        self.head = Linear(d, len(VOCAB), rng=rng, dtype=dtype)
        # END SOLUTION
        if config.pos == "none":  # the lesson's experiment: every position gets the same (zero) vector
            self.positions = Tensor(np.zeros_like(self.positions.data))

    def encode(self, source: np.ndarray) -> Tensor:
        """source (B, S) ids -> memory (B, S, d_model). Padding in the source takes no part in attention."""
        # BEGIN SOLUTION 3.8: embed + positions, then the encoder with src_key_padding_mask = (source == pad)
        x = self.source_embedding(source) + self.positions[: source.shape[1]]  # (B, S, d) + (S, d)
        return self.transformer.encoder(x, src_key_padding_mask=source == VOCAB.pad_id)
        # END SOLUTION

    def decode(self, decoder_input: np.ndarray, memory: Tensor, source: np.ndarray) -> Tensor:
        """decoder_input (B, T) ids, memory (B, S, d_model), source (B, S) ids -> logits (B, T, len(VOCAB)).

        Position t sees decoder_input[:, :t+1] only (the causal mask), and the source's characters but not its
        padding. Padding at the end of decoder_input needs no mask of its own: the causal mask already keeps
        every real position from seeing the later padding, and the loss ignores the padding's outputs.
        """
        # BEGIN SOLUTION 3.8: embed + positions, the decoder with a causal tgt_mask and memory_key_padding_mask, then the head
        T = decoder_input.shape[1]
        y = self.target_embedding(decoder_input) + self.positions[:T]  # (B, T, d)
        causal = nn.Transformer.generate_square_subsequent_mask(T, dtype=y.dtype)  # (T, T): -inf above the diagonal
        h = self.transformer.decoder(y, memory, tgt_mask=causal, memory_key_padding_mask=source == VOCAB.pad_id)
        return self.head(h)  # (B, T, V)
        # END SOLUTION

    def forward(self, source: np.ndarray, decoder_input: np.ndarray) -> Tensor:
        """source (B, S), decoder_input (B, T) -> logits (B, T, len(VOCAB)): ``decode(encode(source))``."""
        return self.decode(decoder_input, self.encode(source), source)


def loss_on_batch(model: AdditionModel, batch: Batch) -> Tensor:
    """The mean cross-entropy of the next character at every target position of ``batch`` that is not
    padding (teacher forcing: the decoder reads the true previous characters, not its own guesses).
    A 0-d Tensor."""
    # BEGIN SOLUTION 3.8: logits (B, T, V) -> (B*T, V); F.cross_entropy against target (B*T,) with ignore_index=pad
    logits = model(batch.source, batch.decoder_input)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.target.reshape(-1),
                           ignore_index=VOCAB.pad_id)
    # END SOLUTION


def greedy_decode(model: AdditionModel, problems: list[str]) -> list[str]:
    """The model's answer to every problem: start each answer with ``<s>``, append the most likely next token
    (the argmax of the logits at the last position), and repeat, for at most ``answer_length(digits) + 1``
    tokens (the longest answer and its ``</s>``). An answer is complete at its ``</s>``; the text before it
    is returned (``VOCAB.decode``).

    In eval mode and under ``no_grad()``. Vectorised over the problems: the source is encoded once
    (``model.encode``), and each step runs ``model.decode`` once for the whole batch (the rows already complete
    just receive ``<pad>``). The loop stops early when every answer is complete.
    """
    digits = model.config.digits
    source = VOCAB.encode_texts(problems, source_length(digits))  # (B, S)
    # BEGIN SOLUTION 3.8: memory = encode once; loop: logits of the last position -> argmax, pad the finished rows, append, mark </s>
    model.eval()
    with no_grad():
        memory = model.encode(source)
        written = np.full((len(problems), 1), VOCAB.start_id)  # (B, 1): <s>
        finished = np.zeros(len(problems), dtype=bool)
        for _ in range(answer_length(digits) + 1):
            logits = model.decode(written, memory, source)  # (B, t, V): recomputes the prefix, no cache
            next_ids = np.where(finished, VOCAB.pad_id, logits.data[:, -1].argmax(axis=-1))
            written = np.concatenate([written, next_ids[:, None]], axis=1)
            finished |= next_ids == VOCAB.end_id
            if finished.all():
                break
    return [VOCAB.decode(row) for row in written[:, 1:]]
    # END SOLUTION


def exact_match(model: AdditionModel, problems: list[str], chunk: int = 1000) -> float:
    """The fraction of ``problems`` whose answer from ``greedy_decode`` is exactly the true sum (no partial
    credit: one wrong digit is a wrong answer). Decodes ``chunk`` problems at a time to bound memory."""
    if not problems:
        raise ValueError("exact_match needs at least one problem")
    # BEGIN SOLUTION 3.8: count greedy_decode(...) == answer_of(...) over chunks of problems, divide by the number of problems
    right = 0
    for start in range(0, len(problems), chunk):
        part = problems[start : start + chunk]
        right += sum(got == answer_of(p) for got, p in zip(greedy_decode(model, part), part))
    return right / len(problems)
    # END SOLUTION


# ---------------------------------------------------------------------- training
def learning_rate(step: int, config: AdditionConfig) -> float:
    """The learning rate of step ``step`` (0-based): a linear warmup from lr/warmup to lr over the first
    ``warmup`` steps (large early steps with Adam's still-noisy statistics can wreck a Transformer), then a
    cosine decay to 0 at the last step (small final steps settle the last few percent of accuracy)."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train_step(model: AdditionModel, optimizer: Optimizer, batch: Batch, lr: float) -> float:
    """One optimisation step on ``batch`` at learning rate ``lr`` (set ``optimizer.lr = lr`` first), in
    training mode; returns the loss before the step as a float."""
    # BEGIN SOLUTION 3.8: model.train(); optimizer.lr = lr; zero_grad, loss_on_batch, backward, step
    model.train()
    optimizer.lr = lr
    optimizer.zero_grad()
    loss = loss_on_batch(model, batch)
    loss.backward()
    optimizer.step()
    return loss.item()
    # END SOLUTION


def train(config: AdditionConfig, log: Callable[[str], None] = print) -> tuple[AdditionModel, dict[str, list[float]]]:
    """Train an ``AdditionModel`` on the training split of ``all_problems(config.digits)``.

    Every step draws ``config.batch`` training problems at random (with replacement). Every
    ``config.eval_every`` steps and after the last, ``log`` gets one progress line: the step, the mean
    training loss since the previous line, the exact-match accuracy on the first ``config.eval_problems``
    held-out problems and their loss (teacher-forced, as in training), and the training speed in steps per
    second (evaluation time left out).
    Returns the model and the history: ``step``, ``loss``, ``held_out_accuracy``, ``steps_per_second``,
    ``held_out_loss``, ``seconds`` (since the start, evaluations included), one number per progress line.
    """
    if config.digits < 1:
        raise ValueError(f"digits must be at least 1, got {config.digits}")
    if config.pos not in POSITIONS:
        raise ValueError(f"pos must be one of {POSITIONS}, got {config.pos!r}")
    rng = np.random.default_rng(config.seed)
    train_problems, held_out = split_problems(all_problems(config.digits), config.held_out_fraction, rng)
    data = encode_batch(train_problems, config.digits)  # encoded once; a batch is a choice of rows
    eval_problems = held_out[: config.eval_problems]
    eval_batch = encode_batch(eval_problems, config.digits)
    model = AdditionModel(config)
    optimizer = AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n_params = sum(p.size for p in model.parameters())
    log(f"{config.digits}-digit addition: {len(train_problems):,} training problems, {len(held_out):,} held out; "
        f"model d_model={config.d_model}, {config.nhead} heads, {config.layers}+{config.layers} layers, "
        f"ff={config.ff}{'' if config.pos == 'sinusoidal' else ', no positions'} ({n_params:,} parameters); "
        f"AdamW lr {config.lr}, batch {config.batch}, "
        f"{config.steps} steps, seed {config.seed}")

    history: dict[str, list[float]] = {"step": [], "loss": [], "held_out_accuracy": [], "steps_per_second": [],
                                       "held_out_loss": [], "seconds": []}
    losses: list[float] = []
    train_seconds = 0.0
    started = time.perf_counter()
    width = len(str(config.steps))
    for step in range(config.steps):
        tick = time.perf_counter()
        batch = data.take(rng.integers(0, len(train_problems), size=config.batch))
        losses.append(train_step(model, optimizer, batch, learning_rate(step, config)))
        train_seconds += time.perf_counter() - tick
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            accuracy = exact_match(model, eval_problems)
            model.eval()
            with no_grad():
                held_out_loss = loss_on_batch(model, eval_batch).item()
            speed = len(losses) / train_seconds
            elapsed = time.perf_counter() - started
            for key, value in zip(history, (done, float(np.mean(losses)), accuracy, speed, held_out_loss, elapsed)):
                history[key].append(value)
            log(f"step {done:{width}d}/{config.steps}  loss {np.mean(losses):.4f}  held-out exact match "
                f"{accuracy:7.2%} of {len(eval_problems)}  {speed:5.1f} steps/s  {elapsed:5.0f} s  "
                f"held-out loss {held_out_loss:.4f}")
            losses, train_seconds = [], 0.0
    return model, history


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, model: AdditionModel, metrics: dict | None = None) -> None:
    """Write ``model`` to an ``.npz`` of plain arrays: one per parameter (by its state-dict name), plus
    ``config`` (the AdditionConfig as a JSON string in a 0-d str array) and ``metrics`` (JSON, e.g. the final
    held-out accuracy). No Python objects, so loading never needs pickle."""
    arrays = dict(model.state_dict())
    arrays["config"] = np.array(json.dumps(asdict(model.config)))
    arrays["metrics"] = np.array(json.dumps(metrics or {}))
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name without it
        np.savez(f, **arrays)


def load_checkpoint(path: str | Path) -> tuple[AdditionModel, dict]:
    """The model saved by ``save_checkpoint`` and its metrics. ``np.load(allow_pickle=False)``: a file
    holding Python objects is refused rather than unpickled. A file that is not such a checkpoint is a
    ValueError saying what is wrong."""
    with np.load(path, allow_pickle=False) as f:
        if "config" not in f.files:
            raise ValueError(f"{path} is not an addition checkpoint (it has no config)")
        saved = json.loads(str(f["config"]))
        known = {field.name for field in fields(AdditionConfig)}
        config = AdditionConfig(**{k: v for k, v in saved.items() if k in known})
        metrics = json.loads(str(f["metrics"])) if "metrics" in f.files else {}
        state = {name: f[name] for name in f.files if name not in ("config", "metrics")}
    model = AdditionModel(config)
    model.load_state_dict(state)
    model.eval()
    return model, metrics


# ---------------------------------------------------------------------- asking
def parse_problem(text: str, digits: int) -> str:
    """``text`` typed at the prompt -> the problem ``"a+b"`` (spaces dropped, leading zeros removed), or a
    ValueError whose message is the one-line explanation shown to the user."""
    text = "".join(text.split())
    if not text:
        raise ValueError("Type a sum such as 23+45 (Ctrl-D or Ctrl-C to quit).")
    stray = sorted({c for c in text if c not in "0123456789+"})
    if stray:
        raise ValueError(f"Only digits and '+', please, not {', '.join(repr(c) for c in stray)}: type a sum "
                         "such as 23+45.")
    parts = text.split("+")
    if len(parts) != 2 or not all(parts):
        raise ValueError("Type two numbers joined by one '+', such as 23+45.")
    numbers = [int(part) for part in parts]
    for n in numbers:
        if n >= 10**digits:
            raise ValueError(f"{n} has {len(str(n))} digits, but this model adds numbers of at most {digits} "
                             f"digit{'s' if digits > 1 else ''} (train one with --digits {len(str(n))}).")
    return f"{numbers[0]}+{numbers[1]}"


def ask(checkpoint: str | Path = DEFAULT_CHECKPOINT, read: Callable[[str], str] = input,
        write: Callable[[str], None] = print) -> int:
    """The prompt: read problems (``read``, by default ``input``), answer each with the model, mark it ✓ or
    show the true sum. Bad input gets a one-line explanation and the prompt goes on; end of input (Ctrl-D)
    or Ctrl-C ends it. Returns the exit status: 0, or 1 when there is no usable checkpoint."""
    loaded = _load_or_explain(checkpoint, write)
    if loaded is None:
        return 1
    model, metrics = loaded
    path = Path(checkpoint)
    digits = model.config.digits
    accuracy = metrics.get("held_out_accuracy")
    trained = f", {accuracy:.1%} of held-out problems right" if accuracy is not None else ""
    write(f"Loaded {path}: sums of numbers with at most {digits} digit{'s' if digits > 1 else ''}{trained}.")
    write("Type a sum such as 23+45; Ctrl-D or Ctrl-C quits.")
    try:
        while True:
            try:
                line = read("Problem > ")
            except EOFError:
                break
            try:
                problem = parse_problem(line, digits)
            except ValueError as error:
                write(str(error))
                continue
            got, expected = greedy_decode(model, [problem])[0], answer_of(problem)
            write(f"Model > {got} ✓" if got == expected else f"Model > {got} ✗ (the sum is {expected})")
    except KeyboardInterrupt:  # Ctrl-C, at the prompt or while the model thinks
        pass
    write("")  # end the prompt's line
    return 0


def _load_or_explain(checkpoint: str | Path, write: Callable[[str], None]) -> tuple[AdditionModel, dict] | None:
    """``(model, metrics)`` of the checkpoint, or None after a one-line explanation of what to run."""
    path = Path(checkpoint)
    train_command = "python -m stage3_transformer.addition train" + (
        f" --checkpoint {path}" if str(path) != DEFAULT_CHECKPOINT else "")
    if not path.is_file():
        write(f"No checkpoint at {path}. Train a model first: {train_command}")
        return None
    try:
        return load_checkpoint(path)
    except (ValueError, OSError, RuntimeError, KeyError) as error:  # not an .npz, not ours, weights that do not fit
        write(f"{path} is not a usable addition checkpoint ({error}). Train a new one: {train_command}")
        return None


# ---------------------------------------------------------------------- a look inside
class AttentionPicture(NamedTuple):
    """Where the decoder looked while it wrote the answer to one problem, every layer and head:

        rows    the tokens the decoder positions wrote, e.g. ["6", "8", "</s>"] for 23+45: row t is the
                position that predicts token t, from <s> and the tokens before it
        cross   (layers, heads, len(rows), len(problem))   the cross-attention on the problem's characters
        inputs  the tokens the decoder read, e.g. ["<s>", "6", "8"]
        self_   (layers, heads, len(rows), len(inputs))   the decoder's causal self-attention
    """

    answer: str
    rows: list[str]
    cross: np.ndarray
    inputs: list[str]
    self_: np.ndarray


def attention_maps(model: AdditionModel, problem: str) -> AttentionPicture:
    """The answer ``greedy_decode`` gives to ``problem`` (a valid "a+b"), and the attention weights with which
    the decoder wrote it: the decoder runs once more on ``<s>`` + the answer (teacher forcing on its own
    answer, which gives the same weights as the step-by-step decoding), with every head's weights recorded
    (``recorded_attention``). The problem is encoded without padding, so each column is one character."""
    answer = greedy_decode(model, [problem])[0]
    # The answer's tokens: a character each, or the name of a special token a half-trained model wrote.
    written = [VOCAB.tokens.index(t) for t in re.findall(r"<pad>|<s>|.", answer)]
    complete = len(written) <= answer_length(model.config.digits)  # else the decoding stopped without </s>
    rows = [VOCAB.tokens[i] for i in written] + ([VOCAB.END] if complete else [])
    decoder_input = np.array([[VOCAB.start_id, *written][: len(rows)]])  # (1, T): <s>, then all but the last
    source = VOCAB.encode_texts([problem], len(problem))  # (1, S)
    layers = model.transformer.decoder.layers
    model.eval()
    with no_grad(), recorded_attention([layer.self_attn for layer in layers]) as self_maps, \
            recorded_attention([layer.multihead_attn for layer in layers]) as cross_maps:
        model.decode(decoder_input, model.encode(source), source)
    if len(self_maps) != len(layers) or len(cross_maps) != len(layers):
        raise RuntimeError(f"the decoder's {len(layers)} layers called self_attn {len(self_maps)} times and "
                           f"multihead_attn {len(cross_maps)} times; the picture needs one call of each per layer")
    inputs = [VOCAB.tokens[i] for i in decoder_input[0]]
    return AttentionPicture(answer, rows, np.stack([m[0] for m in cross_maps]), inputs,
                            np.stack([m[0] for m in self_maps]))


def show_attention(checkpoint: str | Path, text: str, out: str | Path = "attention.png",
                   write: Callable[[str], None] = print) -> int:
    """Answer the problem ``text`` with the model of ``checkpoint``, print the attention of every decoder
    layer (heads side by side, in tenths) and write every head's heatmap to the PNG ``out``. Bad input gets a
    one-line explanation. Returns the exit status: 0, or 1 for an unusable checkpoint or problem."""
    loaded = _load_or_explain(checkpoint, write)
    if loaded is None:
        return 1
    model = loaded[0]
    try:
        problem = parse_problem(text, model.config.digits)
    except ValueError as error:
        write(str(error) if text.strip() else 'Give a sum to look at, such as: attention "23+45".')
        return 1
    picture = attention_maps(model, problem)
    expected = answer_of(problem)
    verdict = "✓" if picture.answer == expected else f"✗ (the sum is {expected})"
    write(f"{problem} = {picture.answer} {verdict}")
    columns = list(problem)
    for layer in range(len(picture.cross)):
        write(f"\ncross-attention of decoder layer {layer}: the row that writes each answer token, reading "
              f"{problem} (weights in tenths)")
        write(attention_tables(picture.cross[layer], picture.rows, columns))
    for layer in range(len(picture.self_)):
        write(f"\nself-attention of decoder layer {layer}: the same rows, reading what the decoder has read "
              f"({' '.join(picture.inputs)})")
        write(attention_tables(picture.self_[layer], picture.rows, picture.inputs))
    writes = "writes (each row: the position that predicts it)"
    try:
        attention_grid([AttentionMaps("cross-attention: each answer token reads the problem", picture.cross,
                                      picture.rows, columns, xlabel="the problem (encoder)", ylabel=writes),
                        AttentionMaps("self-attention: each answer token reads the decoder's input", picture.self_,
                                      picture.rows, picture.inputs, xlabel="read so far (decoder input)",
                                      ylabel=writes)],
                       out, title=f"{problem} = {picture.answer}: where every head of the decoder looked")
    except OSError as error:  # a folder that does not exist, a file that may not be written
        write(f"\ncannot write the heatmaps to {out}: {error.strerror or error}")
        return 1
    write(f"\nheatmaps: {out}")
    return 0


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stage3_transformer.addition", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,ask,attention}")
    train_parser = commands.add_parser("train", help="train a model and save it to the checkpoint")
    defaults = AdditionConfig()
    train_parser.add_argument("--digits", type=int, default=defaults.digits,
                              help=f"numbers of at most this many digits, 1 to {MAX_DIGITS} (default: %(default)s)")
    for name, help_text in [("steps", "optimisation steps"), ("batch", "problems per step"),
                            ("lr", "AdamW's peak learning rate"), ("weight_decay", "AdamW's weight decay"),
                            ("warmup", "steps of learning-rate warmup"), ("d_model", "width of the model"),
                            ("nhead", "attention heads"), ("layers", "encoder layers and decoder layers, each"),
                            ("ff", "hidden width of the feed-forward blocks"), ("dropout", "dropout probability"),
                            ("held_out_fraction", "fraction of the problems never trained on"),
                            ("eval_every", "steps between progress lines"),
                            ("eval_problems", "held-out problems decoded for each progress line"),
                            ("seed", "seed of the split, the weights and the batches")]:
        default = getattr(defaults, name)
        train_parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                                  help=f"{help_text} (default: %(default)s)")
    train_parser.add_argument("--pos", choices=POSITIONS, default=defaults.pos,
                              help="the sinusoidal position table, or none (an experiment; default: %(default)s)")
    ask_parser = commands.add_parser("ask", help="answer the sums you type, with a trained model")
    attention_parser = commands.add_parser("attention", help="where every head looked while the model answered a "
                                                             "sum: tables and a PNG")
    attention_parser.add_argument("problem", help="a sum such as 23+45")
    attention_parser.add_argument("--out", default="attention.png", help="the PNG to write (default: %(default)s)")
    for sub in (train_parser, ask_parser, attention_parser):
        sub.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                         help="the .npz file the model is saved to / loaded from (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``train``, ``ask`` or ``attention``, as the command line says; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "ask":
        return ask(args.checkpoint)
    if args.command == "attention":
        return show_attention(args.checkpoint, args.problem, args.out)
    if not 1 <= args.digits <= MAX_DIGITS:
        parser.error(f"--digits must be between 1 and {MAX_DIGITS}, got {args.digits} "
                     f"({args.digits}-digit numbers make 10**{2 * args.digits} problems)")
    for name in ("steps", "batch", "eval_every", "eval_problems", "d_model", "nhead", "layers", "ff"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    config = replace(AdditionConfig(), **{f.name: getattr(args, f.name) for f in fields(AdditionConfig)})
    if config.d_model % config.nhead:
        parser.error(f"--d-model {config.d_model} must be divisible by --nhead {config.nhead}")
    try:
        model, history = train(config)
    except KeyboardInterrupt:
        print("\ninterrupted: no model saved (a shorter run: --steps N)")
        return 130  # the shell's status for a program stopped by Ctrl-C
    metrics = {"steps": config.steps, "held_out_accuracy": history["held_out_accuracy"][-1]}
    save_checkpoint(args.checkpoint, model, metrics)
    print(f"held-out exact match {metrics['held_out_accuracy']:.2%}; saved the model to {args.checkpoint}")
    print("ask it: python -m stage3_transformer.addition ask" + (
        f" --checkpoint {args.checkpoint}" if args.checkpoint != DEFAULT_CHECKPOINT else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
