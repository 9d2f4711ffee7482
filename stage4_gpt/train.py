"""Train a GPT on text: ``python -m stage4_gpt.train``.

    python -m stage4_gpt.train                                  # the default: stdlib source, small model
    python -m stage4_gpt.train --data input.txt --max-steps 5000 --out runs/shakespeare
    python -m stage4_gpt.train --out runs/shakespeare --resume --max-steps 8000    # go on from a checkpoint

The loop, step after step:

    x, y = get_batch(train_tokens, ...)            (grad_accum micro-batches)
    loss = mean over micro-batches of cross_entropy(model(x), y); gradients accumulated
    clip the gradient norm to grad_clip; lr = get_lr(step, ...); AdamW step

Every ``--eval-interval`` steps it measures the loss on held-out text (the last ``--val-fraction`` of the
corpus), writes a checkpoint ``<out>/ckpt.npz``, the validation curve ``<out>/curve.csv`` (read by
``python -m stage4_gpt.compare``) and the loss plot ``<out>/loss.png``; at the end it prints a sample.
Ctrl-C stops after the current step, writes the checkpoint and exits (code 130);
``--resume`` continues from it exactly as if the run had never stopped, loss for loss to the last bit.

A checkpoint is one ``.npz`` of plain arrays, read with ``allow_pickle=False`` (never unpickle a file):
the weights, the optimizer's moments and step counts, the step, the random generators' states, the
model's and the run's settings, the tokenizer (as JSON) and the losses so far.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stage1_autograd.tensor import no_grad
from stage4_gpt.data import DEFAULT_CORPUS_CHARS, default_corpus, get_batch, split_tokens
from stage4_gpt.model import GPT, GPTConfig
from stage4_gpt.optim import GroupedAdamW, clip_grad_norm_, configure_optimizer, get_lr
from stage4_gpt.tokenizer import ByteTokenizer, CharTokenizer, tokenizer_from_json

CHECKPOINT_NAME = "ckpt.npz"
CURVE_NAME = "curve.csv"  # step, train_loss, val_loss, elapsed_seconds: one row per evaluation
CURVE_COLUMNS = ("step", "train_loss", "val_loss", "elapsed_seconds")
DEFAULT_OUT = "runs/gpt"  # where a run writes, and where python -m stage4_gpt.sample looks by default
# Settings a resumed run may change; every other setting comes from the checkpoint, so that the run goes on
# with the same model, data and optimiser.
RESUMABLE = ("max_steps", "eval_interval", "eval_batches", "log_interval", "sample_tokens", "plot", "out")


# ---------------------------------------------------------------------- memory
def keep_freed_memory(megabytes: int = 32) -> bool:
    """Ask the C allocator to keep the memory of freed arrays for reuse instead of handing it back to the
    operating system. Returns whether the setting was made (only with glibc, the C library of most Linux
    systems; elsewhere nothing changes).

    Every step allocates the same large arrays again (activations, their gradients). NumPy takes them from
    malloc, and glibc serves a large request with a fresh ``mmap`` and unmaps it when the array is freed, so
    each step's arrays are new pages that the kernel must zero and map one by one (page faults: about 25 000
    per step for the benchmark's small GPT, a fifth of its time). Raising glibc's mmap threshold (requests
    below it come from the heap) and its trim threshold (free heap memory it keeps) lets a step reuse the
    previous step's pages. PyTorch's caching allocator does the same for its tensors. The peak memory does
    not grow: the same arrays are reused, not added.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
    try:
        libc = ctypes.CDLL(None)
        size = megabytes * 2**20  # glibc accepts an mmap threshold of at most 32 MB on 64-bit systems
        return bool(libc.mallopt(M_MMAP_THRESHOLD, size)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 8 * size))
    except (OSError, AttributeError):
        return False


