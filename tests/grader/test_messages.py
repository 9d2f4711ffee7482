"""What the report says about a planted mistake: each message whole, short and on the point, and the most
specific failure first. Most tests grade a copy of the reference with one mistake, in student mode and one
exercise only (a few seconds each); the rest check the pieces those messages are made of."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from grading.plugin import MESSAGE_LINES, message_of
from grading.registry import REPO_ROOT, SOLUTIONS_DIR
from tests import conftest
from tests.grader.test_grading import grade, statuses
from tests.helpers import assert_close, assert_equal


def reference_with(tmp_path: Path, package: str, file: str, old: str, new: str, *, packages=()) -> Path:
    """A submission folder: the reference of ``package`` (and of ``packages``) with ``old`` replaced by ``new``
    in ``file``."""
    root = tmp_path / "submission"
    for name in (*packages, package):
        shutil.copytree(SOLUTIONS_DIR / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    path = root / package / file
    source = path.read_text(encoding="utf-8")
    assert source.count(old) == 1, f"{old!r} is not (once) in the reference {file}"
    path.write_text(source.replace(old, new), encoding="utf-8")
    return root


def student_mode(*args: str) -> tuple[int, str, dict | None]:
    return grade(*args, "--no-authoritative")


# --------------------------------------------------------------------------- a message shown whole
LONG_MESSAGE = "\n".join(f"line {i} of what is wrong" for i in range(1, MESSAGE_LINES + 6))


@pytest.fixture(scope="module")
def exp_raises_a_long_message(tmp_path_factory):
    """Stage 1's Tensor.exp raising a ValueError of 25 lines, graded with -v: (output, JSON, the submission)."""
    tmp_path = tmp_path_factory.mktemp("long")
    raising = f"        raise ValueError({LONG_MESSAGE!r})\n"
    root = reference_with(tmp_path, "stage1_autograd", "tensor.py", "        # BEGIN SOLUTION 1.3: d(e**x)/dx",
                          raising + "        # BEGIN SOLUTION 1.3: d(e**x)/dx")
    code, output, data = student_mode("stage1", "--submission", str(root), "-x", "1.3", "-v")
    assert code == 1 and statuses(data) == {"1.3": "error"}, output
    return output, data, root


def test_a_message_of_several_lines_is_shown_whole_up_to_its_cap(exp_raises_a_long_message):
    output, data, _ = exp_raises_a_long_message
    first_to_fix = output.split("First to work on:", 1)[1].split("\n\n", 1)[0]
    for i in range(1, MESSAGE_LINES + 1):
        assert f"line {i} of what is wrong" in first_to_fix, first_to_fix
    assert f"line {MESSAGE_LINES + 1} of" not in first_to_fix, first_to_fix
    assert "... (5 more lines; add -v for pytest's whole output)" in first_to_fix, first_to_fix
    assert data["exercises"][0]["message"].startswith("ValueError: line 1 of what is wrong\nline 2 of"), data


def test_pytests_own_words_on_a_failed_assert_are_left_out():
    """A bare ``assert x <= bound, msg`` fails with msg and pytest's "assert 0.06 <= 0.05" below it."""
    assert message_of(AssertionError("weight: a value is 0.063\nassert 0.063 <= 0.05\n +  where 0.063 = max()")) == \
        "weight: a value is 0.063"
    assert message_of(AssertionError("assert 0.063 <= 0.05")) == "assert 0.063 <= 0.05"  # nothing else to show
    assert message_of(ValueError("the state does not fit:\n  missing: a.b")) == "the state does not fit:\n  missing: a.b"


