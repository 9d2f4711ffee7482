"""The exercise registry: one ``tests/<stage>/exercises.toml`` per stage is the single home of each
exercise's id, title, points, hints and file. The grader, the stage README's exercise table, the skeleton
generator and the test markers are all read from or checked against it."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = REPO_ROOT / "tests"
SOLUTIONS_DIR = REPO_ROOT / "solutions"
DEFAULT_TEST_TIMEOUT = 20.0  # seconds for one test, unless an exercise sets its own
SCORING_RULES = ("all", "fraction")  # all: the points when every test passes; fraction: points x passed / counted


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    points: int
    file: str  # where the TODOs are, relative to the stage package
    hints: tuple[str, ...]  # from "what to think about" to "almost the answer"
    timeout: float = DEFAULT_TEST_TIMEOUT
    torch: bool = False  # its code may import PyTorch (the port); every other exercise is NumPy only
    scoring: str = "all"  # one of SCORING_RULES (grader.py --partial-credit makes every exercise "fraction")

    @property
    def hint(self) -> str:
        """The first hint: the one the score table shows."""
        return self.hints[0]


@dataclass(frozen=True)
class Stage:
    name: str  # "stage1"
    package: str  # "stage1_autograd"
    title: str
    exercises: tuple[Exercise, ...]
    requires: tuple[str, ...] = ()  # earlier stage packages this one imports
    extra_tests: tuple[Path, ...] = ()  # instructors' hidden test folders run with tests/<stage> (--extra-tests)

    @property
    def max_score(self) -> int:
        return sum(e.points for e in self.exercises)

    @property
    def tests_dir(self) -> Path:
        return TESTS_DIR / self.name

    def time_limit(self, exercise_id: str | None, override: float | None = None) -> float:
        """Seconds one test of the exercise may take: ``override`` (the grader's --timeout) if given, else
        what the registry says. The child's alarm and the parent's hard deadline both use this."""
        if override:
            return override
        known = {e.id: e.timeout for e in self.exercises}
        return known.get(exercise_id, DEFAULT_TEST_TIMEOUT)

    def exercise(self, exercise_id: str) -> Exercise:
        for e in self.exercises:
            if e.id == exercise_id:
                return e
        known = ", ".join(e.id for e in self.exercises)
        raise KeyError(f"{self.name} has no exercise {exercise_id!r} (it has {known})")


def stage_names() -> list[str]:
    """The stages that have a registry, in order: ["stage1", "stage2", ...]."""
    return sorted(p.parent.name for p in TESTS_DIR.glob("stage*/exercises.toml"))


def load_stage(name: str) -> Stage:
    path = TESTS_DIR / name / "exercises.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no stage {name!r}: {path.relative_to(REPO_ROOT)} does not exist")
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    exercises = tuple(Exercise(**{**entry, "hints": tuple(entry.get("hints", ()))}) for entry in raw["exercise"])
    empty = [e.id for e in exercises if not e.hints]
    if empty:
        raise ValueError(f"{path}: every exercise needs a non-empty list of hints; {empty} have none")
    wrong = [f"{e.id}: {e.scoring!r}" for e in exercises if e.scoring not in SCORING_RULES]
    if wrong:
        raise ValueError(f"{path}: scoring must be one of {', '.join(map(repr, SCORING_RULES))}, not {'; '.join(wrong)}")
    ids = [e.id for e in exercises]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: an exercise id is used twice: {ids}")
    return Stage(
        name=name,
        package=raw["package"],
        title=raw["title"],
        exercises=exercises,
        requires=tuple(raw.get("requires", ())),
    )


def stage_for_command_line(argument: str, exercise_ids: list[str] = ()) -> Stage:
    """The stage a command-line argument names (``stage1`` or ``1``), after checking that it has every
    exercise of ``exercise_ids``; a ValueError says what is wrong, in words for the command's usage line."""
    name = argument if argument.startswith("stage") else f"stage{argument}"
    if name not in stage_names():
        raise ValueError(f"there is no stage {argument!r}; the stages are {', '.join(stage_names())}")
    stage = load_stage(name)
    unknown = [i for i in exercise_ids if i not in {e.id for e in stage.exercises}]
    if unknown:
        raise ValueError(f"{name} has no exercise {', '.join(unknown)}")
    return stage


def all_stages() -> list[Stage]:
    return [load_stage(name) for name in stage_names()]


def exercises_marked_in(test_file: Path) -> list[str]:
    """The exercise ids a test module's markers name, read from its source without importing it
    (used when importing it failed)."""
    try:
        source = test_file.read_text(encoding="utf-8")
    except OSError:
        return []
    return sorted(set(re.findall(r"""mark\.exercise\(\s*["']([\w.]+)["']""", source)))
