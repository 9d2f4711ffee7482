"""The instructors' tools end to end: grading a class (``grading.batch``), the Gradescope autograder
(``grading.gradescope``) and hidden tests (``grader.py --extra-tests``), each run as an instructor would run
it, on small stage 1 submissions graded with ``-x 1.1``. The student edition and the rest of an instructor's
term are in test_term.py."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from grading.registry import REPO_ROOT, SOLUTIONS_DIR, load_stage
from tests.grader.test_grading import linux_only

STAGE1 = load_stage("stage1")
FIRST = STAGE1.exercise("1.1")


def run(*command: str, cwd: Path = REPO_ROOT, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run([*command], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert "Traceback" not in done.stdout + done.stderr, f"a traceback:\n{done.stdout}\n{done.stderr}"
    return done


def stage1_with_value_done(into: Path) -> Path:
    """The stage 1 skeleton in ``into/stage1_autograd`` with exercise 1.1's file (value.py) from the reference."""
    package = into / STAGE1.package
    shutil.copytree(REPO_ROOT / STAGE1.package, package, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    shutil.copy(SOLUTIONS_DIR / STAGE1.package / "value.py", package / "value.py")
    return package


def zip_folder(folder: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())


@linux_only
def test_batch_grades_every_submission_and_reports_the_broken_ones(tmp_path):
    submissions, out = tmp_path / "submissions", tmp_path / "results"
    stage1_with_value_done(submissions / "alice" / "my-copy")  # the stage folder found a level down
    stage1_with_value_done(tmp_path / "carol")
    zip_folder(tmp_path / "carol" / STAGE1.package, submissions / "carol.zip")
    (submissions / "bob").mkdir()  # handed in nothing
    (submissions / "dave.zip").write_bytes(b"not a zip")
    with zipfile.ZipFile(submissions / "eve.zip", "w") as zf:  # a member that would land outside the folder
        zf.writestr("../escaped.py", "x = 1\n")
        zf.writestr(f"{STAGE1.package}/__init__.py", "")
    not_utf8 = Path(os.fsdecode(os.fsencode(submissions) + b"/d\xe9sir\xe9e"))  # a name in Latin-1
    not_utf8.mkdir()
    zip_folder(tmp_path / "carol" / STAGE1.package, not_utf8 / "upload.zip")  # a folder holding a zip

    done = run(sys.executable, "-m", "grading.batch", "stage1", str(submissions), "--out", str(out), "-x", "1.1",
               "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    with (out / "grades.csv").open(encoding="utf-8", newline="") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert list(next(csv.reader((out / "grades.csv").open(encoding="utf-8")))) == [
        "student", "id", "name", "email", "score", "max_score", "1.1", "status", "message", "seconds", "json"]
    assert set(rows) == {"alice", "bob", "carol", "dave", "eve", "d\ufffdsir\ufffde"}
    for student in ("alice", "carol", "d\ufffdsir\ufffde"):
        assert (rows[student]["score"], rows[student]["1.1"], rows[student]["status"]) == ("10", "10", "graded"), rows[student]
    assert (rows["bob"]["status"], rows["bob"]["score"]) == ("missing", "0")
    assert rows["dave"]["status"] == "error" and "zip" in rows["dave"]["message"]
    assert rows["eve"]["status"] == "error" and "outside" in rows["eve"]["message"]
    assert not (submissions.parent / "escaped.py").exists() and not list(tmp_path.rglob("escaped.py"))

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert (summary["submissions"], summary["graded"], summary["missing"], summary["errors"]) == (6, 3, 1, 2)
    assert (summary["mean"], summary["median"], summary["pass_rate"]) == (10, 10, {"1.1": 1.0})
    alice = json.loads((out / "alice.json").read_text(encoding="utf-8"))
    assert (alice["student"], alice["score"], alice["exercises"][0]["status"]) == ("alice", 10, "passed")
    assert json.loads((out / "bob.json").read_text(encoding="utf-8"))["status"] == "missing"
    assert (out / "d_sir_e.json").is_file()
    assert "6 submissions, 3 graded, 1 missing, 2 could not be graded" in done.stdout
    assert "6/6" in done.stderr  # the progress bar


@linux_only
def test_gradescope_autograder_runs_in_an_autograder_shaped_folder(tmp_path):
    package = tmp_path / "autograder.zip"
    done = run(sys.executable, "-m", "grading.gradescope", "stage1", "-x", "1.1", "--out", str(package))
    assert done.returncode == 0, done.stderr
    root = tmp_path / "autograder"
    with zipfile.ZipFile(package) as zf:
        names = zf.namelist()
        zf.extractall(root / "source")
    assert {"setup.sh", "run_autograder", "grader.py", "requirements.txt", "tests/stage1/exercises.toml"} <= set(names)
    assert not [n for n in names if n.startswith(("solutions/", "tests/grader/"))]
    assert "download.pytorch.org/whl/cpu" in (root / "source" / "setup.sh").read_text()
    (root / "submission").mkdir()
    for file in stage1_with_value_done(tmp_path / "done").glob("*.py"):  # the files uploaded without their folder
        if file.name != "__init__.py":
            shutil.copy(file, root / "submission")
    env = {"AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}

    done = run("bash", str(root / "source" / "run_autograder"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))
    assert results["score"] == 10 and isinstance(results["execution_time"], float), results
    assert "Score: 10/10" in results["output"]
    assert results["tests"] == [{"name": f"1.1 {FIRST.title}", "number": "1.1", "score": 10, "max_score": 10,
                                 "status": "passed", "output": "", "visibility": "visible"}]

    shutil.rmtree(root / "submission")
    (root / "submission").mkdir()  # an empty upload: graded 0, with what to upload
    done = run("bash", str(root / "source" / "run_autograder"), env=env)
    results = json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))
    assert results["score"] == 0 and "stage1_autograd/" in results["output"], results
    assert [(t["number"], t["score"], t["status"]) for t in results["tests"]] == [("1.1", 0, "failed")]


