"""What the stage 4 tests build on the code under test, in the process that imports it (see tests/student_side.py).

- ``TinyLM`` (test_optim.py): a tiny language model made of stage 2 pieces (a Module subclass).
- ``always_predicts`` (test_sample_cli.py): writes a GPT's weights in place so that one token is always likeliest.
- ``assign_in_place``, ``shift_in_place`` (test_kv_cache.py, test_model.py, test_sampling.py, test_torch_port.py):
  write a parameter's array in place (in authoritative grading ``p.data`` in the test is a copy).
- ``call_on_fake_gpt2_state`` (test_model.py): a function of a GPT-2 sized state dict whose arrays are broadcast
  zeros with no memory behind them (crossing to another process would copy them in full).
- ``Output`` (the command-line tests): what calls print to stdout and stderr, like pytest's ``capsys``.
- ``working_directory`` (test_sample_cli.py): ``contextlib.chdir``, for the process that runs the code.
- ``type_of``, ``type_name``: an object's class, and its name.
- ``start_module_with_environment`` (test_torch_port.py): tests/student_side.py's launcher with extra
  environment variables (torchrun's, for the data-parallel test).

Nothing here decides a test: the tests compare what these return, and the outputs of the code they drive,
with values they compute themselves.
"""

from __future__ import annotations

import contextlib
import io
import subprocess

import numpy as np

from stage2_mlp import functional as F
from stage2_mlp.nn import Linear, Module, Parameter
from tests.student_side import child_environment, module_command

working_directory = contextlib.chdir

# ---------------------------------------------------------------------- test_optim.py
VOCAB, WIDTH, HIDDEN = 7, 4, 6


class TinyLM(Module):
    """logits = head(x + fc2(tanh(fc1(wte[idx] * gain)))), with head.weight the same Parameter as wte."""

    def __init__(self, seed: int = 0, dtype=np.float64):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.wte = Parameter(rng.standard_normal((VOCAB, WIDTH)).astype(dtype))
        self.gain = Parameter((1 + 0.1 * rng.standard_normal(WIDTH)).astype(dtype))
        self.fc1 = Linear(WIDTH, HIDDEN, rng=rng, dtype=dtype)
        self.fc2 = Linear(HIDDEN, WIDTH, rng=rng, dtype=dtype)
        self.head = Linear(WIDTH, VOCAB, rng=rng, dtype=dtype)
        self.head.weight = self.wte  # tied, as GPT's lm_head and wte

    def loss(self, idx, targets):
        x = self.wte[idx]  # (B, T, C)
        x = x + self.fc2(self.fc1(x * self.gain).tanh())
        logits = self.head(x)
        return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


# ---------------------------------------------------------------------- test_sample_cli.py
def always_predicts(model, token: int):
    """Make ``token`` the most likely next token everywhere: the final LayerNorm's output becomes its bias b
    (weight 0), and lm_head scores b against a row that is b for ``token`` and 0 for every other token."""
    model.transformer.ln_f.weight.data[...] = 0.0
    b = np.random.default_rng(0).standard_normal(model.config.n_embd).astype(np.float32)
    model.transformer.ln_f.bias.data[...] = b
    model.lm_head.weight.data[...] = 0.0
    model.lm_head.weight.data[token] = b
    return model


# ---------------------------------------------------------------------- test_torch_port.py
def assign_in_place(parameter, values) -> None:
    """``parameter.data[...] = values``: the same array, its values replaced (cast to its dtype)."""
    parameter.data[...] = values


def shift_in_place(parameter, amount: float) -> None:
    """``parameter.data[...] += amount``: the same array, changed in place."""
    parameter.data[...] += amount


def start_module_with_environment(module: str, *args: str, cwd, environment: dict[str, str]) -> subprocess.Popen:
    """tests/student_side.py's ``start_module`` with ``environment`` added to the child's environment."""
    return subprocess.Popen(module_command(module, *args), cwd=cwd, env=child_environment() | environment, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# ---------------------------------------------------------------------- test_model.py
def fake_gpt2_state(n_embd: int, n_layer: int = 2, vocab: int = 11, block: int = 7) -> dict:
    """The names and shapes of a GPT-2 checkpoint, with no memory behind them (every array is a broadcast 0)."""
    def zeros(*shape):
        return np.broadcast_to(np.float32(0), shape)

    state = {"transformer.wte.weight": zeros(vocab, n_embd), "transformer.wpe.weight": zeros(block, n_embd)}
    for i in range(n_layer):
        h = f"transformer.h.{i}."
        state.update({h + "ln_1.weight": zeros(n_embd), h + "ln_1.bias": zeros(n_embd),
                      h + "attn.bias": zeros(1, 1, block, block),
                      h + "attn.c_attn.weight": zeros(n_embd, 3 * n_embd), h + "attn.c_attn.bias": zeros(3 * n_embd),
                      h + "attn.c_proj.weight": zeros(n_embd, n_embd), h + "attn.c_proj.bias": zeros(n_embd),
                      h + "ln_2.weight": zeros(n_embd), h + "ln_2.bias": zeros(n_embd),
                      h + "mlp.c_fc.weight": zeros(n_embd, 4 * n_embd), h + "mlp.c_fc.bias": zeros(4 * n_embd),
                      h + "mlp.c_proj.weight": zeros(4 * n_embd, n_embd), h + "mlp.c_proj.bias": zeros(n_embd)})
    state.update({"transformer.ln_f.weight": zeros(n_embd), "transformer.ln_f.bias": zeros(n_embd),
                  "lm_head.weight": zeros(vocab, n_embd)})
    return state


def call_on_fake_gpt2_state(fn, n_embd: int, n_layer: int = 2, vocab: int = 11, block: int = 7):
    """``fn(fake_gpt2_state(n_embd, n_layer, vocab, block))``, the state built here (GPT-2 XL's is 1 GB in full)."""
    return fn(fake_gpt2_state(n_embd, n_layer=n_layer, vocab=vocab, block=block))


# ---------------------------------------------------------------------- printed output, types
class Output:
    """Runs calls with stdout and stderr redirected and keeps what they print; ``readouterr()`` returns
    ``(out, err)`` printed since the last reading and starts afresh, as pytest's ``capsys.readouterr()``."""

    def __init__(self):
        self._out, self._err = io.StringIO(), io.StringIO()

    def run(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, printing here; its exceptions propagate."""
        with contextlib.redirect_stdout(self._out), contextlib.redirect_stderr(self._err):
            return fn(*args, **kwargs)

    def readouterr(self) -> tuple[str, str]:
        out, err = self._out.getvalue(), self._err.getvalue()
        self._out, self._err = io.StringIO(), io.StringIO()
        return out, err


def type_of(obj) -> type:
    """``type(obj)``: in authoritative grading ``type`` of an object of the code under test is the proxy's class."""
    return type(obj)


def type_name(obj) -> str:
    """``type(obj).__name__`` (the tests that use it check the object's values too)."""
    return type(obj).__name__

