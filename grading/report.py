"""From test outcomes to exercise scores, and from scores to what the student reads."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from grading import spectrum
from grading.registry import REPO_ROOT, SOLUTIONS_DIR, Exercise, Stage
from grading.runner import RunResult, TestResult
from grading.source import SourceFiles, Todo, exercise_files, first_todo, named_by_test, under_test, where_it_arose

STATUS_TEXT = {
    "passed": "passed",
    "failed": "failed",
    "not_started": "not started",
    "error": "error",
    "timeout": "timed out",
    "crashed": "crashed",
}
# Problems whose message reads well alone; any other exception is shown as "TypeError: ...".
PLAIN_KINDS = {"AssertionError", "TestTimedOut", "timeout", "crashed", "NotRun", "NoResult", "Skipped", "ImportBlocked"}
# When an exercise's tests went wrong in several ways, the worst is shown and names its status.
# A skip is never a pass; it ranks below an unstarted TODO, so an untouched skeleton still reads "not started".
SEVERITY = ["crashed", "timeout", "error", "failed", "not_implemented", "skipped", "not_run"]


def shown_first(tests: list[TestResult]) -> TestResult:
    """The failing test an exercise's message comes from: the worst by SEVERITY, except that an exception
    ("error") and a wrong value ("failed") rank alike, so the one that ran first is shown. Tests run unit tests
    first and integration tests last (tests/conftest.py), so that is the most specific failure: a wrong
    causal_mask's own test, not the ValueError it causes deep inside attention."""
    return min(tests, key=lambda t: SEVERITY.index("error" if t.outcome == "failed" else t.outcome))


@dataclass
class Failure:
    """One test of an exercise that did not pass."""
    test: str  # "test_unary.py::test_unary_function_matches_torch[relu-(5,)]"
    message: str  # one line
    location: dict | None  # {"file", "line", "function"} in the code under test, when it raised there
    outcome: str
    hidden: bool = False  # one of the instructors' hidden tests (--extra-tests)
    blocked_by: str | None = None  # it stopped at the TODO of this other, unfinished exercise ("2.1")

    def as_json(self) -> dict:
        return {"test": self.test, "message": self.message, "location": self.location, "hidden": self.hidden,
                "blocked_by": self.blocked_by}


@dataclass
class ExerciseResult:
    exercise: Exercise
    status: str  # a key of STATUS_TEXT
    tests_passed: int
    tests_total: int
    message: str = ""  # one or two lines for the student
    test: str = ""  # the test the message comes from
    detail: str = ""  # pytest's full failure output for that test (-v)
    waits_for_earlier: bool = False  # the failure is an unfinished exercise of an earlier stage
    import_failed: bool = False  # its tests could not even import the code under test
    failures: list[Failure] = field(default_factory=list)  # every test that did not pass, in run order
    error: dict | None = None  # the error record behind ``message``
    todo: Todo | None = None  # the TODO to work on, found by ``find_todos``
    functions: tuple[str, ...] = ()  # the functions the test behind ``message`` says it tests
    scoring: str = "all"  # "all" or "fraction" (see score)
    tests_blocked: int = 0  # tests that stopped at the TODO of another, unfinished exercise
    blocked_by: str | None = None  # the first such exercise ("2.1")
    hidden_passed: int = 0  # of the instructors' hidden tests (included in tests_passed and tests_total)
    hidden_total: int = 0

    @property
    def only_hidden_failed(self) -> bool:
        """Every test of it that did not pass is a hidden one."""
        return bool(self.failures) and all(f.hidden for f in self.failures)

    @property
    def tests_counted(self) -> int:
        """The tests the fraction is taken over: every test of the exercise, less (partial credit only) those
        blocked by another unfinished exercise, which is charged for them itself."""
        return self.tests_total - (self.tests_blocked if self.scoring == "fraction" else 0)

    @property
    def score(self) -> int | float:
        if self.status == "passed":
            return self.exercise.points
        if self.scoring != "fraction" or self.status == "not_started" or self.import_failed or not self.tests_counted:
            return 0
        return tidy(self.exercise.points * self.tests_passed / self.tests_counted)


