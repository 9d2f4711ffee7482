"""The measured goal of the pointer at a TODO: of typical mistakes planted one at a time into the reference
(``tests/grader/mistakes.py``), "your TODO" names the function that holds the mistake for at least 90 %.

Each mistake is graded in student mode, its own exercise only (-x), in a copy of the reference whose
``# BEGIN SOLUTION`` lines are the skeleton's ``# TODO`` lines again (a student's finished work) and whose
earlier stages are the reference (--reference-earlier). The mistakes the grader points past are listed in
``MISSED``, as expected failures; there may be at most a tenth of them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grading.registry import REPO_ROOT, SOLUTIONS_DIR, load_stage
from grading.source import SourceFiles
from tests.grader.mistakes import MISTAKES, Mistake
from tests.grader.test_grading import linux_only

MISSED: set[str] = set()  # names of mistakes whose pointer is known to miss (each an expected failure)
assert len(MISSED) <= 0.1 * len(MISTAKES), f"{len(MISSED)} of {len(MISTAKES)} mistakes missed: the goal is >= 90 %"

BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION (\d+\.\d+)")


def finished_copy(root: Path, package: str) -> Path:
    """The reference package as a student who kept the TODO comments would have finished it."""
    for source in (SOLUTIONS_DIR / package).rglob("*.py"):
        target = root / package / source.relative_to(SOLUTIONS_DIR / package)
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = [BEGIN.sub(r"\1# TODO \2", line) for line in source.read_text(encoding="utf-8").splitlines(keepends=True)
                 if line.strip() != "# END SOLUTION"]
        target.write_text("".join(lines), encoding="utf-8")
    return root


def plant(root: Path, package: str, mistake: Mistake) -> None:
    path = root / package / mistake.file
    text = path.read_text(encoding="utf-8")
    assert text.count(mistake.old) == 1, f"{mistake.name}: {mistake.old!r} occurs {text.count(mistake.old)} times in {path.name}"
    path.write_text(text.replace(mistake.old, mistake.new), encoding="utf-8")


def grade_planted(tmp_path: Path, mistake: Mistake, *options: str) -> tuple[dict, str]:
    """The report of ``mistake``'s exercise and what the grader printed."""
    stage = load_stage(mistake.stage)
    root = finished_copy(tmp_path / "copy", stage.package)
    plant(root, stage.package, mistake)
    report = tmp_path / "report.json"
    command = [sys.executable, str(REPO_ROOT / "grader.py"), stage.name, "--submission", str(root),
               "-x", mistake.exercise, "--json", str(report), *options]
    if stage.requires:
        command.append("--reference-earlier")
    completed = subprocess.run(command, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    exercise = next(e for e in json.loads(report.read_text())["exercises"] if e["id"] == mistake.exercise)
    assert exercise["status"] in ("failed", "error"), f"the planted mistake was not caught:\n{completed.stdout}"
    return exercise, completed.stdout


@pytest.mark.parametrize("mistake", [pytest.param(m, id=m.name, marks=[pytest.mark.xfail(strict=True)] if m.name in MISSED else [])
                                     for m in MISTAKES])
def test_your_todo_names_the_function_that_holds_the_mistake(tmp_path, mistake):
    exercise, printed = grade_planted(tmp_path, mistake, "--no-authoritative")
    assert (exercise["todo"] or {}).get("function") == mistake.function, printed


@linux_only
def test_authoritative_grading_records_what_each_test_ran_in_the_student_process(tmp_path):
    # The recording happens where the student's code runs; here, in the student process, and one round trip per
    # test arms the next (grading.plugin.WhatRuns): the ranking -v prints comes from it.
    mistake = next(m for m in MISTAKES if m.name == "SGD: momentum's velocity not kept")
    exercise, printed = grade_planted(tmp_path, mistake, "--authoritative", "-v")
    assert (exercise["todo"] or {}).get("function") == mistake.function, printed
    suspects = printed.split("the likeliest place of the mistake first", 1)[-1]
    assert f"{mistake.function} ({mistake.file}): " in suspects, printed


def test_every_mistake_names_a_function_of_its_exercise_file():
    files = SourceFiles()
    for m in MISTAKES:
        stage = load_stage(m.stage)
        text = (SOLUTIONS_DIR / stage.package / m.file).read_text(encoding="utf-8")
        assert f"# BEGIN SOLUTION {m.exercise}" in text, f"{m.name}: {m.file} holds nothing of exercise {m.exercise}"
        names = {f.qualname for f in files.functions(SOLUTIONS_DIR / stage.package / m.file)}
        assert m.function in names, f"{m.name}: no {m.function} in {m.file}"
    assert len(MISTAKES) >= 30 and len({m.stage for m in MISTAKES}) == 4
