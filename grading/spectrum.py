"""Which of the student's functions each test ran, and which of them a failure most likely lies in.

A test that fails names a symptom; the functions it ran name the suspects. Across one exercise's tests, a
function that ran in every failing test and in few passing ones is the likeliest home of the mistake
(spectrum-based fault localisation, scored with the Ochiai coefficient). The grader uses the ranking only to
point at a TODO: it never decides a score.

**Recording** (in the process that runs the student's code: the test process in student mode, the student
process in authoritative grading). Every function and method defined in a stage package is armed: its code is
swapped for a two-line trampoline that notes the function and puts the real code back before calling it. So
each function costs one extra call the first time a test runs it, and nothing after; ``begin`` arms them all
again before each test, ``end`` says which ran. A call profile (``sys.setprofile``) would cost a quarter to
a half of the run's time; this costs about nothing.

**Ranking** (in the grader, on what was recorded): ``rank``.
"""

from __future__ import annotations

import math
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

STAGE_PACKAGE = re.compile(r"^stage\d+_\w+$")
HIT_NAME = "__grading_spectrum_hit__"  # the name the trampolines call, put into each armed module's globals
MAX_NAMES = 2000  # of a test's functions kept (a student's code generating functions must not flood the log)

# ------------------------------------------------------------------------------------------ recording

_targets: list[tuple[types.FunctionType, types.CodeType, types.CodeType, str]] = []  # function, own code, trampoline, name
_armed_ids: set[int] = set()  # id() of the functions in _targets
_seen_modules: dict[str, int] = {}  # module name -> id of the module object armed
_hits: list[int] = []  # indices into _targets run since begin(), in the order of their first calls
_templates: dict[int, types.CodeType] = {}  # number of free variables -> a trampoline's code
_modules_count = -1  # len(sys.modules) when begin() last looked for stage modules


def _template(free_variables: int) -> types.CodeType:
    """A trampoline's code with ``free_variables`` free variables: a function's code can only be swapped for
    one with as many as its closure has cells (a method using ``super()`` has one, ``__class__``)."""
    if free_variables not in _templates:
        names = [f"_cell{i}" for i in range(free_variables)]
        source = ("def _outer():\n" + "".join(f"    {name} = None\n" for name in names)
                  + "    def trampoline(*args, **kwargs):\n"
                  + (f"        ({', '.join(names)},)\n" if names else "")
                  + f"        return {HIT_NAME}(-1, args, kwargs)\n    return trampoline\n")
        namespace: dict = {}
        exec(compile(source, "<grading.spectrum>", "exec"), namespace)  # noqa: S102 - our own fixed text
        _templates[free_variables] = namespace["_outer"]().__code__
    return _templates[free_variables]


def _hit(index: int, args: tuple, kwargs: dict):
    function, code, _, _ = _targets[index]
    function.__code__ = code
    _hits.append(index)
    return function(*args, **kwargs)


def stage_file(filename: str) -> str | None:
    """``stage2_mlp/nn.py`` for a file inside a stage package, else None."""
    parts = Path(filename).parts
    for index, part in enumerate(parts[:-1]):
        if STAGE_PACKAGE.match(part):
            return "/".join(parts[index:])
    return None


def _functions_of(module: types.ModuleType):
    """The module's own functions and the methods of its own classes (static, class and property ones too)."""
    for value in list(vars(module).values()):
        if isinstance(value, type) and value.__module__ == module.__name__:
            for member in list(vars(value).values()):
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if isinstance(member, property):
                    yield from (f for f in (member.fget, member.fset, member.fdel) if f is not None)
                else:
                    yield member
        else:
            yield value


def _arm_module(module: types.ModuleType) -> None:
    file = stage_file(getattr(module, "__file__", None) or "")
    if file is None:
        return
    for function in _functions_of(module):
        if not isinstance(function, types.FunctionType) or id(function) in _armed_ids:
            continue
        code = function.__code__
        if stage_file(code.co_filename) != file or code.co_name == "<lambda>":
            continue
        index = len(_targets)
        template = _template(len(code.co_freevars))
        trampoline = template.replace(co_consts=tuple(index if c == -1 else c for c in template.co_consts),
                                      co_name=code.co_name, co_qualname=code.co_qualname)
        function.__globals__[HIT_NAME] = _hit
        _targets.append((function, code, trampoline, f"{file}::{code.co_qualname}"))
        _armed_ids.add(id(function))
        function.__code__ = trampoline