def tidy(points: float) -> int | float:
    """Points rounded to 0.1, and a whole number written as one (10, not 10.0)."""
    points = round(points, 1)
    return int(points) if points == int(points) else points


def total(results: list[ExerciseResult]) -> int | float:
    return tidy(sum(r.score for r in results))


def is_hidden(test: TestResult) -> bool:
    """An instructors' hidden test (--extra-tests): the runner names the stage's own tests tests/stageN/..."""
    return not test.nodeid.startswith("tests/")


def blocker(test: TestResult, exercise: Exercise) -> str | None:
    """The other exercise whose unfinished TODO (its NotImplementedError) stopped this test, if one did."""
    other = (test.error or {}).get("exercise") if test.outcome == "not_implemented" else None
    return other if other and other != exercise.id else None


def score_exercises(stage: Stage, exercises: list[Exercise], run: RunResult, partial_credit: bool = False,
                    conceal_hidden: bool = False) -> list[ExerciseResult]:
    """Each exercise's verdict. ``partial_credit``: every exercise is scored "fraction", whatever the registry
    says. ``conceal_hidden``: the message is a public test's (the hidden tests are then only counted)."""
    results = []
    for exercise in exercises:
        scoring = "fraction" if partial_credit else exercise.scoring
        tests = [t for t in run.tests.values() if t.exercise == exercise.id]
        passed = sum(t.outcome == "passed" for t in tests)
        hidden = [t for t in tests if is_hidden(t)]
        counts = dict(scoring=scoring, hidden_passed=sum(t.outcome == "passed" for t in hidden), hidden_total=len(hidden))
        broken_imports = [c for c in run.collect_errors if exercise.id in c["exercises"]]
        if broken_imports:
            error = broken_imports[0]["error"]
            status = {"crashed": "crashed", "timeout": "timeout", "TestTimedOut": "timeout",
                      "ImportBlocked": "timeout"}.get(error["type"], "error")
            message = "its tests could not be imported: " + explain(error, stage)
            failures = [Failure(Path(c["path"]).name, first_line(explain(c["error"], stage)),
                                brief_location(c["error"]), "error") for c in broken_imports]
            results.append(ExerciseResult(exercise, status, 0, len(tests), message, Path(broken_imports[0]["path"]).name,
                                          error.get("detail", ""), import_failed=True, failures=failures, error=error,
                                          **counts))
            continue
        if not tests:
            why = "the grader's time limit for the whole run was reached" if run.run_timed_out else \
                "no test of this exercise ran (see the pytest output with -v)"
            results.append(ExerciseResult(exercise, "timeout" if run.run_timed_out else "error", 0, 0, why, **counts))
            continue
        bad = [t for t in tests if t.outcome != "passed"]
        if not bad:
            results.append(ExerciseResult(exercise, "passed", passed, len(tests), **counts))
            continue
        blockers = [b for b in (blocker(t, exercise) for t in bad) if b]
        counts.update(tests_blocked=len(blockers), blocked_by=blockers[0] if blockers else None)
        worst = shown_first(bad)
        status = {"not_implemented": "failed", "not_run": "failed", "skipped": "failed"}.get(worst.outcome, worst.outcome)
        if worst.outcome == "not_implemented" and passed == 0:
            status = "not_started"  # (or cannot start yet: the message then names the exercise it waits for)
        failures = [Failure(short_test_name(t), first_line(explain(t.error, stage, exercise, advice=False)),
                            brief_location(t.error), t.outcome, is_hidden(t), blocker(t, exercise)) for t in bad]
        public_bad = [t for t in bad if not is_hidden(t)]
        if conceal_hidden and not public_bad:  # only hidden tests failed: they are counted, never named
            results.append(ExerciseResult(exercise, status, passed, len(tests), hidden_summary(counts), failures=failures,
                                          **counts))
            continue
        if conceal_hidden:
            worst = shown_first(public_bad)
        results.append(ExerciseResult(exercise, status, passed, len(tests), explain(worst.error, stage, exercise),
                                      short_test_name(worst), (worst.error or {}).get("detail", ""),
                                      is_earlier_stage_todo(worst.error, stage), failures=failures, error=worst.error,
                                      functions=worst.functions, **counts))
    return results


