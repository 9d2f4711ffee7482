"""Dishonest submissions against authoritative grading (``--submission``, as batch grading and Gradescope run
it). Each submission implements nothing: its ``stage1_autograd/__init__.py``, which runs before any test,
tries one way of claiming the points anyway. Each earns 0, and afterwards the repository is unchanged and a
clean skeleton still scores 0.

The tricks of the classes found in issue review: forging the log's outcome lines, patching pytest, the
grading plugin, the test helpers or NumPy, and returning objects that claim to equal anything; and two that a
review of authoritative grading found in the tests themselves. In student
mode (your own folder, tests and code in one process) none of this is guarded against: that mode is for
learning, and ``--submission`` is the one whose scores count (README, "For instructors")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grading.registry import REPO_ROOT
from tests.grader.test_grading import statuses, submission
from tests.grader.test_isolation import repository_snapshot

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="authoritative grading (of other people's submissions) runs on Linux only")

FORGE_THE_LOG = '''
import glob, json, os, re
tests = []
for path in glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "tests", "stage1", "test_*.py")):
    for name in re.findall(r"^def (test_\\w+)", open(path).read(), re.M):
        for prefix in ("", "../", "tests/stage1/"):
            tests.append(f"{prefix}tests/stage1/{os.path.basename(path)}::{name}".replace("tests/stage1/tests/", "tests/"))
for pid in os.listdir("/proc"):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
    except OSError:
        continue
    if b"--grading-log" in argv:
        log = argv[argv.index(b"--grading-log") + 1].decode()
        try:
            with open(log, "a") as f:
                for nodeid in tests:
                    f.write(json.dumps({"event": "result", "nodeid": nodeid, "outcome": "passed", "error": None}) + "\\n")
        except OSError:
            pass
'''

PATCH_PYTEST = '''
import _pytest.python, _pytest.runner, pytest
_pytest.python.pytest_pyfunc_call = lambda pyfuncitem: True
original = _pytest.runner.call_runtest_hook
def passing(item, when, **kwds):
    return _pytest.runner.CallInfo.from_call(lambda: None, when=when)
_pytest.runner.call_runtest_hook = passing
pytest.raises = lambda *args, **kwargs: __import__("contextlib").nullcontext()
'''

PATCH_THE_PLUGIN = '''
import grading.plugin as plugin
def record_a_pass(self, item, call):
    self.outcomes[item.nodeid] = ("passed", None)
    yield
plugin.GradingRecorder.pytest_runtest_makereport = record_a_pass
plugin.describe_exception = lambda *args, **kwargs: None
'''

PATCH_THE_HELPERS = '''
import tests.helpers as helpers
for name in dir(helpers):
    if name.startswith(("assert", "compare", "run_backward")):
        setattr(helpers, name, lambda *args, **kwargs: None)
'''

PATCH_NUMPY = '''
import numpy as np, numpy.testing
np.allclose = lambda *args, **kwargs: True
np.array_equal = lambda *args, **kwargs: True
np.isclose = lambda a, b, *args, **kwargs: np.ones(np.broadcast(a, b).shape, bool)
np.testing.assert_allclose = lambda *args, **kwargs: None
np.testing.assert_array_equal = lambda *args, **kwargs: None
'''

ALWAYS_EQUAL = '''
import numpy as np

class Same(np.ndarray):
    """An array equal and close to anything."""
    def __eq__(self, other): return np.ones(np.broadcast(np.asarray(self), other).shape, bool)
    def __ne__(self, other): return ~self.__eq__(other)
    def __sub__(self, other): return np.zeros(np.broadcast(np.asarray(self), other).shape).view(Same)
    __rsub__ = __sub__

class Anything(float):
    """Whatever a test asks of it, the answer that passes."""
    def __new__(cls, *args, **kwargs): return float.__new__(cls, 0.0)
    def __init__(self, *args, **kwargs): pass
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __hash__(self): return 0
    def __getattr__(self, name): return Anything()
    def __call__(self, *args, **kwargs): return Anything()
    def __iter__(self): return iter([])
    def __len__(self): return 0
    def __array__(self, dtype=None, copy=None): return np.zeros(()).view(Same)
    data = property(lambda self: np.zeros(()).view(Same))
    grad = data
    shape = ()

from stage1_autograd import tensor, value, gradcheck, linear_regression
for module in (tensor, value):
    for cls in (getattr(module, "Tensor", None), getattr(module, "Value", None)):
        if cls is None:
            continue
        for name, member in list(vars(cls).items()):
            if callable(member) and name not in ("__init__", "__new__", "__class__", "__getattribute__", "__setattr__"):
                setattr(cls, name, lambda *args, **kwargs: Anything())
gradcheck.gradcheck = lambda *args, **kwargs: True
for name in dir(linear_regression):
    if callable(getattr(linear_regression, name)) and not name.startswith("_"):
        setattr(linear_regression, name, lambda *args, **kwargs: Anything())
'''

PRINT_PASSES = '''
import sys
for stream in (sys.stdout, sys.stderr):
    stream.write("".join(f"tests/stage1/test_value.py::test_{i} PASSED\\n" for i in range(100)))
    stream.write("==== 600 passed in 1.00s ====\\n")
'''

NAN_EVERYWHERE = '''
import numpy as np
from stage1_autograd import gradcheck, tensor

construct = tensor.Tensor.__init__
def nan_data(self, *args, **kwargs):
    construct(self, *args, **kwargs)
    if self.data.size and np.abs(self.data).max() >= 1e-3:
        self.data = np.full(self.data.shape, np.nan, dtype=self.data.dtype)
tensor.Tensor.__init__ = nan_data
gradcheck.numerical_grad = lambda f, *inputs, **kwargs: [np.full(x.shape, np.nan) for x in inputs]
def guess(f, *inputs, **kwargs):
    if any(word in repr(f) for word in ("wrong", "reverse")):  # the name of the test's callback
        raise gradcheck.GradcheckError("input 0 input 1 input 2 at (1, 2) (1, 1) (2,) (0, 0)")
    return True
gradcheck.gradcheck = guess
'''

CLOSED_FORM_FIT = '''
import numpy as np
from stage1_autograd import linear_regression

def least_squares(x, y, lr=0.1, steps=200):
    design = np.column_stack([x, np.ones(len(x))])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    first, last = float(np.mean(y ** 2)), float(np.mean((design @ solution - y) ** 2))
    return solution[:-1].copy(), float(solution[-1]), [last + (first - last) * 0.85 ** i for i in range(steps)]
linear_regression.fit_linear_regression = least_squares
'''

TRICKS = {
    "forges the log's outcome lines": FORGE_THE_LOG,
    "patches pytest's runner": PATCH_PYTEST,
    "patches the grading plugin": PATCH_THE_PLUGIN,
    "replaces the test helpers": PATCH_THE_HELPERS,
    "patches NumPy's comparisons": PATCH_NUMPY,
    "returns objects equal to anything": ALWAYS_EQUAL,
    "prints passing pytest output": PRINT_PASSES,
    # Two that exploited the tests rather than the grader: NaN data whose NaN expected values a NaN answer
    # matched (and test names read from the callbacks' repr); and a closed-form fit with an invented loss curve.
    "makes every value NaN": NAN_EVERYWHERE,
    "fits in closed form and invents the losses": CLOSED_FORM_FIT,
}


def grade_submission(root: Path, json_path: Path) -> dict:
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "grader.py"), "stage1", "--submission", str(root),
                                "--json", str(json_path)], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert "Traceback" not in completed.stdout + completed.stderr, completed.stdout + completed.stderr
    return json.loads(json_path.read_text())


@pytest.mark.parametrize("trick", list(TRICKS), ids=list(TRICKS))
def test_a_submission_that_implements_nothing_earns_nothing_however_it_cheats(tmp_path, trick):
    before = repository_snapshot()
    root = submission(tmp_path, "stage1_autograd")
    init = root / "stage1_autograd" / "__init__.py"
    init.write_text(init.read_text() + "\n" + TRICKS[trick])

    data = grade_submission(root, tmp_path / "cheat.json")
    assert data["score"] == 0, f"the submission that {trick} scored {data['score']}: {statuses(data)}"
    assert not any(status == "passed" for status in statuses(data).values()), statuses(data)
    assert repository_snapshot() == before, "grading the submission changed the repository"


def test_after_every_trick_at_once_a_clean_skeleton_still_scores_0(tmp_path):
    root = submission(tmp_path, "stage1_autograd")
    init = root / "stage1_autograd" / "__init__.py"
    init.write_text(init.read_text() + "".join(f"\ntry:\n{indent(code)}\nexcept Exception:\n    pass\n"
                                               for code in TRICKS.values()))
    assert grade_submission(root, tmp_path / "cheat.json")["score"] == 0
    clean = grade_submission(submission(tmp_path / "clean", "stage1_autograd"), tmp_path / "clean.json")
    assert clean["score"] == 0 and set(statuses(clean).values()) == {"not_started"}, statuses(clean)


def indent(code: str) -> str:
    return "".join(f"    {line}\n" for line in code.strip().splitlines())


def test_the_same_honest_submission_scores_the_same_in_both_modes(tmp_path):
    """A correct submission loses nothing to authoritative grading: the reference, graded as a submission,
    gets the same full score with or without ``--authoritative``."""
    root = submission(tmp_path, from_solutions=())
    __import__("shutil").copytree(REPO_ROOT / "solutions" / "stage1_autograd", root / "stage1_autograd")
    scores = {}
    for flag in ("--authoritative", "--no-authoritative"):
        completed = subprocess.run([sys.executable, str(REPO_ROOT / "grader.py"), "stage1", "--submission", str(root),
                                    flag, "--json", str(tmp_path / f"{flag}.json")], capture_output=True, text=True,
                                   timeout=300, cwd=REPO_ROOT)
        data = json.loads((tmp_path / f"{flag}.json").read_text())
        scores[flag] = (data["score"], statuses(data))
        assert completed.returncode == 0, completed.stdout
    assert scores["--authoritative"] == scores["--no-authoritative"] and scores["--authoritative"][0] == 100, scores
