"""A Transformer that translates, byte by byte: "twenty-three" -> "dreiundzwanzig", built from stages 1 to 3.

    python -m stage3_transformer.translate train                      # English -> French number words
    python -m stage3_transformer.translate train --pair en-de         # any two of num2words' languages
    python -m stage3_transformer.translate ask                        # type English words, read French ones
    python -m stage3_transformer.translate attention "twenty-three" --pair en-de   # where the decoder looked

Translation is what the encoder-decoder Transformer was invented for. Here the sentences are numbers written
out in words, in two languages, which ``num2words`` writes for every number: a parallel corpus generated on the
spot, with real linguistic structure. French says 71 as "soixante et onze" (sixty and eleven) and 80 as
"quatre-vingts" (four twenties); German says 23 as "dreiundzwanzig" (three-and-twenty: the order flips). The
model reads and writes UTF-8 bytes, so it needs no word list and any language fits in its 260 ids.

The pieces, in the order a run uses them:
    number_words, make_corpus, split_numbers
                                  the corpus: every number of the range in both languages; a fixed random
                                  part held out, never trained on
    ByteVocabulary, VOCAB         text <-> ids: 256 bytes and <pad> <s> </s> <unk>
    length_batches, encode_pairs  batches of phrases of similar length, padded to the longest of the batch:
                                  the source, the decoder input "<s>..." and the target "...</s>"
    TranslationModel              byte embeddings + sinusoidal positions -> nn.Transformer -> a head over the
                                  260 ids
    greedy_decode, exact_match    translating: start from <s>, append the most likely byte, repeat
    loss_on_batch, train          cross-entropy of every next byte, padding ignored; the training loop
    save_checkpoint, load_checkpoint, ask, cross_attention, main
                                  an .npz of plain arrays (no pickle), the prompt, the attention picture,
                                  the command line

One seed decides the initial weights and the batches; the held-out numbers are the same for every seed, so
runs with different seeds are judged on the same phrases.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stage1_autograd.tensor import Tensor, no_grad
from stage2_mlp.nn import Linear, Module
from stage2_mlp.optim import AdamW
from stage3_transformer import functional as F
from stage3_transformer import nn
from stage3_transformer.plots import attention_heatmap, attention_table, recorded_attention

SPLIT_SEED = 0  # the held-out numbers: the same for every training seed
MAX_NUMBERS = 1_000_000  # the range's upper end: a million numbers take a minute to write out


@dataclass
class TranslationConfig:
    """Everything that decides a run; saved inside every checkpoint.

    The defaults translate the held-out numbers of 0 ... 9,999 from English into French (99.3% exact match)
    and into German (99.7%) in about 5 minutes on a busy 2-core machine (the lesson shows the runs): a model
    of 284,000 parameters, 2 encoder and 2 decoder layers, trained for 1,000 steps of 64 pairs.
    """

    pair: str = "en-fr"  # source and target language, num2words' codes
    numbers: int = 10_000  # the corpus: the numbers 0 ... numbers - 1
    held_out: int = 1_000  # numbers never trained on, drawn with SPLIT_SEED
    d_model: int = 64  # width of every byte's vector
    nhead: int = 4  # attention heads
    layers: int = 2  # encoder layers, and as many decoder layers
    ff: int = 256  # hidden width of the feed-forward blocks
    dropout: float = 0.0
    lr: float = 3e-3  # AdamW's peak learning rate
    weight_decay: float = 0.01
    warmup: int = 100  # steps of linear warmup, then cosine decay to 0 at the last step
    steps: int = 1000
    batch: int = 64  # pairs per step
    max_bytes: int = 64  # the longest phrase, in bytes, on either side: the position table's length
    eval_every: int = 250  # steps between progress lines
    eval_numbers: int = 200  # held-out numbers translated for each progress line (all of them at the end)
    seed: int = 0

    @property
    def languages(self) -> tuple[str, str]:
        source, target = self.pair.split("-")
        return source, target


# ---------------------------------------------------------------------- the corpus (given)
def number_words(number: int, language: str) -> str:
    """``number`` written out in ``language`` (a num2words code such as "en", "fr", "de"), in lower case."""
    try:
        from num2words import num2words
    except ImportError:  # pragma: no cover - requirements.txt lists it
        raise ImportError("the translation corpus is written by num2words: pip install num2words") from None
    return num2words(number, lang=language).lower()


def known_languages() -> list[str]:
    """The language codes num2words can write numbers in."""
    from num2words import CONVERTER_CLASSES

    return sorted(CONVERTER_CLASSES)


def make_corpus(pair: str, numbers: int) -> list[tuple[int, str, str]]:
    """``(n, source words, target words)`` for n = 0 ... numbers - 1, in the two languages of ``pair``."""
    source, target = pair.split("-")
    return [(n, number_words(n, source), number_words(n, target)) for n in range(numbers)]


def split_numbers(numbers: int, held_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, held_out)``: the numbers 0 ... numbers - 1 shuffled by ``np.random.default_rng(SPLIT_SEED)``,
    the first ``held_out`` of them held out, the rest trained on, both in that shuffled order (so the first
    few hundred held-out numbers are a fair sample of all of them)."""
    if not 0 < held_out < numbers:
        raise ValueError(f"held_out must be between 1 and numbers - 1 = {numbers - 1}, got {held_out}")
    order = np.random.default_rng(SPLIT_SEED).permutation(numbers)
    return order[held_out:], order[:held_out]


