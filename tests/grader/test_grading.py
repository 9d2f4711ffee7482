"""The grader end to end: it runs as a student would run it, on the skeletons, on the solutions, and on
submissions that break in every way we promise to handle."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from grading.registry import REPO_ROOT, SOLUTIONS_DIR, all_stages, load_stage

STAGES = all_stages()
LINUX = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(not LINUX, reason="authoritative grading (of other people's submissions) runs on Linux only")


def portable(args: tuple[str, ...] | list[str]) -> list[str]:
    """``args`` as they grade on this system: ``--submission`` is authoritative on Linux, where it is graded for
    the record; elsewhere the same behaviour is checked in one process (``--no-authoritative``)."""
    args = list(args)
    if not LINUX and "--submission" in args and not any(a.endswith("authoritative") for a in args):
        args.append("--no-authoritative")
    return args


def grade(*args: str, timeout: float = 300) -> tuple[int, str, dict | None]:
    """Run ``python grader.py ARGS --json ...`` as a student would; returns (exit code, output, JSON)."""
    args = portable(args)
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "result.json"
        completed = subprocess.run(
            [sys.executable, str(REPO_ROOT / "grader.py"), *args, "--json", str(json_path)],
            capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
        )
        data = json.loads(json_path.read_text()) if json_path.exists() else None
    output = completed.stdout + completed.stderr
    assert "Traceback" not in output, f"the grader printed a traceback:\n{output}"
    return completed.returncode, output, data


def statuses(data: dict) -> dict[str, str]:
    return {e["id"]: e["status"] for e in data["exercises"]}


def submission(tmp_path: Path, *packages: str, from_solutions: tuple[str, ...] = ()) -> Path:
    """A copy of the student skeletons of ``packages``, with the files named in ``from_solutions``
    (``"stage1_autograd/value.py"``) replaced by the reference."""
    root = tmp_path / "submission"
    for package in packages:
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for relative in from_solutions:
        shutil.copy(SOLUTIONS_DIR / relative, root / relative)
    return root


def broken_solution(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A copy of the reference stage 1 with one piece of code replaced."""
    root = tmp_path / "submission"
    shutil.copytree(SOLUTIONS_DIR / "stage1_autograd", root / "stage1_autograd", ignore=shutil.ignore_patterns("__pycache__"))
    path = root / "stage1_autograd" / file
    source = path.read_text()
    assert old in source, f"{old!r} is not in {file}"
    path.write_text(source.replace(old, new, 1))
    return root


def broken_exp(tmp_path: Path, code: str) -> Path:
    """A copy of the reference stage 1 whose ``Tensor.exp`` (exercise 1.3) first runs ``code``."""
    first_line = "        # BEGIN SOLUTION 1.3: d(e**x)/dx"
    indented = "".join(f"        {line}\n" for line in code.splitlines())
    return broken_solution(tmp_path, "tensor.py", first_line, indented + first_line)


def snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


# --------------------------------------------------------------------------- whole stages
@pytest.mark.parametrize("mode", ["--no-authoritative", pytest.param("--authoritative", marks=linux_only)])
@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_solutions_earn_full_marks(stage, mode):
    """In both modes: a correct submission loses nothing to authoritative grading (its tests drive the code
    through proxies, grading.remote, and must not rely on sharing a process with it)."""
    code, output, data = grade(stage.name, "--solutions", mode)
    assert code == 0, output
    assert data["score"] == data["max_score"] == 100, output
    assert data["implementation"] == "solutions"
    assert set(statuses(data).values()) == {"passed"}
    assert "Score: 100/100" in output


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_skeletons_grade_to_zero_with_every_exercise_not_started(stage, tmp_path):
    root = submission(tmp_path, *stage.requires, stage.package)
    before = snapshot(root)
    code, output, data = grade(stage.name, "--submission", str(root))
    assert code == 1, output
    assert data["score"] == 0 and data["max_score"] == 100
    assert data["implementation"] == "student"
    assert statuses(data) == {e.id: "not_started" for e in stage.exercises}, output
    assert "Score: 0/100" in output
    assert snapshot(root) == before, "the grader wrote into the student's folder"


