"""The skeleton generator, the registry, and that the committed skeletons are what the solutions generate."""

import ast
import re
import subprocess

import pytest

from grading import generate
from grading.registry import REPO_ROOT, SOLUTIONS_DIR, TESTS_DIR, all_stages, exercises_marked_in, load_stage

STAGE1 = load_stage("stage1")


def test_committed_skeletons_and_exercise_tables_are_current():
    problems = generate.check()
    assert not problems, "run `python -m grading.generate` and commit the result:\n  " + "\n  ".join(problems)


def test_a_region_becomes_a_todo_and_a_raise():
    source = (
        "def f(x):\n"
        '    """Double x."""\n'
        "    # BEGIN SOLUTION 1.3: multiply by two\n"
        "    y = 2 * x\n"
        "    return y\n"
        "    # END SOLUTION\n"
        "\n"
        "GIVEN = 1\n"
    )
    text, found = generate.skeleton_source(source, STAGE1, "example.py")
    assert found == {"1.3"}
    assert text == (
        "def f(x):\n"
        '    """Double x."""\n'
        "    # TODO 1.3: multiply by two\n"
        '    raise NotImplementedError("Exercise 1.3 (Unary functions) is not done yet")\n'
        "\n"
        "GIVEN = 1\n"
    )


@pytest.mark.parametrize(
    "source, complaint",
    [
        ("def f():\n    # BEGIN SOLUTION 1.3\n    return 1\n", "never closed"),
        ("def f():\n    return 1\n    # END SOLUTION\n", "without a BEGIN"),
        ("def f():\n    # BEGIN SOLUTION 9.9\n    return 1\n    # END SOLUTION\n", "no exercise '9.9'"),
        ("# BEGIN SOLUTION 1.3\nX = 1\n# END SOLUTION\n", "module level"),
        ("def f():\n    # BEGIN SOLUTION 1.3\n    # BEGIN SOLUTION 1.3\n    # END SOLUTION\n", "inside the region"),
    ],
)
def test_malformed_regions_are_refused_with_file_and_line(source, complaint):
    with pytest.raises(generate.GenerateError, match=complaint) as error:
        generate.skeleton_source(source, STAGE1, "example.py")
    assert str(error.value).startswith("example.py:")


@pytest.mark.parametrize("stage", all_stages(), ids=lambda s: s.name)
def test_registry_points_add_up_to_100(stage):
    assert stage.max_score == 100, f"{stage.name}: points add up to {stage.max_score}"


@pytest.mark.parametrize("stage", all_stages(), ids=lambda s: s.name)
def test_every_exercise_has_tests(stage):
    marked = {exercise_id for path in (TESTS_DIR / stage.name).glob("test_*.py") for exercise_id in exercises_marked_in(path)}
    missing = [e.id for e in stage.exercises if e.id not in marked]
    assert not missing, f"{stage.name}: exercises without tests: {missing}"


@pytest.mark.parametrize("stage", all_stages(), ids=lambda s: s.name)
def test_stage_has_a_lesson_with_the_exercise_table(stage):
    readme = generate.REPO_ROOT / stage.package / "README.md"
    assert readme.is_file(), f"{stage.package}/README.md (the lesson) is missing"
    assert generate.exercise_table(stage) in readme.read_text(encoding="utf-8")


@pytest.mark.parametrize("stage", all_stages(), ids=lambda s: s.name)
def test_the_lessons_pictures_are_in_the_repository(stage):
    """Every image a lesson shows is a file git keeps (a .gitignore rule once kept them out of every clone)."""
    folder = REPO_ROOT / stage.package
    shown = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (folder / "README.md").read_text(encoding="utf-8"))
    tracked = set(subprocess.run(["git", "ls-files", "-z", stage.package], capture_output=True, text=True,
                                 cwd=REPO_ROOT).stdout.split("\0"))
    for picture in shown:
        path = (folder / picture).resolve()
        assert path.is_file(), f"{stage.package}/README.md shows {picture}, which does not exist"
        if (REPO_ROOT / ".git").exists():
            assert path.relative_to(REPO_ROOT).as_posix() in tracked, f"{picture} is not tracked by git (ignored?)"


TORCH_PORTS = {"solutions/stage4_gpt/torch_gpt.py", "stage4_gpt/torch_gpt.py"}


def imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("folder", [SOLUTIONS_DIR] + [REPO_ROOT / s.package for s in all_stages()],
                         ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_course_code_never_imports_torch(folder):
    """Torch is the tests' yardstick; the code students write and read is NumPy only, except the one file
    that ports the finished GPT to PyTorch (stage 4's torch_gpt.py)."""
    offenders = [f"{path.relative_to(REPO_ROOT)} imports {name}" for path in sorted(folder.rglob("*.py"))
                 if path.relative_to(REPO_ROOT).as_posix() not in TORCH_PORTS
                 for name in imported_modules(path) if name.split(".")[0] == "torch"]
    assert not offenders, offenders