def hidden_summary(result: ExerciseResult | dict) -> str:
    """"hidden tests: 1 of 2 passed", which is all a student learns of them before the grades are published."""
    passed, total_ = (result["hidden_passed"], result["hidden_total"]) if isinstance(result, dict) else \
        (result.hidden_passed, result.hidden_total)
    return f"hidden tests: {passed} of {total_} passed"


def first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def brief_location(error: dict | None) -> dict | None:
    location = (error or {}).get("location")
    if not location:
        return None
    return {"file": location["file"], "line": location["line"], "function": location.get("function")}


def short_test_name(test: TestResult) -> str:
    """``test_unary.py::test_relu[a / b]``: the test's file name and the rest of its id, whole (a parameter
    may hold a ``/``)."""
    path, sep, rest = test.nodeid.partition("::")
    return Path(path).name + sep + rest


def is_earlier_stage_todo(error: dict | None, stage: Stage) -> bool:
    """True for the NotImplementedError of an exercise of an earlier stage (its id is "1.x" in stage 2)."""
    exercise_id = (error or {}).get("exercise")
    return bool(exercise_id) and exercise_id.split(".")[0] != stage.name.removeprefix("stage")


def reference_available(stage: Stage) -> bool:
    """Whether this copy has the reference of every earlier stage, which --reference-earlier needs."""
    return bool(stage.requires) and all((SOLUTIONS_DIR / p).is_dir() for p in stage.requires)


def explain(error: dict | None, stage: Stage, exercise: Exercise | None = None, advice: bool = True) -> str:
    """Plain lines: what went wrong and where (``exercise``: the one whose test failed). ``advice=False``: an
    unfinished TODO of another exercise is named without what to do about it, which the report says once, not
    for each of the tests it stopped (-v lists them with "blocked: ...")."""
    if not error:
        return ""
    kind, message, location = error["type"], error.get("message", ""), error.get("location")
    where = f" ({location['file']}, line {location['line']})" if location else ""
    earlier = location is not None and location["package"] != stage.package
    from_reference = location is not None and Path(location["root"]) == SOLUTIONS_DIR
    if kind == "NotImplementedError" and not advice:
        return message or "NotImplementedError"
    if kind == "NotImplementedError":
        if is_earlier_stage_todo(error, stage):
            return (f"{message}{where}. Grading this exercise needs it: finish that exercise first"
                    + (", or add --reference-earlier to grade this stage on the reference solutions of earlier "
                       "stages." if reference_available(stage) else "."))
        if exercise and error.get("exercise") and error["exercise"] != exercise.id:
            return f"{message}{where}, and this exercise needs it: do {error['exercise']} first"
        return f"{message or 'NotImplementedError'}{where}"
    if kind == "SystemExit":
        return f"the code under test called sys.exit({error.get('exit_code')!r}){where}; a library must not exit"
    if kind in ("SyntaxError", "IndentationError", "TabError"):
        return f"{kind} in {location['file'] if location else 'a file'}, line {location['line'] if location else '?'}: {message}"
    text = message if kind in PLAIN_KINDS else f"{kind}: {message}"
    if where:
        owner = "the reference" if from_reference else "your"
        verb = "stopped" if kind == "TestTimedOut" else "raised"
        text += f"\n    {verb} in {owner} code at {location['file']}, line {location['line']}"
        if location.get("function"):
            text += f" (in {location['function']})"
        if earlier:
            text += " — an earlier stage, which this stage builds on"
    return text