# ---------------------------------------------------------------------- one step
def train_step(model: GPT, optimizer: GroupedAdamW, batches: list[tuple[np.ndarray, np.ndarray]], lr: float,
               grad_clip: float) -> tuple[float, float]:
    """One optimiser step on the mean loss of ``batches`` (micro-batches, each ``(x, y)`` of shape (B, T)).

        zero the gradients
        for each of the n micro-batches:  loss_i = model(x_i, y_i)'s loss;  backward of loss_i / n
        norm = clip_grad_norm_(parameters, grad_clip)      (grad_clip <= 0: no clipping, norm still measured)
        optimizer.lr = lr;  optimizer.step()

    ``backward()`` adds into ``.grad``, so after the loop the gradients are those of the mean of the n
    losses: n micro-batches of B rows give the same step as one batch of n*B rows (gradient
    accumulation), with the memory of one micro-batch's graph. Returns (the mean loss, the gradient norm
    before clipping).
    """
    # TODO 4.6: zero_grad; backward of each loss / n; clip_grad_norm_; set optimizer.lr; step
    raise NotImplementedError("Exercise 4.6 (Data and the training loop) is not done yet")


def evaluate(model: GPT, tokens: np.ndarray, batch_size: int, block_size: int, n_batches: int, seed) -> float:
    """The mean loss of ``model`` over ``n_batches`` batches of ``tokens``, drawn with ``get_batch`` from a
    generator made from ``seed`` (the same windows at every evaluation, so successive values compare the
    model and not the luck of the draw). Runs in evaluation mode (no dropout) and without a graph
    (``no_grad``), and leaves the model in the mode it found it in."""
    # TODO 4.6: rng = np.random.default_rng(seed); model.eval(); under no_grad() average the losses; restore the mode
    raise NotImplementedError("Exercise 4.6 (Data and the training loop) is not done yet")


# ---------------------------------------------------------------------- checkpoints
def model_generators(model: GPT) -> dict[str, np.random.Generator]:
    """The random generators inside ``model`` (dropout's), by the name of the module holding them. A
    resumed run must continue their streams too, or its dropout masks would differ."""
    found, seen = {}, set()
    for name, module in model.named_modules():
        rng = getattr(module, "rng", None)
        if isinstance(rng, np.random.Generator) and id(rng) not in seen:
            seen.add(id(rng))
            found[name] = rng
    return found


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temporary file, then rename it over ``path``: an interrupted save leaves the old
    checkpoint intact instead of half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)
    os.replace(temporary, path)


def json_array(value) -> np.ndarray:
    """``value`` as JSON in a 0-d string array: how text (settings, tokenizer, generator states) goes into an
    ``.npz`` that loads without pickle."""
    return np.array(json.dumps(value) if not isinstance(value, str) else value)


def save_checkpoint(path, *, model: GPT, optimizer: GroupedAdamW, step: int, rng: np.random.Generator,
                    tokenizer, settings: dict, history: dict[str, list]) -> None:
    """Write everything the next step depends on to ``path`` (an ``.npz``), under these keys:

        model.<name>        every entry of model.state_dict()
        optimizer.<key>     every entry of optimizer.state_dict() (moments m, v and step counts t)
        step                the number of steps taken, int64 (0-d)
        rng                 the batch generator's state, rng.bit_generator.state as JSON (0-d str)
        model_rngs          {module name: its generator's state} for model_generators(model), as JSON
        model_config        model.config.to_dict() as JSON
        settings            the run's settings (``settings``) as JSON
        tokenizer           tokenizer.to_json()
        history.<name>      each list of ``history`` as a float64 array (losses so far, for the plot)

    Text goes in as 0-d string arrays (``json_array``), so ``np.load(path, allow_pickle=False)`` reads it
    all back. Written with ``write_npz`` (atomically).
    """
    # TODO 4.6: one dict of arrays with the keys above (json_array for text), then write_npz
    raise NotImplementedError("Exercise 4.6 (Data and the training loop) is not done yet")


