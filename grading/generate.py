"""Generate the student skeletons from the solutions, and check that the committed ones are current.

Solutions are the source. In a solution file, each piece of an exercise sits between two comments:

    # BEGIN SOLUTION 1.3: a hint for the student
    ...reference code...
    # END SOLUTION

The skeleton keeps everything outside these regions (signatures, docstrings, given code) and replaces
each region by a TODO naming the exercise and a ``raise NotImplementedError``. Regions belong inside
function bodies, so that a skeleton module still imports.

    python -m grading.generate            # rewrite stage folders (skeletons + README exercise tables)
    python -m grading.generate --check    # list what is out of date; exit 1 if anything is
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from grading.registry import REPO_ROOT, SOLUTIONS_DIR, Stage, all_stages, load_stage

BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION (?P<id>\d+\.\d+)(?::\s*(?P<hint>.*))?$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
TABLE_BEGIN = "<!-- BEGIN EXERCISE TABLE -->"
TABLE_END = "<!-- END EXERCISE TABLE -->"


class GenerateError(Exception):
    """A solution file whose regions cannot be turned into a skeleton."""


def todo_marker(exercise_id: str) -> str:
    """The comment that opens each TODO in a skeleton; the grader finds it to point at the work."""
    return f"# TODO {exercise_id}"


def skeleton_source(source: str, stage: Stage, where: str) -> tuple[str, set[str]]:
    """The skeleton of one solution file, and the exercise ids whose regions it contains."""
    out: list[str] = []
    found: set[str] = set()
    open_region: tuple[int, str] | None = None
    for lineno, line in enumerate(source.splitlines(keepends=True), start=1):
        begin, end = BEGIN.match(line.rstrip("\n")), END.match(line)
        if begin:
            if open_region:
                raise GenerateError(f"{where}:{lineno}: BEGIN SOLUTION inside the region opened at line {open_region[0]}")
            exercise_id = begin["id"]
            try:
                title = stage.exercise(exercise_id).title
            except KeyError as e:
                raise GenerateError(f"{where}:{lineno}: {e.args[0]}") from None
            if not begin["indent"]:
                raise GenerateError(f"{where}:{lineno}: BEGIN SOLUTION at module level; regions belong inside "
                                    "function bodies, so that the skeleton still imports")
            open_region = (lineno, exercise_id)
            found.add(exercise_id)
            indent = begin["indent"]
            hint = begin["hint"] or title
            out.append(f"{indent}{todo_marker(exercise_id)}: {hint}\n")
            out.append(f'{indent}raise NotImplementedError("Exercise {exercise_id} ({title}) is not done yet")\n')
        elif end:
            if not open_region:
                raise GenerateError(f"{where}:{lineno}: END SOLUTION without a BEGIN SOLUTION")
            open_region = None
        elif not open_region:
            out.append(line)
    if open_region:
        raise GenerateError(f"{where}:{open_region[0]}: BEGIN SOLUTION {open_region[1]} is never closed")
    text = "".join(out)
    try:
        compile(text, where, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise GenerateError(f"{where}: the skeleton would not compile (line {e.lineno}: {e.msg})") from None
    return text, found


def exercise_table(stage: Stage) -> str:
    rows = ["| Exercise | What you build | Points | Where |", "|---|---|---:|---|"]
    rows += [f"| {e.id} | {e.title} | {e.points} | `{stage.package}/{e.file}` |" for e in stage.exercises]
    rows.append(f"| | **Total** | **{stage.max_score}** | |")
    return "\n".join(rows)


def with_exercise_table(readme: str, stage: Stage, where: str) -> str:
    start, stop = readme.find(TABLE_BEGIN), readme.find(TABLE_END)
    if start < 0 or stop < start:
        raise GenerateError(f"{where}: needs the lines {TABLE_BEGIN} and {TABLE_END} for the exercise table")
    return readme[: start + len(TABLE_BEGIN)] + "\n" + exercise_table(stage) + "\n" + readme[stop:]


def expected_files(stage: Stage) -> dict[Path, str]:
    """Every generated file of a stage (path in the student's folder -> content)."""
    solution_dir = SOLUTIONS_DIR / stage.package
    student_dir = REPO_ROOT / stage.package
    files: dict[Path, str] = {}
    regions: dict[str, set[str]] = {}  # exercise id -> files with a region of it
    for path in sorted(solution_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        relative = path.relative_to(solution_dir)
        text, found = skeleton_source(path.read_text(encoding="utf-8"), stage, str(path.relative_to(REPO_ROOT)))
        files[student_dir / relative] = text
        for exercise_id in found:
            regions.setdefault(exercise_id, set()).add(relative.as_posix())
    for e in stage.exercises:
        if e.file not in regions.get(e.id, set()):
            raise GenerateError(f"exercise {e.id} is registered in {e.file}, but solutions/{stage.package}/{e.file} "
                                f"has no BEGIN SOLUTION {e.id} region")
    readme = student_dir / "README.md"
    if readme.is_file():
        files[readme] = with_exercise_table(readme.read_text(encoding="utf-8"), stage, str(readme.relative_to(REPO_ROOT)))
    return files


def stale_files(stage: Stage, expected: dict[Path, str]) -> list[Path]:
    """Python files in the student folder that no solution file generates any more."""
    student_dir = REPO_ROOT / stage.package
    return [p for p in sorted(student_dir.rglob("*.py")) if "__pycache__" not in p.parts and p not in expected]


def check(stages: list[Stage] | None = None) -> list[str]:
    """What is out of date, one line each; empty when every generated file is current."""
    problems = []
    for stage in stages or all_stages():
        expected = expected_files(stage)
        for path, text in expected.items():
            name = path.relative_to(REPO_ROOT)
            if not path.is_file():
                problems.append(f"{name} is missing")
            elif path.read_text(encoding="utf-8") != text:
                problems.append(f"{name} differs from what its solution generates")
        problems += [f"{p.relative_to(REPO_ROOT)} has no solution file" for p in stale_files(stage, expected)]
    return problems


def write(stages: list[Stage] | None = None) -> list[Path]:
    """Regenerate the stage folders; returns the files that changed."""
    changed = []
    for stage in stages or all_stages():
        for path, text in expected_files(stage).items():
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="*", metavar="STAGE", help="stage1, stage2, ... (default: all)")
    parser.add_argument("--check", action="store_true", help="only report what is out of date (exit 1 if anything is)")
    args = parser.parse_args(argv)
    try:
        stages = [load_stage(name) for name in args.stages] or all_stages()
        if args.check:
            problems = check(stages)
            print("\n".join(problems) if problems else "skeletons and exercise tables are up to date")
            return 1 if problems else 0
        changed = write(stages)
        stale = [p for stage in stages for p in stale_files(stage, expected_files(stage))]
    except (GenerateError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in changed:
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    print(f"{len(changed)} file(s) regenerated" if changed else "nothing to regenerate")
    for path in stale:
        print(f"note: {path.relative_to(REPO_ROOT)} has no solution file; delete it if it is no longer used")
    return 0


if __name__ == "__main__":
    sys.exit(main())
