"""Exercise 4.6: batches, the split, the training step (gradient accumulation, clipping, the schedule) against
a PyTorch GPT step by step, evaluation, checkpoints (read back here: the optimizer's moments and the dropout
generators' states are in the file), a bit-exact --resume (also in another process), Ctrl-C, and the command
line.

The PyTorch side is tests/stage4/torch_reference.py, a GPT written independently of the code under test;
the optimiser on both sides is AdamW with nanoGPT's two groups (so this exercise builds on 4.5's
configure_optimizer and clip_grad_norm_).
"""

import json
import re
import signal
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from stage4_gpt.data import default_corpus, get_batch, split_tokens
from stage4_gpt.model import GPT, GPTConfig
from stage4_gpt.optim import configure_optimizer, get_lr
from stage4_gpt.train import (evaluate, load_checkpoint, main, model_from_checkpoint, model_generators,
                              restore_training_state, save_checkpoint, train_step)
from stage4_gpt.tokenizer import CharTokenizer, tokenizer_from_json
from tests.helpers import StudentPath, assert_close, assert_equal, assert_in_range, assert_raises
from tests.stage4.student_side import Output
from tests.student_side import reraise_not_implemented, run_module, start_module
from tests.stage4.torch_reference import ReferenceGPT
from tests.stage4.torch_training import torch_adamw, torch_schedule

pytestmark = pytest.mark.exercise("4.6")

TINY = dict(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16)
# A command line for a model that trains in milliseconds per step.
TINY_FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "4",
              "--warmup-steps", "2", "--eval-batches", "2", "--log-interval", "1", "--sample-tokens", "0"]


def tokens_of(seed: int, n: int = 300, vocab: int = TINY["vocab_size"]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=n)


def corpus_file(folder: StudentPath) -> StudentPath:
    """A small text with some structure to learn: numbered lines (written beside the code under test, UTF-8)."""
    path = folder / "corpus.txt"
    path.write_text("".join(f"line {i}: {i * i % 97} is {'even' if i % 2 == 0 else 'odd'}\n" for i in range(300)))
    return path


# ---------------------------------------------------------------------- get_batch and split_tokens
@pytest.mark.under_test("get_batch")
def test_get_batch_takes_windows_at_the_generators_offsets():
    tokens = (np.arange(200) * 7) % 101  # every value tells its position
    x, y = get_batch(tokens, batch_size=5, block_size=8, rng=np.random.default_rng(3))
    starts = np.random.default_rng(3).integers(0, len(tokens) - 8, size=5)  # the pinned draw
    expected_x = np.stack([tokens[s:s + 8] for s in starts])
    expected_y = np.stack([tokens[s + 1:s + 9] for s in starts])
    what = "get_batch(200 tokens, batch_size=5, block_size=8, rng=default_rng(3))"
    assert_equal(x.dtype, np.dtype(np.int64), f"{what}: dtype of x")
    assert_equal(y.dtype, np.dtype(np.int64), f"{what}: dtype of y")
    assert_equal(x, expected_x, f"{what}: x, rows tokens[s:s + T] for s in rng.integers(0, len(tokens) - T, size=B)")
    assert_equal(y, expected_y, f"{what}: y, the same windows shifted by one token")


@pytest.mark.under_test("get_batch")
def test_get_batch_can_reach_the_last_token_and_rejects_short_texts():
    tokens = np.arange(10)
    x, y = get_batch(tokens, batch_size=400, block_size=9, rng=np.random.default_rng(0))
    # Only one window of 10 tokens fits: start 0.
    assert_equal(y[:, -1], np.full(400, 9), "get_batch(10 tokens, block_size=9): the target of the last position")
    x, y = get_batch(list(range(30)), batch_size=2000, block_size=5, rng=np.random.default_rng(1))
    assert_equal(int(y.max()), 29, "get_batch(30 tokens as a list, block_size=5, 2000 rows): the largest target "
                                   "(the last token must be reachable)")
    assert_raises(ValueError, lambda: get_batch(np.arange(8), 2, 8, np.random.default_rng(0)),
                  "get_batch on 8 tokens with block_size=8 (a window needs block_size + 1 tokens)")


