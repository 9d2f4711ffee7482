"""The grader's feedback, piece by piece and without running a stage: which TODO a failure points at, what
the report says comes next, what it remembers, the hints, the set-up check, the watcher, the lessons."""

from __future__ import annotations

import re
import shlex
import threading
import time
from pathlib import Path

import pytest

from grading import cli, doctor, progress, runner, watch
from grading.registry import REPO_ROOT, all_stages, load_stage
from grading.report import EarlierStage, ExerciseResult, Failure, View, find_todos, render, short_test_name
from grading.runner import RunResult
from grading.source import (SourceFiles, exercise_files, first_todo, functions_in, named_by_test, read_source,
                            under_test, where_it_arose)
from grading.state import State, age

STAGE1, STAGE2 = load_stage("stage1"), load_stage("stage2")

# A student's tensor.py in miniature: finished functions keep their TODO lines, as students leave them.
TENSOR = '''\
class Tensor:
    def _accumulate(self, grad):
        if grad.shape != self.shape:
            raise ValueError("wrong shape")

    def __add__(self, other):
        # TODO 1.2: d(a+b)/da = 1
        return self

    def __truediv__(self, other):
        # TODO 1.2: d(a/b)/db = -a/b**2
        def backward(g):
            return g / slf.data

        return backward

    def __rtruediv__(self, other):
        # TODO 1.2: other / self
        return self

    def exp(self):
        # TODO 1.3: the output itself
        return self

    def relu(self):
        # TODO 1.3: x > 0
        return self

    def backward(self):
        # TODO 1.7: outputs first
        def build(node):
            build(node)
        build(self)
        self._accumulate(None)


def unbroadcast(grad, shape):
    # TODO 1.2: sum over the broadcast axes
    return grad
'''


@pytest.fixture
def student(tmp_path):
    """A student root whose stage1_autograd/tensor.py is TENSOR."""
    package = tmp_path / "stage1_autograd"
    package.mkdir()
    (package / "tensor.py").write_text(TENSOR)
    return tmp_path


def frame(root: Path, function: str) -> dict:
    """A traceback frame (as the grading plugin records it) on the first line of ``function``'s body."""
    lines = TENSOR.splitlines()
    line = next(i for i, text in enumerate(lines, start=1) if re.match(rf"\s+def {function}\(", text)) + 1
    return {"package": "stage1_autograd", "root": str(root), "file": "stage1_autograd/tensor.py", "line": line,
            "function": function}


def todo_line(method: str) -> int:
    lines = TENSOR.splitlines()
    start = next(i for i, text in enumerate(lines) if text.startswith(f"    def {method}("))
    return next(i for i, text in enumerate(lines[start:], start=start + 1) if "# TODO" in text)


# --------------------------------------------------------------------------- the TODO a failure points at
def test_a_failure_inside_a_closure_points_at_the_method_around_it(student):
    """A NameError in __truediv__'s backward closure: its TODO, not the exercise's first (__add__'s)."""
    todo = where_it_arose([frame(student, "backward")], {student}, SourceFiles())
    assert (todo.function, todo.line, todo.exercise) == ("Tensor.__truediv__", todo_line("__truediv__"), "1.2")


def test_a_given_helper_passes_the_blame_to_the_function_with_a_todo(student):
    """_accumulate (given code, no TODO) raised, called from backward: the TODO is backward's."""
    frames = [frame(student, "_accumulate"), frame(student, "build"), frame(student, "backward")]
    todo = where_it_arose(frames, {student}, SourceFiles())
    assert todo.function == "Tensor.backward" and todo.exercise == "1.7"


