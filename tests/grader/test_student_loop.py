"""The student's loop end to end, on a student's copy of the course (no solutions/): set-up check, progress,
grading one exercise and being told the next, hints, an unfinished earlier stage, watch mode, and the
feedback on submissions that fail in the ways the report must make plain. Few and small runs: each costs
a grading child process."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grading.registry import REPO_ROOT, SOLUTIONS_DIR
from tests.grader.test_grading import children_mentioning, grade, portable, statuses, submission


def run(copy: Path, *args: str, timeout: float = 300) -> tuple[int, str]:
    """``python grader.py ARGS`` in the student's copy ``copy``, as the student runs it there."""
    completed = subprocess.run([sys.executable, "grader.py", *args], cwd=copy, capture_output=True, text=True,
                               timeout=timeout)
    output = completed.stdout + completed.stderr
    assert "Traceback" not in output, output
    return completed.returncode, output


def tree(copy: Path) -> dict[str, int]:
    """Every file and folder with its modification time (Python's own bytecode caches aside)."""
    return {str(p.relative_to(copy)): p.stat().st_mtime_ns for p in copy.rglob("*") if "__pycache__" not in p.parts}


def stage_files(copy: Path) -> dict[str, bytes]:
    return {str(p.relative_to(copy)): p.read_bytes() for p in copy.glob("stage*/**/*") if p.is_file()}


@pytest.fixture
def student_copy(tmp_path_factory) -> Path:
    """This course as a student receives it: everything but solutions/ (and git's and the grader's own files)."""
    copy = tmp_path_factory.mktemp("student") / "scratch-to-gpt"
    shutil.copytree(REPO_ROOT, copy, ignore=shutil.ignore_patterns(".git", "solutions", "__pycache__", ".grader",
                                                                   ".pytest_cache", "*.png"))
    return copy


def test_a_student_copy_from_set_up_to_the_next_exercise_and_the_next_stage(student_copy):
    copy = student_copy
    everything = tree(copy)
    code, output = run(copy, "doctor")
    assert code == 0, output
    assert tree(copy) == everything, "doctor changed something"
    assert re.search(r"ok\s+Python 3", output) and "PyTorch is" in output and "BLAS" in output
    assert "solutions/ is not here" in output

    code, output = run(copy)  # no stage: the progress of every stage, graded or not
    assert code == 0 and "grades nothing" in output
    assert output.count("not graded yet") >= 2 and "Next: `python grader.py stage1 -x 1.1`" in output

    shutil.copy(SOLUTIONS_DIR / "stage1_autograd" / "value.py", copy / "stage1_autograd" / "value.py")
    before = stage_files(copy)
    code, output = run(copy, "stage1", "-x", "1.1")
    assert code == 0, output
    assert "1.1 passed; next: 1.2 Tensor elementwise arithmetic, `python grader.py stage1 -x 1.2`" in output
    assert stage_files(copy) == before, "the grader wrote into the student's stage folders"
    assert (copy / ".grader" / "state.json").is_file()

    code, output = run(copy, "status")
    assert code == 0
    assert re.search(r"stage1\s+Autograd\s+10/100\s+1 of 9 exercises passed.*graded just now", output), output
    assert "Next: `python grader.py stage1 -x 1.2`" in output

    code, output = run(copy, "stage1", "--hint", "1.7")
    assert code == 0 and "hint 2 of 3" in output and "1 more hint" in output
    code, output = run(copy, "stage1", "--hint", "1.7")
    assert "hint 3 of 3" in output and "last hint" in output

    # Stage 2 done as far as 2.2 goes, on a stage 1 of which only 1.1 is done.
    for file in ("nn.py", "functional.py"):
        shutil.copy(SOLUTIONS_DIR / "stage2_mlp" / file, copy / "stage2_mlp" / file)
    code, output = run(copy, "stage2", "-x", "2.2")
    assert code == 1, output
    match = re.search(r"This stage runs on your stage1 \(stage1_autograd/\), which scored \d+/100 when last graded "
                      r"\(.*\)\. Its exercises? ([\d., ]+) (is|are) not done yet", output)
    assert match, output
    needed = match.group(1).split(", ")
    assert f"`python grader.py stage1 -x {needed[0]}`" in output
    assert "--reference-earlier" not in output  # this copy has no reference to offer