# ---------------------------------------------------------------------- bytes and ids
class ByteVocabulary:
    """The 260 ids of a byte-level model:

        id:     0      1     2      3       4        5        ...  259
        token:  <pad>  <s>   </s>   <unk>   byte 0   byte 1   ...  byte 255

    A text is its UTF-8 bytes, each byte b the id b + 4: "é" is two bytes, 0xC3 0xA9, so two ids, 199 and 173.
    No word list, no language is favoured, nothing is out of vocabulary. ``<unk>`` stands for a byte outside
    an ``alphabet`` given to ``encode_texts`` (the bytes a model was trained on, say).
    """

    PAD, START, END, UNK = "<pad>", "<s>", "</s>", "<unk>"
    specials = [PAD, START, END, UNK]
    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3
    offset = 4  # the id of byte 0

    def __len__(self) -> int:
        return self.offset + 256

    def encode_texts(self, texts: list[str], width: int | None = None, alphabet: bytes | None = None) -> np.ndarray:
        """The ids of each text's UTF-8 bytes, padded with ``<pad>`` to ``width`` (default: the longest text's
        byte count): an int64 array (len(texts), width). A byte not in ``alphabet`` (when given) becomes
        ``<unk>``. A text of more than ``width`` bytes is a ValueError naming it and both lengths."""
        # BEGIN SOLUTION 3.11: the bytes as a (N, width) uint8 table, + offset; <pad> past each length; <unk> outside alphabet
        encoded = [text.encode("utf-8") for text in texts]
        lengths = np.array([len(b) for b in encoded], dtype=np.int64)
        longest = int(lengths.max(initial=0))
        width = longest if width is None else width
        if longest > width:
            worst = encoded[int(lengths.argmax())]
            raise ValueError(f"{worst.decode('utf-8')!r} has {len(worst)} bytes, more than the {width} this model reads")
        # 'S' arrays hold bytes, each row padded with b"\0" to the widest: a (N, width) view of uint8 codes.
        codes = np.array(encoded, dtype=f"S{max(width, 1)}").view(np.uint8).reshape(len(texts), max(width, 1))
        ids = codes[:, :width].astype(np.int64) + self.offset
        if alphabet is not None:
            known = np.zeros(256, dtype=bool)
            known[list(alphabet)] = True
            ids[~known[codes[:, :width]]] = self.unk_id
        ids[np.arange(width) >= lengths[:, None]] = self.pad_id  # a text's real b"\0" bytes stay bytes
        return ids
        # END SOLUTION

    def decode(self, ids) -> str:
        """The text of a sequence of ids, up to (not including) the first ``</s>``: the bytes decoded as UTF-8
        (a broken sequence shows as U+FFFD), a special token the model wrote shown by its name."""
        # BEGIN SOLUTION 3.11: stop at </s>; each run of bytes decoded as UTF-8 (errors="replace"); specials by name
        parts, run = [], bytearray()
        for i in np.asarray(ids).tolist():
            if i == self.end_id:
                break
            if i >= self.offset:
                run.append(i - self.offset)
                continue
            parts.append(run.decode("utf-8", errors="replace"))
            parts.append(self.specials[i])
            run = bytearray()
        parts.append(run.decode("utf-8", errors="replace"))
        return "".join(parts)
        # END SOLUTION