def test_json_report_has_the_documented_shape(tmp_path):
    code, output, data = grade("stage1", "--solutions", "-x", "1.1")
    assert code == 0, output
    assert {"stage", "implementation", "score", "max_score", "exercises"} <= set(data)
    (exercise,) = data["exercises"]
    assert {"id", "title", "score", "max_score", "status", "message"} <= set(exercise)
    assert (data["stage"], exercise["id"], exercise["score"], exercise["max_score"]) == ("stage1", "1.1", 10, 10)


def test_replacing_the_skeleton_by_the_reference_file_by_file_raises_the_score(tmp_path):
    root = submission(tmp_path, "stage1_autograd")
    passed_so_far: set[str] = set()
    for file, now_passing in [("value.py", {"1.1"}), ("tensor.py", {"1.2", "1.3", "1.4", "1.5", "1.6", "1.7"}),
                              ("gradcheck.py", {"1.8"}), ("linear_regression.py", {"1.9"})]:
        shutil.copy(SOLUTIONS_DIR / "stage1_autograd" / file, root / "stage1_autograd" / file)
        passed_so_far |= now_passing
        code, output, data = grade("stage1", "--submission", str(root))
        expected = {e.id: "passed" if e.id in passed_so_far else "not_started" for e in load_stage("stage1").exercises}
        assert statuses(data) == expected, f"after copying {file}:\n{output}"
    assert code == 0 and data["score"] == 100


def test_a_failing_exercise_shows_the_first_failure_and_the_todo(tmp_path):
    # d(a*b)/da taken as a instead of b: values are right, one gradient is wrong.
    root = broken_solution(tmp_path, "tensor.py", "unbroadcast(g * other.data, self.shape)",
                           "unbroadcast(g * self.data, self.shape)")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.2")
    assert code == 1
    assert statuses(data) == {"1.2": "failed"}
    message = data["exercises"][0]["message"]
    assert "gradient of input" in message and "expected" in message, message
    assert "First to work on: 1.2" in output and "hint:" in output


def test_a_wrong_value_points_at_the_function_the_test_names(tmp_path):
    """Stage 4 on the reference with attention that is not causal (4.3) and a cache mask one position off
    (4.8): the failing tests' assertions are in the tests, and their under_test markers name the function."""
    root = tmp_path / "submission"
    for package in ("stage1_autograd", "stage2_mlp", "stage3_transformer", "stage4_gpt"):
        shutil.copytree(SOLUTIONS_DIR / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    model = root / "stage4_gpt" / "model.py"
    source = model.read_text()
    for old, new in [("is_causal=True, rng=self.rng", "is_causal=False, rng=self.rng"),
                     ("np.tri(T, S, S - T, dtype=bool)", "np.tri(T, S, S - T - 1, dtype=bool)")]:
        assert source.count(old) == 1, f"{old!r} is not (once) in the reference model.py"
        source = source.replace(old, new)
    model.write_text(source)
    code, output, data = grade("stage4", "--submission", str(root), "-x", "4.3", "-x", "4.8")
    assert code == 1 and statuses(data) == {"4.3": "failed", "4.8": "failed"}, output
    todos = {e["id"]: e["todo"]["function"] for e in data["exercises"]}
    assert todos == {"4.3": "CausalSelfAttention.forward", "4.8": "CausalSelfAttention.forward"}, output
    assert re.search(r"your TODO: \S*stage4_gpt/model\.py:\d+ \(CausalSelfAttention\.forward\)\n", output), output
    assert "first TODO" not in output, output


# --------------------------------------------------------------------------- broken submissions
def test_syntax_error_is_reported_once_with_file_and_line(tmp_path):
    root = broken_solution(tmp_path, "tensor.py", "    def __mul__(self, other) -> Tensor:", "    def __mul__(self, other) -> Tensor")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.1", "-x", "1.2", "-x", "1.3")
    assert code == 1
    # value.py does not import tensor.py: exercise 1.1 is still graded.
    assert statuses(data) == {"1.1": "passed", "1.2": "error", "1.3": "error"}
    line = re.search(r"SyntaxError in stage1_autograd/tensor\.py, line (\d+)", output)
    assert line, output
    assert output.count("SyntaxError in stage1_autograd/tensor.py") == 2  # the summary line and the first problem
    source_line = (root / "stage1_autograd/tensor.py").read_text().splitlines()[int(line.group(1)) - 1]
    assert "def __mul__" in source_line


def test_a_hang_costs_its_exercise_not_the_run(tmp_path):
    root = broken_exp(tmp_path, "while True:\n    pass")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.2", "-x", "1.3", "--timeout", "3")
    assert code == 1
    assert statuses(data) == {"1.2": "passed", "1.3": "timeout"}, output
    assert "time limit of 3 s" in output and "(in exp)" in output


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="this system has no SIGALRM for the code to ignore")
def test_a_hang_that_ignores_the_alarm_is_killed(tmp_path):
    """In one process (student mode) the alarm strikes in the student's code, which can ignore it; the parent
    then stops the process. (In authoritative grading the alarm strikes in the test process.)"""
    root = broken_exp(tmp_path, "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.3", "-x", "1.4", "--timeout", "3",
                               "--no-authoritative")
    assert code == 1
    assert statuses(data) == {"1.3": "timeout", "1.4": "passed"}, output
    assert "had to be stopped" in output


