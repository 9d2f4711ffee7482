"""The student's loop where the Unix-only modules are missing, as on Windows: the grader imports what exists
only on Linux (``fcntl``, ``resource``, the sandbox's uids) where it uses it, and grades without it.

The simulation: a virtual environment with this Python's packages whose ``sitecustomize`` makes ``fcntl``,
``resource``, ``termios``, ``pwd`` and ``grp`` unimportable in the grader and in every Python it starts.
PsUtil is imported first, as its own platform module stands in for Windows' (on Linux it imports
``resource`` itself)."""

from __future__ import annotations

import json
import os
import signal
import site
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from grading.registry import REPO_ROOT
from tests.grader.test_grading import broken_exp, statuses, submission
from tests.grader.test_isolation import still_running

pytestmark = pytest.mark.skipif(os.name != "posix", reason="simulates a system without Unix's modules on Unix")

SITECUSTOMIZE = '''
import sys
import psutil  # its platform module stands in for Windows' own
BLOCKED = ("fcntl", "resource", "termios", "pwd", "grp")
for name in BLOCKED:
    sys.modules.pop(name, None)


class Unix:
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (this system has no {name})", name=name)
        return None


sys.meta_path.insert(0, Unix())
'''


@pytest.fixture(scope="module")
def python_without_unix(tmp_path_factory) -> str:
    venv = tmp_path_factory.mktemp("no-unix") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    packages = Path(subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    (packages / "course-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    (packages / "sitecustomize.py").write_text(SITECUSTOMIZE)
    check = subprocess.run([str(python), "-c", "import fcntl"], capture_output=True, text=True)
    assert check.returncode != 0 and "this system has no fcntl" in check.stderr, check.stderr
    return str(python)


def grade_with(python: str, *args: str, env: dict | None = None, timeout: float = 300) -> tuple[int, str, dict | None]:
    """``python grader.py ARGS`` (with ``--json`` when it grades): (exit code, output, JSON)."""
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "result.json"
        done = subprocess.run([python, "grader.py", *args, *(["--json", str(json_path)] if args[0] != "doctor" else [])],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)
        data = json.loads(json_path.read_text()) if json_path.exists() else None
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "internal error" not in output, output
    return done.returncode, output, data


def test_the_skeleton_reads_not_started_and_the_reference_full_marks(python_without_unix):
    code, output, data = grade_with(python_without_unix, "stage1")
    assert code == 1 and data["score"] == 0, output
    assert set(statuses(data).values()) == {"not_started"}, output
    code, output, data = grade_with(python_without_unix, "stage1", "--solutions")
    assert code == 0 and data["score"] == 100, output


def test_doctor_runs(python_without_unix):
    code, output, _ = grade_with(python_without_unix, "doctor")
    assert code in (0, 1) and "python" in output.lower(), output


def test_a_hang_is_stopped_at_its_limit_and_leaves_nothing_behind(python_without_unix, tmp_path):
    """A test that ignores the alarm and has started a process of its own: the parent stops both (psutil)."""
    token = uuid.uuid4().hex
    code = ("import signal, subprocess, sys, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            "while True:\n    time.sleep(0.1)\n")
    root = broken_exp(tmp_path, code)
    _, output, data = grade_with(python_without_unix, "stage1", "--submission", str(root), "--no-authoritative",
                                 "-x", "1.3", "--timeout", "3", env={**os.environ, "GRADER_ISOLATION_TEST_TOKEN": token})
    assert statuses(data) == {"1.3": "timeout"}, output
    assert still_running(token) == [], "a process the hung test started is still running"


def test_watch_grades_and_stops_on_ctrl_c(python_without_unix, tmp_path):
    root = submission(tmp_path, "stage1_autograd")
    grader = subprocess.Popen([python_without_unix, "grader.py", "stage1", "--submission", str(root),
                               "--no-authoritative", "-x", "1.1", "--watch"], cwd=REPO_ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = ""
    try:
        deadline = time.monotonic() + 120
        while "Watching" not in output and time.monotonic() < deadline:
            output += grader.stdout.readline()
        assert "Watching" in output and "Score: 0/10" in output, output
        grader.send_signal(signal.SIGINT)
        output += grader.communicate(timeout=30)[0]
    finally:
        if grader.poll() is None:
            grader.kill()
    assert grader.returncode == 0 and "Traceback" not in output, output


def test_a_file_saved_with_windows_line_endings_gets_the_same_pointer(tmp_path):
    """An editor on Windows saves CRLF: the grader reads the student's source as Python does."""
    from tests.grader.test_grading import grade  # noqa: PLC0415

    pointers = {}
    for ending in ("\n", "\r\n"):
        root = submission(tmp_path / repr(ending), "stage1_autograd")
        value = root / "stage1_autograd" / "value.py"
        value.write_bytes(value.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", ending.encode()))
        _, output, data = grade("stage1", "--submission", str(root), "--no-authoritative", "-x", "1.1")
        assert statuses(data) == {"1.1": "not_started"}, output
        pointers[ending] = data["exercises"][0]["todo"]
    assert pointers["\r\n"]["line"] == pointers["\n"]["line"] and pointers["\n"]["line"], pointers


def test_the_windows_branches_grade(monkeypatch):
    """With ``os.name == "nt"`` as the grader's modules see it: no preexec function, no new session, the log by
    its path (Windows passes no descriptors to a child). The rest stays Linux's, which runs those branches."""
    import types  # noqa: PLC0415

    from grading import runner, sandbox  # noqa: PLC0415
    from grading.registry import SOLUTIONS_DIR, load_stage  # noqa: PLC0415

    windows_os = types.SimpleNamespace(**{**vars(os), "name": "nt"})
    monkeypatch.setattr(runner, "os", windows_os)
    monkeypatch.setattr(sandbox, "os", windows_os)
    assert sandbox.switch_user(None) is None and sandbox.switch_user(None, limits=False) is None
    stage = load_stage("stage1")
    run = runner.run_stage(stage, {stage.package: SOLUTIONS_DIR}, ["1.1"], None, 300)
    outcomes = {test.outcome for test in run.tests.values() if test.exercise == "1.1"}
    assert outcomes == {"passed"}, run.output[-3000:]
