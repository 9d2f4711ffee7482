"""The student's source files, read (never imported) to point at the TODO to work on.

A failure is traced to a function in one of two ways:

* **where it arose**: the stage-package frames of its traceback (and of the exception it was raised while
  handling, so that ``raise AssertionError(...) from None`` around a ``RecursionError`` still leads to the
  function that recursed), innermost first. The first frame inside a function that holds a ``# TODO`` is
  the one; a given helper without a TODO (``_accumulate``, say) passes the blame on to its caller.
* **the function under test**, when no code of the student's appears in the traceback (an assertion in a
  test on a wrong value): the functions the test names with ``@pytest.mark.under_test("GPT.forward")``,
  else the exercise's functions whose names the test's id or its message mention, ``relu`` in
  ``test_unary_function_matches_torch[relu-(5,)]``, ``__truediv__`` in ``[a / b-...]`` (British and
  American spellings alike: ``normalise`` names ``normalize``).
* else the exercise's first TODO, and the report says it is only that.

Either way the pointer is the function's ``# TODO X.Y`` line if the student kept it, else its ``def`` line.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

TODO = re.compile(r"^\s*# TODO (?P<id>\d+\.\d+)\b")
STAGE_PACKAGE = re.compile(r"^stage\d+_\w+$")

# Words a test or its message uses for an operator method, beyond the method's own name.
ALIASES = {
    "__add__": ("add", "addition"), "__radd__": ("add",), "__sub__": ("sub", "subtraction"), "__rsub__": ("sub",),
    "__mul__": ("mul", "multiplication"), "__rmul__": ("mul",), "__truediv__": ("div", "division"),
    "__rtruediv__": ("div",), "__pow__": ("pow", "power"), "__neg__": ("neg", "negation"),
    "__matmul__": ("matmul",), "__rmatmul__": ("matmul",), "__getitem__": ("getitem", "indexing", "index"),
}
OPERATORS = {"+": "add", "-": "sub", "*": "mul", "/": "truediv", "@": "matmul", "**": "pow"}
# "a / b", "2.5 - a", "x ** 2": a binary expression in a test id or message; a number on the left means the
# reflected method (__rsub__), as Python calls it.
BINARY = re.compile(r"(?P<left>[A-Za-z_]\w*|\d+(?:\.\d+)?)\s+(?P<op>\*\*|[-+*/@])\s+(?=[\w(\[])")
NEGATION = re.compile(r"(?:^|[\[(\s,])-[A-Za-z_]")


def read_source(path: Path) -> str | None:
    """A Python file's text decoded as Python decodes it (its coding cookie, else UTF-8); bytes that do not
    decode are replaced, never fatal. None if the file cannot be read."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding, errors="replace")
    except (SyntaxError, LookupError):  # a cookie naming no known codec
        return data.decode("utf-8", errors="replace")


def torch_imports(path: Path) -> list[int]:
    """The lines of ``path`` that import PyTorch (``import torch``, ``from torch... import``); [] if none or
    if the file does not parse (its syntax error is reported by itself)."""
    source = read_source(path)
    try:
        tree = ast.parse(source or "")
    except (SyntaxError, ValueError):
        return []
    lines = []
    for node in ast.walk(tree):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        if any(name == "torch" or name.startswith("torch.") for name in names):
            lines.append(node.lineno)
    return sorted(lines)


@dataclass(frozen=True)
class Function:
    qualname: str  # "Tensor.relu", or "unbroadcast" at module level
    start: int  # the def line (decorators not included)
    end: int
    todos: tuple[tuple[int, str], ...]  # (line, exercise id) of each "# TODO X.Y" inside it

    @property
    def name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]


def functions_in(source: str) -> list[Function]:
    """Module-level functions and the methods of module-level classes, in file order; nested functions
    belong to the function around them. Empty if the file does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines()
    found = []

    def add(node, prefix=""):
        end = node.end_lineno or node.lineno
        todos = tuple((n, m["id"]) for n in range(node.lineno, end + 1) if (m := TODO.match(lines[n - 1])))
        found.append(Function(prefix + node.name, node.lineno, end, todos))

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            add(node)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    add(item, node.name + ".")
    return found


@dataclass(frozen=True)
class Todo:
    path: Path
    line: int
    function: str | None = None  # "Tensor.__truediv__"
    exercise: str | None = None  # the id on its TODO line, when there is one
    fallback: bool = False  # only the exercise's first TODO: nothing said which function the test is about
    ranking: tuple[str, ...] = ()  # the suspects the spectrum of the exercise's tests ranked, for -v (grading.spectrum)

    def as_json(self) -> dict:
        """``{"file": "stage1_autograd/tensor.py", "line": 156, "function": "Tensor.__truediv__"}``."""
        parts = self.path.parts
        start = next((i for i, part in enumerate(parts) if STAGE_PACKAGE.match(part)), len(parts) - 1)
        return {"file": Path(*parts[start:]).as_posix(), "line": self.line or None, "function": self.function}

    def describe(self, shown_path: str, current_exercise: str | None = None) -> str:
        """``stage1_autograd/tensor.py:156 (Tensor.__truediv__)``, naming the TODO's exercise if it is another."""
        text = f"{shown_path}:{self.line}" if self.line else shown_path
        details = [self.function] if self.function else []
        if self.exercise and current_exercise and self.exercise != current_exercise:
            details.append(f"exercise {self.exercise}")
        text += f" ({', '.join(details)})" if details else ""
        if self.fallback:
            text += (f", the first TODO of {self.exercise or current_exercise or 'the exercise'}: the test does not say "
                     "which function it is about")
        return text


