"""Which implementation the tests run against, and the rule that every graded test names its exercise.

The stage packages (``stage1_autograd``, ``stage2_mlp``, ...) have the same import names in the student's
folders and in ``solutions/``. Which one a run imports is decided here, by the import path alone:
``--implementation stage1_autograd=DIR`` makes ``import stage1_autograd`` load ``DIR/stage1_autograd``.
Without the option (``python -m pytest``, the project's own suite) every stage comes from ``solutions/``.
The grader passes the student's folder, or a mix: a student's later stage on the reference earlier ones.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

import pytest

from grading.registry import REPO_ROOT, SOLUTIONS_DIR, TESTS_DIR, all_stages
from grading.source import functions_in, read_source
from grading.stage_imports import StagePackageFinder
from tests.helpers import StudentPath

STAGE_PACKAGES = tuple(stage.package for stage in all_stages())
HOMES = pytest.StashKey[dict]()  # package name -> the folder it is imported from, for the report header


def pytest_addoption(parser):
    parser.addoption(
        "--implementation",
        action="append",
        default=[],
        metavar="PACKAGE=DIR",
        help="import the stage package PACKAGE from the folder DIR (repeatable; default: solutions/)",
    )
    parser.addoption(
        "--student-process",
        metavar="JSON",
        help="authoritative grading (set by the grader): run the stage packages in a separate process, "
             "described by JSON (see grading.remote)",
    )


def _chosen_homes(config) -> dict[str, Path]:
    homes = {package: SOLUTIONS_DIR for package in STAGE_PACKAGES}
    for choice in config.getoption("--implementation"):
        package, sep, folder = choice.partition("=")
        if not sep or package not in STAGE_PACKAGES:
            raise pytest.UsageError(f"--implementation takes PACKAGE=DIR with PACKAGE one of {STAGE_PACKAGES}, not {choice!r}")
        homes[package] = Path(folder).resolve()
    return homes


def pytest_configure(config):
    chosen = config.getoption("--implementation") or config.getoption("--student-process")
    if not chosen and not all((SOLUTIONS_DIR / package).is_dir() for package in STAGE_PACKAGES):
        # A student edition: the self-test has no reference to run against. The grader passes the options above.
        raise pytest.UsageError("`python -m pytest` is the course's self-test, which needs the reference solutions "
                                "this copy does not have: grade your work with `python grader.py stage1` (or the "
                                "stage you are on), and see your progress with `python grader.py`")
    already = [name for name in STAGE_PACKAGES if name in sys.modules]
    if already:
        raise pytest.UsageError(f"{already} were imported before the implementation could be chosen")
    settings = config.getoption("--student-process")
    if settings:
        from grading import remote  # noqa: PLC0415 - only authoritative runs need it

        settings = json.loads(settings)
        remote.install(settings, STAGE_PACKAGES)
        config.stash[HOMES] = {}
        return
    config.stash[HOMES] = homes = _chosen_homes(config)
    sys.meta_path.insert(0, StagePackageFinder(homes))


@pytest.fixture(autouse=True)
def _student_process_for_this_test(request):
    """Authoritative grading: generators lent to the student process by earlier tests are forgotten, and the
    student process has PyTorch only while a test of an exercise that ports to it runs."""
    if request.config.getoption("--student-process"):
        from grading import remote  # noqa: PLC0415

        remote.forget_generators()
        remote.student_process().allow_torch(_exercise_allows_torch(request.node))


@pytest.fixture
def student_tmp(request) -> StudentPath:
    """A fresh folder for the files the code under test reads and writes (see ``tests.helpers.StudentPath``)."""
    from tests import student_side  # noqa: PLC0415 - the student process's module in authoritative grading

    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)[:30]
    return StudentPath(str(student_side.new_folder(name)))


def _exercise_allows_torch(item) -> bool:
    marker = item.get_closest_marker("exercise")  # ids are unique across stages (hidden tests carry them too)
    return marker is not None and marker.args[0] in _torch_exercises()


@functools.lru_cache(maxsize=1)
def _torch_exercises() -> frozenset[str]:
    return frozenset(e.id for stage in all_stages() for e in stage.exercises if e.torch)


def pytest_unconfigure(config):
    if config.getoption("--student-process"):
        from grading import remote  # noqa: PLC0415

        remote.shutdown()


def _describe(folder: Path) -> str:
    if folder == SOLUTIONS_DIR:
        return "solutions/ (reference)"
    if folder == REPO_ROOT:
        return "./ (student)"
    return f"{folder} (student)"


def pytest_report_header(config):
    homes = config.stash[HOMES]
    if not homes:
        return "implementation under test: the submission, in a process of its own (authoritative grading)"
    used = [f"{package} from {_describe(homes[package])}" for package in STAGE_PACKAGES if (homes[package] / package).is_dir()]
    return "implementation under test: " + "; ".join(used)


def pytest_collection_modifyitems(config, items):
    """Every test under tests/stageN/ belongs to exactly one exercise of that stage's registry, and names the
    functions it grades with an ``under_test`` marker: functions of that exercise's files (the registry's file, and
    any other file of the package that holds a part of the exercise). Instructors' hidden tests (--extra-tests)
    may leave the marker out.

    Within an exercise, the tests marked ``integration`` (they run several of its functions together: attention
    with its masks, the whole model) run after the others, so the first failure of an exercise that the report
    shows is the most specific one. A stable sort: every other test keeps its order in the file.

    In authoritative grading the tests of the exercises that may use PyTorch run first, in the student process
    that imported their modules while collecting; that process is then replaced once, by one without PyTorch."""
    def group(item) -> str:  # an exercise's tests; a test of no exercise (the grader's own) stays with its file
        return _exercise_of(item) or str(item.fspath)

    first_of_group: dict[str, int] = {}
    for index, item in enumerate(items):
        first_of_group.setdefault(group(item), index)
    torch_first = bool(config.getoption("--student-process"))
    items.sort(key=lambda item: (torch_first and not _exercise_allows_torch(item), first_of_group[group(item)],
                                 item.get_closest_marker("integration") is not None))
    stages = {stage.name: stage for stage in all_stages()}
    known = {name: {e.id for e in stage.exercises} for name, stage in stages.items()}
    problems, unmarked = [], []
    for item in items:
        stage = next((part for part in Path(item.fspath).parts if part in known), None)
        if stage is None:
            continue
        ids = [mark.args[0] for mark in item.iter_markers("exercise")]
        if len(ids) != 1 or ids[0] not in known[stage]:
            problems.append(f"{item.nodeid}: exercise markers {ids}, expected exactly one of {sorted(known[stage])}")
            continue
        named = [name for mark in item.iter_markers("under_test") for name in mark.args]
        if not named and _is_graded_test(item, stage):
            unmarked.append(item.nodeid)
            continue
        missing = _not_in_exercise_files(stages[stage], ids[0], named)
        if missing:
            problems.append(f"{item.nodeid}: under_test names {missing}, which are not functions of exercise "
                            f"{ids[0]}'s files in solutions/")
    if unmarked:
        # The report points a failure at the TODO of the function the test grades: without the marker it guesses.
        problems.append("these tests name no function they grade: add @pytest.mark.under_test(\"Class.method\", ...) "
                        "(or a pytestmark for the whole file):\n    " + "\n    ".join(unmarked))
    if problems:
        raise pytest.UsageError("tests with a missing or wrong exercise or under_test marker:\n  " + "\n  ".join(problems))


def _exercise_of(item) -> str | None:
    marker = item.get_closest_marker("exercise")
    return marker.args[0] if marker else None


def _is_graded_test(item, stage: str) -> bool:
    """One of the course's own tests of ``stage`` (tests/stageN/), not an instructor's hidden one."""
    return Path(item.fspath).resolve().is_relative_to(TESTS_DIR / stage)


def _not_in_exercise_files(stage, exercise_id: str, names: list[str]) -> list[str]:
    """The names (``"GPT.forward"``) that are no function or method of the exercise's files in solutions/ (none
    in a student's copy, which has no solutions/ to check against)."""
    found = _functions_of_exercise(stage.package, exercise_id, stage.exercise(exercise_id).file)
    if found is None:
        return []
    return [name for name in names if not isinstance(name, str) or name not in found]


@functools.lru_cache(maxsize=None)
def _functions_of_exercise(package: str, exercise_id: str, file: str) -> frozenset[str] | None:
    """The functions of the exercise's registry file and of every other file of the package whose reference holds
    a ``# BEGIN SOLUTION <id>`` region (3.2's LayerNorm module lives in nn.py, its function in functional.py)."""
    home = SOLUTIONS_DIR / package
    main = read_source(home / file)
    if main is None:
        return None
    found = {f.qualname for f in functions_in(main)}
    region = re.compile(rf"^\s*# BEGIN SOLUTION {re.escape(exercise_id)}\b", re.MULTILINE)
    for path in sorted(home.rglob("*.py")):
        source = read_source(path)
        if path != home / file and source is not None and region.search(source):
            found |= {f.qualname for f in functions_in(source)}
    return frozenset(found)