VOCAB = ByteVocabulary()


def byte_length(text: str) -> int:
    return len(text.encode("utf-8"))


# ---------------------------------------------------------------------- batches
class Batch(NamedTuple):
    """One batch for teacher forcing, three int64 arrays padded to the batch's longest phrases. For
    ("twenty-three", "vingt-trois"), S = 12 source bytes and T = 11 target bytes:

        source         t w e n t y - t h r e e         (B, S)      what the encoder reads
        decoder_input  <s> v i n g t - t r o i s       (B, T + 1)  what the decoder reads
        target         v i n g t - t r o i s </s>      (B, T + 1)  the input moved left by one, then </s>

    (each letter is its byte's id; shorter rows end in <pad>).
    """

    source: np.ndarray
    decoder_input: np.ndarray
    target: np.ndarray


def encode_pairs(sources: list[str], targets: list[str]) -> Batch:
    """The ``Batch`` of the phrase pairs, as pictured in ``Batch``: the source padded to the longest source of
    these pairs, the decoder input and the target to the longest target plus one. No loop over positions."""
    # BEGIN SOLUTION 3.11: encode_texts on both sides; <s> column + target bytes; bytes + </s> at each length
    source = VOCAB.encode_texts(sources)
    words = VOCAB.encode_texts(targets)  # (B, T)
    rows = len(targets)
    decoder_input = np.concatenate([np.full((rows, 1), VOCAB.start_id), words], axis=1)
    target = np.concatenate([words, np.full((rows, 1), VOCAB.pad_id)], axis=1)
    target[np.arange(rows), (words != VOCAB.pad_id).sum(axis=1)] = VOCAB.end_id
    return Batch(source, decoder_input, target)
    # END SOLUTION


def length_batches(lengths, batch_size: int, rng: np.random.Generator | int | None) -> list[np.ndarray]:
    """One epoch of batches of indices into ``lengths`` (one length per pair), grouped by length so that a
    batch wastes little on padding:

        order   = rng.permutation(N)                               a random order (ties in length stay random)
        order   = order stable-sorted by lengths[order]            shortest first
        batches = order[0:batch_size], order[batch_size:2 batch_size], ...   (the last may be smaller)
        return    the batches in the order rng.permutation(len(batches))      (the epoch visits them at random)

    with ``rng = np.random.default_rng(rng)``, drawn in that order. Every index lands in exactly one batch.
    """
    # BEGIN SOLUTION 3.11: permutation, stable argsort by length, chunks, a second permutation of the chunks
    rng = np.random.default_rng(rng)
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
    # END SOLUTION


# ---------------------------------------------------------------------- the model (given)
class TranslationModel(Module):
    """An encoder-decoder Transformer over the 260 byte ids:

        memory = transformer.encoder(source_embedding(source) + P[:S], source padding masked)    (B, S, d_model)
        h      = transformer.decoder(target_embedding(decoder_input) + P[:T], memory,
                                     causal mask, source padding masked)                        (B, T, d_model)
        logits = head(h)                                                                        (B, T, 260)

    ``P`` is ``F.sinusoidal_positions(max_bytes + 1, d_model)``, a constant. The model of exercise 3.8 with a
    byte vocabulary, and the same parameter names.
    """

    def __init__(self, config: TranslationConfig, *, dtype=np.float32):
        super().__init__()
        self.config = config
        rng = np.random.default_rng(config.seed)
        d = config.d_model
        self.source_embedding = nn.Embedding(len(VOCAB), d, rng=rng, dtype=dtype)
        self.target_embedding = nn.Embedding(len(VOCAB), d, rng=rng, dtype=dtype)
        self.positions = Tensor(F.sinusoidal_positions(config.max_bytes + 1, d).data.astype(dtype))
        self.transformer = nn.Transformer(d, config.nhead, config.layers, config.layers, config.ff, config.dropout,
                                          batch_first=True, rng=rng, dtype=dtype)
        self.head = Linear(d, len(VOCAB), rng=rng, dtype=dtype)

    def encode(self, source: np.ndarray) -> Tensor:
        """source (B, S) ids -> memory (B, S, d_model)."""
        x = self.source_embedding(source) + self.positions[: source.shape[1]]
        return self.transformer.encoder(x, src_key_padding_mask=source == VOCAB.pad_id)

    def decode(self, decoder_input: np.ndarray, memory: Tensor, source: np.ndarray) -> Tensor:
        """decoder_input (B, T) ids, memory (B, S, d_model), source (B, S) ids -> logits (B, T, 260)."""
        T = decoder_input.shape[1]
        y = self.target_embedding(decoder_input) + self.positions[:T]
        causal = nn.Transformer.generate_square_subsequent_mask(T, dtype=y.dtype)
        h = self.transformer.decoder(y, memory, tgt_mask=causal, memory_key_padding_mask=source == VOCAB.pad_id)
        return self.head(h)

    def forward(self, source: np.ndarray, decoder_input: np.ndarray) -> Tensor:
        return self.decode(decoder_input, self.encode(source), source)


