"""Exercise 3.8: a Transformer that learns addition.

The data (every problem once, a seeded held-out split, the teacher-forcing layout of a batch), the model's
logits, loss and gradients against the same model written with torch.nn.Transformer, greedy decoding against
a PyTorch greedy loop, one training step, a short training run that must learn to add problems it never saw,
and the command line: ``train`` writes a checkpoint, ``ask`` answers, explains bad input, and ends cleanly on
end of input and on Ctrl-C.
"""

import json
import re
import signal
import time

import numpy as np
import pytest
import torch

from stage2_mlp.optim import SGD
from stage3_transformer.addition import (
    VOCAB,
    AdditionConfig,
    AdditionModel,
    all_problems,
    encode_batch,
    exact_match,
    greedy_decode,
    load_checkpoint,
    loss_on_batch,
    main,
    save_checkpoint,
    split_problems,
    train,
    train_step,
)
from tests.helpers import assert_close, assert_equal, assert_in_range, assert_raises
# A Module of ours and the command-line launcher live beside the code under test.
from tests.stage3.student_side import ScriptedModel, run_addition, start_addition
from tests.student_side import printed

pytestmark = pytest.mark.exercise("3.8")

TOKENS = ["<pad>", "<s>", "</s>", *"0123456789+"]
PAD, START, END = 0, 1, 2

# A model small enough to compare with PyTorch in milliseconds, deep enough to have every kind of layer twice.
SMALL_SETTINGS = dict(digits=2, d_model=16, nhead=2, layers=2, ff=32, dropout=0.0, seed=0)
SMALL = AdditionConfig(**SMALL_SETTINGS)
PROBLEMS = ["23+45", "9+9", "0+0", "99+99", "50+50", "7+93", "14+2", "88+11"]  # answers of 1, 2 and 3 digits


def ids(text_or_tokens, width):
    """Token ids of a string of characters (or a list of token names), padded with <pad> to ``width``."""
    return [TOKENS.index(t) for t in text_or_tokens] + [PAD] * (width - len(text_or_tokens))


# ---------------------------------------------------------------------- data
@pytest.mark.under_test("all_problems", "split_problems")
def test_every_problem_once_and_a_seeded_held_out_split():
    one_digit = all_problems(1)
    assert_equal(one_digit, [f"{a}+{b}" for a in range(10) for b in range(10)],
                 "all_problems(1): every 'a+b' with 0 <= a, b <= 9, a in the outer loop, no leading zeros")
    problems = all_problems(2)
    assert_equal(len(problems), 10_000, "len(all_problems(2)): numbers 0..99 on both sides")
    assert_equal(len(set(problems)), 10_000, "all_problems(2): the number of distinct problems")
    assert_equal((problems[0], problems[1], problems[123], problems[-1]), ("0+0", "0+1", "1+23", "99+99"),
                 "all_problems(2)[0], [1], [123] and [-1]")

    train_set, held_out = split_problems(problems, 0.1, 0)
    assert_equal((len(train_set), len(held_out)), (9000, 1000),
                 "split_problems(all_problems(2), 0.1, 0): sizes of (train, held_out), held out ceil(0.1 * N)")
    assert_equal(len(set(train_set) & set(held_out)), 0,
                 "split_problems: problems that are both in the training and the held-out set")
    assert_equal(sorted(train_set + held_out), sorted(problems),
                 "split_problems: train + held_out, sorted, must be every problem exactly once")
    order = np.random.default_rng(0).permutation(len(problems))
    assert_equal(held_out, [problems[i] for i in order[:1000]],
                 "split_problems(problems, 0.1, 0): the held-out problems must be problems[i] for the first 1000 i "
                 "of np.random.default_rng(0).permutation(10000), in that order")
    assert_equal(train_set, [problems[i] for i in order[1000:]],
                 "split_problems(problems, 0.1, 0): the training problems, the rest of the permutation in order")
    assert_equal(split_problems(problems, 0.1, np.random.default_rng(0)), (train_set, held_out),
                 "split_problems with rng=np.random.default_rng(0) and with rng=0 (the same generator)")
    other = split_problems(problems, 0.1, 1)[1]
    assert_in_range(len(set(other) & set(held_out)), None, 300,
                    "problems held out with both seed 0 and seed 1 (another seed must draw another split; about "
                    "100 of 1000 coincide by chance)")
    order = np.random.default_rng(3).permutation(100)
    assert_equal(split_problems(one_digit, 0.25, 3)[1], [one_digit[i] for i in order[:25]],
                 "split_problems(all_problems(1), 0.25, 3): the held-out problems")


