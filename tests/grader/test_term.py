"""An instructor's term, end to end: partial credit, hidden tests that stay hidden on Gradescope until the
grades are published, stage 2 uploads without stage 1, a class of 24 graded by roster and regraded one student
at a time, and a student edition released stage by stage."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from grading.export import broken_links
from grading.registry import REPO_ROOT, SOLUTIONS_DIR, all_stages, load_stage
from tests.grader.test_grading import linux_only
from tests.grader.test_instructor_tools import HIDDEN_TESTS, run, stage1_with_value_done, zip_folder

STAGE1, STAGE2 = load_stage("stage1"), load_stage("stage2")
GRADESCOPE_KEYS = {"score", "max_score", "status", "name", "number", "output", "visibility", "tags", "name_format"}
VISIBILITIES = {"visible", "hidden", "after_due_date", "after_published"}


def hidden_folder(tmp_path: Path) -> Path:
    (tmp_path / "hidden" / "stage1").mkdir(parents=True)
    (tmp_path / "hidden" / "stage1" / "test_hidden_value.py").write_text(HIDDEN_TESTS)
    return tmp_path / "hidden" / "stage1"


def test_one_broken_test_costs_a_fraction_with_partial_credit_and_everything_without(tmp_path):
    hidden, result = hidden_folder(tmp_path), tmp_path / "result.json"
    command = [sys.executable, "grader.py", "stage1", "--solutions", "-x", "1.1", "--extra-tests", str(hidden),
               "--json", str(result)]
    run(*command)
    [all_or_nothing] = json.loads(result.read_text())["exercises"]
    done = run(*command, "--partial-credit")
    data = json.loads(result.read_text())
    [exercise] = data["exercises"]
    total = exercise["tests_total"]
    assert all_or_nothing["score"] == 0 and exercise["tests_passed"] == total - 1
    assert (exercise["scoring"], exercise["tests_counted"]) == ("fraction", total)
    assert exercise["score"] == data["score"] == round(10 * (total - 1) / total, 1)
    assert f"Score: {exercise['score']}/10" in done.stdout and "Partial credit" in done.stdout


def autograder(tmp_path: Path, *options: str) -> tuple[Path, dict]:
    tmp_path.mkdir(exist_ok=True)
    package = tmp_path / "autograder.zip"
    done = run(sys.executable, "-m", "grading.gradescope", *options, "--out", str(package))
    assert done.returncode == 0, done.stderr
    root = tmp_path / "autograder"
    with zipfile.ZipFile(package) as zf:
        zf.extractall(root / "source")
    (root / "submission").mkdir()
    return root, {"AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}


def grade_upload(root: Path, env: dict) -> dict:
    done = run("bash", str(root / "source" / "run_autograder"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))
    for test in results["tests"]:  # Gradescope's specification: known keys, known visibilities
        assert set(test) <= GRADESCOPE_KEYS and test["visibility"] in VISIBILITIES, test
    return results


def seen(results: dict, published: bool) -> str:
    """Everything a student can read: the results' output and the entries visible at that moment."""
    shown = {"visible", "after_published"} if published else {"visible"}
    return results["output"] + json.dumps([t for t in results["tests"] if t["visibility"] in shown])


@linux_only
def test_hidden_tests_stay_hidden_on_gradescope_until_the_grades_are_published(tmp_path):
    root, env = autograder(tmp_path, "stage1", "-x", "1.1", "--extra-tests", str(hidden_folder(tmp_path)))
    for file in stage1_with_value_done(tmp_path / "done").glob("*.py"):
        shutil.copy(file, root / "submission")
    results = grade_upload(root, env)
    public, hidden = results["tests"]
    assert (public["number"], public["visibility"], public["score"]) == ("1.1", "visible", 0)
    assert "hidden tests: 1 of 2 passed" in public["output"] and "-x 1.1" not in results["output"]
    assert hidden["visibility"] == "after_published" and "score" not in hidden
    before, after = seen(results, published=False), seen(results, published=True)
    for secret in ("test_hidden_wrong_on_purpose", "a hidden check"):
        assert secret not in before and secret in after, secret


@linux_only
def test_a_stage2_upload_without_stage1_is_graded_on_the_reference_unless_the_zip_requires_the_students_own(tmp_path):
    root, env = autograder(tmp_path, "stage2", "-x", "2.1")
    for file in (REPO_ROOT / STAGE2.package).glob("*.py"):  # the stage 2 files alone, 2.1 done
        shutil.copy(SOLUTIONS_DIR / STAGE2.package / file.name if file.name == "nn.py" else file, root / "submission")
    results = grade_upload(root, env)
    assert (results["score"], results["tests"][0]["status"]) == (10, "passed"), results["output"]

    own, env = autograder(tmp_path / "own", "stage2", "-x", "2.1", "--student-earlier")
    shutil.copytree(root / "submission", own / "submission", dirs_exist_ok=True)
    results = grade_upload(own, env)
    assert results["score"] == 0
    assert "no stage1_autograd/ folder" in results["output"] and "upload stage1_autograd/ too" in results["output"]
    assert not (own / "source" / "solutions").exists()


def roster_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


