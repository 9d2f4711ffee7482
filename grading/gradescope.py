"""A Gradescope autograder for one stage: ``python -m grading.gradescope stage1 --out autograder.zip``.

The zip holds what Gradescope asks for, ``setup.sh`` (installs ``requirements.txt`` with PyTorch's CPU-only
build) and ``run_autograder``, beside the course files the grader needs: ``grader.py``, ``grading/``,
``tests/`` (the stage tests and their registries), ``requirements.txt`` and ``pyproject.toml``; from stage 2
on, the reference solutions of the earlier stages, which it grades on (unless ``--student-earlier``); with
``--extra-tests``, the hidden tests. No solution of the graded stage is in it.

On Gradescope, ``run_autograder`` calls ``python3 -m grading.gradescope --run``, which finds the stage
folder anywhere in ``/autograder/submission/`` (a zip the student uploaded is unpacked), grades a copy of it
with ``grader.py --json``, and writes ``/autograder/results/results.json`` in Gradescope's format: one test
entry per exercise, its output the grader's message for that exercise (and, for an exercise with hidden tests,
a second entry naming them, at ``--hidden-visibility``). Two environment variables exist for
trying it out of Gradescope: ``AUTOGRADER_ROOT`` (instead of ``/autograder``) and ``AUTOGRADER_PYTHON``
(instead of ``python3``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from grading import sandbox
from grading.batch import BrokenSubmission, copy_packages, prepare_source
from grading.registry import REPO_ROOT, SOLUTIONS_DIR, Stage, stage_for_command_line, stage_names
from grading.report import hidden_summary, tidy

CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
COURSE_FILES = ("grader.py", "requirements.txt", "pyproject.toml")
COURSE_FOLDERS = ("grading", "tests")
LEFT_OUT = {"__pycache__", ".grader", "benchmarks", "grader"}  # tests/benchmarks and tests/grader are not graded
HIDDEN_FOLDER = "hidden_tests"
RUN_TIMEOUT = 600.0

SETUP_SH = f"""#!/usr/bin/env bash
# Gradescope runs this once, when the autograder image is built. The course needs Python 3.11 or newer:
# choose a base image that has it (Ubuntu 24.04 ships Python 3.12).
set -euo pipefail
cd "${{AUTOGRADER_ROOT:-/autograder}}/source"
PYTHON="${{AUTOGRADER_PYTHON:-python3}}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "this course needs Python 3.11 or newer")'
if command -v apt-get > /dev/null; then
    # bubblewrap: the sandbox each submission's code runs in (python3 -m grading.gradescope --run checks it)
    apt-get update && apt-get install -y bubblewrap
    "$PYTHON" -m pip --version > /dev/null 2>&1 || apt-get install -y python3-pip
fi
# PyTorch's CPU-only build (a few hundred MB instead of gigabytes of CUDA libraries); see the README.
"$PYTHON" -m pip install --break-system-packages -r requirements.txt --extra-index-url {CPU_TORCH_INDEX} \\
    || "$PYTHON" -m pip install -r requirements.txt --extra-index-url {CPU_TORCH_INDEX}
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission; it writes results/results.json.
AUTOGRADER_ROOT="$(cd "${{AUTOGRADER_ROOT:-/autograder}}" && pwd)" || exit 1
export AUTOGRADER_ROOT
cd "$AUTOGRADER_ROOT/source" || exit 1
exec "${{AUTOGRADER_PYTHON:-python3}}" -m grading.gradescope --run {arguments}
"""


# ---------------------------------------------------------------------------------------------- building
def working_files(root: Path, folders: tuple[str, ...] | None = None) -> list[str]:
    """Every file under ``root`` (or under its ``folders``) as it is now, caches and git's own files left out."""
    skipped = {".git", "__pycache__", ".grader", ".pytest_cache", ".venv"}
    starts = [root / f for f in folders] if folders is not None else [root]
    names = [p.relative_to(root).as_posix() for start in starts for p in start.rglob("*")
             if p.is_file() and not skipped & set(p.relative_to(root).parts) and p.suffix != ".pyc"]
    return sorted(names)