def find_todos(stage: Stage, results: list[ExerciseResult], homes: dict[str, Path], run: RunResult | None = None) -> None:
    """Point each failing exercise at the function its tests' spectrum ranks first (``run``: the functions
    each test ran; see grading.spectrum), else at the TODO of the function its failure arose in, else of the
    function the test names as under test, else of the one its id or message names, else at the exercise's
    first TODO (see grading.source). Never into the reference."""
    if homes[stage.package] == SOLUTIONS_DIR:
        return
    student_roots = {root for root in homes.values() if root != SOLUTIONS_DIR}
    files = SourceFiles()
    for r in results:
        if r.status == "passed" or r.import_failed or r.waits_for_earlier or (r.only_hidden_failed and not r.test):
            continue
        error = r.error or {}
        frames = error.get("frames") or ([error["location"]] if error.get("location") else [])
        package = homes[stage.package] / stage.package
        path = package / r.exercise.file
        arose = where_it_arose(frames, student_roots, files)
        tests = [t for t in (run.tests.values() if run else ()) if t.exercise == r.exercise.id]
        r.todo = (spectrum.pointer(r, tests, package, files, arose, SOLUTIONS_DIR / stage.package)
                  or arose
                  or named_by_test(exercise_files(package, r.exercise.id, r.exercise.file, files), r.functions, r.test,
                                   error.get("message", ""), files)
                  or under_test(path, r.exercise.id, r.test, error.get("message", ""), files)
                  or first_todo(path, r.exercise.id, files))


def display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        try:
            return str(path.relative_to(REPO_ROOT))
        except ValueError:
            return str(path)


@dataclass
class EarlierStage:
    """What this run learnt about an earlier stage the student's code of this stage runs on."""
    stage: Stage
    folder: str  # "stage1_autograd/"
    needed: list[str]  # its exercises this run's tests ran into unfinished, in order
    score: str | None  # "40/100 when last graded (2 h ago)"; None: never graded here; "": not this copy's folders
    command: str  # grading it: "python grader.py stage1"


@dataclass
class View:
    """Everything around the results that the report shows."""
    sources: list[str]
    command: str  # this stage's grading command, without -x
    hint_command: str  # "python grader.py stage1 --hint"
    verbose: bool = False
    import_problems: list[str] = field(default_factory=list)
    partial: bool = False  # only some exercises were graded (-x)
    selected: list[str] = field(default_factory=list)  # the exercise ids given with -x, kept in a suggested command
    next_exercise: Exercise | None = None  # after a partial run that passed: the one to do next
    rest_known_passed: bool = False  # ... or: every other exercise passed when last graded
    next_stage: Stage | None = None
    next_stage_command: str = ""
    earlier: list[EarlierStage] = field(default_factory=list)
    earlier_are_students: bool = False
    reference_earlier: bool = False  # --reference-earlier would work here
    hints_shown: dict[str, int] = field(default_factory=dict)  # exercise id -> hints seen (>= 1)
    isolation: str | None = None  # authoritative grading: the level, in words (grading.sandbox.Isolation.describe)
    warnings: list[str] = field(default_factory=list)  # said above the table (PyTorch imported where it must not be)
    conceal_hidden: bool = False  # name no hidden test: only how many of them passed (what students see)
    copies: tuple[Path, ...] = (REPO_ROOT,)  # the student's folders and the course's: -v shows paths relative to them


def relative_to_copies(text: str, copies: tuple[Path, ...]) -> str:
    """``text`` with each absolute path into one of ``copies`` made relative to it: pytest's
    ``/home/ann/course/tests/stage2/test_linear.py:63`` becomes ``tests/stage2/test_linear.py:63``, and a file of
    a submission graded with --submission, ``stage2_mlp/nn.py``, as the report names files everywhere else."""
    for root in sorted({str(c) for c in copies}, key=len, reverse=True):  # a copy inside another: the deeper first
        text = text.replace(root.rstrip("/\\") + os.sep, "")
    return text


