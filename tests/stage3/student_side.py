"""What the stage 3 tests build on the code under test, in the process that imports it (see tests/student_side.py).

- ``Scale`` (test_layers.py): a Module standing in for a Dropout layer.
- ``ScriptedModel`` (test_addition.py): a Module standing in for an AdditionModel whose answers are known.
- ``run_addition``/``start_addition`` (test_addition.py): ``python -m stage3_transformer.addition ARGS`` on the
  stage packages of this process, through tests/student_side.py's launcher.
- ``ScriptedTranslator`` (test_translate.py): a Module standing in for a TranslationModel whose answers are known.
- ``run_translate`` (test_translate.py): ``python -m stage3_transformer.translate ARGS``, the same way.

Nothing here decides a test: the tests compare what these return, and the outputs of the code they drive,
with values they compute themselves.
"""

from __future__ import annotations

import subprocess

import numpy as np

from stage1_autograd.tensor import Tensor
from stage2_mlp.nn import Module
from tests.student_side import child_environment, module_command

# test_addition.py's vocabulary (the test checks VOCAB.tokens against its own copy).
TOKENS = ["<pad>", "<s>", "</s>", *"0123456789+"]
PAD, START, END = 0, 1, 2


class Scale(Module):
    """Stands in for one of our Dropout layers: multiplies by a known factor, so its place shows in the output."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class ScriptedModel(Module):
    """Stands in for an AdditionModel whose answers are known: at each call of ``decode`` it gives the last
    position's logits a clear maximum at the next token of ``script(problem)`` followed by </s> (and <pad>
    after that), while every earlier position points at '+' (only the last position may be read). It records
    the decoder input of every call."""

    def __init__(self, script, digits=2):
        from stage3_transformer.addition import AdditionConfig  # here: test_layers.py needs only Scale

        super().__init__()
        self.config = AdditionConfig(digits=digits)
        self.script = script
        self.calls = []

    def encode(self, source):
        return Tensor(np.zeros((*np.shape(source), 8)))

    def forward(self, source, decoder_input):
        return self.decode(decoder_input, self.encode(source), source)

    def decode(self, decoder_input, memory, source):
        written = np.array(decoder_input)
        self.calls.append(written)
        rows, t = written.shape
        logits = np.zeros((rows, t, len(TOKENS)))
        logits[:, :, TOKENS.index("+")] = 5.0
        for row, source_ids in enumerate(np.asarray(source).tolist()):
            problem = "".join(TOKENS[i] for i in source_ids if i != PAD)
            answer = [TOKENS.index(c) for c in self.script(problem)] + [END]
            logits[row, -1] = 0.0
            logits[row, -1, answer[t - 1] if t - 1 < len(answer) else TOKENS.index("7")] = 5.0
        return Tensor(logits)


ADDITION = "stage3_transformer.addition"


def addition_environment() -> dict[str, str]:
    return {**child_environment(), "PYTHONIOENCODING": "utf-8"}


def run_program(module: str, *args, cwd, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` with ``stdin`` as its input, to the end (UTF-8 text both ways)."""
    return subprocess.run(module_command(module, *args), input=stdin, capture_output=True, text=True,
                          encoding="utf-8", cwd=cwd, env=addition_environment(), timeout=timeout)


def run_addition(*args, cwd, stdin: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m stage3_transformer.addition ARGS`` (see ``run_program``)."""
    return run_program(ADDITION, *args, cwd=cwd, stdin=stdin, timeout=timeout)


def start_addition(*args, cwd) -> subprocess.Popen:
    """``python -m stage3_transformer.addition ARGS``, started; stdin, stdout and stderr are byte pipes."""
    return subprocess.Popen(module_command(ADDITION, *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=cwd, env=addition_environment())


class ScriptedTranslator(Module):
    """Stands in for a TranslationModel whose answers are known: at each call of ``decode`` it gives the last
    position's logits a clear maximum at the next byte id of ``script(phrase)`` followed by </s> (and <pad>
    after that), while every earlier position points at byte "#" (only the last position may be read). It
    records the decoder input of every call. ``max_bytes`` is its config's."""

    def __init__(self, script, max_bytes=64):
        from stage3_transformer.translate import TranslationConfig  # here: the other tests need none of it

        super().__init__()
        self.config = TranslationConfig(max_bytes=max_bytes)
        self.script = script
        self.calls = []

    def encode(self, source):
        return Tensor(np.zeros((*np.shape(source), 8)))

    def forward(self, source, decoder_input):
        return self.decode(decoder_input, self.encode(source), source)

    def decode(self, decoder_input, memory, source):
        written = np.array(decoder_input)
        self.calls.append(written)
        rows, t = written.shape
        logits = np.zeros((rows, t, BYTE_OFFSET + 256))
        logits[:, :, BYTE_OFFSET + ord("#")] = 5.0
        for row, source_ids in enumerate(np.asarray(source).tolist()):
            phrase = bytes(i - BYTE_OFFSET for i in source_ids if i >= BYTE_OFFSET).decode("utf-8")
            answer = [BYTE_OFFSET + b for b in self.script(phrase).encode("utf-8")] + [END]
            logits[row, -1] = 0.0
            logits[row, -1, answer[t - 1] if t - 1 < len(answer) else BYTE_OFFSET + ord("7")] = 5.0
        return Tensor(logits)


BYTE_OFFSET = 4  # test_translate.py's byte vocabulary: <pad> <s> </s> <unk>, then byte b is id b + 4
TRANSLATE = "stage3_transformer.translate"


def run_translate(*args, cwd, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m stage3_transformer.translate ARGS`` (see ``run_program``)."""
    return run_program(TRANSLATE, *args, cwd=cwd, stdin=stdin, timeout=timeout)