def course_files(stage: Stage, reference_earlier: bool) -> list[str]:
    """What the autograder copies of this course, as the files are now (what this copy's grader runs): the grader
    and the tests, and the reference of the earlier stages when the stage is graded on them."""
    keep = []
    folders = (*COURSE_FOLDERS, *([f"{SOLUTIONS_DIR.name}/{p}" for p in stage.requires] if reference_earlier else []))
    for name in [f for f in COURSE_FILES if (REPO_ROOT / f).is_file()] + working_files(REPO_ROOT, folders):
        parts = name.split("/")
        if LEFT_OUT & set(parts[:-1]) or name.endswith(".pyc"):
            continue
        if name in COURSE_FILES or parts[0] in COURSE_FOLDERS:
            keep.append(name)
        elif reference_earlier and parts[0] == SOLUTIONS_DIR.name and len(parts) > 2 and parts[1] in stage.requires:
            keep.append(name)
    return keep


def add_file(zf: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # the same zip for the same course
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o755 if executable else 0o644) << 16
    zf.writestr(info, data)


@dataclass
class Settings:
    """How the autograder grades: written into run_autograder's command line by ``build``, read back by ``run``."""
    reference_earlier: bool = False  # grade on the reference of the earlier stages (it is in the zip)
    exercises: list[str] = field(default_factory=list)  # -x: only these (default: all)
    visibility: str = "visible"  # of the results and each exercise's public entry
    hidden_visibility: str = "after_published"  # of each exercise's entry for its hidden tests
    extra_tests: str | None = None  # the hidden tests' folder in the zip
    partial_credit: bool = False
    allow_unisolated: bool = False

    def arguments(self) -> list[str]:
        arguments = ["--visibility", self.visibility, "--hidden-visibility", self.hidden_visibility]
        arguments += ["--allow-unisolated"] if self.allow_unisolated else []
        arguments += [a for e in self.exercises for a in ("-x", e)]
        arguments += ["--reference-earlier"] if self.reference_earlier else []
        arguments += ["--partial-credit"] if self.partial_credit else []
        arguments += ["--extra-tests", self.extra_tests] if self.extra_tests else []
        return arguments