def test_watch_mode_grades_again_when_a_file_is_saved_and_ctrl_c_leaves_cleanly(tmp_path):
    root = submission(tmp_path, "stage1_autograd")
    grader = subprocess.Popen([sys.executable, str(REPO_ROOT / "grader.py"),
                               *portable(["stage1", "--submission", str(root), "-x", "1.1", "--watch"])],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=REPO_ROOT, env={**os.environ, "GRADER_TEST_MARK": str(root)})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in grader.stdout], daemon=True).start()
    seen: list[str] = []

    def read_until(text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        start = len(seen)
        while time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                continue
            if text in seen[-1]:
                return "".join(seen[start:])
        raise AssertionError(f"no {text!r} within {timeout} s; output so far:\n{''.join(seen)}")

    try:
        first = read_until("Watching")
        assert "not started" in first and "Score: 0/10" in first
        assert not children_mentioning(str(root)), "a grading child outlived its run while watching"
        # A real save: the reference value.py replaces the skeleton's.
        shutil.copy(SOLUTIONS_DIR / "stage1_autograd" / "value.py", root / "stage1_autograd" / "value.py")
        second = read_until("Watching")
        assert "changed:" in second and "value.py" in second, second
        assert "Score: 10/10" in second and "1.1 passed" in second, second
        grader.send_signal(signal.SIGINT)
        grader.wait(timeout=30)
        time.sleep(0.5)  # the reader thread drains the last lines
        while not lines.empty():
            seen.append(lines.get())
    finally:
        if grader.poll() is None:
            grader.kill()
    output = "".join(seen)
    assert grader.returncode == 0, output
    assert "stopped watching" in output and "Traceback" not in output
    assert not children_mentioning(str(root)), "a grading child outlived the watch"


def finished_with_todo_lines(tmp_path: Path) -> Path:
    """The reference stage 1 as a student who kept the TODO lines would have finished it."""
    root = tmp_path / "finished"
    shutil.copytree(SOLUTIONS_DIR / "stage1_autograd", root / "stage1_autograd", ignore=shutil.ignore_patterns("__pycache__"))
    for path in (root / "stage1_autograd").glob("*.py"):
        text = re.sub(r"^(\s*)# BEGIN SOLUTION (\d+\.\d+)(?::\s*(.*))?$", r"\1# TODO \2: \3", path.read_text(),
                      flags=re.MULTILINE)
        path.write_text(re.sub(r"^\s*# END SOLUTION\s*\n", "", text, flags=re.MULTILINE))
    return root


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def todo_function(root: Path, todo: dict) -> str:
    """The def line above the TODO a result points at."""
    lines = (root / todo["file"]).read_text().splitlines()[: todo["line"]]
    return next(line.strip() for line in reversed(lines) if line.lstrip().startswith("def "))


def test_each_failure_points_at_the_todo_of_its_own_function_and_verbose_lists_every_failing_test(tmp_path):
    root = finished_with_todo_lines(tmp_path)
    package = root / "stage1_autograd"
    # 1.1: a recursive topological sort (RecursionError on a long chain); 1.2: a NameError inside
    # __truediv__'s backward; 1.3: relu's backward lets every gradient through.
    replace(package / "value.py", "        order: list[Value] = []\n",
            "        order: list[Value] = []\n\n        def visit(node):\n            for parent in node._parents:\n"
            "                visit(parent)\n\n        visit(self)\n")
    replace(package / "tensor.py", "grad_other = unbroadcast(-g * self.data", "grad_other = unbroadcast(-g * slf.data")
    replace(package / "tensor.py", "lambda g: (g * positive,)", "lambda g: (g,)")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.1", "-x", "1.2", "-x", "1.3", "-v")
    assert code == 1 and statuses(data) == {"1.1": "failed", "1.2": "error", "1.3": "failed"}, output
    todos = {e["id"]: e["todo"] for e in data["exercises"]}
    assert todo_function(root, todos["1.1"]).startswith("def backward(self)"), todos["1.1"]
    assert todo_function(root, todos["1.2"]).startswith("def __truediv__"), todos["1.2"]
    assert todo_function(root, todos["1.3"]).startswith("def relu"), todos["1.3"]
    assert todos["1.2"]["function"] == "Tensor.__truediv__"
    assert f"your TODO: {root / 'stage1_autograd' / 'value.py'}:{todos['1.1']['line']} (Value.backward)" in output

    division = next(e for e in data["exercises"] if e["id"] == "1.2")
    assert len(division["failures"]) == division["tests_total"] - division["tests_passed"] > 1
    for failure in division["failures"]:
        assert failure["message"] == "NameError: name 'slf' is not defined"
        assert failure["location"]["file"] == "stage1_autograd/tensor.py" and failure["location"]["function"] == "backward"
        assert failure["test"] in output, "-v lists every failing test"
    whole_id = "test_elementwise.py::test_binary_op_matches_torch[a / b-((3, 4), (3, 4))]"
    assert whole_id in {f["test"] for f in division["failures"]}
    assert " b-((3, 4), (3, 4))]" not in output.replace(whole_id, ""), "a test id was cut at its slash"


def test_a_source_in_latin_1_grades_as_usual(tmp_path):
    root = submission(tmp_path, "stage1_autograd")
    value = root / "stage1_autograd" / "value.py"
    value.write_bytes(b"# -*- coding: latin-1 -*-\n# Caf\xe9 na\xefve: a comment in Latin-1\n" + value.read_bytes())
    gradcheck = root / "stage1_autograd" / "gradcheck.py"
    gradcheck.write_bytes(b"# caf\xe9, and no coding cookie\n" + gradcheck.read_bytes())
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.1", "-x", "1.8")
    assert code == 1, output
    assert statuses(data) == {"1.1": "not_started", "1.8": "not_started"}, output
    assert "your TODO:" in output and "Score: 0/20" in output
    for exercise in data["exercises"]:  # the JSON lists every failing test for tools
        assert len(exercise["failures"]) == exercise["tests_total"] > 1
        assert all(set(f) == {"test", "message", "location", "hidden", "blocked_by"} for f in exercise["failures"])
        assert exercise["todo"]["file"].startswith("stage1_autograd/")


def test_a_hang_at_import_costs_one_limit_and_blocks_the_rest(tmp_path):
    root = submission(tmp_path, "stage1_autograd", from_solutions=("stage1_autograd/value.py",
                                                                    "stage1_autograd/tensor.py"))
    replace(root / "stage1_autograd" / "tensor.py", "_grad_enabled = True\n", "_grad_enabled = True\n\nwhile True:\n    pass\n")
    started = time.monotonic()
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.1", "-x", "1.2", "-x", "1.3", "-x", "1.7",
                               "--timeout", "3")
    elapsed = time.monotonic() - started
    assert code == 1 and statuses(data) == {"1.1": "passed", "1.2": "timeout", "1.3": "timeout", "1.7": "timeout"}, output
    # Eight test modules import tensor.py: one 10 s import limit each would take 80 s.
    assert elapsed < 60, f"the grader took {elapsed:.0f} s: the hang cost more than one import limit"
    messages = {e["id"]: e["message"] for e in data["exercises"]}
    assert "stopped in your code at stage1_autograd/tensor.py" in messages["1.2"]
    assert "blocked: importing stage1_autograd/tensor.py took longer than 10 s" in messages["1.3"]
    assert output.count("importing the code under test took longer") == 2  # the summary and the first problem


@pytest.mark.parametrize("args", [["stage1", "--timeout", "soon"], ["stage9"], ["status", "-x", "1.1"],
                                  ["stage1", "--hint", "9.9"], ["--no-such-option"]])
def test_every_usage_error_has_the_same_prefix(args):
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "grader.py"), *args], capture_output=True, text=True,
                               cwd=REPO_ROOT)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1].startswith("grader.py: error: "), completed.stderr