@pytest.mark.under_test("split_tokens")
def test_split_tokens_keeps_the_end_for_validation():
    tokens = np.arange(1000)
    train, val = split_tokens(tokens, 0.1)
    assert_equal(train, np.arange(900), "split_tokens(arange(1000), 0.1): the training part")
    assert_equal(val, np.arange(900, 1000), "split_tokens(arange(1000), 0.1): the validation part")
    train, val = split_tokens(np.arange(7), 0.5)
    assert_equal((len(train), len(val)), (4, 3), "split_tokens(7 tokens, 0.5): sizes, n_val = int(7 * 0.5)")
    train, val = split_tokens(tokens, 0.0)
    assert_equal((len(train), len(val)), (1000, 0), "split_tokens(1000 tokens, 0.0): sizes")
    assert_raises(ValueError, lambda: split_tokens(tokens, 1.0), "split_tokens(tokens, 1.0) (no training data)")


# ---------------------------------------------------------------------- the training step against PyTorch
def models(fields: dict, seed: int = 0):
    """Our float64 GPT and the reference GPT with the same weights."""
    ours = GPT(GPTConfig(**fields), rng=seed, dtype=np.float64)
    reference = ReferenceGPT(**fields).double()
    reference.load_state_dict({name: torch.tensor(value) for name, value in ours.state_dict().items()})
    return ours, reference


@pytest.mark.parametrize("fields", [TINY, dict(TINY, norm="rmsnorm", pos="rope", mlp="swiglu", bias=False,
                                                      tie_weights=False)], ids=["gpt2", "llama"])
@pytest.mark.under_test("train_step")
def test_training_steps_match_torch_loss_for_loss(fields):
    steps, micro_batches, B = 5, 2, 3
    max_lr, min_lr, warmup, weight_decay, betas, grad_clip = 3e-2, 3e-3, 2, 0.1, (0.9, 0.95), 1.0
    ours, reference = models(fields)
    optimizer = configure_optimizer(ours, lr=max_lr, weight_decay=weight_decay, betas=betas)
    torch_optimizer = torch_adamw(reference, lr=max_lr, weight_decay=weight_decay, betas=betas)
    scheduler = torch_schedule(torch_optimizer, max_lr, min_lr, warmup, steps - 1)
    rng = np.random.default_rng(5)
    tokens = tokens_of(1)
    for step in range(steps):
        batches = [get_batch(tokens, B, fields["block_size"], rng) for _ in range(micro_batches)]
        lr = torch_optimizer.param_groups[0]["lr"]
        loss, norm = train_step(ours, optimizer, batches, lr, grad_clip)

        torch_optimizer.zero_grad()
        losses = []
        for x, y in batches:
            _, torch_loss = reference(torch.tensor(x), torch.tensor(y))
            (torch_loss / micro_batches).backward()
            losses.append(torch_loss.item())
        expected_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), grad_clip)
        torch_optimizer.step()
        scheduler.step()

        what = f"train_step {step} ({micro_batches} micro-batches of {B}, lr {lr:.4g}, grad_clip {grad_clip})"
        assert_close(loss, np.mean(losses), f"{what}: the returned loss, the mean of the micro-batches' losses")
        assert_close(norm, expected_norm, f"{what}: the returned gradient norm (before clipping) of the accumulated "
                                          "gradients (each micro-batch's loss divided by their number)")
    ours_parameters = dict(ours.named_parameters())
    for name, p in reference.named_parameters():
        assert_close(ours_parameters[name], p, f"parameter {name!r} after {steps} train_steps")