def test_verbose_output_names_files_in_the_students_copy_not_the_workspace(exp_raises_a_long_message):
    output, _, root = exp_raises_a_long_message
    verbose = output.split("\n----- ", 1)[1].split("\nScore:", 1)[0]  # the failing tests and pytest's output
    locations = re.findall(r"^(\S+\.py):\d+:", verbose, re.MULTILINE)  # pytest's traceback entries
    assert "tests/stage1/test_unary.py" in locations and "stage1_autograd/tensor.py" in locations, verbose
    assert all(not place.startswith(("/", "..")) for place in locations), locations
    for workspace_word in ("/scratch", "/ws/", "grader-", str(root)):  # the workspace; the copy's absolute path
        assert workspace_word not in verbose, f"{workspace_word!r} in the report:\n{verbose}"


# --------------------------------------------------------------------------- lists and sets
def test_a_wrong_list_of_names_is_reported_as_missing_and_extra(tmp_path):
    """Stage 2's names joined with "_" instead of ".": the message names the differences, not two whole lists."""
    root = reference_with(tmp_path, "stage2_mlp", "nn.py", 'return f"{prefix}.{name}" if prefix else name',
                          'return f"{prefix}_{name}" if prefix else name')
    code, output, data = student_mode("stage2", "--submission", str(root), "-x", "2.1", "--reference-earlier")
    exercise = data["exercises"][0]
    assert code == 1 and exercise["status"] == "failed", output
    message = exercise["message"]
    assert "missing: 'embed.weight'" in message and "extra: 'embed_weight'" in message, message
    assert "first difference at index 1: expected 'embed.weight', got 'embed_weight'" in message, message
    assert "[" not in message.split("named_parameters()", 1)[1], f"a whole list in the message: {message}"


@pytest.mark.parametrize("got, expected, says", [
    (["a", "b", "c"], ["a", "c"], "expected 2 items, got 3; extra: 'b'; first difference at index 1: expected 'c', got 'b'"),
    (["b", "a"], ["a", "b"], "the expected 2 items, in another order; first difference at index 0: expected 'a', got 'b'"),
    ({1, 2}, {2, 3}, "2 items as expected, but not the same ones; missing: 3; extra: 1"),
    ({"w": (2, 3), "b": (3,)}, {"w": (3, 2), "c": (3,)},
     "missing keys: 'c'; extra keys: 'b'; other values at 1 key: 'w': expected (3, 2), got (2, 3)"),
    ([f"layer.{i}" for i in range(12)], [], "expected 0 items, got 12; extra: 'layer.0', 'layer.1', 'layer.2', "
     "'layer.3', 'layer.4', 'layer.5', 'layer.6', 'layer.7' and 4 more; first difference at index 0"),
])
def test_lists_sets_and_dicts_that_differ_are_described_by_their_difference(got, expected, says):
    with pytest.raises(AssertionError) as failure:
        assert_equal(got, expected, "names")
    assert str(failure.value).startswith(f"names: {says}"), str(failure.value)


# --------------------------------------------------------------------------- advice for a near miss only
def addition_test(tmp_path: Path, old: str, new: str, test: str) -> str:
    """pytest's output for one test of test_addition.py on the reference with ``old`` replaced in addition.py
    (pytest directly: the grader runs every test of an exercise, and 3.8's include a minute of training)."""
    root = reference_with(tmp_path, "stage3_transformer", "addition.py", old, new)
    completed = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-q", "--tb=line",
                                f"tests/stage3/test_addition.py::{test}",
                                "--implementation", f"stage3_transformer={root}"],
                               capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    return completed.stdout


TABLE = "        table = F.sinusoidal_positions(source_length(config.digits), d).data\n"


def test_the_float32_table_advice_comes_with_a_near_miss_only(tmp_path):
    in_float64 = ("        angle = np.outer(np.arange(source_length(config.digits)), 10000.0 ** (-np.arange(0, d, 2) / d))\n"
                  "        table = np.empty((len(angle), d))\n"
                  "        table[:, 0::2], table[:, 1::2] = np.sin(angle), np.cos(angle)\n")
    output = addition_test(tmp_path / "near", TABLE, in_float64, "test_logits_loss_and_gradients_match_torch[float64]")
    assert "logits (B, T, vocab)" in output and "float32 table" in output, output
    swapped = TABLE + "        table = table[:, ::-1].copy()\n"
    output = addition_test(tmp_path / "far", TABLE, swapped, "test_logits_loss_and_gradients_match_torch[float64]")
    assert "logits (B, T, vocab)" in output and "float32 table" not in output, output


