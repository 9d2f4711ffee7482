"""From test outcomes to exercise scores, and from scores to what the student reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from grading.generate import todo_marker
from grading.registry import REPO_ROOT, SOLUTIONS_DIR, Exercise, Stage
from grading.runner import RunResult, TestResult

STATUS_TEXT = {
    "passed": "passed",
    "failed": "failed",
    "not_started": "not started",
    "error": "error",
    "timeout": "timed out",
    "crashed": "crashed",
}
# Problems whose message reads well alone; any other exception is shown as "TypeError: ...".
PLAIN_KINDS = {"AssertionError", "TestTimedOut", "timeout", "crashed", "NotRun", "NoResult", "Skipped"}
# When an exercise's tests went wrong in several ways, the worst names its status.
# A skip is never a pass; it ranks below an unstarted TODO, so an untouched skeleton still reads "not started".
SEVERITY = ["crashed", "timeout", "error", "failed", "not_implemented", "skipped", "not_run"]


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

    @property
    def score(self) -> int:
        return self.exercise.points if self.status == "passed" else 0


def score_exercises(stage: Stage, exercises: list[Exercise], run: RunResult) -> list[ExerciseResult]:
    results = []
    for exercise in exercises:
        tests = [t for t in run.tests.values() if t.exercise == exercise.id]
        passed = sum(t.outcome == "passed" for t in tests)
        broken_imports = [c for c in run.collect_errors if exercise.id in c["exercises"]]
        if broken_imports:
            error = broken_imports[0]["error"]
            status = {"crashed": "crashed", "timeout": "timeout", "TestTimedOut": "timeout"}.get(error["type"], "error")
            message = "its tests could not be imported: " + explain(error, stage)
            results.append(ExerciseResult(exercise, status, 0, len(tests), message, Path(broken_imports[0]["path"]).name,
                                          error.get("detail", ""), import_failed=True))
            continue
        if not tests:
            why = "the grader's time limit for the whole run was reached" if run.run_timed_out else \
                "no test of this exercise ran (see the pytest output with -v)"
            results.append(ExerciseResult(exercise, "timeout" if run.run_timed_out else "error", 0, 0, why))
            continue
        bad = [t for t in tests if t.outcome != "passed"]
        if not bad:
            results.append(ExerciseResult(exercise, "passed", passed, len(tests)))
            continue
        worst = min(bad, key=lambda t: SEVERITY.index(t.outcome))
        status = {"not_implemented": "failed", "not_run": "failed", "skipped": "failed"}.get(worst.outcome, worst.outcome)
        waits_for_earlier = is_earlier_stage_todo(worst.error, stage)
        if worst.outcome == "not_implemented" and passed == 0:
            status = "not_started"  # (or cannot start yet: the message then names the earlier stage's exercise)
        results.append(ExerciseResult(exercise, status, passed, len(tests), explain(worst.error, stage, exercise),
                                      short_test_name(worst), (worst.error or {}).get("detail", ""), waits_for_earlier))
    return results


def short_test_name(test: TestResult) -> str:
    return test.nodeid.split("/")[-1]


def is_earlier_stage_todo(error: dict | None, stage: Stage) -> bool:
    """True for the NotImplementedError of an exercise of an earlier stage (its id is "1.x" in stage 2)."""
    exercise_id = (error or {}).get("exercise")
    return bool(exercise_id) and exercise_id.split(".")[0] != stage.name.removeprefix("stage")


def explain(error: dict | None, stage: Stage, exercise: Exercise | None = None) -> str:
    """One or two plain lines: what went wrong and where (``exercise``: the one whose test failed)."""
    if not error:
        return ""
    kind, message, location = error["type"], error.get("message", ""), error.get("location")
    where = f" ({location['file']}, line {location['line']})" if location else ""
    earlier = location is not None and location["package"] != stage.package
    from_reference = location is not None and Path(location["root"]) == SOLUTIONS_DIR
    if kind == "NotImplementedError":
        if is_earlier_stage_todo(error, stage):
            return (f"{message}{where}. Grading this exercise needs it: finish that exercise, or add "
                    "--reference-earlier to grade this stage on the reference solutions of earlier stages.")
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


def todo_location(root: Path, stage: Stage, exercise: Exercise) -> str | None:
    """``stage1_autograd/tensor.py:57``: where the exercise's first TODO is in the student's file."""
    path = root / stage.package / exercise.file
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    marker = todo_marker(exercise.id)
    for number, line in enumerate(lines, start=1):
        if line.strip().startswith(marker):
            return f"{display_path(path)}:{number}"
    return f"{display_path(path)}"


def display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        try:
            return str(path.relative_to(REPO_ROOT))
        except ValueError:
            return str(path)


def render(stage: Stage, results: list[ExerciseResult], sources: list[str], root: Path, verbose: bool,
           import_problems: list[str], run: RunResult, command_hint: str, earlier_stages_are_students: bool) -> str:
    lines = [f"Scratch to GPT · {stage.name}: {stage.title}", "  " + "; ".join(sources), ""]
    if import_problems:
        lines += ["These files could not be imported, so the tests that need them could not run:"]
        lines += [f"  {p}" for p in import_problems] + [""]
    width = max(len(r.exercise.title) for r in results)
    lines.append(f"  {'id':<5} {'exercise':<{width}}  {'points':>7}   status")
    for r in results:
        tests = f"  ({r.tests_passed}/{r.tests_total} tests)" if r.status not in ("passed", "not_started") and r.tests_total else ""
        points = f"{r.score}/{r.exercise.points}"
        lines.append(f"  {r.exercise.id:<5} {r.exercise.title:<{width}}  {points:>7}   {STATUS_TEXT[r.status]}{tests}")
    score, max_score = sum(r.score for r in results), sum(r.exercise.points for r in results)
    lines.append("")
    failing = [r for r in results if r.status != "passed"]
    if failing:
        first = failing[0]
        if first.import_failed:  # the file is the problem, not this exercise's work: no hint or TODO
            lines.append(f"First to fix: the file that cannot be imported (it stops {first.exercise.id} "
                         f"{first.exercise.title} from being graded)")
        else:
            lines.append(f"First to work on: {first.exercise.id} {first.exercise.title} — {STATUS_TEXT[first.status]}")
        if first.test:
            lines.append(f"  test: {first.test}")
        lines += ["  " + line for line in first.message.splitlines()]
        if not first.import_failed:
            todo = None if root == SOLUTIONS_DIR or first.waits_for_earlier else todo_location(root, stage, first.exercise)
            if todo:
                lines.append(f"  your TODO: {todo}")
            lines.append(f"  hint: {first.exercise.hint}")
        lines.append("")
    if verbose:
        shown = [r for r in failing if r.detail]
        for r in shown:
            lines += [f"----- {r.exercise.id}: {r.test} -----", r.detail.rstrip(), ""]
        if not shown and run.output.strip():
            lines += ["----- pytest output -----", run.output.rstrip(), ""]
    if earlier_stages_are_students and any(r.status in ("failed", "error") for r in failing):
        lines.append("This stage runs on your own earlier stages: a bug there can fail a test here. If an earlier "
                     "stage does not score full marks, compare with --reference-earlier.")
        lines.append("")
    lines.append(f"Score: {score}/{max_score}")
    if not failing:
        lines.append("Every exercise passed." + (" On to the next stage!" if len(results) == len(stage.exercises) else ""))
    elif failing[0].waits_for_earlier:
        lines.append(f"Next: finish the earlier stage's exercise named above, or run `{command_hint} "
                     "--reference-earlier` to grade this stage on the reference earlier stages.")
    else:
        lines.append(f"Next: work on {failing[0].exercise.id}, then run `{command_hint} -x {failing[0].exercise.id}`"
                     + ("" if verbose else " (add -v for pytest's full failure output)") + ".")
    return "\n".join(lines)


def write_json(path: Path, stage: Stage, implementation: str, sources: dict[str, str], results: list[ExerciseResult]) -> None:
    data = {
        "stage": stage.name,
        "implementation": implementation,
        "sources": sources,
        "score": sum(r.score for r in results),
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
            }
            for r in results
        ],
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