def loss_on_batch(model: TranslationModel, batch: Batch) -> Tensor:
    """The mean cross-entropy of every next byte of the targets that is not padding (teacher forcing)."""
    logits = model(batch.source, batch.decoder_input)  # (B, T, 260)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.target.reshape(-1), ignore_index=VOCAB.pad_id)


# ---------------------------------------------------------------------- translating
def greedy_decode(model: TranslationModel, phrases: list[str], max_bytes: int | None = None) -> list[str]:
    """The model's translation of every phrase: start each with ``<s>``, append the most likely next id (the
    argmax of the logits at the last position), and repeat, for at most ``max_bytes + 1`` ids (default
    ``model.config.max_bytes``: the longest phrase and its ``</s>``). A translation is complete at its
    ``</s>``; the text before it is returned (``VOCAB.decode``).

    In eval mode and under ``no_grad()``; the sources (padded to the longest) are encoded once, each step runs
    ``model.decode`` once for all the phrases, the rows already complete receive ``<pad>``, and the loop stops
    when every row is complete.
    """
    max_bytes = model.config.max_bytes if max_bytes is None else max_bytes
    # BEGIN SOLUTION 3.11: 3.8's loop: memory once; argmax of the last position, <pad> once finished
    source = VOCAB.encode_texts(phrases)  # (B, S)
    model.eval()
    with no_grad():
        memory = model.encode(source)
        written = np.full((len(phrases), 1), VOCAB.start_id)  # (B, 1)
        finished = np.zeros(len(phrases), dtype=bool)
        for _ in range(max_bytes + 1):
            logits = model.decode(written, memory, source)  # (B, t, 260)
            next_ids = np.where(finished, VOCAB.pad_id, logits.data[:, -1].argmax(axis=-1))
            written = np.concatenate([written, next_ids[:, None]], axis=1)
            finished |= next_ids == VOCAB.end_id
            if finished.all():
                break
    return [VOCAB.decode(row) for row in written[:, 1:]]
    # END SOLUTION


def translate_all(model: TranslationModel, phrases: list[str], chunk: int = 250) -> list[str]:
    """``greedy_decode`` of many phrases, ``chunk`` at a time and grouped by length (a chunk of similar
    phrases finishes together), returned in the order of ``phrases``."""
    order = np.argsort([byte_length(p) for p in phrases], kind="stable")
    out: list[str] = [""] * len(phrases)
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        for i, text in zip(part, greedy_decode(model, [phrases[i] for i in part])):
            out[i] = text
    return out


def exact_match(model: TranslationModel, sources: list[str], targets: list[str]) -> float:
    """The fraction of ``sources`` whose translation is exactly its target, every byte right."""
    got = translate_all(model, sources)
    return float(np.mean([a == b for a, b in zip(got, targets)]))