def save_weights(path, model: GPT, tokenizer, settings: dict, step: int) -> None:
    """A checkpoint for sampling only (``model.*``, ``model_config``, ``tokenizer``, ``settings``, ``step``;
    no optimizer state, so not for --resume): what the PyTorch trainer writes."""
    arrays = {f"model.{name}": value for name, value in model.state_dict().items()}
    arrays |= {"model_config": json_array(model.config.to_dict()), "tokenizer": json_array(tokenizer.to_json()),
               "settings": json_array(settings), "step": np.array(step, dtype=np.int64)}
    write_npz(path, arrays)


def load_checkpoint(path) -> dict[str, np.ndarray]:
    """The arrays of a checkpoint, read with ``allow_pickle=False``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def model_from_checkpoint(checkpoint: dict[str, np.ndarray]):
    """``(model, tokenizer)`` rebuilt from a checkpoint: the GPT of ``model_config`` with the saved weights
    (in their dtype, in evaluation mode), and the tokenizer it was trained with."""
    config = GPTConfig.from_dict(json.loads(str(checkpoint["model_config"])))
    weights = {key.removeprefix("model."): value for key, value in checkpoint.items() if key.startswith("model.")}
    model = GPT(config, rng=0, dtype=weights["transformer.wte.weight"].dtype)
    model.load_state_dict(weights)
    model.eval()
    return model, tokenizer_from_json(str(checkpoint["tokenizer"]))


def restore_training_state(checkpoint: dict[str, np.ndarray], model: GPT, optimizer: GroupedAdamW,
                           rng: np.random.Generator) -> int:
    """Put the optimizer's state, the batch generator's state and the model's generators' states of
    ``checkpoint`` back (the weights are already in ``model``), and return the step to continue from."""
    # TODO 4.6: optimizer.load_state_dict of the optimizer.* entries; set bit_generator.state of rng and of each model generator; int(step)
    raise NotImplementedError("Exercise 4.6 (Data and the training loop) is not done yet")


# ---------------------------------------------------------------------- the run
@dataclass
class TrainingResult:
    """What a run did: the loss of every step taken by this process (``losses[i]`` is step
    ``first_step + i``), the validation losses ``[(step, loss), ...]``, and how it ended."""

    first_step: int
    losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    interrupted: bool = False
    checkpoint: Path | None = None


class StopOnInterrupt:
    """Ctrl-C during training: the first one asks the loop to stop after the current step (a checkpoint
    taken then holds one whole step, never half of an optimizer update); a second one stops at once."""

    def __init__(self):
        self.requested = False

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to quit at once)",
              file=sys.stderr, flush=True)

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: Ctrl-C stays a plain KeyboardInterrupt
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def read_corpus(settings: dict) -> str:
    """The text of --data, or the default corpus; a clear message (and exit) for a missing or non-UTF-8 file."""
    if settings["data"] is None:
        return default_corpus(settings["corpus_chars"])
    path = Path(settings["data"])
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SystemExit(f"error: --data {path}: no such file") from None
    except UnicodeDecodeError as error:
        raise SystemExit(f"error: --data {path} is not UTF-8 text ({error})") from None


def build_tokenizer(kind: str, text: str, bpe_vocab_size: int):
    """A tokenizer of the --tokenizer kind for ``text``: its characters, the 256 bytes, or BPE trained on it."""
    if kind == "char":
        return CharTokenizer.fit(text)
    if kind == "byte":
        return ByteTokenizer()
    from stage4_gpt.bpe import BPETokenizer  # only when asked for: training BPE takes a while

    return BPETokenizer.train(text, bpe_vocab_size, special_tokens=("<|endoftext|>",))


def model_config_from(settings: dict, vocab_size: int) -> GPTConfig:
    """The GPTConfig the model flags describe."""
    return GPTConfig(vocab_size=vocab_size, block_size=settings["block_size"], n_layer=settings["n_layer"],
                     n_head=settings["n_head"], n_embd=settings["n_embd"], dropout=settings["dropout"],
                     bias=settings["bias"], norm=settings["norm"], pos=settings["pos"], mlp=settings["mlp"],
                     tie_weights=settings["tie_weights"], residual=settings["residual"],
                     norm_position=settings["norm_position"])


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def plot_losses(history: dict[str, list], path: Path) -> None:
    """The training loss of every step and the validation losses, against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(np.arange(1, len(history["train_loss"]) + 1), history["train_loss"], lw=0.8, alpha=0.7, label="train (per step)")
    if history["val_step"]:
        axes.plot(history["val_step"], history["val_loss"], "o-", label="validation")
    axes.set_xlabel("step")
    axes.set_ylabel("cross-entropy loss (nats per token)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def read_curve(path) -> list[dict[str, float]]:
    """The rows of a ``curve.csv``: ``[{"step": ..., "train_loss": ..., "val_loss": ..., "elapsed_seconds": ...}]``."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split(",")) != CURVE_COLUMNS:
        raise ValueError(f"{path} is not a validation curve: its first line should be {','.join(CURVE_COLUMNS)}")
    rows = [dict(zip(CURVE_COLUMNS, map(float, line.split(",")))) for line in lines[1:] if line.strip()]
    for row in rows:
        row["step"] = int(row["step"])
    return rows


def write_curve(path, rows: list[dict[str, float]]) -> None:
    """Write ``rows`` (as ``read_curve`` returns them) to ``path``, a plain CSV file with a header line."""
    lines = [",".join(CURVE_COLUMNS)]
    lines += [f"{row['step']},{row['train_loss']:.6f},{row['val_loss']:.6f},{row['elapsed_seconds']:.1f}"
              for row in rows]
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def print_sample(model: GPT, tokenizer, n_tokens: int, seed: int) -> None:
    """A sample from the model, started from a newline (or the first token), at temperature 0.8."""
    try:
        start = tokenizer.encode("\n")
    except ValueError:
        start = [0]
    try:
        ids = model.generate(np.array([start]), max_new_tokens=n_tokens, temperature=0.8,
                             rng=np.random.default_rng(seed))
    except NotImplementedError:
        print("(no sample: GPT.generate, exercise 4.7, or its KV cache, exercise 4.8, is not done yet)")
        return
    print("---- sample ----")
    print(tokenizer.decode(ids[0, len(start):].tolist()))
    print("----------------")


def run(settings: dict, resume: bool = False, overrides: dict | None = None) -> TrainingResult:
    """Train as ``settings`` say (the flags of ``main``, as a dict), from scratch or from the checkpoint in
    ``settings["out"]``; returns what happened. ``overrides``: on resume, the settings of ``RESUMABLE`` given
    on the command line, which replace the checkpoint's."""
    out = Path(settings["out"])
    checkpoint_path = out / CHECKPOINT_NAME
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(checkpoint_path)
        settings = {**json.loads(str(checkpoint["settings"])), **(overrides or {})}
        settings["out"] = str(out)
    seeds = np.random.SeedSequence(settings["seed"]).spawn(3)  # model init, batches, evaluation: three streams

    text = read_corpus(settings)
    if checkpoint is not None:
        model, tokenizer = model_from_checkpoint(checkpoint)
        model.train()
    else:
        tokenizer = build_tokenizer(settings["tokenizer"], text, settings["bpe_vocab_size"])
        model = GPT(model_config_from(settings, tokenizer.vocab_size), rng=np.random.default_rng(seeds[0]))
    tokens = np.array(tokenizer.encode(text), dtype=np.int64)
    train_tokens, val_tokens = split_tokens(tokens, settings["val_fraction"])
    B, T, accum = settings["batch_size"], settings["block_size"], settings["grad_accum"]
    optimizer = configure_optimizer(model, lr=settings["lr"], weight_decay=settings["weight_decay"],
                                    betas=(settings["beta1"], settings["beta2"]))
    batch_rng = np.random.default_rng(seeds[1])
    history = {"train_loss": [], "val_step": [], "val_loss": []}
    step = 0
    if checkpoint is not None:
        step = restore_training_state(checkpoint, model, optimizer, batch_rng)
        history = {name: checkpoint[f"history.{name}"].tolist() for name in history}
        history["val_step"] = [int(s) for s in history["val_step"]]

    max_steps, decay_steps = settings["max_steps"], settings["lr_decay_steps"] or settings["max_steps"]
    # The validation curve: a fresh run starts it; a resumed one keeps the rows up to its checkpoint's step
    # and counts its time on from there (time between the last evaluation and a Ctrl-C is not counted).
    curve_path = out / CURVE_NAME
    curve = []
    if checkpoint is not None and curve_path.is_file():
        curve = [row for row in read_curve(curve_path) if row["step"] <= step]
    time_before = curve[-1]["elapsed_seconds"] if curve else 0.0
    run_started = time.perf_counter()
    print(f"corpus: {len(text):,} characters -> {len(tokens):,} tokens ({len(train_tokens):,} train, "
          f"{len(val_tokens):,} validation); tokenizer: {settings['tokenizer']}, vocabulary {tokenizer.vocab_size}")
    print(f"model: {model.num_parameters():,} parameters ({model.config.n_layer} layers, {model.config.n_head} heads, "
          f"width {model.config.n_embd}, block {T}); batch {B} x {accum} x {T} = {B * accum * T:,} tokens per step")
    print(f"{'resuming at' if resume else 'starting at'} step {step} of {max_steps}; checkpoints in {checkpoint_path}")

    def evaluate_and_save(step: int) -> None:
        started = time.perf_counter()
        n = settings["eval_batches"]
        train_loss = evaluate(model, train_tokens, B, T, n, seeds[2])
        val_loss = evaluate(model, val_tokens, B, T, n, seeds[2]) if len(val_tokens) > T else float("nan")
        history["val_step"].append(step)
        history["val_loss"].append(val_loss)
        result.val_losses.append((step, val_loss))
        curve.append({"step": step, "train_loss": train_loss, "val_loss": val_loss,
                      "elapsed_seconds": time_before + time.perf_counter() - run_started})
        out.mkdir(parents=True, exist_ok=True)
        write_curve(curve_path, curve)
        save(step)
        print(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f} "
              f"(evaluated and saved in {time.perf_counter() - started:.1f}s)", flush=True)

    def save(step: int) -> None:
        save_checkpoint(checkpoint_path, model=model, optimizer=optimizer, step=step, rng=batch_rng,
                        tokenizer=tokenizer, settings=settings, history=history)
        if settings["plot"]:
            plot_losses(history, out / "loss.png")

    result = TrainingResult(first_step=step, checkpoint=checkpoint_path)
    tokens_per_step = B * accum * T
    window_steps, window_seconds, total_seconds, first = 0, 0.0, 0.0, step  # time spent in steps, not evaluations
    with StopOnInterrupt() as interrupt:
        while step < max_steps and not interrupt.requested:
            started = time.perf_counter()
            lr = get_lr(step, settings["lr"], settings["min_lr"], settings["warmup_steps"], decay_steps)
            batches = [get_batch(train_tokens, B, T, batch_rng) for _ in range(accum)]
            loss, norm = train_step(model, optimizer, batches, lr, settings["grad_clip"])
            step += 1
            history["train_loss"].append(loss)
            result.losses.append(loss)
            seconds = time.perf_counter() - started
            window_steps, window_seconds, total_seconds = window_steps + 1, window_seconds + seconds, total_seconds + seconds
            if step % settings["log_interval"] == 0 or step == max_steps:
                eta = total_seconds / (step - first) * (max_steps - step)
                print(f"step {step:>6}/{max_steps} | loss {loss:.4f} | lr {lr:.2e} | norm {norm:.2f} | "
                      f"{tokens_per_step * window_steps / window_seconds:,.0f} tok/s | ETA {format_duration(eta)}",
                      flush=True)
                window_steps, window_seconds = 0, 0.0
            if settings["eval_interval"] and step % settings["eval_interval"] == 0 and step < max_steps:
                evaluate_and_save(step)
    if interrupt.requested:
        save(step)
        result.interrupted = True
        print(f"interrupted at step {step}: checkpoint saved to {checkpoint_path}; continue with --resume --out {out}")
        return result
    if not (history["val_step"] and history["val_step"][-1] == step):  # else: evaluated and saved already
        evaluate_and_save(step)
    if settings["sample_tokens"]:
        print_sample(model, tokenizer, settings["sample_tokens"], settings["seed"])
    print(f"checkpoint: {checkpoint_path}; write more with it: {sample_command(checkpoint_path)}")
    return result