def gpt2_loader_test(tmp_path: Path, old: str, new: str) -> str:
    """pytest's output for 4.3's GPT-2 loader test on the reference with ``old`` replaced in model.py."""
    root = reference_with(tmp_path, "stage4_gpt", "model.py", old, new)
    completed = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-q", "--tb=line",
                                "tests/stage4/test_model.py::test_from_gpt2_state_dict_matches_pytorch[GPT2Model]",
                                "--implementation", f"stage4_gpt={root}"],
                               capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    return completed.stdout


def test_the_gpt2_loader_advice_comes_only_when_a_plain_gpt_is_right(tmp_path):
    square_ones_kept = ("            if name.endswith(_CONV1D_WEIGHTS):",  # c_proj (C, C) left untransposed
                        "            if name.endswith(_CONV1D_WEIGHTS) and array.shape[0] != array.shape[1]:")
    output = gpt2_loader_test(tmp_path / "loader", *square_ones_kept)
    assert "so the loader is wrong: Conv1D weights are (in, out)" in output, output
    scaled_queries = ("            y = F.fused_attention(q, k, v, dropout_p",
                      "            y = F.fused_attention(2 * q, k, v, dropout_p")
    output = gpt2_loader_test(tmp_path / "model", *scaled_queries)
    assert "the mistake is in the model" in output and "Conv1D" not in output, output


def test_assert_close_adds_the_advice_below_its_limit_only():
    for got, advised in ((1.0 + 1e-8, True), (1.5, False)):
        with pytest.raises(AssertionError) as failure:
            assert_close([got], [1.0], "x", atol=0, rtol=0, small_difference_hint=(1e-6, "round in float32"))
        assert ("(round in float32)" in str(failure.value)) is advised, str(failure.value)


# --------------------------------------------------------------------------- 3.8's training test
def test_the_addition_training_test_names_the_final_loss(tmp_path):
    """A model that learns the training answers by heart and no held-out sum: the failure names the final
    training loss, which with the held-out score picks the lesson's symptom (a decoder that sees the future)."""
    fast_train = ('def train(config: AdditionConfig, log=print):\n'
                  '    for step in (250, 500, 750, 1000):\n'
                  '        log(f"step {step:4d}/1000  loss 0.0100  held-out exact match   0.00% of 200   9.0 steps/s")\n'
                  '    return AdditionModel(config), {"step": [250, 500, 750, 1000], "loss": [0.4, 0.05, 0.02, 0.01],\n'
                  '                                   "held_out_accuracy": [0.0, 0.0, 0.0, 0.0]}\n\n\n'
                  'def original_train(')
    output = addition_test(tmp_path, "def train(", fast_train, "test_a_short_run_learns_to_add_problems_it_never_saw")
    assert "exact match on 200 held-out problems, with a final training loss of 0.010" in output, output
    assert "When it does not learn" in output, output


# --------------------------------------------------------------------------- once per run
def test_the_earlier_stage_paragraph_appears_once_per_run(tmp_path):
    """Stage 3 on skeletons of stages 1 and 2: every test stops at their TODOs. One paragraph names them all;
    -v lists each blocked test without repeating the advice."""
    root = tmp_path / "submission"
    for package in ("stage1_autograd", "stage2_mlp"):
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SOLUTIONS_DIR / "stage3_transformer", root / "stage3_transformer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code, output, data = student_mode("stage3", "--submission", str(root), "-x", "3.1", "-x", "3.3", "-v")
    assert code == 1 and statuses(data) == {"3.1": "failed", "3.3": "failed"}, output
    assert output.count("This stage runs on your") == 1, output
    assert re.search(r"This stage runs on your stage1 \(\S+\) and stage2 \(\S+\)\. Their exercises [\d., ]+ "
                     r"\(stage1\) and 2\.1 \(stage2\) are not done yet", output), output
    assert output.count("Grading this exercise needs it") == 1, output  # in "First to work on" only
    assert output.count("(blocked: 1.7 is not done)") > 10, output