def test_frames_in_the_reference_or_the_tests_are_not_the_students(student, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("reference")
    assert where_it_arose([frame(elsewhere, "backward")], {student}, SourceFiles()) is None


@pytest.mark.parametrize("test, message, function", [
    ("test_unary.py::test_unary_function_matches_torch[relu-(5,)]",
     "x.relu() with input 0 of shape (5,): gradient of input 0: 3 of 5 elements differ", "Tensor.relu"),
    ("test_elementwise.py::test_binary_op_matches_torch[a / b-((3, 4), (3, 4))]", "values differ", "Tensor.__truediv__"),
    ("test_elementwise.py::test_operations_with_python_numbers[2.5 / a]", "values differ", "Tensor.__rtruediv__"),
    ("test_elementwise.py::test_unbroadcast_sums_to_the_operand_shape[x]", "", "unbroadcast"),
    ("test_x.py::test_something", "after x.exp(): expected 1, got 2", "Tensor.exp"),
])
def test_a_wrong_value_points_at_the_function_under_test(student, test, message, function):
    path = student / "stage1_autograd" / "tensor.py"
    exercise = "1.3" if function in ("Tensor.relu", "Tensor.exp") else "1.2"
    todo = under_test(path, exercise, test, message, SourceFiles())
    assert todo is not None and todo.function == function, todo


def test_without_todo_lines_the_def_line_is_shown(student):
    path = student / "stage1_autograd" / "tensor.py"
    path.write_text(re.sub(r"^\s*# TODO.*\n", "", TENSOR, flags=re.MULTILINE))
    todo = under_test(path, "1.3", "test_unary.py::test_unary_function_matches_torch[relu-(5,)]", "", SourceFiles())
    assert todo.function == "Tensor.relu" and "def relu" in path.read_text().splitlines()[todo.line - 1]


def test_the_test_name_outranks_its_module_name(tmp_path):
    """test_softmax.py's tests of log_softmax point at log_softmax, not at the softmax the file is named after."""
    path = tmp_path / "stage3_transformer" / "functional.py"
    path.parent.mkdir()
    path.write_text("def softmax(x):\n    return x\n\n\ndef log_softmax(x):\n    return x\n")
    todo = under_test(path, "3.1", "test_softmax.py::test_matches_torch[log_softmax-(4, 6)--1]", "", SourceFiles())
    assert todo is not None and todo.function == "log_softmax", todo
    todo = under_test(path, "3.1", "test_softmax.py::test_is_stable", "", SourceFiles())
    assert todo is not None and todo.function == "softmax", todo


def test_nothing_named_falls_back_to_the_first_todo_of_the_exercise(student):
    path = student / "stage1_autograd" / "tensor.py"
    assert under_test(path, "1.7", "test_engine.py::test_diamond_graph", "values differ", SourceFiles()) is None
    todo = first_todo(path, "1.7", SourceFiles())
    assert (todo.line, todo.function) == (todo_line("backward"), "Tensor.backward")


def test_a_function_the_test_names_outranks_the_guess_from_its_name(student):
    """A test marked ``under_test("Tensor.backward")`` points at backward, though its id names relu."""
    path = student / "stage1_autograd" / "tensor.py"
    files = SourceFiles()
    todo = named_by_test(path, ("Tensor.backward",), "test_x.py::test_relu_graph", "", files)
    assert (todo.function, todo.line, todo.fallback) == ("Tensor.backward", todo_line("backward"), False)
    # Of several named, the one the test id or message mentions; else the first named.
    assert named_by_test(path, ("Tensor.exp", "Tensor.relu"), "test_x.py::test_y", "after relu", files).function == "Tensor.relu"
    assert named_by_test(path, ("Tensor.exp", "Tensor.relu"), "test_x.py::test_y", "", files).function == "Tensor.exp"
    assert named_by_test(path, ("Tensor.renamed",), "test_x.py::test_y", "", files) is None  # gone: the heuristics decide


def test_a_tests_parameters_name_the_function_before_its_name(tmp_path):
    """test_softmax_matches_torch[log_softmax-...] is about log_softmax, though its name says softmax first."""
    path = tmp_path / "stage2_mlp" / "functional.py"
    path.parent.mkdir()
    path.write_text("def log_softmax(x):\n    return x\n\n\ndef softmax(x):\n    return x\n")
    test = "test_losses.py::test_softmax_matches_torch[log_softmax-(4, 6)--1]"
    assert named_by_test(path, ("softmax", "log_softmax"), test, "", SourceFiles()).function == "log_softmax"
    assert under_test(path, "2.4", test, "", SourceFiles()).function == "log_softmax"
    test = "test_losses.py::test_softmax_matches_torch[softmax-(4, 6)--1]"
    assert named_by_test(path, ("log_softmax", "softmax"), test, "", SourceFiles()).function == "softmax"


def test_a_function_named_by_a_test_may_live_in_another_file_of_its_exercise(tmp_path):
    """3.2's LayerNorm module is in nn.py, the exercise's file is functional.py: the marker finds it there."""
    package = tmp_path / "stage3_transformer"
    package.mkdir()
    (package / "functional.py").write_text("def layer_norm(x):\n    # TODO 3.2: normalise\n    return x\n")
    (package / "nn.py").write_text("class LayerNorm:\n    def forward(self, x):\n        # TODO 3.2: call it\n"
                                   "        return x\n\n\nclass Other:\n    def forward(self, x):\n        return x\n")
    (package / "other.py").write_text("class LayerNorm:\n    def forward(self, x):\n        return x\n")
    files = SourceFiles()
    paths = exercise_files(package, "3.2", "functional.py", files)
    assert paths == [package / "functional.py", package / "nn.py"], paths  # not other.py: no TODO of 3.2
    todo = named_by_test(paths, ("LayerNorm.forward",), "test_norms.py::test_module", "", files)
    assert (todo.path, todo.function, todo.exercise) == (package / "nn.py", "LayerNorm.forward", "3.2"), todo


def test_the_report_uses_the_tests_own_functions_before_the_heuristics(student):
    """find_todos: a failure with no frame in the student's code, whose test names its function."""
    stage = load_stage("stage1")
    exercise = next(e for e in stage.exercises if e.file == "tensor.py" and e.id == "1.3")
    error = {"type": "AssertionError", "message": "after relu: values differ", "location": None, "frames": []}
    r = result(exercise, "failed", message=error["message"], test="test_unary.py::test_relu", error=error,
               functions=("Tensor.exp",))
    find_todos(stage, [r], {stage.package: student})
    assert r.todo.function == "Tensor.exp" and not r.todo.fallback, r.todo
    r = result(exercise, "failed", message=error["message"], test="test_unary.py::test_relu", error=error)
    find_todos(stage, [r], {stage.package: student})
    assert r.todo.function == "Tensor.relu", r.todo


def test_the_first_todo_says_it_is_only_the_first_of_the_exercise(student):
    path = student / "stage1_autograd" / "tensor.py"
    todo = first_todo(path, "1.2", SourceFiles())
    assert todo.function == "Tensor.__add__" and todo.fallback
    described = todo.describe("stage1_autograd/tensor.py", "1.2")
    assert described == (f"stage1_autograd/tensor.py:{todo_line('__add__')} (Tensor.__add__), the first TODO of 1.2: "
                         "the test does not say which function it is about"), described
    found = under_test(path, "1.2", "test_x.py::test_y[a / b]", "", SourceFiles())
    assert "first TODO" not in found.describe("stage1_autograd/tensor.py", "1.2")


@pytest.mark.parametrize("test, function", [
    ("test_norm.py::test_normalise_keeps_the_mean", "normalize"),
    ("test_norm.py::test_normalize_keeps_the_mean", "normalise"),
    ("test_init.py::test_initialisation_is_seeded", "initialization"),
    ("test_init.py::test_initialization_is_seeded", "initialisation"),
])
def test_british_and_american_spellings_name_the_same_function(tmp_path, test, function):
    path = tmp_path / "stage3_transformer" / "nn.py"
    path.parent.mkdir()
    path.write_text(f"def other(x):\n    return x\n\n\ndef {function}(x):\n    return x\n")
    todo = under_test(path, "3.2", test, "", SourceFiles())
    assert todo is not None and todo.function == function, todo


def test_a_source_file_in_latin_1_is_read_as_python_reads_it(tmp_path):
    path = tmp_path / "value.py"
    path.write_bytes(b"# -*- coding: latin-1 -*-\n# caf\xe9\ndef f():\n    # TODO 1.1: x\n    return 1\n")
    assert "café" in read_source(path)
    assert [f.qualname for f in functions_in(read_source(path))] == ["f"]
    path.write_bytes(b"# caf\xe9 without a cookie\ndef f():\n    return 1\n")  # Python 3.11 imports this too
    assert read_source(path).startswith("# caf")


# --------------------------------------------------------------------------- the report
def result(exercise, status="passed", **fields) -> ExerciseResult:
    total = fields.pop("tests_total", 3)
    return ExerciseResult(exercise, status, total if status == "passed" else 0, total, **fields)


def view(**fields) -> View:
    return View(sources=["stage1_autograd from stage1_autograd/ (your code)"], command="python grader.py stage1",
                hint_command="python grader.py stage1 --hint", **fields)


def test_a_test_id_is_shown_whole_even_with_a_slash_in_a_parameter():
    test = runner.TestResult("tests/stage1/test_elementwise.py::test_binary_op_matches_torch[a / b-((3, 4), (3, 4))]", "1.2",
                      "failed")
    assert short_test_name(test) == "test_elementwise.py::test_binary_op_matches_torch[a / b-((3, 4), (3, 4))]"


def test_after_one_exercise_passes_the_report_names_the_next_and_its_command():
    first, second = STAGE1.exercises[:2]
    text = render(STAGE1, [result(first)], RunResult(), view(partial=True, next_exercise=second))
    assert f"1.1 passed; next: 1.2 {second.title}, `python grader.py stage1 -x 1.2`" in text


def test_an_import_failure_after_minus_x_keeps_the_minus_x_in_the_next_command():
    exercise = STAGE1.exercise("1.3")
    r = result(exercise, "error", message="its tests could not be imported: SyntaxError", import_failed=True)
    text = render(STAGE1, [r], RunResult(), view(partial=True, selected=["1.3"]))
    assert "Next: make the file named above import, then run `python grader.py stage1 -x 1.3`." in text
    text = render(STAGE1, [r], RunResult(), view())
    assert "Next: make the file named above import, then run `python grader.py stage1`." in text


def test_after_a_later_exercise_passes_next_is_the_first_not_yet_passed(tmp_path):
    """-x 1.8 passed, 1.2 failed when last graded: next is 1.2, not 1.9; with nothing remembered, the next id."""
    args = cli.build_parser().parse_args(["stage1", "-x", "1.8"])
    state = State(tmp_path)
    exercises = {e.id: e for e in STAGE1.exercises}
    earlier = [result(exercises["1.1"]), result(exercises["1.2"], "failed")]
    state.record(STAGE1, earlier + [result(exercises["1.8"])], 0.0, 0.0)
    plan = view(partial=True)
    cli.plan_next(STAGE1, [result(exercises["1.8"])], plan, state, args)
    assert plan.next_exercise.id == "1.2"
    plan = view(partial=True)
    cli.plan_next(STAGE1, [result(exercises["1.8"])], plan, None, args)
    assert plan.next_exercise.id == "1.9"


def test_earlier_stages_that_may_hold_a_bug_are_named_in_one_line():
    stage3 = load_stage("stage3")
    exercise = stage3.exercises[0]
    r = result(exercise, "failed", message="values differ", test="test_softmax.py::test_x")
    earlier = [EarlierStage(STAGE1, "stage1_autograd/", [], None, "python grader.py stage1"),
               EarlierStage(STAGE2, "stage2_mlp/", [], "100/100 when last graded", "python grader.py stage2")]
    text = render(stage3, [r], RunResult(), view(earlier=earlier, earlier_are_students=True))
    assert text.count("a bug there can fail a test here") == 1, text
    assert ("This stage runs on your stage1 (stage1_autograd/, which has not been graded yet) and stage2 "
            "(stage2_mlp/, which scored 100/100 when last graded): a bug there can fail a test here (grading them "
            "shows it: `python grader.py stage1`, `python grader.py stage2`).") in text, text
    text = render(stage3, [r], RunResult(), view(earlier=earlier[:1], earlier_are_students=True))
    assert ("This stage runs on your stage1 (stage1_autograd/, which has not been graded yet): a bug there can "
            "fail a test here (`python grader.py stage1` shows it).") in text, text


def test_unfinished_exercises_of_several_earlier_stages_are_named_in_one_paragraph():
    stage3, stage4 = load_stage("stage3"), load_stage("stage4")
    r = result(stage4.exercises[0], "failed", message="values differ", test="test_tokenizer.py::test_x")
    earlier = [EarlierStage(STAGE1, "stage1_autograd/", ["1.6", "1.7"], None, "python grader.py stage1"),
               EarlierStage(STAGE2, "stage2_mlp/", [], "100/100 when last graded", "python grader.py stage2"),
               EarlierStage(stage3, "stage3_transformer/", ["3.1"], None, "python grader.py stage3")]
    text = render(stage4, [r], RunResult(), view(earlier=earlier, earlier_are_students=True))
    assert text.count("This stage runs on your") == 1, text
    assert ("This stage runs on your stage1 (stage1_autograd/, which has not been graded yet) and stage3 "
            "(stage3_transformer/, which has not been graded yet). Their exercises 1.6, 1.7 (stage1) and 3.1 (stage3) "
            "are not done yet, and this stage's tests need them: finish them first, starting with "
            "`python grader.py stage1 -x 1.6`. A bug in your stage2 (stage2_mlp/, which scored 100/100 when last "
            "graded) can also fail a test here (`python grader.py stage2` shows it).") in text, text


def test_after_a_whole_stage_passes_the_report_names_the_next_lesson_and_command():
    results = [result(e) for e in STAGE1.exercises]
    text = render(STAGE1, results, RunResult(), view(next_stage=STAGE2, next_stage_command="python grader.py stage2"))
    assert "stage1 is complete" in text
    assert "stage2_mlp/README.md" in text and "`python grader.py stage2`" in text
    last = all_stages()[-1]
    text = render(last, [result(e) for e in last.exercises], RunResult(), view())
    assert "last stage" in text


def test_verbose_lists_every_failing_test_with_its_message():
    exercise = STAGE1.exercise("1.2")
    failures = [Failure(f"test_elementwise.py::test_op[a / b-{i}]", f"values differ {i}",
                        {"file": "stage1_autograd/tensor.py", "line": 10 + i, "function": "backward"}, "failed")
                for i in range(4)]
    r = result(exercise, "failed", message="values differ 0", test=failures[0].test, failures=failures,
               tests_total=9, detail="E   full pytest output")
    text = render(STAGE1, [r], RunResult(), view(verbose=True))
    assert "4 of 9 tests failing" in text and "full pytest output" in text
    for f in failures:
        assert f.test in text and f"{f.message}  (stage1_autograd/tensor.py:{f.location['line']}, in backward)" in text


def test_the_table_says_how_to_get_more_hints():
    exercise = STAGE1.exercise("1.7")
    r = result(exercise, "failed", message="wrong", test="test_engine.py::test_x")
    text = render(STAGE1, [r], RunResult(), view(hints_shown={"1.7": 1}))
    assert f"hint: {exercise.hints[0]}" in text and "`python grader.py stage1 --hint 1.7`" in text
    text = render(STAGE1, [r], RunResult(), view(hints_shown={"1.7": len(exercise.hints)}))
    assert "--hint" not in text


# --------------------------------------------------------------------------- memory, status, hints
def test_state_remembers_results_and_hints_and_survives_a_broken_file(tmp_path):
    state = State(tmp_path)
    exercises = STAGE1.exercises
    state.record(STAGE1, [result(exercises[0]), result(exercises[1], "failed", message="line one\nline two")],
                 started_at=100.0, files_changed_at=50.0)
    state.show_hints("1.7", 3)
    assert state.save()
    again = State(tmp_path)
    assert again.last_results(STAGE1)["1.1"]["status"] == "passed"
    assert again.last_results(STAGE1)["1.2"]["message"] == "line one"
    assert again.graded_at(STAGE1) == 100.0 and again.hints_shown("1.7") == 3 and again.hints_shown("1.1") == 1
    (tmp_path / "state.json").write_text("{not json")
    assert State(tmp_path).last_results(STAGE1) == {} and State(tmp_path).hints_shown("1.7") == 1


def test_status_shows_every_stage_with_its_score_age_and_next_command(tmp_path):
    state = State(tmp_path)
    state.record(STAGE1, [result(e) for e in STAGE1.exercises[:3]], started_at=time.time() - 7200,
                 files_changed_at=0.0)
    text = progress.render(state)
    for stage in all_stages():
        assert stage.name in text
    assert "35/100" in text and "3 of 9 exercises passed" in text and "2 h ago" in text
    assert "files changed since" in text  # the stage folder's files are newer than the (made-up) grading
    assert "Next: `python grader.py stage1 -x 1.4`" in text
    assert "grades nothing" in text  # it says it shows the last results, not new ones


@pytest.mark.parametrize("seconds, text", [(5, "just now"), (600, "10 min ago"), (3 * 3600, "3 h ago"),
                                           (5 * 86400, "5 days ago")])
def test_age(seconds, text):
    assert age(seconds) == text


@pytest.mark.parametrize("stage", [STAGE1, STAGE2], ids=lambda s: s.name)
def test_every_exercise_has_hints_from_a_nudge_to_almost_the_answer(stage):
    for exercise in stage.exercises:
        assert len(exercise.hints) >= 3, f"{exercise.id} has {len(exercise.hints)} hints"
        assert len(set(exercise.hints)) == len(exercise.hints), f"{exercise.id} repeats a hint"


def test_hints_unlock_one_at_a_time_and_say_how_many_remain(tmp_path, capsys):
    state = State(tmp_path)
    exercise = STAGE1.exercise("1.7")
    total = len(exercise.hints)
    for shown in range(2, total + 1):
        cli.show_hint(STAGE1, "1.7", state)
        out = capsys.readouterr().out
        assert f"hint {shown} of {total}" in out and "(new)" in out
        assert exercise.hints[shown - 1][:40] in out.replace("\n     ", " ")
        remaining = total - shown
        assert (f"{remaining} more hint" in out) if remaining else "last hint" in out
        assert State(tmp_path).hints_shown("1.7") == shown  # remembered between runs
    cli.show_hint(STAGE1, "1.7", state)
    assert "last hint" in capsys.readouterr().out and State(tmp_path).hints_shown("1.7") == total


def test_a_hint_without_an_exercise_is_for_the_exercise_to_work_on(tmp_path, capsys):
    state = State(tmp_path)
    state.record(STAGE1, [result(e) for e in STAGE1.exercises[:2]], started_at=1.0, files_changed_at=0.0)
    cli.show_hint(STAGE1, "", state)
    assert capsys.readouterr().out.startswith("1.3 Unary functions: hint 2 of")


# --------------------------------------------------------------------------- doctor
@pytest.mark.parametrize("version, spec, ok", [("2.13.0+cpu", "==2.13.0", True), ("2.4.6", ">=2.0", True),
                                               ("1.26.4", ">=2.0", False), ("8.3.0rc1", ">=8", True),
                                               ("1.3.2", ">=1.3,<2", True), ("2.0", ">=1.3,<2", False)])
def test_version_specifiers(version, spec, ok):
    assert doctor.satisfies(version, spec) is ok


def test_doctor_names_a_missing_or_old_package_and_what_to_run(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=2.0   # a comment\nsurely-not-installed-pkg>=1\npytest>=999\n")
    checks = {c.text.split()[0]: c for c in doctor.requirements(requirements)}
    assert checks["numpy"].level == "ok"
    assert checks["surely-not-installed-pkg"].level == "FAIL" and "pip install -r requirements.txt" in \
        checks["surely-not-installed-pkg"].text
    assert checks["pytest"].level == "FAIL" and "pip install 'pytest>=999'" in checks["pytest"].text


def test_doctor_checks_everything_a_student_needs():
    texts = "\n".join(c.text for c in doctor.checks_of_this_setup())
    for topic in ("Python", "numpy", "torch", "PyTorch is the", "matplotlib", "BLAS", "solutions/"):
        assert topic in texts, topic


# --------------------------------------------------------------------------- watching
def test_watching_sleeps_until_a_file_is_saved(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    before = watch.snapshot([tmp_path])
    cpu_before = time.process_time()
    saver = threading.Timer(1.5, lambda: (tmp_path / "a.py").write_text("x = 22\n"))
    saver.start()
    changed = watch.wait_for_change([tmp_path], before)
    assert changed == [str(tmp_path / "a.py")]
    assert time.process_time() - cpu_before < 0.3, "the watcher kept the CPU busy while waiting"


def test_watching_clears_a_terminal_and_rules_a_log(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    watch.clear_screen()
    assert "\033[2J" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    watch.clear_screen()
    assert "\033" not in capsys.readouterr().out


# --------------------------------------------------------------------------- what students are told to run
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:python|cd)\b.*")


def student_facing_commands() -> list[tuple[str, str]]:
    """(where, command) for every command in the README's quick start and in each stage's lesson."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    texts = [("README.md quick start", quick_start)]
    texts += [(f"{s.package}/README.md", (REPO_ROOT / s.package / "README.md").read_text(encoding="utf-8"))
              for s in all_stages() if (REPO_ROOT / s.package / "README.md").is_file()]
    found = []
    for where, text in texts:
        candidates = re.findall(r"`([^`\n]+)`", text) + text.splitlines()
        for candidate in candidates:
            candidate = candidate.split("  #")[0].strip()
            if COMMAND.match(candidate):
                found.append((where, candidate))
    return found


def test_the_quick_start_and_the_lessons_name_only_commands_a_student_can_run():
    """Each works without solutions/ and runs the student's own code: no reference, no instructors' tools."""
    commands = student_facing_commands()
    assert any("grader.py stage1" in c for _, c in commands)
    problems = []
    for where, command in commands:
        words = shlex.split(command.replace("&&", " && "))
        words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
        if "solutions" in command or "--reference-earlier" in words or words[:3] == ["python", "-m", "pytest"]:
            problems.append(f"{where}: `{command}` needs solutions/")
        elif words[:2] == ["python", "grader.py"] and not {"-h", "--help"} & set(words):
            try:
                cli.check_usage(cli.build_parser().parse_args(words[2:]))
            except (cli.UsageProblem, SystemExit) as problem:
                problems.append(f"{where}: `{command}`: {problem or 'not a valid grader command'}")
        elif words[:2] == ["python", "-m"] and words[2].startswith("stage"):
            module = REPO_ROOT / (words[2].replace(".", "/") + ".py")
            if not module.is_file():
                problems.append(f"{where}: `{command}`: there is no {module.relative_to(REPO_ROOT)}")
    assert not problems, "\n".join(problems)


def test_a_python_without_the_requirements_is_told_to_install_them_before_any_grading(monkeypatch, capsys):
    """Without torch every test module fails to import: one clear line instead of a table of import errors."""
    monkeypatch.setattr(doctor, "missing_requirements", lambda: ["torch"])
    monkeypatch.setattr(cli, "run_stage", lambda *a, **k: pytest.fail("graded although torch is missing"))
    assert cli.main(["stage1", "-x", "1.1"]) == 2
    message = capsys.readouterr().err
    assert message.startswith("grader.py: error:") and "torch" in message
    assert "pip install -r requirements.txt" in message and "doctor" in message


def test_missing_requirements_reads_requirements_txt(monkeypatch):
    assert doctor.missing_requirements() == []  # the self-test runs with everything installed
    names = [name for name, _ in doctor.required_packages()]
    assert "torch" in names and "numpy" in names