# ---------------------------------------------------------------------- evaluation
@pytest.mark.under_test("evaluate")
def test_evaluate_averages_fixed_batches_without_dropout_or_graph():
    fields = dict(TINY, dropout=0.5)
    ours = GPT(GPTConfig(**fields), rng=0, dtype=np.float64)
    reference = ReferenceGPT(**TINY).double()  # no dropout: what evaluation must compute
    reference.load_state_dict({name: torch.tensor(value) for name, value in ours.state_dict().items()})
    tokens = tokens_of(2)
    rng = np.random.default_rng(11)
    with torch.no_grad():
        expected = np.mean([reference(*map(torch.tensor, get_batch(tokens, 4, 8, rng)))[1].item() for _ in range(3)])
    ours.train()
    got = evaluate(ours, tokens, batch_size=4, block_size=8, n_batches=3, seed=11)
    what = "evaluate(model with dropout 0.5, tokens, batch_size=4, block_size=8, n_batches=3, seed=11)"
    assert_equal(type(got), float, f"{what}: type of the result")
    assert_close(got, expected, f"{what}: the mean loss over 3 batches from np.random.default_rng(11), in evaluation "
                                "mode (no dropout)")
    assert_equal(ours.training, True, f"{what}: model.training afterwards (evaluate must restore the mode)")
    assert_close(evaluate(ours, tokens, 4, 8, 3, 11), got, f"{what}, called again (the same batches every time)")
    ours.eval()
    evaluate(ours, tokens, 4, 8, 1, 0)
    assert_equal(ours.training, False, "evaluate on a model in eval mode: model.training afterwards")


# ---------------------------------------------------------------------- checkpoints
def two_steps(seed: int = 0, dropout: float = 0.0):
    model = GPT(GPTConfig(**dict(TINY, dropout=dropout)), rng=seed)
    optimizer = configure_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
    rng = np.random.default_rng(4)
    tokens = tokens_of(3)
    for step in range(2):
        train_step(model, optimizer, [get_batch(tokens, 4, 8, rng)], get_lr(step, 1e-2, 1e-3, 1, 4), 1.0)
    return model, optimizer, rng, tokens