def test_a_hang_while_importing_student_code_costs_the_exercises_that_import_it(tmp_path):
    root = broken_solution(tmp_path, "value.py", "import math\n", "import math\n\nwhile True:\n    pass\n")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.1", "-x", "1.2", "--timeout", "3")
    assert code == 1
    assert statuses(data) == {"1.1": "timeout", "1.2": "passed"}, output
    assert "importing the code under test took longer than" in output and "stage1_autograd/value.py" in output


@pytest.mark.parametrize("mode", ["--no-authoritative", pytest.param("--authoritative", marks=linux_only)])
def test_a_test_skipped_by_student_code_does_not_pass(tmp_path, mode):
    """In one process the student's code can reach pytest and skip the test; the student process of
    authoritative grading has no pytest to import."""
    root = broken_exp(tmp_path, "import pytest\npytest.skip('later')")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.3", mode)
    assert code == 1
    assert statuses(data) == {"1.3": "error"}, output
    assert ("skipped this test" if mode == "--no-authoritative" else "No module named 'pytest'") in output, output


def test_interrupting_the_grader_stops_its_child_process(tmp_path):
    root = broken_exp(tmp_path, "while True:\n    pass")
    marker = str(root)
    grader = subprocess.Popen([sys.executable, str(REPO_ROOT / "grader.py"), *portable(["stage1", "--submission", str(root),
                               "-x", "1.3"])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "GRADER_TEST_MARK": marker})
    deadline = time.monotonic() + 60
    while not children_mentioning(marker) and time.monotonic() < deadline:  # wait for the pytest child
        time.sleep(0.2)
    assert children_mentioning(marker), "the grader never started its child process"
    grader.send_signal(signal.SIGINT)
    output, _ = grader.communicate(timeout=30)
    assert grader.returncode == 130 and "interrupted" in output and "Traceback" not in output
    assert not children_mentioning(marker), "the pytest child outlived the grader"


def children_mentioning(text: str) -> list[int]:
    """Pids of the grader's pytest children whose command line or environment mentions ``text`` (the child
    grades a copy of the submission in a workspace: a test marks the grader's environment to find it)."""
    found = []
    for process in psutil.process_iter():
        try:
            cmdline = " ".join(process.cmdline())
            environ = process.environ() if "--grading-log" in cmdline else {}
        except psutil.Error:
            continue
        if "--grading-log" in cmdline and (text in cmdline or text in environ.values()):
            found.append(process.pid)
    return found


def test_keyboard_interrupt_in_student_code_costs_its_exercise_only(tmp_path):
    root = broken_exp(tmp_path, "raise KeyboardInterrupt")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.3", "-x", "1.4")
    assert code == 1
    assert statuses(data) == {"1.3": "crashed", "1.4": "passed"}, output
    assert "stopped the whole test run (KeyboardInterrupt)" in output


def test_a_thread_left_running_does_not_hold_up_the_grader(tmp_path):
    root = broken_solution(tmp_path, "value.py", "import math\n",
                           "import math\nimport threading\nimport time\n\n"
                           "threading.Thread(target=time.sleep, args=(600,)).start()\n")
    started = time.monotonic()
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.1", "--run-timeout", "120")
    assert code == 0 and statuses(data) == {"1.1": "passed"}, output
    assert time.monotonic() - started < 60, "the grader waited for the student's thread"