# ---------------------------------------------------------------------- training (given)
def learning_rate(step: int, config: TranslationConfig) -> float:
    """Linear warmup over ``warmup`` steps, then a cosine decay to 0 at the last step."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def check_config(config: TranslationConfig) -> None:
    """ValueError with the fix, for settings no run can use."""
    languages = config.pair.split("-")
    if len(languages) != 2 or not all(languages):
        raise ValueError(f"--pair must be two language codes joined by '-', such as en-fr, not {config.pair!r}")
    unknown = [code for code in languages if code not in known_languages()]
    if unknown:
        raise ValueError(f"num2words does not know the language {unknown[0]!r}; it knows {', '.join(known_languages())}")
    if not 2 <= config.numbers <= MAX_NUMBERS:
        raise ValueError(f"--numbers must be between 2 and {MAX_NUMBERS:,}, got {config.numbers:,}")
    if config.d_model % config.nhead:
        raise ValueError(f"--d-model {config.d_model} must be divisible by --nhead {config.nhead}")


def train(config: TranslationConfig, log: Callable[[str], None] = print) -> tuple[TranslationModel, dict[str, list]]:
    """Train a ``TranslationModel`` on the training numbers of ``config``'s corpus.

    Epoch after epoch, the training pairs are visited in ``length_batches`` of ``config.batch``. Every
    ``config.eval_every`` steps and after the last, ``log`` gets a progress line: the step, the mean training
    loss since the previous line, the exact match on the first ``config.eval_numbers`` held-out numbers (on all
    of them after the last step), the speed and the time so far. Returns the model and the history: one
    ``step``, ``loss``, ``held_out_accuracy`` per progress line, and ``step_loss``, the loss of every step.
    """
    check_config(config)
    started = time.perf_counter()
    corpus = make_corpus(config.pair, config.numbers)
    train_numbers, held_out = split_numbers(config.numbers, config.held_out)
    longest = max(max(byte_length(s), byte_length(t)) for _, s, t in corpus)
    if longest > config.max_bytes:
        raise ValueError(f"the longest phrase of the corpus has {longest} bytes, more than --max-bytes {config.max_bytes}")
    sources = [corpus[n][1] for n in train_numbers]
    targets = [corpus[n][2] for n in train_numbers]
    eval_sources = [corpus[n][1] for n in held_out]
    eval_targets = [corpus[n][2] for n in held_out]
    source_lengths = np.array([byte_length(s) for s in sources])

    rng = np.random.default_rng(config.seed)
    model = TranslationModel(config)
    optimizer = AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n_params = sum(p.size for p in model.parameters())
    source_language, target_language = config.languages
    log(f"{source_language} -> {target_language}: numbers 0 ... {config.numbers - 1:,}, {len(sources):,} pairs to train "
        f"on, {len(held_out):,} held out; model d_model={config.d_model}, {config.nhead} heads, "
        f"{config.layers}+{config.layers} layers, ff={config.ff} ({n_params:,} parameters); AdamW lr {config.lr}, "
        f"batch {config.batch}, {config.steps} steps, seed {config.seed}")

    history: dict[str, list] = {"step": [], "loss": [], "held_out_accuracy": [], "step_loss": []}
    losses: list[float] = []
    queue: list[np.ndarray] = []
    train_seconds = 0.0
    width = len(str(config.steps))
    for step in range(config.steps):
        tick = time.perf_counter()
        if not queue:
            queue = length_batches(source_lengths, config.batch, rng)[::-1]
        rows = queue.pop()
        batch = encode_pairs([sources[i] for i in rows], [targets[i] for i in rows])
        model.train()
        optimizer.lr = learning_rate(step, config)
        optimizer.zero_grad()
        loss = loss_on_batch(model, batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        history["step_loss"].append(losses[-1])
        train_seconds += time.perf_counter() - tick
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            count = len(held_out) if done == config.steps else min(config.eval_numbers, len(held_out))
            accuracy = exact_match(model, eval_sources[:count], eval_targets[:count])
            for key, value in zip(("step", "loss", "held_out_accuracy"), (done, float(np.mean(losses)), accuracy)):
                history[key].append(value)
            log(f"step {done:{width}d}/{config.steps}  loss {np.mean(losses):.4f}  held-out exact match "
                f"{accuracy:7.2%} of {count}  {len(losses) / train_seconds:5.2f} steps/s  "
                f"{time.perf_counter() - started:5.0f} s")
            losses, train_seconds = [], 0.0
    return model, history


def plot_losses(history: dict[str, list], path: str | Path) -> None:
    """The loss of every step and the held-out exact match of every progress line, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    figure, loss_axes = plt.subplots(figsize=(7, 4))
    loss_axes.plot(np.arange(1, len(history["step_loss"]) + 1), history["step_loss"], lw=0.8, alpha=0.7,
                   label="training loss (per step)")
    loss_axes.set_yscale("log")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("cross-entropy (nats per byte)")
    accuracy_axes = loss_axes.twinx()
    accuracy_axes.plot(history["step"], history["held_out_accuracy"], "o-", color="tab:orange",
                       label="held-out exact match")
    accuracy_axes.set_ylim(0, 1)
    accuracy_axes.set_ylabel("held-out exact match")
    loss_axes.grid(alpha=0.3)
    figure.legend(loc="center right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------------- checkpoints (given)
def default_checkpoint(pair: str) -> str:
    return f"translate-{pair}.npz"


def save_checkpoint(path: str | Path, model: TranslationModel, metrics: dict | None = None) -> None:
    """The parameters (by state-dict name), ``config`` (JSON) and ``metrics`` (JSON) as plain arrays in an .npz."""
    arrays = dict(model.state_dict())
    arrays["config"] = np.array(json.dumps(asdict(model.config)))
    arrays["metrics"] = np.array(json.dumps(metrics or {}))
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name without it
        np.savez(f, **arrays)


def load_checkpoint(path: str | Path) -> tuple[TranslationModel, dict]:
    """The model saved by ``save_checkpoint`` and its metrics; ``allow_pickle=False``. ValueError for a file
    that is not such a checkpoint."""
    with np.load(path, allow_pickle=False) as f:
        if "config" not in f.files:
            raise ValueError(f"{path} is not a translation checkpoint (it has no config)")
        saved = json.loads(str(f["config"]))
        if "pair" not in saved:
            raise ValueError(f"{path} is not a translation checkpoint (its config names no language pair)")
        known = {field.name for field in fields(TranslationConfig)}
        config = TranslationConfig(**{k: v for k, v in saved.items() if k in known})
        metrics = json.loads(str(f["metrics"])) if "metrics" in f.files else {}
        state = {name: f[name] for name in f.files if name not in ("config", "metrics")}
    model = TranslationModel(config)
    model.load_state_dict(state)
    model.eval()
    return model, metrics


# ---------------------------------------------------------------------- asking (given)
class Corpus:
    """The source phrases of a model's range, to check its answers: source phrase -> number, the held-out
    numbers, and the bytes the source phrases are written with. (The target phrases are written when asked.)"""

    def __init__(self, config: TranslationConfig):
        source_language = config.languages[0]
        self.number_of = {number_words(n, source_language): n for n in range(config.numbers)}
        self.held_out = set(split_numbers(config.numbers, config.held_out)[1].tolist())
        self.alphabet = bytes(sorted({b for source in self.number_of for b in source.encode("utf-8")}))


def normalise(text: str) -> str:
    """A typed phrase as the corpus writes them: lower case, single spaces, no space at either end."""
    return " ".join(text.split()).lower()


def check_phrase(phrase: str, corpus: Corpus, config: TranslationConfig) -> None:
    """ValueError whose message is the one-line explanation shown to the user, for a phrase the model cannot
    read: empty, longer than the model's positions, or with bytes its training phrases never had."""
    source_language = config.languages[0]
    example = number_words(312, source_language)
    if not phrase:
        raise ValueError(f"Type a number in words, such as {example!r} (Ctrl-D or Ctrl-C to quit).")
    if byte_length(phrase) > config.max_bytes:
        raise ValueError(f"That is {byte_length(phrase)} bytes; this model reads phrases of at most {config.max_bytes} "
                         f"bytes (numbers below {config.numbers:,}, such as {example!r}).")
    unseen = sorted({c for c in phrase if not set(c.encode("utf-8")) <= set(corpus.alphabet)})
    if unseen:
        raise ValueError(f"The model never saw {', '.join(repr(c) for c in unseen)}: its {source_language!r} phrases "
                         f"are written with {corpus.alphabet.decode('utf-8', errors='replace')!r} only.")


def ask(checkpoint: str | Path, read: Callable[[str], str] = input, write: Callable[[str], None] = print,
        pair: str = "en-fr") -> int:
    """The prompt: read phrases, translate each, say whether the translation is right when the phrase is one
    of the corpus's (and whether the model trained on it). Bad input gets a one-line explanation; end of input
    or Ctrl-C ends it. Returns the exit status: 0, or 1 when there is no usable checkpoint."""
    model = _load_or_explain(checkpoint, write, pair)
    if model is None:
        return 1
    model, metrics = model
    config = model.config
    corpus = Corpus(config)
    source_language, target_language = config.languages
    accuracy = metrics.get("held_out_accuracy")
    trained = f", {accuracy:.1%} of the held-out numbers right" if accuracy is not None else ""
    write(f"Loaded {checkpoint}: {source_language} -> {target_language} number words, 0 ... {config.numbers - 1:,}{trained}.")
    write(f"Type a number in {source_language!r} words, such as {number_words(312, source_language)!r}; "
          "Ctrl-D or Ctrl-C quits.")
    try:
        while True:
            try:
                line = read("Phrase > ")
            except EOFError:
                break
            phrase = normalise(line)
            try:
                check_phrase(phrase, corpus, config)
            except ValueError as error:
                write(str(error))
                continue
            got = greedy_decode(model, [phrase])[0]
            if phrase not in corpus.number_of:
                write(f"Model > {got} (not a number of the corpus: no answer to check)")
                continue
            number = corpus.number_of[phrase]
            expected = number_words(number, target_language)
            seen = "held out" if number in corpus.held_out else "trained on"
            write(f"Model > {got} ✓ ({number:,}, {seen})" if got == expected else
                  f"Model > {got} ✗ ({number:,}, {seen}: {expected})")
    except KeyboardInterrupt:
        pass
    write("")
    return 0


def _load_or_explain(checkpoint: str | Path, write: Callable[[str], None], pair: str):
    """``(model, metrics)`` of the checkpoint, or None after a one-line explanation of what to run."""
    path = Path(checkpoint)
    train_command = f"python -m stage3_transformer.translate train --pair {pair}" + (
        f" --checkpoint {path}" if str(path) != default_checkpoint(pair) else "")
    if not path.is_file():
        write(f"No checkpoint at {path}. Train a model first: {train_command}")
        return None
    try:
        return load_checkpoint(path)
    except (ValueError, OSError, RuntimeError, KeyError) as error:
        write(f"{path} is not a usable translation checkpoint ({error}). Train a new one: {train_command}")
        return None


# ---------------------------------------------------------------------- where the decoder looks (given)
def cross_attention(model: TranslationModel, phrase: str) -> tuple[str, np.ndarray]:
    """The translation of ``phrase`` and the cross-attention weights with which the decoder wrote it:
    (layers, T + 1, S) for a translation of T bytes, one (T + 1, S) map per decoder layer, averaged over the
    heads. Row t is the decoder position that predicts output byte t (the last row predicts </s>); column s is
    source byte s. (Only the first max_bytes + 1 rows of a translation that never ended.)

    The decoder runs once more on ``<s>`` + the translation, with the weights of each layer's cross-attention
    recorded (``plots.recorded_attention``)."""
    translation = greedy_decode(model, [phrase])[0]
    source = VOCAB.encode_texts([phrase])
    written = VOCAB.encode_texts([translation])[:, : model.config.max_bytes]  # a translation that never wrote
    decoder_input = np.concatenate([[[VOCAB.start_id]], written], axis=1)    # </s> runs one byte past the positions
    layers = model.transformer.decoder.layers
    with no_grad(), recorded_attention([layer.multihead_attn for layer in layers]) as recorded:
        model.decode(decoder_input, model.encode(source), source)
    return translation, np.stack([weights[0].mean(axis=0) for weights in recorded])  # each (heads, T + 1, S)


def byte_labels(text: str) -> list[str]:
    """One label per UTF-8 byte of ``text``: the character for a one-byte character, and for a longer one the
    character on its first byte and "·" on the others ("ß" is two bytes: "ß", "·")."""
    labels = []
    for character in text:
        n = byte_length(character)
        labels += [character if character != " " else "␣"] + ["·"] * (n - 1)
    return labels


def show_attention(checkpoint: str | Path, phrase: str, out: str | Path | None, layer: int | None,
                   write: Callable[[str], None] = print, pair: str = "en-fr") -> int:
    """Translate ``phrase``, print the cross-attention table of one decoder layer (the last by default) and
    write its heatmap to ``out`` (default ``attention-<pair>.png``). Returns the exit status."""
    loaded = _load_or_explain(checkpoint, write, pair)
    if loaded is None:
        return 1
    model = loaded[0]
    config = model.config
    phrase = normalise(phrase)
    try:
        check_phrase(phrase, Corpus(config), config)
    except ValueError as error:
        write(str(error))
        return 1
    translation, weights = cross_attention(model, phrase)
    layer = config.layers - 1 if layer is None else layer
    if not 0 <= layer < config.layers:
        write(f"--layer must be between 0 and {config.layers - 1} (the decoder has {config.layers} layers)")
        return 1
    rows = (byte_labels(translation) + ["</s>"])[: weights.shape[1]]
    columns = byte_labels(phrase)
    title = f"{phrase!r} -> {translation!r}: cross-attention of decoder layer {layer} ({config.pair})"
    write(title)
    write(attention_table(weights[layer], rows, columns))
    path = Path(out) if out is not None else Path(f"attention-{config.pair}.png")
    attention_heatmap(weights[layer], rows, columns, path, title=title, xlabel=f"source bytes ({config.languages[0]})",
                      ylabel=f"written bytes ({config.languages[1]}), each row predicting its byte")
    write(f"heatmap: {path}")
    return 0


# ---------------------------------------------------------------------- command line (given)
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stage3_transformer.translate", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,ask,attention}")
    train_parser = commands.add_parser("train", help="train a model and save it to the checkpoint")
    defaults = TranslationConfig()
    for name, help_text in [("numbers", "the corpus: the numbers 0 ... NUMBERS - 1"),
                            ("held_out", "numbers never trained on"), ("steps", "optimisation steps"),
                            ("batch", "pairs per step"), ("lr", "AdamW's peak learning rate"),
                            ("weight_decay", "AdamW's weight decay"), ("warmup", "steps of learning-rate warmup"),
                            ("d_model", "width of the model"), ("nhead", "attention heads"),
                            ("layers", "encoder layers and decoder layers, each"),
                            ("ff", "hidden width of the feed-forward blocks"), ("dropout", "dropout probability"),
                            ("max_bytes", "the longest phrase the model reads or writes, in bytes"),
                            ("eval_every", "steps between progress lines"),
                            ("eval_numbers", "held-out numbers translated for each progress line"),
                            ("seed", "seed of the weights and the batches")]:
        default = getattr(defaults, name)
        train_parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                                  help=f"{help_text} (default: %(default)s)")
    ask_parser = commands.add_parser("ask", help="translate the phrases you type, with a trained model")
    attention_parser = commands.add_parser("attention", help="where the decoder looked: a cross-attention heatmap")
    attention_parser.add_argument("phrase", help="a number in words, in the source language")
    attention_parser.add_argument("--layer", type=int, default=None, help="the decoder layer (default: the last)")
    attention_parser.add_argument("--out", default=None, help="the PNG to write (default: attention-PAIR.png)")
    for sub in (train_parser, ask_parser, attention_parser):
        sub.add_argument("--pair", default=defaults.pair,
                         help="source-target languages, num2words' codes such as en-fr, en-de, de-es "
                              "(default: %(default)s)")
        sub.add_argument("--checkpoint", default=None,
                         help="the .npz the model is saved to / loaded from (default: translate-PAIR.npz)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``train``, ``ask`` or ``attention``, as the command line says; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or default_checkpoint(args.pair)
    if args.command == "ask":
        return ask(checkpoint, pair=args.pair)
    if args.command == "attention":
        return show_attention(checkpoint, args.phrase, args.out, args.layer, pair=args.pair)
    config = replace(TranslationConfig(), **{f.name: getattr(args, f.name) for f in fields(TranslationConfig)})
    for name in ("steps", "batch", "eval_every", "eval_numbers", "d_model", "nhead", "layers", "ff", "max_bytes"):
        if getattr(config, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    try:
        check_config(config)
    except ValueError as error:
        parser.error(str(error))
    started = time.perf_counter()
    try:
        model, history = train(config)
    except KeyboardInterrupt:
        print("\ninterrupted: no model saved (a shorter run: --steps N)")
        return 130
    except ValueError as error:
        parser.error(str(error))
    metrics = {"steps": config.steps, "held_out_accuracy": history["held_out_accuracy"][-1],
               "seconds": round(time.perf_counter() - started, 1)}
    save_checkpoint(checkpoint, model, metrics)
    curve = Path(checkpoint).with_suffix("").as_posix() + "-loss.png"
    plot_losses(history, curve)
    print(f"held-out exact match {metrics['held_out_accuracy']:.2%} in {metrics['seconds']:.0f} s; saved the model to "
          f"{checkpoint} and the loss curve to {curve}")
    print(f"ask it: python -m stage3_transformer.translate ask --pair {config.pair}" + (
        f" --checkpoint {checkpoint}" if checkpoint != default_checkpoint(config.pair) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