@pytest.mark.under_test("save_checkpoint")
def test_checkpoint_holds_everything_as_plain_arrays(student_tmp):
    model, optimizer, rng, _ = two_steps(dropout=0.2)
    tokenizer = CharTokenizer.fit("abcdefghijklmnopqrstuv")  # 22 characters + <|endoftext|> = TINY's 23 ids
    path = student_tmp / "ckpt.npz"
    save_checkpoint(str(path), model=model, optimizer=optimizer, step=2, rng=rng, tokenizer=tokenizer,
                    settings={"lr": 0.01, "note": "any JSON"}, history={"train_loss": [3.1, 3.0]})
    saved = path.load_npz()  # np.load(allow_pickle=False) on the file's bytes: fails if anything needs pickle
    what = "save_checkpoint(...) read back with np.load(allow_pickle=False)"
    for name, value in model.state_dict().items():
        assert_equal(saved.get(f"model.{name}"), value, f"{what}: 'model.{name}'")
    for key, value in optimizer.state_dict().items():
        assert_equal(saved.get(f"optimizer.{key}"), value, f"{what}: 'optimizer.{key}'")
    # The optimizer's memory itself, in the file: the moments and step count of every parameter.
    for name, p in model.named_parameters():
        for kind in "mv":
            assert_equal(np.shape(saved.get(f"optimizer.{kind}.{name}")), p.shape, f"{what}: the shape of "
                         f"'optimizer.{kind}.{name}' (the optimizer's {'first' if kind == 'm' else 'second'} moment of "
                         "the parameter, in the file)")
        assert_in_range(np.abs(saved[f"optimizer.m.{name}"]).max(), 1e-12, None, f"{what}: the largest entry of "
                        f"'optimizer.m.{name}' after 2 steps (the running mean of its gradients)")
        assert_equal(int(np.asarray(saved.get(f"optimizer.t.{name}", -1))), 2, f"{what}: 'optimizer.t.{name}', the "
                     "parameter's step count after 2 steps")
    # The dropout generators' states at the time of the save, in the file, by the name of the module holding each.
    assert_equal("model_rngs" in saved, True, f"{what}: a 'model_rngs' entry (the states of the model's generators)")
    model_rngs = json.loads(str(saved["model_rngs"]))
    generators = {name: g.bit_generator.state for name, g in model_generators(model).items()}
    assert_equal(model_rngs, generators, f"{what}: 'model_rngs', the state of each of model_generators(model)")
    held = {}
    for name, module in model.named_modules():
        generator = getattr(module, "rng", None)
        if isinstance(generator, np.random.Generator):
            held[name] = generator.bit_generator.state
    assert_equal(len(held) > 0, True, "GPT(dropout=0.2): modules holding a generator (an attribute rng)")
    for name, state in model_rngs.items():
        assert_equal(state, held.get(name), f"{what}: 'model_rngs'[{name!r}] vs the state of {name}.rng at the save")
    missing = sorted(name for name, state in held.items() if state not in model_rngs.values())
    assert_equal(missing, [], f"{what}: modules whose generator's state is not in 'model_rngs'")
    assert_equal(int(saved["step"]), 2, f"{what}: 'step'")
    assert_equal(json.loads(str(saved["rng"])), rng.bit_generator.state, f"{what}: 'rng', the generator's state")
    assert_equal(GPTConfig.from_dict(json.loads(str(saved["model_config"]))), model.config, f"{what}: 'model_config'")
    assert_equal(json.loads(str(saved["settings"])), {"lr": 0.01, "note": "any JSON"}, f"{what}: 'settings'")
    assert_equal(tokenizer_from_json(str(saved["tokenizer"])).encode("cab"), [2, 0, 1], f"{what}: 'tokenizer'")
    assert_equal(saved["history.train_loss"], np.array([3.1, 3.0]), f"{what}: 'history.train_loss'")
    rebuilt, _ = model_from_checkpoint(saved)
    idx = tokens_of(9, 16).reshape(2, 8)
    assert_close(rebuilt(idx)[0], model.eval()(idx)[0], "the logits of model_from_checkpoint(...)'s model vs the "
                                                        "saved model's", atol=0, rtol=0)


@pytest.mark.under_test("restore_training_state")
def test_restored_training_state_continues_bit_for_bit(student_tmp):
    """Two steps, a checkpoint, then a third step from the checkpoint in a new model, optimizer and generator:
    the same loss and the same weights as a third step without the checkpoint, to the last bit (dropout on,
    so the model's own generator must be restored too)."""
    model, optimizer, rng, tokens = two_steps(dropout=0.2)
    tokenizer = CharTokenizer.fit("abcdefghijklmnopqrstuv")
    path = student_tmp / "ckpt.npz"
    save_checkpoint(str(path), model=model, optimizer=optimizer, step=2, rng=rng, tokenizer=tokenizer, settings={},
                    history={})
    checkpoint = load_checkpoint(str(path))
    copy, _ = model_from_checkpoint(checkpoint)
    copy.train()
    copy_optimizer = configure_optimizer(copy, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95))
    copy_rng = np.random.default_rng(12345)
    step = restore_training_state(checkpoint, copy, copy_optimizer, copy_rng)
    assert_equal(step, 2, "restore_training_state(...): the returned step")
    lr = get_lr(2, 1e-2, 1e-3, 1, 4)
    loss, _ = train_step(model, optimizer, [get_batch(tokens, 4, 8, rng)], lr, 1.0)
    resumed_loss, _ = train_step(copy, copy_optimizer, [get_batch(tokens, 4, 8, copy_rng)], lr, 1.0)
    assert_equal(resumed_loss, loss, "the loss of step 3 after restoring the checkpoint vs without it (the batch "
                                     "generator and the dropout generator must continue where they were)")
    copy_parameters = dict(copy.named_parameters())
    for name, p in model.named_parameters():
        assert_equal(copy_parameters[name].data, p.data, f"parameter {name!r} after step 3, resumed vs not")