@pytest.mark.under_test("encode_batch")
def test_encode_batch_lays_out_source_decoder_input_and_target():
    assert_equal(VOCAB.tokens, TOKENS, "VOCAB.tokens: <pad>, <s>, </s>, then the characters 0-9 and +")
    batch = encode_batch(["23+45", "9+9", "0+0", "99+99"], 2)
    expected = {
        "source": [ids("23+45", 5), ids("9+9", 5), ids("0+0", 5), ids("99+99", 5)],
        "decoder_input": [ids(["<s>", "6", "8"], 4), ids(["<s>", "1", "8"], 4), ids(["<s>", "0"], 4),
                          ids(["<s>", "1", "9", "8"], 4)],
        "target": [ids(["6", "8", "</s>"], 4), ids(["1", "8", "</s>"], 4), ids(["0", "</s>"], 4),
                   ids(["1", "9", "8", "</s>"], 4)],
    }
    for name, rows in expected.items():
        got = getattr(batch, name)
        assert_equal(np.asarray(got).dtype.kind, "i", f"encode_batch(...).{name}: the dtype kind (integer ids)")
        assert_equal(got, np.array(rows), f"encode_batch(['23+45', '9+9', '0+0', '99+99'], digits=2).{name} "
                     f"(ids: {', '.join(f'{i} {t}' for i, t in enumerate(TOKENS))})")

    one = encode_batch(["9+9"], 1)
    for name, row in [("source", ids("9+9", 3)), ("decoder_input", ids(["<s>", "1", "8"], 3)),
                      ("target", ids(["1", "8", "</s>"], 3))]:
        assert_equal(getattr(one, name), np.array([row]), f"encode_batch(['9+9'], digits=1).{name}")
    assert_raises(ValueError, lambda: encode_batch(["123+45"], 2),
                  "encode_batch(['123+45'], digits=2): 6 characters, more than 2 * 2 + 1")
    assert_raises(ValueError, lambda: encode_batch(["2x+4"], 2), "encode_batch(['2x+4'], digits=2): 'x' is no token")


# ---------------------------------------------------------------------- the model against PyTorch
def sinusoidal_table(length, dim):
    """Vaswani et al.'s position table, rounded to float32 as F.sinusoidal_positions returns it."""
    position = np.arange(length)[:, None]
    angle = position / 10000.0 ** (np.arange(0, dim, 2)[None, :] / dim)
    table = np.zeros((length, dim))
    table[:, 0::2], table[:, 1::2] = np.sin(angle), np.cos(angle)
    return torch.tensor(table.astype(np.float32).astype(np.float64))


class TorchAdditionModel(torch.nn.Module):
    """The model of the docstring of AdditionModel, in PyTorch (float64)."""

    def __init__(self, config):
        super().__init__()
        d, vocab = config.d_model, len(TOKENS)
        self.source_embedding = torch.nn.Embedding(vocab, d)
        self.target_embedding = torch.nn.Embedding(vocab, d)
        self.register_buffer("positions", sinusoidal_table(2 * config.digits + 1, d), persistent=False)
        self.transformer = torch.nn.Transformer(d, config.nhead, config.layers, config.layers, config.ff,
                                                config.dropout, batch_first=True)
        self.head = torch.nn.Linear(d, vocab)
        self.double()

    def encode(self, source):
        x = self.source_embedding(source) + self.positions[: source.shape[1]]
        return self.transformer.encoder(x, src_key_padding_mask=source == PAD)

    def decode(self, decoder_input, memory, source):
        T = decoder_input.shape[1]
        y = self.target_embedding(decoder_input) + self.positions[:T]
        causal = torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64)
        return self.head(self.transformer.decoder(y, memory, tgt_mask=causal, memory_key_padding_mask=source == PAD))

    def forward(self, source, decoder_input):
        return self.decode(decoder_input, self.encode(source), source)