def test_student_code_cannot_import_the_reference(tmp_path):
    root = submission(tmp_path, "stage1_autograd")
    (root / "stage1_autograd" / "value.py").write_text("from solutions.stage1_autograd.value import *  # noqa\n")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.1")
    assert code == 1 and statuses(data) == {"1.1": "error"}, output
    assert "solutions/ folder cannot be imported" in output


def test_the_whole_run_time_limit_is_reported_as_such(tmp_path):
    root = broken_exp(tmp_path, "while True:\n    pass")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.3", "--run-timeout", "8")
    assert code == 1 and statuses(data) == {"1.3": "timeout"}, output
    assert "whole run's time limit of 8 s" in output


def test_sys_exit_in_student_code_fails_its_exercise(tmp_path):
    root = broken_exp(tmp_path, "import sys\nsys.exit(0)")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.2", "-x", "1.3")
    assert code == 1
    assert statuses(data) == {"1.2": "passed", "1.3": "error"}, output
    assert "called sys.exit(0)" in output


def test_os_exit_in_student_code_is_a_crash_of_its_exercise_only(tmp_path):
    root = broken_exp(tmp_path, "import os\nos._exit(0)")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.2", "-x", "1.3", "-x", "1.4")
    assert code == 1
    assert statuses(data) == {"1.2": "passed", "1.3": "crashed", "1.4": "passed"}, output
    assert "exited with code 0" in output


def test_os_exit_while_importing_student_code(tmp_path):
    root = broken_solution(tmp_path, "value.py", "import math\n", "import math\nimport os\n\nos._exit(3)\n")
    code, output, data = grade("stage1", "--submission", str(root), "-x", "1.1", "-x", "1.2")
    assert code == 1
    assert statuses(data) == {"1.1": "crashed", "1.2": "passed"}, output
    assert "exited with code 3 while importing test_value.py" in output


# --------------------------------------------------------------------------- later stages on earlier ones
def test_later_stage_on_an_unfinished_earlier_stage_says_so(tmp_path):
    root = submission(tmp_path, "stage1_autograd", "stage2_mlp")
    shutil.copytree(SOLUTIONS_DIR / "stage2_mlp", root / "stage2_mlp", dirs_exist_ok=True)
    code, output, data = grade("stage2", "--submission", str(root), "-x", "2.4")
    assert code == 1
    # The student's stage 2 work is done, but it cannot run yet: the message names stage 1's missing exercise.
    assert statuses(data)["2.4"] in ("not_started", "failed"), output
    assert re.search(r"Exercise 1\.\d .* is not done yet \(stage1_autograd/tensor\.py, line \d+\)", output), output
    assert "--reference-earlier" in output

    code, output, data = grade("stage2", "--submission", str(root), "-x", "2.1", "-x", "2.5", "--reference-earlier")
    assert code == 0, output
    assert statuses(data) == {"2.1": "passed", "2.5": "passed"}
    assert data["sources"] == {"stage1_autograd": "solutions", "stage2_mlp": "student"}
    assert "stage1_autograd from solutions/stage1_autograd/ (reference)" in output


def test_reference_earlier_on_the_first_stage_is_a_usage_error():
    code, output, _ = grade("stage1", "--reference-earlier")
    assert code == 2 and "builds on no earlier stage" in output


# --------------------------------------------------------------------------- usage
@pytest.mark.parametrize(
    "args, complaint",
    [(["stage9"], "there is no stage 'stage9'"), (["stage1", "-x", "7.7"], "has no exercise '7.7'"),
     (["stage1", "--submission", "/nonexistent-folder"], "no stage1_autograd/ folder")],
)
def test_usage_errors_are_one_clear_line(args, complaint):
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "grader.py"), *args], capture_output=True, text=True,
                               cwd=REPO_ROOT)
    assert completed.returncode == 2
    assert complaint in completed.stderr and "Traceback" not in completed.stderr


def test_stage_number_alone_is_accepted():
    code, output, data = grade("1", "--solutions", "-x", "1.1")
    assert code == 0 and data["stage"] == "stage1"


def test_verbose_adds_pytest_failure_output(tmp_path):
    root = submission(tmp_path, "stage1_autograd")
    code, output, _ = grade("stage1", "--submission", str(root), "-x", "1.1", "-v")
    assert code == 1
    assert "NotImplementedError" in output and "test_value.py" in output