# ---------------------------------------------------------------------- the command line
def history_of(out: StudentPath) -> dict[str, np.ndarray]:
    checkpoint = load_checkpoint(str(out / "ckpt.npz"))
    return {key: value for key, value in checkpoint.items() if key.startswith(("history.", "model.", "step"))}


@pytest.mark.under_test("restore_training_state", "save_checkpoint")
@pytest.mark.integration
def test_resume_continues_exactly_as_an_uninterrupted_run(student_tmp):
    data = corpus_file(student_tmp)
    flags = TINY_FLAGS + ["--data", str(data), "--dropout", "0.1", "--grad-accum", "2", "--eval-interval", "2",
                          "--no-plot", "--seed", "3"]
    output = Output()  # what main prints where it runs (capsys would see only this process's output)
    assert_equal(output.run(main, flags + ["--max-steps", "6", "--out", str(student_tmp / "whole")]), 0,
                 "exit code of a 6-step run")
    first_half = ["--max-steps", "3", "--lr-decay-steps", "6", "--out", str(student_tmp / "split")]
    assert_equal(output.run(main, flags + first_half), 0, "exit code of the first 3 steps of a 6-step schedule")
    assert_equal(output.run(main, ["--resume", "--max-steps", "6", "--out", str(student_tmp / "split")]), 0,
                 "exit code of --resume --max-steps 6")
    whole, split = history_of(student_tmp / "whole"), history_of(student_tmp / "split")
    assert_equal(int(split["step"]), 6, "the step in the resumed run's last checkpoint")
    assert_equal(split["history.train_loss"], whole["history.train_loss"],
                 "the 6 training losses: 3 steps + --resume + 3 steps vs 6 steps in one go (bit for bit)")
    for key, value in whole.items():
        if key.startswith("model."):
            assert_equal(split[key], value, f"{key} after 6 steps, resumed vs uninterrupted")
    out = output.readouterr()[0]
    progress = [line for line in out.splitlines() if line.startswith("step ") and "|" in line]
    assert_in_range(len(progress), 12, None, "the number of progress lines printed (one per step, --log-interval 1)")
    pattern = r"^step +\d+/\d+ \| loss \d+\.\d+ \| lr [\d.e+-]+ \| norm [\d.]+ \| [\d,]+ tok/s \| ETA \d+m\d\ds$"
    assert_equal(bool(re.match(pattern, progress[0])), True, f"the progress line {progress[0]!r} has the form "
                                                             "'step N/M | loss L | lr R | norm G | T tok/s | ETA 0m00s'")