def render(stage: Stage, results: list[ExerciseResult], run: RunResult, view: View) -> str:
    lines = [f"Scratch to GPT · {stage.name}: {stage.title}", "  " + "; ".join(view.sources)]
    if view.isolation:
        lines.append(f"  isolation: {view.isolation}")
    lines.append("")
    for warning in view.warnings:
        lines.append(f"warning: {warning}")
    if view.warnings:
        lines.append("")
    if view.import_problems:
        lines += ["These files could not be imported, so the tests that need them could not run:"]
        lines += [f"  {p}" for p in view.import_problems] + [""]
    lines += table(results, view.conceal_hidden) + [""]
    failing = [r for r in results if r.status != "passed"]
    if failing:
        lines += first_to_fix(failing[0], view) + [""]
    if view.verbose:
        lines += [relative_to_copies(line, view.copies) for line in every_failure(failing, run, view.conceal_hidden)]
    lines += earlier_stage_lines(results, view)
    lines.append(f"Score: {total(results)}/{sum(r.exercise.points for r in results)}")
    if any(r.scoring == "fraction" for r in results):
        lines.append("Partial credit: " + ("each exercise" if all(r.scoring == "fraction" for r in results) else
                                           ", ".join(r.exercise.id for r in results if r.scoring == "fraction"))
                     + " earns its points times the fraction of its tests that passed; a test stopped by another "
                       "unfinished exercise is not counted.")
    lines += next_step(stage, results, view)
    return "\n".join(lines)


def table(results: list[ExerciseResult], conceal_hidden: bool = False) -> list[str]:
    width = max(len(r.exercise.title) for r in results)
    lines = [f"  {'id':<5} {'exercise':<{width}}  {'points':>7}   status"]
    for r in results:
        notes = []
        if r.status not in ("passed", "not_started") and r.tests_total:
            notes.append(f"{r.tests_passed}/{r.tests_total} tests")
        if r.tests_blocked and r.status != "passed":
            notes.append(f"{r.tests_blocked} blocked by {r.blocked_by}")
        if conceal_hidden and r.hidden_total and r.status != "passed":
            notes.append(hidden_summary(r))
        tests = f"  ({'; '.join(notes)})" if notes else ""
        points = f"{r.score}/{r.exercise.points}"
        lines.append(f"  {r.exercise.id:<5} {r.exercise.title:<{width}}  {points:>7}   {STATUS_TEXT[r.status]}{tests}")
    return lines


def first_to_fix(first: ExerciseResult, view: View) -> list[str]:
    if first.import_failed:  # the file is the problem, not this exercise's work: no hint or TODO
        lines = [f"First to fix: the file that cannot be imported (it stops {first.exercise.id} "
                 f"{first.exercise.title} from being graded)"]
    else:
        lines = [f"First to work on: {first.exercise.id} {first.exercise.title} — {STATUS_TEXT[first.status]}"]
    if first.test:
        lines.append(f"  test: {first.test}")
    lines += ["  " + line for line in first.message.splitlines()]
    if first.import_failed:
        return lines
    if first.todo is not None:
        lines.append(f"  your TODO: {first.todo.describe(display_path(first.todo.path), first.exercise.id)}")
    lines.append(f"  hint: {first.exercise.hint}")
    total = len(first.exercise.hints)
    shown = min(view.hints_shown.get(first.exercise.id, 1), total)
    if shown < total:
        lines.append(f"  more hints ({total - shown} more, one at a time): `{view.hint_command} {first.exercise.id}`")
    return lines