def begin() -> None:
    """Before a test: arm the functions of the stage modules loaded since, re-arm those the last test ran,
    and forget what ran."""
    global _modules_count
    if len(sys.modules) != _modules_count:
        _modules_count = len(sys.modules)
        for name, module in list(sys.modules.items()):
            if (module is not None and STAGE_PACKAGE.match(name.partition(".")[0])
                    and _seen_modules.get(name) != id(module)):
                _seen_modules[name] = id(module)
                _arm_module(module)
    for index in _hits:
        function, code, trampoline, _ = _targets[index]
        if function.__code__ is code:
            function.__code__ = trampoline
    _hits.clear()


def end() -> list[str]:
    """After a test: the functions it ran, ``["stage2_mlp/nn.py::Linear.__init__", ...]``, in the order of their
    first calls. (Those it did not run stay armed for the next test; those it ran are armed again by ``begin``.)"""
    return [_targets[i][3] for i in _hits[:MAX_NAMES]]


def end_and_begin() -> list[str]:
    """``end`` for the test that ended, then ``begin`` for the next one: one call between two tests (in
    authoritative grading, one round trip to the student process instead of two)."""
    names = end()
    begin()
    return names


def clean(names) -> tuple[str, ...]:
    """What ``end`` returned, as the grader keeps it: strings only (it comes from the student's process)."""
    if not isinstance(names, (list, tuple)):
        return ()
    return tuple(str(n)[:300] for n in names[:MAX_NAMES] if isinstance(n, str))


# ------------------------------------------------------------------------------------------ ranking


@dataclass(frozen=True)
class Suspect:
    key: str  # "stage2_mlp/nn.py::Linear.forward", as recorded
    score: float  # Ochiai: failing runs / sqrt(failing tests * all runs)
    failed: int  # failing tests that ran it
    passed: int  # passing tests that ran it

    @property
    def function(self) -> str:
        return self.key.partition("::")[2]

    def describe(self, failing: int) -> str:
        file = self.key.partition("::")[0].rpartition("/")[2]
        return (f"{self.function} ({file}): {self.score:.2f}, ran in {self.failed} of {failing} failing tests "
                f"and {self.passed} passing")


FAILING = ("failed", "error")
GRADIENT = re.compile(r"\bgrad|gradient|\bdL/")


def rank(tests, candidates: list[str], shown=None, arose: str | None = None, mentioned=lambda key: False,
         callers: dict[str, set[str]] | None = None) -> tuple[list[Suspect], int]:
    """The candidates (``"stage2_mlp/nn.py::Linear.forward"``, in file order) that ran in a failing test of
    ``tests`` (objects with ``outcome``, ``ran`` and ``functions``), most suspect first, and the number of
    failing tests. A function that ran in every failing test and in no passing one comes first; then the
    function the failure of the test shown arose in (``arose``, a key: an exception raised in it); then those
    that ran in every failing test (one mistake fails only the tests that run it); then the higher Ochiai score.

    Equal scores are common (a wrapper and the function it calls, a layer's ``forward`` and ``backward``, run in
    the same tests); they go, in turn, to the callee rather than its caller (``callers``: key -> the keys of the candidates whose source names it), one the
    message of the test shown names (``mentioned``), a ``backward`` when the message is about a gradient, one
    the test shown (``shown``) names as under test, the one more suspects call (a helper of the others), and
    the one whose first call in the test shown came last (nearest the check that failed)."""
    recorded = [t for t in tests if t.ran]
    failing = [set(t.ran) for t in recorded if t.outcome in FAILING]
    passing = [set(t.ran) for t in recorded if t.outcome == "passed"]
    if not failing:
        return [], 0
    callers = callers or {}
    suspects = []
    for key in candidates:
        failed = sum(key in ran for ran in failing)
        if failed:
            passed = sum(key in ran for ran in passing)
            suspects.append(Suspect(key, failed / math.sqrt(len(failing) * (failed + passed)), failed, passed))
    order = {key: i for i, key in enumerate(candidates)}
    shown_ran = list(getattr(shown, "ran", ()) or ())
    marked = set(getattr(shown, "functions", ()) or ())
    message = (getattr(shown, "error", None) or {}).get("message") or ""
    about_gradient = bool(GRADIENT.search(message))

    def sort_key(s: Suspect):
        tied = [t.key for t in suspects if math.isclose(t.score, s.score) and t.key != s.key]
        calls_a_tied_one = any(s.key in callers.get(t, ()) for t in tied)
        called_by = sum(t.key in callers.get(s.key, ()) for t in suspects)
        called_at = shown_ran.index(s.key) if s.key in shown_ran else -1
        return (s.score < 1 - 1e-9, s.key != arose, s.failed < len(failing), -round(s.score, 9), calls_a_tied_one, not mentioned(s.key),
                not (about_gradient and "backward" in s.function.rsplit(".", 1)[-1]), s.function not in marked,
                -called_by, -called_at, order[s.key])

    return sorted(suspects, key=sort_key), len(failing)