def build(stage: Stage, out: Path, settings: Settings, extra_tests: Path | None) -> list[str]:
    """Write the autograder zip to ``out``; returns the names it holds."""
    settings = dataclasses.replace(settings, extra_tests=HIDDEN_FOLDER if extra_tests is not None else None)
    arguments = [stage.name, *settings.arguments()]
    names = []
    with zipfile.ZipFile(out, "w") as zf:
        add_file(zf, "setup.sh", SETUP_SH.encode(), executable=True)
        add_file(zf, "run_autograder", RUN_AUTOGRADER.format(arguments=shlex.join(arguments)).encode(), executable=True)
        names += ["setup.sh", "run_autograder"]
        for name in course_files(stage, settings.reference_earlier):
            add_file(zf, name, (REPO_ROOT / name).read_bytes(), executable=name == "grader.py")
            names.append(name)
        if extra_tests is not None:
            for path in sorted(p for p in extra_tests.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
                name = f"{HIDDEN_FOLDER}/{path.relative_to(extra_tests).as_posix()}"
                add_file(zf, name, path.read_bytes())
                names.append(name)
    return names


# ---------------------------------------------------------------------------------------------- running
MAX_LISTED_FAILURES = 10  # per entry of results.json


def failure_lines(failures: list[dict]) -> list[str]:
    lines = [f"  {f['test']}: {f['message']}" for f in failures[:MAX_LISTED_FAILURES]]
    if len(failures) > MAX_LISTED_FAILURES:
        lines.append(f"  ... and {len(failures) - MAX_LISTED_FAILURES} more")
    return lines


def gradescope_results(stage: Stage, graded: dict | None, output: str, seconds: float, settings: Settings,
                       problem: str = "") -> dict:
    """Gradescope's results.json: the total, the grader's report, and one test per exercise. An exercise with
    hidden tests gets a second entry, at ``settings.hidden_visibility``, that names them; its own entry (at
    ``settings.visibility``) gives its public tests' outcome and messages and only how many hidden tests passed."""
    by_id = {e["id"]: e for e in (graded or {}).get("exercises", [])}
    tests = []
    for exercise in stage.exercises:
        if settings.exercises and exercise.id not in settings.exercises:
            continue
        result = by_id.get(exercise.id)
        if result is None:
            tests.append({"name": f"{exercise.id} {exercise.title}", "number": exercise.id, "score": 0,
                          "max_score": exercise.points, "status": "failed", "output": problem,
                          "visibility": settings.visibility})
            continue
        public = [f for f in result["failures"] if not f.get("hidden")]
        status = result["status"].replace("_", " ")
        lines = []
        if result["status"] != "passed":
            lines.append(f"{status}: {result['message']}" if public or not result["failures"] else
                         f"{status}: its public tests passed")
        if len(public) > 1:
            lines += ["public tests that did not pass:", *failure_lines(public)]
        if result.get("hidden_total"):
            lines.append(hidden_summary(result))
        tests.append({
            "name": f"{exercise.id} {exercise.title}",
            "number": exercise.id,
            "score": result["score"],
            "max_score": exercise.points,
            "status": "passed" if result["status"] == "passed" else "failed",
            "output": "\n".join(lines),
            "visibility": settings.visibility,
        })
        if result.get("hidden_total"):
            hidden = [f for f in result["failures"] if f.get("hidden")]
            tests.append({
                "name": f"{exercise.id} {exercise.title}: hidden tests",
                "number": f"{exercise.id}h",
                "status": "failed" if hidden else "passed",
                "output": "\n".join([hidden_summary(result)] + (["failed:", *failure_lines(hidden)] if hidden else [])),
                "visibility": settings.hidden_visibility,
            })
    return {
        "score": tidy(sum(t.get("score", 0) for t in tests)),
        "execution_time": round(seconds, 1),
        "output": output if not problem else f"{problem}\n{output}".strip(),
        "output_format": "text",  # the report's table is aligned with spaces: shown as written
        "test_output_format": "text",
        "visibility": settings.visibility,
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def isolation_problem(allow_unisolated: bool) -> tuple[str, str]:
    """(A line for the autograder's log, a problem that stops grading): the isolation this machine gives the
    submission's code. "none" stops it unless the instructor allowed it; "uid" is graded with a warning."""
    isolation = sandbox.choose_isolation("auto")
    isolation.release()
    line = f"isolation: {isolation.describe()}"
    if isolation.level == "none" and not allow_unisolated:
        return line, ("The autograder cannot keep the submission's code apart from the tests on this machine, so it "
                      "did not run it (instructors: install bubblewrap in setup.sh, run as root, or rebuild the "
                      "autograder with --allow-unisolated).")
    if isolation.level == "uid":
        line = f"warning: {line}"
    return line, ""


def run(stage: Stage, settings: Settings) -> int:
    """Grade ``/autograder/submission`` (or ``$AUTOGRADER_ROOT/submission``) and write results.json."""
    root = Path(os.environ.get("AUTOGRADER_ROOT", "/autograder"))
    submission, results = root / "submission", root / "results"
    results.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    packages = [stage.package] + ([] if settings.reference_earlier else list(stage.requires))
    graded, output, problem = None, "", ""
    if sandbox.is_root():  # the disposable /autograder is ours: its source (hidden tests, reference) is root's alone
        (root / "source").chmod(0o700)
    isolation_line, problem = isolation_problem(settings.allow_unisolated)
    print(isolation_line, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="gradescope-") as tmp:
        work = Path(tmp) / "submission"
        work.mkdir()
        try:
            if problem:
                raise BrokenSubmission(problem)
            copy_packages(prepare_source(submission, stage.package, Path(tmp)), stage, packages, work)
        except BrokenSubmission as error:
            problem = problem or upload_advice(stage, error)
        else:
            json_path = Path(tmp) / "result.json"
            command = [sys.executable, str(REPO_ROOT / "grader.py"), stage.name, "--submission", str(work),
                       "--json", str(json_path), "--run-timeout", str(RUN_TIMEOUT)]
            command += [a for e in settings.exercises for a in ("-x", e)]
            if settings.reference_earlier:
                command.append("--reference-earlier")
            if settings.partial_credit:
                command.append("--partial-credit")
            if settings.extra_tests:
                command += ["--extra-tests", str(REPO_ROOT / settings.extra_tests), "--conceal-hidden"]
            done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, errors="replace",
                                  stdin=subprocess.DEVNULL)
            # The report's commands name the temporary copy; a student runs them in their own copy instead.
            output = done.stdout.replace(f" --submission {shlex.quote(str(work))}", "")
            output = output.replace(str(work) + "/", "").replace(str(work), "your submission")
            try:
                graded = json.loads(json_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                problem = "The grader could not grade this submission: " + (
                    done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    data = gradescope_results(stage, graded, output, time.monotonic() - started, settings, problem)
    (results / "results.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(data["output"])
    return 0  # Gradescope reads results.json; a failing exit code would hide it behind an error


def upload_advice(stage: Stage, error: BrokenSubmission) -> str:
    """What is wrong with an upload, and what to upload instead, naming the folder that is missing."""
    missing = getattr(error, "package", None)
    if missing is not None and missing != stage.package:
        return (f"Your submission could not be graded: it has your {stage.package}/ but no {missing}/ folder. This "
                f"assignment grades {stage.package}/ on your own earlier stages: upload {missing}/ too, beside it "
                f"(each folder with its .py files inside).")
    return (f"Your submission could not be graded: {error}. Upload your {stage.package}/ folder (the folder itself, "
            f"with its .py files inside).")


VISIBILITIES = ["visible", "after_published", "after_due_date", "hidden"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grading.gradescope",
        description="Build a Gradescope autograder (a zip to upload) that grades one stage of this course.",
        epilog="example:\n  python -m grading.gradescope stage1 --out autograder.zip",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", help=f"the stage to grade: {', '.join(stage_names())} (or just its number)")
    parser.add_argument("--out", type=Path, help="the zip to write (default: autograder-STAGE.zip)")
    earlier = parser.add_mutually_exclusive_group()
    earlier.add_argument("--reference-earlier", action="store_true",
                         help="grade on the reference of the earlier stages, which goes into the zip: the default "
                              "from stage 2 on. The student process imports it, so the student's code can read it")
    earlier.add_argument("--student-earlier", action="store_true",
                         help="grade on the student's own earlier stages instead: the upload must hold them too")
    parser.add_argument("--extra-tests", metavar="DIR",
                        help="hidden tests to put in the zip and run with the stage's own (see grader.py --help)")
    parser.add_argument("-x", "--exercise", action="append", default=[], metavar="ID",
                        help="grade only this exercise (repeatable; default: all)")
    parser.add_argument("--visibility", default="visible", choices=VISIBILITIES,
                        help="when students see the results and each exercise's entry, which names its public tests "
                             "only (default: %(default)s)")
    parser.add_argument("--hidden-visibility", default="after_published", choices=VISIBILITIES,
                        help="when students see the entries that name the --extra-tests tests and their messages "
                             "(default: %(default)s)")
    parser.add_argument("--partial-credit", action="store_true",
                        help="score each exercise by the fraction of its tests that passed (see grader.py --help)")
    parser.add_argument("--allow-unisolated", action="store_true",
                        help="grade even where the submission's code cannot be kept apart from the tests (isolation "
                             "'none': no bubblewrap and not root); by default such a run grades nothing and says why")
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)  # what run_autograder calls
    options = parser.parse_args(argv)
    try:
        stage = stage_for_command_line(options.stage, options.exercise)
    except ValueError as problem:
        parser.error(str(problem))
    name = stage.name
    settings = Settings(options.reference_earlier, options.exercise, options.visibility, options.hidden_visibility,
                        options.extra_tests, options.partial_credit, options.allow_unisolated)
    if options.run:
        return run(stage, settings)
    if options.reference_earlier and not stage.requires:
        parser.error(f"{name} builds on no earlier stage, so --reference-earlier has nothing to add")
    if options.student_earlier and not stage.requires:
        parser.error(f"{name} builds on no earlier stage, so --student-earlier has nothing to change")
    settings.reference_earlier = bool(stage.requires) and not options.student_earlier
    if settings.reference_earlier and not all((SOLUTIONS_DIR / p).is_dir() for p in stage.requires):
        parser.error(f"grading {name} on the reference of the earlier stages (the default) needs "
                     f"{', '.join(f'solutions/{p}/' for p in stage.requires)}, which this copy does not have; add "
                     "--student-earlier to grade on the students' own")
    extra = Path(options.extra_tests) if options.extra_tests else None
    if extra is not None and not extra.is_dir():
        parser.error(f"--extra-tests {extra}: there is no such folder")
    out = options.out or Path(f"autograder-{name}.zip")
    if out.parent and not out.parent.is_dir():
        parser.error(f"--out {out}: the folder {out.parent} does not exist")
    names = build(stage, out, settings, extra)
    earlier = (f"; it grades on the reference of {', '.join(stage.requires)}" if settings.reference_earlier else
               f"; uploads must hold {', '.join(stage.requires)} too" if stage.requires else "")
    print(f"wrote {out}: setup.sh, run_autograder and {len(names) - 2} course files{earlier}; upload it as the "
          f"autograder of a Gradescope programming assignment (base image with Python 3.11 or newer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