def every_failure(failing: list[ExerciseResult], run: RunResult, conceal_hidden: bool = False) -> list[str]:
    """-v: each failing exercise's failing tests, one line each, then pytest's full output for the first.
    ``conceal_hidden``: the hidden tests that failed are counted, not listed."""
    lines = []
    for r in failing:
        if conceal_hidden:
            r = dataclasses.replace(r, failures=[f for f in r.failures if not f.hidden])
            if r.hidden_total:
                lines.append(f"----- {r.exercise.id} {r.exercise.title}: {hidden_summary(r)} -----")
            if not r.failures:
                continue
        not_started = r.status == "not_started" and all(f.outcome == "not_implemented" for f in r.failures)
        if not_started:
            lines.append(f"----- {r.exercise.id} {r.exercise.title}: not started (all {len(r.failures)} tests "
                         "stop at a TODO) -----")
        elif r.failures:
            lines.append(f"----- {r.exercise.id} {r.exercise.title}: {len(r.failures)} of "
                         f"{max(r.tests_total, len(r.failures))} tests failing -----")
            for f in r.failures:
                where = ""
                if f.location:
                    where = f"  ({f.location['file']}:{f.location['line']}" + \
                            (f", in {f.location['function']})" if f.location.get("function") else ")")
                lines += [f"  {f.test}", f"      {f.message}{where}"
                          + (f" (blocked: {f.blocked_by} is not done)" if f.blocked_by else "")]
            if r.todo is not None and r.todo.ranking:
                lines.append("  your functions that ran in these failing tests, the likeliest place of the mistake first "
                             "(a score of 1.00: ran in every failing test and in no passing one):")
                lines += [f"    {suspect}" for suspect in r.todo.ranking]
        if r.detail:
            lines += [f"----- {r.exercise.id}: pytest's output for {r.test} -----", r.detail.rstrip()]
        lines.append("")
    if not any(r.detail for r in failing) and run.output.strip() and not conceal_hidden:
        lines += ["----- pytest output -----", run.output.rstrip(), ""]
    return lines


def earlier_stage_lines(results: list[ExerciseResult], view: View) -> list[str]:
    """One paragraph, however many tests and earlier stages it concerns, that begins "This stage runs on your
    ...": the earlier stages' unfinished exercises this run's tests met, else the stages a bug may hide in."""
    failing = [r for r in results if r.status != "passed"]
    if not failing or not view.earlier_are_students:
        return []

    def score(earlier: EarlierStage) -> str:
        # what it scored when last graded; None: never graded here; "": unknown (not this copy's folders)
        return (f", which scored {earlier.score}" if earlier.score else
                ", which has not been graded yet" if earlier.score is None else "")

    def named(earlier: EarlierStage) -> str:
        return f"{earlier.stage.name} ({earlier.folder}{score(earlier)})"

    def listed(words: list[str]) -> str:
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]

    needed = [e for e in view.earlier if e.needed]
    # earlier stages with nothing unfinished met: a bug there can fail a test here
    suspects = [e for e in view.earlier if not e.needed] if any(r.status in ("failed", "error") for r in failing) else []
    text = ""
    if len(needed) == 1:
        (earlier,) = needed
        ids, many = ", ".join(earlier.needed), len(earlier.needed) > 1
        it = "them" if many else "it"
        text = (f"This stage runs on your {earlier.stage.name} ({earlier.folder}){score(earlier)}. Its "
                f"exercise{'s' if many else ''} {ids} "
                f"{'are' if many else 'is'} not done yet, and this stage's tests need {it}: finish {it} first, "
                f"starting with `{earlier.command} -x {earlier.needed[0]}`.")
    elif needed:
        exercises = listed([", ".join(e.needed) + f" ({e.stage.name})" for e in needed])
        text = (f"This stage runs on your {listed([named(e) for e in needed])}. Their exercises {exercises} are "
                f"not done yet, and this stage's tests need them: finish them first, starting with "
                f"`{needed[0].command} -x {needed[0].needed[0]}`.")
    if suspects:
        stages = listed([named(e) for e in suspects])
        shows = (f"`{suspects[0].command}` shows it" if len(suspects) == 1 else
                 "grading them shows it: " + ", ".join(f"`{e.command}`" for e in suspects))
        text += (f" A bug in your {stages} can also fail a test here ({shows})." if needed else
                 f"This stage runs on your {stages}: a bug there can fail a test here ({shows}).")
    lines = [text] if text else []
    if lines and view.reference_earlier:
        lines.append(f"To grade this stage on the reference of the earlier stages instead: "
                     f"`{view.command} --reference-earlier`.")
    return lines + ([""] if lines else [])