def sample_command(checkpoint_path: Path) -> str:
    """The command that samples from ``checkpoint_path`` (the default one needs no --checkpoint)."""
    command = ["python", "-m", "stage4_gpt.sample"]
    if Path(checkpoint_path) != Path(DEFAULT_OUT) / CHECKPOINT_NAME:
        command += ["--checkpoint", str(checkpoint_path)]
    return shlex.join(command + ["--prompt", "def "])


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` ends each flag's line with its default, unless the help already says it, there is none
    (None), or the flag is a plain switch (off unless given)."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default in (None, "") or isinstance(action, argparse._StoreTrueAction):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stage4_gpt.train", description="Train a GPT on text.",
                                     formatter_class=HelpWithDefaults)
    data = parser.add_argument_group("data")
    data.add_argument("--data", metavar="FILE", help="a UTF-8 text file (default: the Python standard library's "
                                                     "own source, see stage4_gpt.data.default_corpus)")
    data.add_argument("--corpus-chars", type=int, default=DEFAULT_CORPUS_CHARS, help="size of the default corpus")
    data.add_argument("--tokenizer", choices=("char", "byte", "bpe"), default="char",
                      help="one token per character, per UTF-8 byte, or byte-pair encoding learnt on the corpus")
    data.add_argument("--bpe-vocab-size", type=int, default=512, help="vocabulary of --tokenizer bpe")
    data.add_argument("--val-fraction", type=float, default=0.1, help="the last part of the corpus held out")
    model = parser.add_argument_group("model")
    model.add_argument("--n-layer", type=int, default=4, help="Transformer blocks")
    model.add_argument("--n-head", type=int, default=4, help="attention heads per block")
    model.add_argument("--n-embd", type=int, default=128, help="the width C, a multiple of --n-head")
    model.add_argument("--block-size", type=int, default=64, help="the context length T")
    model.add_argument("--dropout", type=float, default=0.0, help="dropout probability while training")
    model.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True,
                       help="biases in the Linear and LayerNorm layers")
    model.add_argument("--norm", choices=("layernorm", "rmsnorm", "none"), default="layernorm",
                       help="LayerNorm (GPT-2), RMSNorm (Llama), or none (an experiment)")
    model.add_argument("--pos", choices=("learned", "rope", "none"), default="learned",
                       help="learned position embeddings (GPT-2), rotary ones (Llama), or none (an experiment)")
    model.add_argument("--residual", action=argparse.BooleanOptionalAction, default=True,
                       help="each block adds its branches to the stream, x + f(x); --no-residual: x = f(x) "
                            "(an experiment)")
    model.add_argument("--norm-position", choices=("pre", "post"), default="pre",
                       help="norm before each branch, x + f(norm(x)) (GPT-2), or after the addition, "
                            "norm(x + f(x)) (the original Transformer)")
    model.add_argument("--mlp", choices=("gelu", "swiglu"), default="gelu", help="GELU MLP (GPT-2) or SwiGLU (Llama)")
    model.add_argument("--tie-weights", action=argparse.BooleanOptionalAction, default=True,
                       help="lm_head shares the token embedding's weight")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=int, default=32, help="sequences per micro-batch")
    optim.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (gradient accumulation)")
    optim.add_argument("--max-steps", type=int, default=800,
                       help="optimizer steps in all; a run shorter than --warmup-steps ends still warming up")
    optim.add_argument("--lr", type=float, default=2e-3, help="the peak learning rate")
    optim.add_argument("--min-lr", type=float, default=2e-4, help="the learning rate at the end of the cosine")
    optim.add_argument("--warmup-steps", type=int, default=100,
                       help="steps of linear warmup up to --lr (with --max-steps below it, --lr is never reached: "
                            "lower both for a short run)")
    optim.add_argument("--lr-decay-steps", type=int, default=None,
                       help="the step where the cosine reaches --min-lr (default: --max-steps)")
    optim.add_argument("--weight-decay", type=float, default=0.1, help="AdamW's weight decay, on matrices only")
    optim.add_argument("--beta1", type=float, default=0.9, help="AdamW's first-moment decay")
    optim.add_argument("--beta2", type=float, default=0.99, help="AdamW's second-moment decay")
    optim.add_argument("--grad-clip", type=float, default=1.0, help="the largest gradient norm; 0 or less: no clipping")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--out", default=DEFAULT_OUT, help="folder for ckpt.npz, curve.csv and loss.png")
    run_group.add_argument("--resume", action="store_true",
                           help="continue from <out>/ckpt.npz; only " + ", ".join(RESUMABLE) + " may change")
    run_group.add_argument("--seed", type=int, default=0, help="seeds the initialisation, the batches and the sample")
    run_group.add_argument("--eval-interval", type=int, default=200, help="steps between val loss + checkpoint")
    run_group.add_argument("--eval-batches", type=int, default=20, help="batches averaged for each val loss")
    run_group.add_argument("--log-interval", type=int, default=10, help="steps between progress lines")
    run_group.add_argument("--sample-tokens", type=int, default=500,
                           help="length of the sample printed at the end (0: none)")
    run_group.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True, help="write loss.png")
    return parser


def check_settings(parser: argparse.ArgumentParser, settings: dict) -> None:
    positive = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum", "log_interval",
                "eval_batches", "bpe_vocab_size", "corpus_chars")
    for name in positive:
        if settings[name] <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {settings[name]}")
    if settings["n_embd"] % settings["n_head"]:
        parser.error(f"--n-embd {settings['n_embd']} must be a multiple of --n-head {settings['n_head']}")
    if settings["max_steps"] < 0 or settings["eval_interval"] < 0:
        parser.error("--max-steps and --eval-interval must not be negative")


def flags_given(argv: list[str] | None) -> set[str]:
    """The settings named on the command line itself: parse again with every default suppressed."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = vars(args).copy()
    resume = settings.pop("resume")
    check_settings(parser, settings)
    overrides = None
    if resume:
        given = flags_given(argv)
        ignored = sorted(name for name in given if name not in RESUMABLE + ("resume",))
        if ignored:
            print(f"note: --resume takes {', '.join(ignored)} from the checkpoint; the command line's are ignored",
                  file=sys.stderr)
        overrides = {name: settings[name] for name in RESUMABLE if name in given}
        if not (Path(settings["out"]) / CHECKPOINT_NAME).is_file():
            parser.error(f"--resume: no checkpoint {Path(settings['out']) / CHECKPOINT_NAME}")
    elif settings["max_steps"] < settings["warmup_steps"]:
        print(f"note: --max-steps {settings['max_steps']} is below --warmup-steps {settings['warmup_steps']}: the "
              f"whole run stays in the warmup and the learning rate never reaches --lr {settings['lr']:g}",
              file=sys.stderr)
    keep_freed_memory()
    try:
        result = run(settings, resume=resume, overrides=overrides)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop started
        print("\ninterrupted: stopped without writing a checkpoint", file=sys.stderr)
        return 130
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