class SourceFiles:
    """Parsed files, each read once per report."""

    def __init__(self):
        self._cache: dict[Path, tuple[str | None, list[Function]]] = {}

    def get(self, path: Path) -> tuple[str | None, list[Function]]:
        if path not in self._cache:
            source = read_source(path)
            self._cache[path] = (source, functions_in(source) if source is not None else [])
        return self._cache[path]

    def functions(self, path: Path) -> list[Function]:
        return self.get(path)[1]

    def enclosing(self, path: Path, line: int) -> Function | None:
        return next((f for f in self.functions(path) if f.start <= line <= f.end), None)


def pointer(path: Path, function: Function) -> Todo:
    if function.todos:
        line, exercise = function.todos[0]
        return Todo(path, line, function.qualname, exercise)
    return Todo(path, function.start, function.qualname)


def where_it_arose(frames: list[dict], student_roots: set[Path], files: SourceFiles) -> Todo | None:
    """The function with a TODO that the innermost frame in the student's code lies in (see the module doc)."""
    candidates = []
    for frame in frames:
        root = Path(frame["root"])
        if root not in student_roots:
            continue
        path = root / frame["file"]
        function = files.enclosing(path, frame["line"])
        if function is not None:
            candidates.append((path, function))
    for path, function in candidates:
        if function.todos:
            return pointer(path, function)
    return pointer(*candidates[0]) if candidates else None


def american(text: str) -> str:
    """``text`` with British -ise/-isation spellings as -ize/-ization, each word the same length."""
    return re.sub(r"(?<=[a-z]{2})is(e[ds]?|ing|ations?)(?![a-z])", r"iz\1", text)


def mentioned(text: str, function: Function) -> int | None:
    """Where ``text`` (a test id and message) first names ``function``, or None."""
    positions = []
    text = american(text)
    for word in (american(function.name.strip("_")), *ALIASES.get(function.name, ())):
        if len(word) >= 3 and (m := re.search(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", text)):
            positions.append(m.start())
    for m in BINARY.finditer(text):
        reflected = m["left"][0].isdigit()
        if function.name == f"__{'r' if reflected else ''}{OPERATORS[m['op']]}__":
            positions.append(m.start("op"))
    if function.name == "__neg__" and (m := NEGATION.search(text)):
        positions.append(m.start())
    return min(positions) if positions else None


def texts_of_test_id(test: str) -> tuple[str, str]:
    """What a test id says, most specific first: its parameters (``log_softmax-(4, 6)`` of
    ``test_softmax_matches_torch[log_softmax-(4, 6)]``, which name the function of this case), then its name."""
    name = test.split("::")[-1]
    parameters = name.partition("[")[2].removesuffix("]")
    return parameters, name


def named_by_test(paths: Path | list[Path], names: tuple[str, ...] | list[str], test: str, message: str,
                  files: SourceFiles) -> Todo | None:
    """The function the test names as under test (its ``under_test`` marker) found in the files (the exercise's
    file first, then its other files): of several, the one the test id's parameters, its name or the message
    mention first, else the first named. None if none is in the files."""
    by_name = {}
    for path in [paths] if isinstance(paths, Path) else paths:
        for f in files.functions(path):
            by_name.setdefault(f.qualname, (path, f))
    named = [by_name[name] for name in names if name in by_name]
    if not named:
        return None
    for text in (*texts_of_test_id(test), message):
        scored = [(position, i) for i, (_, f) in enumerate(named) if (position := mentioned(text, f)) is not None]
        if scored:
            return pointer(*named[min(scored)[1]])
    return pointer(*named[0])


def exercise_files(package_dir: Path, exercise_id: str, file: str, files: SourceFiles) -> list[Path]:
    """The exercise's registry file, then the other files of the package that hold one of its TODOs (3.2's
    LayerNorm module in nn.py beside its function in functional.py)."""
    main = package_dir / file
    others = [path for path in sorted(package_dir.rglob("*.py"))
              if path != main and any(e == exercise_id for f in files.functions(path) for _, e in f.todos)]
    return [main, *others]


def under_test(path: Path, exercise_id: str, test: str, message: str, files: SourceFiles) -> Todo | None:
    """The exercise's function (one with its TODO, or any in the file once the TODOs are gone) that the test
    id names first, else the one the failure message names first."""
    functions = files.functions(path)
    own = [f for f in functions if any(e == exercise_id for _, e in f.todos)]
    # The test's parameters and name first, then the message, and the module's name last: in "test_softmax.py::
    # test_softmax_x[log_softmax]" the parameter names the function, the file and the test's name only the topic.
    for text in (*texts_of_test_id(test), message, test):
        scored = [(position, i) for i, f in enumerate(own or functions) if (position := mentioned(text, f)) is not None]
        if scored:
            return pointer(path, (own or functions)[min(scored)[1]])
    return None


def first_todo(path: Path, exercise_id: str, files: SourceFiles) -> Todo | None:
    """The exercise's first TODO line in the file (any function), else the file itself (line 1)."""
    source, _ = files.get(path)
    if source is None:
        return None
    for number, line in enumerate(source.splitlines(), start=1):
        if (m := TODO.match(line)) and m["id"] == exercise_id:
            function = files.enclosing(path, number)
            return Todo(path, number, function.qualname if function else None, exercise_id, fallback=True)
    return Todo(path, 0)