def next_step(stage: Stage, results: list[ExerciseResult], view: View) -> list[str]:
    failing = [r for r in results if r.status != "passed"]
    if failing:
        first = failing[0]
        if first.waits_for_earlier:
            text = "Next: finish the earlier stage's exercise named above"
            if view.reference_earlier:
                text += (f", or run `{view.command} --reference-earlier` to grade this stage on the reference "
                         "earlier stages")
            return [text + "."]
        if first.only_hidden_failed and first.test == "":
            return [f"Next: {first.exercise.id}'s public tests pass here, and its hidden tests check more than they do "
                    "(the hidden tests are shown when the grades are published): reread what the exercise asks, "
                    "edge cases included."]
        if first.import_failed:
            again = view.command + "".join(f" -x {exercise_id}" for exercise_id in view.selected)
            return [f"Next: make the file named above import, then run `{again}`."]
        return [f"Next: work on {first.exercise.id}, then run `{view.command} -x {first.exercise.id}`"
                + ("" if view.verbose else " (add -v to see every failing test and pytest's full output)") + "."]
    if view.partial:
        done = ", ".join(r.exercise.id for r in results)
        if view.next_exercise is not None:
            e = view.next_exercise
            return [f"{done} passed; next: {e.id} {e.title}, `{view.command} -x {e.id}`"]
        if view.rest_known_passed:
            return [f"{done} passed, and every other exercise of {stage.name} passed when last graded: run "
                    f"`{view.command}` to confirm the whole stage."]
        return [f"{done} passed; grade the whole stage: `{view.command}`"]
    lines = [f"Every exercise passed: {stage.name} is complete."]
    if view.next_stage is not None:
        lesson = display_path(REPO_ROOT / view.next_stage.package / "README.md")
        lines.append(f"Next: {view.next_stage.name}, {view.next_stage.title}. Read its lesson, {lesson}, then run "
                     f"`{view.next_stage_command}`.")
    else:
        lines.append("That was the last stage: you have built a GPT from scratch.")
    return lines


def write_json(path: Path, stage: Stage, implementation: str, sources: dict[str, str], results: list[ExerciseResult],
               isolation: tuple[str, str] = ("none", "student mode")) -> None:
    data = {
        "stage": stage.name,
        "implementation": implementation,
        "sources": sources,
        "isolation": isolation[0],  # bubblewrap, uid or none (grading.sandbox)
        "isolation_reason": isolation[1],
        "score": total(results),
        "max_score": sum(r.exercise.points for r in results),
        "exercises": [
            {
                "id": r.exercise.id,
                "title": r.exercise.title,
                "score": r.score,
                "max_score": r.exercise.points,
                "status": r.status,
                "message": r.message,
                "tests_passed": r.tests_passed,
                "tests_total": r.tests_total,
                "scoring": r.scoring,
                "tests_counted": r.tests_counted,
                "tests_blocked": r.tests_blocked,
                "blocked_by": r.blocked_by,
                "hidden_passed": r.hidden_passed,
                "hidden_total": r.hidden_total,
                "failures": [f.as_json() for f in r.failures],
                "todo": r.todo.as_json() if r.todo else None,
            }
            for r in results
        ],
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