HIDDEN_TESTS = '''"""Hidden tests of exercise 1.1: one the reference passes, one no Value can pass."""
import pytest

from stage1_autograd.value import Value
from tests.helpers import assert_close

pytestmark = pytest.mark.exercise("1.1")


def test_hidden_cube_rule():
    x = Value(3.0)
    (x * x * x).backward()
    assert_close(x.grad, 27.0, what="d(x**3)/dx at x = 3")


def test_hidden_wrong_on_purpose():
    assert_close(Value(2.0).data, 3.0, what="a hidden check")
'''


def test_extra_tests_count_toward_their_exercise(tmp_path):
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "test_hidden_value.py").write_text(HIDDEN_TESTS)
    result = tmp_path / "result.json"
    done = run(sys.executable, "grader.py", "stage1", "--solutions", "-x", "1.1", "--extra-tests",
               str(tmp_path / "stage1"), "--json", str(result))
    assert done.returncode == 1, done.stdout + done.stderr
    [exercise] = json.loads(result.read_text())["exercises"]
    assert (exercise["status"], exercise["score"]) == ("failed", 0)
    assert exercise["tests_passed"] == exercise["tests_total"] - 1  # the hidden cube rule passed too
    assert [f["test"] for f in exercise["failures"]] == ["test_hidden_value.py::test_hidden_wrong_on_purpose"]


def test_the_autograder_refuses_a_machine_where_the_code_under_test_cannot_be_kept_apart(monkeypatch):
    from grading import gradescope, sandbox  # noqa: PLC0415

    levels = {"none": sandbox.Isolation("none", "no bubblewrap, not root"), "uid": sandbox.Isolation("uid", "no bubblewrap")}
    monkeypatch.setattr(sandbox, "choose_isolation", lambda wanted="auto": levels["none"])
    line, problem = gradescope.isolation_problem(allow_unisolated=False)
    assert "cannot keep the submission's code apart" in problem and "--allow-unisolated" in problem, problem
    assert gradescope.isolation_problem(allow_unisolated=True)[1] == ""
    monkeypatch.setattr(sandbox, "choose_isolation", lambda wanted="auto": levels["uid"])
    line, problem = gradescope.isolation_problem(allow_unisolated=False)
    assert problem == "" and line.startswith("warning: isolation: uid"), line


@linux_only
def test_batch_refuses_a_machine_where_the_code_under_test_cannot_be_kept_apart(monkeypatch, tmp_path, capsys):
    from grading import batch, sandbox  # noqa: PLC0415

    monkeypatch.setattr(sandbox, "choose_isolation", lambda wanted="auto": sandbox.Isolation("none", "simulated"))
    (tmp_path / "submissions").mkdir()
    try:
        batch.main(["stage1", str(tmp_path / "submissions"), "--out", str(tmp_path / "out")])
    except SystemExit as stop:
        assert stop.code == 2
    else:
        raise AssertionError("grading.batch graded at isolation 'none' without --allow-unisolated")
    assert "--allow-unisolated" in capsys.readouterr().err
    assert not (tmp_path / "out" / "grades.csv").exists()