def torch_twin(ours, config, seed=0):
    """A TorchAdditionModel with PyTorch's initialisation and noise on every vector (so that a bias or a
    norm weight left out shows), loaded into ``ours``; returns it."""
    torch.manual_seed(seed)
    theirs = TorchAdditionModel(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in theirs.parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    names = sorted(name for name, _ in theirs.named_parameters())
    assert_equal(sorted(name for name, _ in ours.named_parameters()), names,
                 "AdditionModel's parameter names (sorted): source_embedding, target_embedding, transformer.* (as "
                 "nn.Transformer), head; the position table is a constant, not a parameter")
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    theirs.train()  # dropout is 0; training mode keeps PyTorch off its inference fast path
    return theirs


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.under_test("AdditionModel.encode", "AdditionModel.decode", "loss_on_batch", "AdditionModel.__init__")
def test_logits_loss_and_gradients_match_torch(dtype):
    ours = AdditionModel(SMALL, dtype=dtype)
    theirs = torch_twin(ours, SMALL)
    batch = encode_batch(PROBLEMS, 2)
    # float32: a few dozen roundings of 6e-8 through two encoder and two decoder layers leave ~5e-7 on logits
    # of size ~1 (measured); 1e-5 absolute + 1e-4 relative is ~20 times that, far below a wrong formula's error.
    atol, rtol = (1e-9, 1e-7) if dtype == np.float64 else (1e-5, 1e-4)
    what = f"AdditionModel ({np.dtype(dtype).name}) on {len(PROBLEMS)} problems of 1 and 2 digits, compared with torch"

    logits = ours(batch.source, batch.decoder_input)
    expected = theirs(torch.tensor(batch.source), torch.tensor(batch.decoder_input))
    # A float64 model whose positions are computed in float64 misses by ~1e-8: a near miss with a cause of its own.
    assert_close(logits, expected, f"{what}: logits (B, T, vocab)", atol=atol, rtol=rtol,
                 small_difference_hint=(1e-6, "off by this little: the positions must be F.sinusoidal_positions's "
                                              "float32 table cast to the model's dtype"))

    loss = loss_on_batch(ours, batch)
    expected_loss = torch.nn.functional.cross_entropy(expected.reshape(-1, len(TOKENS)),
                                                      torch.tensor(batch.target.reshape(-1)), ignore_index=PAD)
    assert_close(loss, expected_loss, f"{what}: loss_on_batch (mean cross-entropy of the non-padding targets)",
                 atol=atol, rtol=rtol)
    loss.backward()
    expected_loss.backward()
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        got = ours_params[name].grad
        assert_equal(got is None, False,
                     f"{what}: parameter {name} has no gradient after loss_on_batch(...).backward()")
        assert_close(got, p.grad, f"{what}: the gradient of {name}", atol=atol, rtol=rtol)


@pytest.mark.under_test("AdditionModel.__init__")
def test_model_is_seeded():
    a, b, c = (AdditionModel(AdditionConfig(**SMALL_SETTINGS | {"seed": seed})).state_dict() for seed in (0, 0, 1))
    for name in a:
        assert_equal(a[name], b[name], f"AdditionModel with seed 0, built twice: parameter {name}")
    assert_in_range(np.abs(a["head.weight"] - c["head.weight"]).max(), 1e-6, None,
                    "AdditionModel with seeds 0 and 1: the largest difference of head.weight (the seed must matter)")


# ---------------------------------------------------------------------- greedy decoding
# ScriptedModel (tests/stage3/student_side.py) stands in for an AdditionModel whose answers are known: at each
# call of ``decode`` it gives the last position's logits a clear maximum at the next token of ``script(problem)``
# followed by </s>, while every earlier position points at '+'. It records the decoder input of every call.


def product_times_ten(problem):
    a, b = problem.split("+")
    return str(int(a) * int(b) * 10)  # up to 5 digits: longer than the 4 tokens greedy decoding may write


@pytest.mark.under_test("greedy_decode")
def test_greedy_decode_of_a_model_with_known_answers():
    problems = ["3+4", "0+7", "12+3", "99+99", "10+10", "45+5"]
    model = ScriptedModel(product_times_ten)
    model.train()
    got = greedy_decode(model, problems)
    expected = [product_times_ten(p)[:4] for p in problems]  # 4 = digits + 2 tokens at most, </s> included
    assert_equal(got, expected, f"greedy_decode of {problems} with a model that writes the digits of a*b*10 then "
                 "</s> (the most likely token of the LAST position at each step, at most digits + 2 = 4 tokens, the "
                 "text before </s>)")
    assert_equal([c.shape for c in model.calls], [(6, 1), (6, 2), (6, 3), (6, 4)],
                 "greedy_decode of 6 problems (digits=2): the shapes of the decoder inputs, call after call (one "
                 "call per output position for the whole batch: the start token, then one more token each time)")
    assert_equal(model.calls[0], np.full((6, 1), START), "greedy_decode: the first decoder input (<s> in every row)")
    last = model.calls[-1]
    after_end = np.cumsum(last == END, axis=1) > 0
    after_end[:, 1:], after_end[:, 0] = after_end[:, :-1].copy(), False  # strictly after the first </s>
    assert_equal(np.where(after_end, last, PAD), np.full(last.shape, PAD),
                 "greedy_decode: tokens fed back after a row's </s> (the rows already complete receive <pad>)")
    assert_equal(model.training, False, "model.training after greedy_decode (it decodes in eval mode)")

    short = ScriptedModel(lambda problem: problem[0])  # one character, then </s>
    assert_equal(greedy_decode(short, problems), [p[0] for p in problems],
                 "greedy_decode with a model that writes the first character of the problem then </s>")
    assert_equal(len(short.calls), 2, "greedy_decode: calls of decode when every answer is complete after 2 tokens "
                 "(stop as soon as every row has written </s>)")


def true_sum(problem: str) -> str:
    a, b = problem.split("+")
    return str(int(a) + int(b))


@pytest.mark.under_test("exact_match")
def test_exact_match_counts_only_answers_right_in_every_digit():
    problems = ["3+4", "0+7", "12+3", "99+99", "10+10", "45+5", "8+80"]
    # right for the problems whose first number is even, one digit off (or a digit short) for the others
    script = lambda p: true_sum(p) if int(p.split("+")[0]) % 2 == 0 else str(int(true_sum(p)) + 1)  # noqa: E731
    expected = sum(int(p.split("+")[0]) % 2 == 0 for p in problems) / len(problems)
    for chunk in (1000, 3):
        assert_close(exact_match(ScriptedModel(script), problems, chunk=chunk), expected,
                     f"exact_match(chunk={chunk}) of a model right on {expected * len(problems):g} of {len(problems)} "
                     "problems (the others one off)", atol=0, rtol=0)
    assert_close(exact_match(ScriptedModel(true_sum), problems), 1.0, "exact_match of a model always right",
                 atol=0, rtol=0)


# ---------------------------------------------------------------------- training
@pytest.mark.under_test("train_step")
def test_train_step_clears_old_gradients_and_takes_one_step():
    batch = encode_batch(PROBLEMS, 2)
    reference = AdditionModel(SMALL, dtype=np.float64)
    expected_loss = loss_on_batch(reference, batch)
    expected_loss.backward()
    expected = {name: p.data - 0.5 * p.grad for name, p in reference.named_parameters()}

    model = AdditionModel(SMALL, dtype=np.float64)
    model.eval()
    for p in model.parameters():
        p.grad = np.full_like(p.data, 100.0)  # left over from an earlier step: must not count
    optimizer = SGD(model.parameters(), lr=0.01)
    loss = train_step(model, optimizer, batch, lr=0.5)
    assert_equal(type(loss), float, "train_step's return value type (the loss as a Python float)")
    assert_close(loss, expected_loss, "train_step: the loss it returns (loss_on_batch before the step)")
    assert_equal(model.training, True, "model.training after train_step (it trains in training mode)")
    for name, p in model.named_parameters():
        assert_close(p.data, expected[name], f"parameter {name} after train_step(model, SGD, batch, lr=0.5): "
                     "p - 0.5 * gradient of this batch's loss (zero the old gradients, set optimizer.lr = lr)")


PROGRESS = re.compile(r"step\s+(\d+)/(\d+)\s+loss ([\d.]+)\s+held-out exact match\s+([\d.]+)% of (\d+)"
                      r"\s+([\d.]+) steps/s")


@pytest.mark.under_test("train_step", "loss_on_batch", "greedy_decode")
@pytest.mark.integration
def test_a_short_run_learns_to_add_problems_it_never_saw():
    # One layer each side, d_model 32: about 1000 steps to get most unseen 2-digit problems right. With seeds
    # 0-3 the last 250 steps' mean loss ends at 0.16-0.28 and 73-84% of 200 held-out problems are right;
    # before training the loss is ln(14) = 2.6, and a model that only learned the answers' lengths gets ~1%.
    config = AdditionConfig(digits=2, d_model=32, nhead=2, layers=1, ff=64, lr=5e-3, warmup=50, steps=1000,
                            batch=64, eval_every=250, eval_problems=200, seed=0)
    lines = []
    model, history = train(config, log=lines.append)
    progress = [m for m in map(PROGRESS.search, lines) if m]
    assert_equal([int(m.group(1)) for m in progress], [250, 500, 750, 1000],
                 "train(..., steps=1000, eval_every=250): the steps of its progress lines")
    assert_equal(history["step"], [250, 500, 750, 1000], "train's history['step']")
    loss, accuracy = history["loss"][-1], history["held_out_accuracy"][-1]
    # Each message names the final training loss: with the held-out score, it is what the lesson's list of
    # symptoms ("When it does not learn") reads.
    losses = f"losses by 250 steps: {', '.join(f'{v:.3f}' for v in history['loss'])}"
    assert_in_range(loss, None, 0.6, f"2-digit addition, 1000 steps: the mean training loss of the last 250 steps "
                    f"({losses}; see the lesson's 'When it does not learn')")
    assert_in_range(accuracy, 0.5, None, f"2-digit addition, 1000 steps: exact match on 200 held-out problems, with "
                    f"a final training loss of {float(loss):.3f} (by 250 steps: "
                    f"{', '.join(f'{v:.2f}' for v in history['held_out_accuracy'])}; {losses}; see the lesson's "
                    "'When it does not learn')")
    held_out = split_problems(all_problems(2), config.held_out_fraction, np.random.default_rng(0))[1][:200]
    right = np.mean([got == true_sum(p) for got, p in zip(greedy_decode(model, held_out), held_out)])
    assert_close(accuracy, right, "the last held_out_accuracy of the history, compared with the fraction of the 200 "
                 "held-out problems whose greedy_decode answer is the true sum", atol=0, rtol=0)


# ---------------------------------------------------------------------- the command line
# `python -m stage3_transformer.addition ARGS` runs on the implementation under test: run_addition and
# start_addition (tests/stage3/student_side.py) start it from the process that imports the stage packages, on
# the same packages (the student's, or the reference).


@pytest.mark.under_test("train_step", "greedy_decode")
@pytest.mark.integration
def test_command_line_train_then_ask(student_tmp):
    checkpoint = student_tmp / "tiny.npz"
    status, out = printed(main, ["train", "--digits", "1", "--steps", "40", "--d-model", "16", "--nhead", "2",
                                 "--layers", "1", "--ff", "32", "--batch", "32", "--eval-every", "20",
                                 "--checkpoint", str(checkpoint)])
    assert_equal(status, 0, "main(['train', ...]): the exit status")
    assert_equal([int(m.group(1)) for m in map(PROGRESS.search, out.splitlines()) if m], [20, 40],
                 "python -m stage3_transformer.addition train --steps 40 --eval-every 20: the steps of the progress "
                 f"lines on stdout, which was:\n{out}")
    assert_equal(checkpoint.exists(), True, f"train --checkpoint {checkpoint}: the file exists afterwards")

    arrays = checkpoint.load_npz()  # np.load(checkpoint, allow_pickle=False), read from the file's bytes
    saved = json.loads(str(arrays.pop("config")))
    assert_equal((saved["digits"], saved["d_model"], saved["steps"]), (1, 16, 40),
                 "the checkpoint's config (JSON): digits, d_model and steps as given on the command line")
    model, _ = load_checkpoint(str(checkpoint))
    for name, value in model.state_dict().items():
        assert_equal(arrays[name], value, f"load_checkpoint: parameter {name} as saved in the .npz")

    problems = ["3+4", "9+9", "0+0", "5+8"]
    answers = greedy_decode(model, problems)
    expected = [f"Model > {got} ✓" if got == true_sum(p) else f"Model > {got} ✗ (the sum is {true_sum(p)})"
                for got, p in zip(answers, problems)]
    typed = ["3+4", "abc", "9+9", "12+3", "", " 0 + 0 ", "5+8"]
    run = run_addition("ask", "--checkpoint", str(checkpoint), stdin="\n".join(typed) + "\n", cwd=str(student_tmp),
                       timeout=60)
    stdout, stderr, returncode = run.stdout, run.stderr, run.returncode
    transcript = f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert_equal(returncode, 0, f"ask with {typed} then end of input: the exit status; {transcript}")
    assert_equal("Traceback" in stderr, False, f"ask: a traceback on stderr; {transcript}")
    replies = stdout.split("Problem > ")[1:]
    assert_equal(len(replies), len(typed) + 1, f"ask: the number of prompts 'Problem > ' for {len(typed)} lines "
                 f"then end of input (the prompt goes on after bad input); {transcript}")
    replies = [reply.rstrip("\n") for reply in replies[:-1]]
    for line, reply in zip(typed, replies):
        assert_equal(reply.count("\n"), 0, f"ask: the reply to {line!r} must be one line; {transcript}")
    assert_equal([replies[i] for i in (0, 2, 5, 6)], expected,
                 f"ask: the replies to {[typed[i] for i in (0, 2, 5, 6)]} (the model's answer and ✓, or ✗ and "
                 "the sum)")
    for i in (1, 3, 4):
        assert_equal(replies[i].startswith("Model >"), False, f"ask: the reply to the bad input {typed[i]!r} "
                     f"({replies[i]!r}) must explain the problem, not answer; {transcript}")
    assert_equal("1 digit" in replies[3], True, f"ask, 1-digit model: the reply to '12+3' ({replies[3]!r}) should say "
                 "the model adds numbers of at most 1 digit")

    missing = student_tmp / "missing.npz"
    status, out = printed(main, ["ask", "--checkpoint", str(missing)])
    assert_equal(status, 1, "main(['ask', '--checkpoint', a missing file]): the exit status")
    assert_equal("python -m stage3_transformer.addition train" in out, True,
                 f"ask with a missing checkpoint should say how to train one; it printed {out!r}")


@pytest.mark.under_test("greedy_decode")
@pytest.mark.integration
def test_ask_ends_cleanly_on_ctrl_c(student_tmp):
    checkpoint = student_tmp / "tiny.npz"
    config = AdditionConfig(digits=1, d_model=16, nhead=2, layers=1, ff=32, steps=1, batch=8, eval_problems=5)
    model, _ = train(config, log=lambda line: None)
    save_checkpoint(str(checkpoint), model)
    process = start_addition("ask", "--checkpoint", str(checkpoint), cwd=str(student_tmp))
    try:
        seen = b""
        deadline = time.monotonic() + 60
        while b"Problem > " not in seen and time.monotonic() < deadline:
            chunk = process.stdout.read1(1024)
            if not chunk:
                break
            seen += chunk
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    transcript = f"stdout:\n{(seen + out).decode('utf-8', 'replace')}\nstderr:\n{err.decode('utf-8', 'replace')}"
    assert_equal(b"Problem > " in seen, True, f"ask: the prompt 'Problem > ' should appear; {transcript}")
    assert_equal(process.returncode, 0, f"ask, Ctrl-C at the prompt: the exit status (a clean exit); {transcript}")
    assert_equal(b"Traceback" in err, False, f"ask, Ctrl-C at the prompt: a traceback on stderr; {transcript}")


@pytest.mark.integration
@pytest.mark.under_test("greedy_decode", "AdditionModel.decode")
def test_command_line_attention_prints_every_head_and_writes_the_picture(student_tmp):
    # A model straight from its initialisation: the picture needs a loadable checkpoint, not a good adder.
    checkpoint = student_tmp / "untrained.npz"
    model = AdditionModel(SMALL)  # 2 decoder layers of 2 heads
    save_checkpoint(str(checkpoint), model)
    picture = student_tmp / "look.png"
    status, out = printed(main, ["attention", "23+45", "--checkpoint", str(checkpoint), "--out", str(picture)])
    assert_equal(status, 0, f"main(['attention', '23+45', ...]): the exit status; it printed:\n{out}")
    assert_equal(picture.exists() and picture.read_bytes()[:8], b"\x89PNG\r\n\x1a\n",
                 f"attention --out {picture}: a PNG file there (its first 8 bytes); it printed:\n{out}")
    answer = greedy_decode(model, ["23+45"])[0]
    lines = out.splitlines()
    assert_equal(lines[0].startswith(f"23+45 = {answer} "), True,
                 f"attention '23+45': the first line names the model's answer {answer!r}; it printed:\n{out}")
    for layer in (0, 1):
        for kind in ("cross-attention", "self-attention"):
            assert_equal(f"{kind} of decoder layer {layer}" in out, True,
                         f"attention '23+45', 2 decoder layers: a table of the {kind} of layer {layer}; it printed:\n{out}")
    headers = [line.split() for line in lines if line.split()[:1] == ["head"]]
    assert_equal(headers, [["head", "0", "head", "1"]] * 4, "attention, 2 heads: each of the 4 tables (2 layers, "
                 f"cross and self) shows head 0 and head 1 side by side; it printed:\n{out}")
    assert_equal(sum(line.split() == ["2", "3", "+", "4", "5"] * 2 for line in lines), 2,
                 "attention '23+45': the columns of the 2 cross-attention tables (two heads side by side) are the "
                 f"characters of the problem; it printed:\n{out}")

    for typed, says in [("23*45", "'*'"), ("123+4", "2 digits"), ("23+", "one '+'")]:
        status, out = printed(main, ["attention", typed, "--checkpoint", str(checkpoint), "--out", str(picture)])
        assert_equal((status, out.count("\n"), says in out), (1, 1, True),
                     f"attention {typed!r}: exit status 1 and one line that mentions {says}; it printed {out!r}")
    status, out = printed(main, ["attention", "23+45", "--checkpoint", str(student_tmp / "missing.npz")])
    assert_equal((status, "python -m stage3_transformer.addition train" in out), (1, True),
                 f"attention with a missing checkpoint: exit status 1 and how to train one; it printed {out!r}")