# --------------------------------------------------------------------------- unit tests first
def test_a_unit_tests_failure_is_shown_before_the_integration_tests_it_causes(tmp_path):
    """causal_mask with its diagonal masked: attention's causal tests fail too, and come first in the file; the
    report shows the mask's own test."""
    root = reference_with(tmp_path, "stage3_transformer", "functional.py",
                          "return np.tri(L, L if S is None else S, dtype=bool)",
                          "return np.tri(L, L if S is None else S, -1, dtype=bool)")
    code, output, data = student_mode("stage3", "--submission", str(root), "-x", "3.4", "--reference-earlier")
    exercise = data["exercises"][0]
    assert code == 1 and exercise["status"] == "failed", output
    failing = [f["test"] for f in exercise["failures"]]
    assert failing[0].startswith("test_attention.py::test_causal_mask[") and len(failing) > 1, failing
    assert "test: test_attention.py::test_causal_mask[" in output, output
    assert exercise["todo"]["function"] == "causal_mask", exercise["todo"]


def fake_item(path: str, exercise: str | None, under_test: tuple[str, ...] = (), integration: bool = False):
    marks = {"exercise": [SimpleNamespace(args=(exercise,))] if exercise else [],
             "under_test": [SimpleNamespace(args=under_test)] if under_test else [],
             "integration": [SimpleNamespace(args=())] if integration else []}
    name = f"{path}::test_{len(under_test)}_{integration}"
    return SimpleNamespace(nodeid=name, fspath=str(REPO_ROOT / path), iter_markers=lambda kind: iter(marks[kind]),
                           get_closest_marker=lambda kind: (marks[kind] or [None])[0])


CONFIG = SimpleNamespace(getoption=lambda option: None)


def test_collection_refuses_a_graded_test_that_names_no_function():
    items = [fake_item("tests/stage3/test_attention.py", "3.4", ("causal_mask",)),
             fake_item("tests/stage3/test_attention.py", "3.4")]
    with pytest.raises(pytest.UsageError, match=r"name no function they grade.*\n +tests/stage3/test_attention\.py::"):
        conftest.pytest_collection_modifyitems(CONFIG, items)
    items[1] = fake_item("tests/stage3/test_attention.py", "3.4", ("no_such_function",))
    with pytest.raises(pytest.UsageError, match=r"under_test names \['no_such_function'\]"):
        conftest.pytest_collection_modifyitems(CONFIG, items)


def test_collection_takes_functions_of_every_file_of_the_exercise():
    """3.2's LayerNorm module lives in nn.py, its registry file is functional.py."""
    items = [fake_item("tests/stage3/test_norms.py", "3.2", ("layer_norm", "LayerNorm.forward"))]
    conftest.pytest_collection_modifyitems(CONFIG, items)  # no error


def test_integration_tests_run_after_the_other_tests_of_their_exercise_only():
    first, second = "tests/stage3/test_attention.py", "tests/stage3/test_multihead.py"
    items = [fake_item(first, "3.4", ("attention",), integration=True), fake_item(first, "3.4", ("causal_mask",)),
             fake_item(second, "3.5", ("MultiheadAttention.forward",), integration=True),
             fake_item(second, "3.5", ("MultiheadAttention.__init__",))]
    order = list(items)
    conftest.pytest_collection_modifyitems(CONFIG, items)
    assert items == [order[1], order[0], order[3], order[2]], [i.nodeid for i in items]
