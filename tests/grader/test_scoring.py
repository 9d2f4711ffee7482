"""From test outcomes to exercise verdicts: the rules of score_exercises, on outcomes made up here."""

from __future__ import annotations

from grading.registry import load_stage
from grading.report import score_exercises
from grading import runner

STAGE = load_stage("stage1")
FIRST = STAGE.exercises[0]


def verdict(*outcomes: str):
    run = runner.RunResult()
    for i, outcome in enumerate(outcomes):
        error = None if outcome == "passed" else {"type": "Skipped" if outcome == "skipped" else "NotImplementedError",
                                                   "message": outcome, "location": None}
        run.tests[f"t{i}"] = runner.TestResult(f"t{i}", FIRST.id, outcome, error)
    return score_exercises(STAGE, [FIRST], run)[0]


def test_a_skipped_test_never_counts_as_passed():
    result = verdict("passed", "passed", "skipped")
    assert (result.status, result.score, result.tests_passed) == ("failed", 0, 2)
    assert "skipped" in result.message


def test_an_exercise_whose_tests_all_skip_fails():
    result = verdict("skipped", "skipped")
    assert (result.status, result.score, result.tests_passed) == ("failed", 0, 0)


def test_a_skip_beside_unstarted_todos_still_reads_not_started():
    result = verdict("not_implemented", "skipped", "not_implemented")
    assert (result.status, result.score) == ("not_started", 0)


def test_every_test_passing_earns_the_points():
    result = verdict("passed", "passed")
    assert (result.status, result.score) == ("passed", FIRST.points)


def test_every_exercise_has_hints_and_the_table_shows_the_first():
    for exercise in STAGE.exercises:
        assert exercise.hints and exercise.hint == exercise.hints[0]