# ------------------------------------------------------------------------------------------ pointing

BEGIN = re.compile(r"^\s*# BEGIN SOLUTION (?P<id>\d+\.\d+)\b")


def exercise_functions(package_dir: Path, reference_dir: Path | None, exercise, tests, files) -> list[tuple[Path, object]]:
    """(path, ``grading.source.Function``) of each function of the student's package that is the exercise's:
    those holding its TODO, those holding its region in the reference (``reference_dir``, when this copy has
    solutions/: a function whose TODO comment the student deleted still counts), and those its tests name as
    under test; the exercise's registry file first, each file in order."""
    marked = {name for t in tests for name in t.functions}
    found = []
    paths = sorted(package_dir.rglob("*.py"), key=lambda p: (p.relative_to(package_dir).as_posix() != exercise.file, p))
    for path in paths:
        relative = path.relative_to(package_dir)
        own = {f.qualname for f in files.functions(path) if any(e == exercise.id for _, e in f.todos)}
        reference = reference_dir / relative if reference_dir is not None else None
        if reference is not None and reference.is_file():
            source, functions = files.get(reference)
            lines = (source or "").splitlines()
            own |= {f.qualname for f in functions if any((m := BEGIN.match(lines[n - 1])) and m["id"] == exercise.id
                                                         for n in range(f.start, min(f.end, len(lines)) + 1))}
        if own or relative.as_posix() == exercise.file:
            found += [(path, f) for f in files.functions(path) if f.qualname in own or f.qualname in marked]
    return found


def static_callers(functions: list[tuple[Path, object]], keys: list[str], files) -> dict[str, set[str]]:
    """For each function's key, the keys of those of ``functions`` whose source calls it by name: a function as
    ``attention(`` (in ``scaled_dot_product_attention``), a method as ``self._encode_pretoken(`` in a method of
    its class. Its likely callers, for breaking ties."""
    bodies = {}
    for (path, f), key in zip(functions, keys):
        source, _ = files.get(path)
        bodies[key] = "\n".join((source or "").splitlines()[f.start:f.end])
    callers = {}
    for (_, f), key in zip(functions, keys):
        cls, _, name = f.qualname.rpartition(".")
        call = re.compile(rf"\b(?:self|cls)\.{re.escape(name)}\b" if cls else rf"(?<![.\w]){re.escape(name)}\s*\(")
        callers[key] = {other for (_, g), other in zip(functions, keys)
                        if other != key and (not cls or g.qualname.startswith(cls + ".")) and call.search(bodies[other])}
    return callers


def pointer(result, tests, package_dir: Path, files, arose=None, reference_dir: Path | None = None):
    """The TODO to work on for a failing exercise's ``result`` (``grading.report.ExerciseResult``) by the
    spectrum of its ``tests``, with the ranking for -v (``grading.source.Todo``); None when nothing was recorded
    or the failure is an unfinished TODO (its NotImplementedError names the place itself). ``package_dir``: the
    student's stage package; ``arose``: the pointer from the traceback, which wins a tie."""
    from dataclasses import replace  # noqa: PLC0415 - the student process imports this module for recording only

    from grading.source import mentioned, pointer as todo_of  # noqa: PLC0415

    if result.status not in FAILING or (result.error or {}).get("type") == "NotImplementedError":
        return None
    functions = exercise_functions(package_dir, reference_dir, result.exercise, tests, files)
    package = package_dir.name
    keys = [f"{package}/{path.relative_to(package_dir).as_posix()}::{f.qualname}" for path, f in functions]
    by_key = dict(zip(keys, functions))
    shown = next((t for t in tests if short_name(t.nodeid) == result.test), None)
    message = (result.error or {}).get("message", "")
    arose_key = next((k for k, (path, f) in by_key.items()
                      if arose is not None and arose.path == path and arose.function == f.qualname), None)
    ranked, failing = rank(tests, keys, shown, arose_key, lambda key: mentioned(message, by_key[key][1]) is not None,
                           static_callers(functions, keys, files))
    if not ranked:
        return None
    return replace(todo_of(*by_key[ranked[0].key]), ranking=tuple(s.describe(failing) for s in ranked))


def short_name(nodeid: str) -> str:
    """``test_unary.py::test_relu[a / b]`` for a node id (as the report names a test)."""
    path, sep, rest = nodeid.partition("::")
    return Path(path).name + sep + rest