@pytest.mark.under_test("restore_training_state", "save_checkpoint")
@pytest.mark.integration
def test_resume_in_another_process_continues_exactly(student_tmp):
    """The first 3 steps in a process of their own (python -m stage4_gpt.train), --resume in another one: only
    what the checkpoint file holds can carry the optimizer's moments and every generator's state across."""
    data = corpus_file(student_tmp)
    flags = TINY_FLAGS + ["--data", str(data), "--dropout", "0.1", "--grad-accum", "2", "--eval-interval", "2",
                          "--no-plot", "--seed", "5"]
    output = Output()
    assert_equal(output.run(main, flags + ["--max-steps", "6", "--out", str(student_tmp / "whole")]), 0,
                 "exit code of a 6-step run")
    first_half = ["--max-steps", "3", "--lr-decay-steps", "6", "--out", str(student_tmp / "split")]
    result = run_module("stage4_gpt.train", *flags, *first_half, cwd=str(student_tmp), timeout=120)
    reraise_not_implemented(result.stderr)
    assert_equal(result.returncode, 0, f"exit code of python -m stage4_gpt.train for the first 3 steps of a 6-step "
                                       f"schedule (stderr ends with {result.stderr[-500:]!r})")
    assert_equal(output.run(main, ["--resume", "--max-steps", "6", "--out", str(student_tmp / "split")]), 0,
                 "exit code of --resume --max-steps 6 in another process")
    whole = (student_tmp / "whole" / "ckpt.npz").load_npz()  # np.load(allow_pickle=False) on the file's bytes
    split = (student_tmp / "split" / "ckpt.npz").load_npz()
    assert_equal(int(split["step"]), 6, "the step in the resumed run's last checkpoint")
    assert_equal(split["history.train_loss"], whole["history.train_loss"],
                 "the 6 training losses: 3 steps in one process + --resume and 3 steps in another vs 6 steps in one go "
                 "(bit for bit: the checkpoint file must hold the optimizer's moments and the dropout generators' "
                 "states)")
    for key, value in whole.items():
        if key.startswith("model."):
            assert_equal(split[key], value, f"{key} after 6 steps, resumed in another process vs uninterrupted")


@pytest.mark.under_test("train_step", "evaluate", "save_checkpoint")
@pytest.mark.integration
def test_default_corpus_run_writes_a_loss_curve(student_tmp):
    out = student_tmp / "run"
    output = Output()  # what main prints where it runs (capsys would see only this process's output)
    assert_equal(output.run(main, TINY_FLAGS + ["--max-steps", "2", "--corpus-chars", "20000", "--out", str(out)]), 0,
                 "exit code of python -m stage4_gpt.train on the default corpus")
    checkpoint = load_checkpoint(str(out / "ckpt.npz"))
    tokenizer = tokenizer_from_json(str(checkpoint["tokenizer"]))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    first = min((p for p in stdlib.glob("*.py") if not p.name.startswith("_") and p.read_bytes().isascii()),
                key=lambda p: p.name)
    text = default_corpus(20000)
    assert_equal(len(text), 20000, "len(default_corpus(20000))")
    assert_equal(text[:1000], first.read_text()[:1000], f"default_corpus() begins with the first public ASCII module "
                                                        f"of the standard library, {first.name}")
    assert_equal(tokenizer.decode(tokenizer.encode(text)), text, "the checkpoint's tokenizer on the default corpus")
    assert_equal(sorted(tokenizer.chars), sorted(set(text)), "the characters of the checkpoint's CharTokenizer")
    png = (out / "loss.png").read_bytes()[:8]
    assert_equal(png, b"\x89PNG\r\n\x1a\n", "the first bytes of <out>/loss.png (a PNG image)")
    printed = output.readouterr()[0].splitlines()
    assert_in_range(len(printed), 4, None, "lines printed by the run")
    command = f"python -m stage4_gpt.sample --checkpoint {out / 'ckpt.npz'}"
    assert_equal(command in printed[-1], True, f"the run's last line says how to sample from its checkpoint "
                                               f"({command!r}); it was {printed[-1]!r}")