@linux_only
def test_a_class_of_24_graded_by_roster_and_one_student_regraded_with_merge(tmp_path):
    submissions, out = tmp_path / "submissions", tmp_path / "results"
    names = [f"student{i:02d}" for i in range(18)]
    for i, name in enumerate(names):
        package = stage1_with_value_done(submissions / name)
        if i % 3 == 1:  # a skeleton: 1.1 not started
            shutil.copy(REPO_ROOT / STAGE1.package / "value.py", package / "value.py")
    broken = stage1_with_value_done(submissions / "hangs")
    (broken / "value.py").write_text((broken / "value.py").read_text() + "\nimport time\nwhile True:\n    time.sleep(1)\n")
    broken = stage1_with_value_done(submissions / "syntax")
    (broken / "value.py").write_text("def oops(:\n")
    stage1_with_value_done(tmp_path / "zipped")
    zip_folder(tmp_path / "zipped" / STAGE1.package, submissions / "zipped.zip")
    (submissions / "empty").mkdir()
    stage1_with_value_done(submissions / "smith, anna")
    (submissions / "not on the roster").mkdir()
    on_roster = [*names, "hangs", "syntax", "zipped", "empty", "smith, anna"]
    with (tmp_path / "roster.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["submission", "id", "name", "email"])
        for i, name in enumerate([*on_roster, "absent"]):
            writer.writerow([name, f"id{i}", f"Name {i}", f"s{i}@example.org"])
    assert len(list(submissions.iterdir())) == 24
    batch = [sys.executable, "-m", "grading.batch", "stage1", "--out", str(out), "-x", "1.1", "--jobs", "2",
             "--timeout", "2", "--roster", str(tmp_path / "roster.csv")]
    done = run(*batch[:4], str(submissions), *batch[4:], timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = roster_rows(out / "grades.csv")
    assert len(rows) == 25 and list(next(iter(rows.values())))[:6] == ["student", "id", "name", "email", "score", "max_score"]
    assert (rows["student00"]["score"], rows["student01"]["score"], rows["student00"]["id"]) == ("10", "0", "id0")
    assert rows["student00"]["json"] == "student00.json" and float(rows["student00"]["seconds"]) > 0
    assert (rows["hangs"]["status"], rows["hangs"]["score"]) == ("graded", "0") and "1.1 timeout" in rows["hangs"]["message"]
    assert rows["syntax"]["score"] == "0" and rows["zipped"]["score"] == "10" and rows["smith, anna"]["score"] == "10"
    assert rows["empty"]["status"] == "missing" and rows["absent"]["status"] == "missing"
    assert rows["not on the roster"]["id"] == ""
    assert "not in the roster (1): not on the roster" in done.stdout and "absent" in done.stdout

    regrade = tmp_path / "regrade"  # student01 hands in 1.1 after all
    stage1_with_value_done(regrade / "student01")
    done = run(*batch[:4], str(regrade), *batch[4:], "--merge")
    assert done.returncode == 0, done.stdout + done.stderr
    after = roster_rows(out / "grades.csv")
    assert after["student01"]["score"] == "10"
    assert {k: v for k, v in after.items() if k != "student01"} == {k: v for k, v in rows.items() if k != "student01"}


def exercise_bodies(stage) -> list[str]:
    """The code of each exercise region of the stage's reference, whitespace made single, but the shortest."""
    bodies = []
    for path in sorted((SOLUTIONS_DIR / stage.package).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        bodies += [" ".join(body.split()) for body in
                   re.findall(r"# BEGIN SOLUTION[^\n]*\n(.*?)\n\s*# END SOLUTION", text, re.S)]
    return [body for body in bodies if len(body) >= 40]  # a one-liner (`return x.tanh()`) is given code elsewhere too


def test_a_student_edition_released_stage_by_stage(tmp_path):
    dest = tmp_path / "edition"
    done = run(sys.executable, "-m", "grading.export", str(dest), "--through", "stage2", "--hints", "1", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr  # stage 1 grades 0, and every README command ends plainly
    assert not (dest / ".grader").exists() and broken_links(dest) == []  # the checks leave no progress behind
    assert run(sys.executable, "-m", "grading.export", str(dest)).returncode == 2  # never over an existing copy
    files = run("git", "ls-files", cwd=dest).stdout.splitlines()
    assert not [n for n in files if n.startswith(("solutions/", "stage3_", "stage4_", "tests/stage3", "tests/stage4",
                                                  "tests/grader/"))]
    text = " ".join(" ".join((dest / n).read_text(encoding="utf-8", errors="replace").split()) for n in files)
    leaked = [body[:60] for stage in all_stages()[:2] for body in exercise_bodies(stage) if body in text]
    assert not leaked, leaked
    last_hint = STAGE2.exercise("2.8").hints[-1]
    assert last_hint not in text and STAGE2.exercise("2.8").hints[0] in text
    readme = (dest / "README.md").read_text(encoding="utf-8")
    assert "--reference-earlier" not in readme and "For instructors" not in readme and "stage3_transformer/" not in readme
    pytest_run = run(sys.executable, "-m", "pytest", cwd=dest, timeout=120)
    lines = [line for line in (pytest_run.stdout + pytest_run.stderr).splitlines() if line.strip()]
    assert pytest_run.returncode == 4 and len(lines) == 1 and "python grader.py" in lines[0], lines

    done = run(sys.executable, "-m", "grading.export", str(dest), "--add", "stage3", "--with-reference", "stage1",
               "--hints", "1", "--no-check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(run("git", "log", "--oneline", cwd=dest).stdout.splitlines()) == 2
    assert (dest / "stage3_transformer").is_dir() and (dest / "solutions" / "stage1_autograd" / "tensor.py").is_file()
    assert not (dest / "solutions" / "stage2_mlp").exists() and not (dest / "stage4_gpt").exists()
    assert "python grader.py stage2 --reference-earlier" in (dest / "README.md").read_text(encoding="utf-8")
    graded = run(sys.executable, "grader.py", "stage2", "--reference-earlier", "-x", "2.1", cwd=dest)
    assert graded.returncode == 1 and "Score: 0/10" in graded.stdout, graded.stdout
    refused = run(sys.executable, "-m", "grading.export", str(dest), "--add", "stage3", "--no-check")
    assert refused.returncode == 2 and "next to add is stage4" in refused.stderr
