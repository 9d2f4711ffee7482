"""From test outcomes to exercise verdicts: the rules of score_exercises, on outcomes made up here."""

from __future__ import annotations

import pytest

from grading import report
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


def test_a_wrong_value_and_an_exception_rank_alike_so_the_first_to_run_is_shown():
    """The tests run unit tests first (tests/conftest.py): between an assertion and an exception, the earlier one
    is the more specific; a crash or a hang still comes first, wherever it ran."""
    run = runner.RunResult()
    for name, outcome in (("unit", "failed"), ("integration", "error"), ("later", "not_implemented")):
        run.tests[name] = runner.TestResult(name, FIRST.id, outcome, {"type": "AssertionError" if outcome == "failed"
                                            else "ValueError", "message": f"{name} went wrong", "location": None})
    result = score_exercises(STAGE, [FIRST], run)[0]
    assert (result.status, result.test, result.message) == ("failed", "unit", "unit went wrong"), result
    run.tests["hang"] = runner.TestResult("hang", FIRST.id, "timeout", {"type": "timeout", "message": "too slow",
                                                                        "location": None})
    result = score_exercises(STAGE, [FIRST], run)[0]
    assert (result.status, result.test) == ("timeout", "hang"), result


def test_every_test_passing_earns_the_points():
    result = verdict("passed", "passed")
    assert (result.status, result.score) == ("passed", FIRST.points)


def test_every_exercise_has_hints_and_the_table_shows_the_first():
    for exercise in STAGE.exercises:
        assert exercise.hints and exercise.hint == exercise.hints[0]


def graded(outcomes: list[tuple[str, str | None]], partial_credit: bool = False, exercise=FIRST):
    """outcomes: (outcome, the exercise whose TODO it stopped at); a test id with 'hidden' in it is a hidden one."""
    run = runner.RunResult()
    for i, (outcome, todo_of) in enumerate(outcomes):
        error = None if outcome == "passed" else {"type": "NotImplementedError" if todo_of else "AssertionError",
                                                   "message": f"Exercise {todo_of}: ..." if todo_of else "wrong",
                                                   "location": None, "exercise": todo_of}
        node = f"extra/0/test_hidden.py::t{i}" if outcome.endswith("+hidden") else f"tests/stage1/test_x.py::t{i}"
        run.tests[node] = runner.TestResult(node, exercise.id, outcome.removesuffix("+hidden"), error)
    return score_exercises(STAGE, [exercise], run, partial_credit)[0]


def test_partial_credit_is_the_fraction_of_tests_passed_rounded_to_a_tenth():
    outcomes = [("passed", None)] * 3 + [("failed", None)] * 4
    assert graded(outcomes).score == 0  # all or nothing, the registry's default
    result = graded(outcomes, partial_credit=True)
    assert (result.score, result.tests_counted, result.scoring) == (round(FIRST.points * 3 / 7, 1), 7, "fraction")


def test_a_test_stopped_by_another_unfinished_exercise_is_blocked_and_not_counted_with_partial_credit():
    outcomes = [("passed", None)] * 4 + [("not_implemented", "1.2")] * 2
    result = graded(outcomes, partial_credit=True)
    assert (result.tests_blocked, result.blocked_by, result.tests_counted, result.score) == (2, "1.2", 4, FIRST.points)
    assert [f.blocked_by for f in result.failures] == ["1.2", "1.2"]
    assert graded(outcomes).score == 0  # without partial credit the exercise still needs every test
    assert "2 blocked by 1.2" in "\n".join(report.table([result]))


def test_an_exercise_all_blocked_or_not_started_scores_zero_even_with_partial_credit():
    assert graded([("not_implemented", "1.2")] * 3, partial_credit=True).score == 0
    own = graded([("passed", None), ("not_implemented", FIRST.id)], partial_credit=True)
    assert (own.tests_blocked, own.score) == (0, round(FIRST.points / 2, 1))  # its own TODO is not a blocker
    assert graded([("not_implemented", FIRST.id)] * 2, partial_credit=True).status == "not_started"


def test_skipped_and_unrun_tests_count_as_not_passed():
    result = graded([("passed", None), ("skipped", None), ("not_run", None), ("timeout", None)], partial_credit=True)
    assert (result.tests_counted, result.score) == (4, round(FIRST.points / 4, 1))


def test_hidden_tests_are_counted_apart_and_concealed_on_request():
    outcomes = [("passed", None), ("passed+hidden", None), ("failed+hidden", None)]
    result = graded(outcomes)
    assert (result.hidden_passed, result.hidden_total, result.tests_total) == (1, 2, 3)
    assert result.test.startswith("test_hidden.py")  # the instructor's view names it
    run = runner.RunResult()
    for i, (outcome, _) in enumerate(outcomes):
        node = f"extra/0/test_hidden.py::t{i}" if outcome.endswith("+hidden") else f"tests/stage1/test_x.py::t{i}"
        run.tests[node] = runner.TestResult(node, FIRST.id, outcome.removesuffix("+hidden"),
                                            None if outcome.startswith("passed") else {"type": "AssertionError",
                                                                                      "message": "secret", "location": None})
    concealed = score_exercises(STAGE, [FIRST], run, conceal_hidden=True)[0]
    assert (concealed.test, concealed.message) == ("", "hidden tests: 1 of 2 passed")
    assert concealed.only_hidden_failed and [f.hidden for f in concealed.failures] == [True]


def test_the_registry_accepts_only_known_scoring_rules(tmp_path, monkeypatch):
    from grading import registry  # noqa: PLC0415

    source = (registry.TESTS_DIR / "stage1" / "exercises.toml").read_text(encoding="utf-8")
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "exercises.toml").write_text(
        source.replace('id = "1.1"\n', 'id = "1.1"\nscoring = "fraction"\n', 1), encoding="utf-8")
    monkeypatch.setattr(registry, "TESTS_DIR", tmp_path)
    assert registry.load_stage("stage1").exercise("1.1").scoring == "fraction"
    (tmp_path / "stage1" / "exercises.toml").write_text(
        source.replace('id = "1.1"\n', 'id = "1.1"\nscoring = "some"\n', 1), encoding="utf-8")
    with pytest.raises(ValueError, match="scoring must be one of"):
        registry.load_stage("stage1")