@pytest.mark.under_test("train_step", "evaluate", "save_checkpoint")
@pytest.mark.integration
def test_experiment_flags_reach_the_model_and_each_run_keeps_its_curve(student_tmp):
    """The lesson's experiments: --pos none --norm none --no-residual --norm-position post build that model, each
    run's folder keeps its validation curve (curve.csv), and python -m stage4_gpt.compare reads two of them."""
    from stage4_gpt.compare import main as compare_main  # noqa: PLC0415

    flags = TINY_FLAGS + ["--data", str(corpus_file(student_tmp)), "--max-steps", "4", "--eval-interval", "2",
                          "--no-plot"]
    ablated, plain = student_tmp / "ablated", student_tmp / "plain"
    output = Output()
    experiment = ["--pos", "none", "--norm", "none", "--no-residual", "--norm-position", "post"]
    assert_equal(output.run(main, flags + experiment + ["--out", str(ablated)]), 0,
                 f"exit code of python -m stage4_gpt.train {' '.join(experiment)}")
    checkpoint = load_checkpoint(str(ablated / "ckpt.npz"))
    config = json.loads(str(checkpoint["model_config"]))
    assert_equal({name: config[name] for name in ("pos", "norm", "residual", "norm_position")},
                 {"pos": "none", "norm": "none", "residual": False, "norm_position": "post"},
                 f"the model_config in the checkpoint of a run with {' '.join(experiment)}")
    lines = (ablated / "curve.csv").read_text().splitlines()
    assert_equal(lines[0], "step,train_loss,val_loss,elapsed_seconds", "the header line of <out>/curve.csv")
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    assert_equal(rows[:, 0].tolist(), [2.0, 4.0], "the steps in curve.csv of a 4-step run evaluated every 2 steps")
    assert_close(rows[:, 2], checkpoint["history.val_loss"],
                 "curve.csv's val_loss vs the checkpoint's history.val_loss", atol=1e-5)
    assert_equal(bool(np.all(np.diff(rows[:, 3]) >= 0)), True, "curve.csv's elapsed_seconds never decrease")

    assert_equal(output.run(main, flags + ["--out", str(plain)]), 0, "exit code of the plain run")
    output.readouterr()
    image = student_tmp / "compare.png"
    assert_equal(output.run(compare_main, [str(ablated), str(plain), "--out", str(image)]), 0,
                 "exit code of python -m stage4_gpt.compare on the two runs")
    table = output.readouterr()[0].splitlines()
    assert_equal([line.split()[0] for line in table[:3]], ["run", "ablated", "plain"],
                 "the first word of compare's table lines (a header, then one line per run)")
    assert_close(float(table[1].split()[1]), rows[-1, 2], "compare's final val loss of the ablated run", atol=1e-4)
    assert_equal(image.read_bytes()[:8], b"\x89PNG\r\n\x1a\n", "the first bytes of compare --out compare.png")


@pytest.mark.under_test("save_checkpoint")
@pytest.mark.integration
def test_ctrl_c_saves_a_checkpoint_and_exits_130(student_tmp):
    data = corpus_file(student_tmp)
    out = student_tmp / "run"
    process = start_module("stage4_gpt.train", *TINY_FLAGS, "--data", str(data), "--max-steps", "100000",
                           "--eval-interval", "0", "--no-plot", "--out", str(out), cwd=str(student_tmp))
    try:
        # No wall-clock deadline of its own: a run that hangs is stopped by the exercise's time limit.
        line = ""
        while not re.match(r"step +3/", line):  # three steps done: Ctrl-C now
            line = process.stdout.readline()
            if not line:  # the run ended
                stderr = process.stderr.read()
                reraise_not_implemented(stderr)
                raise AssertionError(f"python -m stage4_gpt.train ended before printing 'step 3/...'; its stderr ends "
                                     f"with {stderr[-500:]!r}")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert_equal(process.returncode, 130, f"exit code after Ctrl-C (stderr: {stderr[-300:]!r})")
    assert_equal("interrupted" in stdout + stderr, True, "after Ctrl-C a message says the run was interrupted")
    checkpoint = load_checkpoint(str(out / "ckpt.npz"))
    step = int(checkpoint["step"])
    assert_in_range(step, 3, None, "the step in the checkpoint written on Ctrl-C")
    assert_equal(len(checkpoint["history.train_loss"]), step, "the number of losses in the checkpoint vs its step")
    assert_equal(main(["--resume", "--max-steps", str(step + 2), "--out", str(out)]), 0,
                 "exit code of --resume after Ctrl-C")
    assert_equal(len(load_checkpoint(str(out / "ckpt.npz"))["history.train_loss"]), step + 2,
                 f"the number of losses after resuming at step {step} and training to step {step + 2}")
