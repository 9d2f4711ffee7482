"""``python grader.py STAGE``: grade one stage and print a score table."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from grading.registry import REPO_ROOT, SOLUTIONS_DIR, load_stage, stage_names
from grading.report import display_path, explain, render, score_exercises, write_json
from grading.runner import run_stage

DEFAULT_RUN_TIMEOUT = 600.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python grader.py",
        description="Grade a stage of Scratch to GPT: runs its tests against your code and scores each exercise.",
        epilog="examples:\n  python grader.py stage1\n  python grader.py stage1 -x 1.3 -v\n"
               "  python grader.py stage2 --reference-earlier\n  python grader.py stage1 --solutions",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("stage", help=f"the stage to grade: {', '.join(stage_names())} (or just its number)")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--solutions", action="store_true", help="grade the reference solutions in solutions/")
    who.add_argument("--submission", type=Path, metavar="DIR",
                     help="grade the stage folders found in DIR (default: this repository)")
    parser.add_argument("--reference-earlier", action="store_true",
                        help="use the reference solutions for the earlier stages this stage builds on")
    parser.add_argument("-x", "--exercise", action="append", default=[], metavar="ID",
                        help="grade only this exercise, e.g. -x 1.5 (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="add pytest's full failure output")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the result as JSON to PATH")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="time limit per test (default: set per exercise, 20 s for most)")
    parser.add_argument("--run-timeout", type=float, default=DEFAULT_RUN_TIMEOUT, metavar="SECONDS",
                        help=f"time limit for the whole run (default: {DEFAULT_RUN_TIMEOUT:g} s)")
    return parser


class UsageProblem(Exception):
    pass


def choose_homes(stage, args) -> dict[str, Path]:
    """Where each stage package the tests import comes from: the student's folder or solutions/."""
    student_root = (args.submission or REPO_ROOT).resolve()
    packages = [*stage.requires, stage.package]
    homes = {p: (SOLUTIONS_DIR if args.solutions else student_root) for p in packages}
    if args.reference_earlier:
        homes.update({p: SOLUTIONS_DIR for p in stage.requires})
    for package, root in homes.items():
        if not (root / package).is_dir():
            if root == SOLUTIONS_DIR:
                raise UsageProblem(f"this copy of the course has no solutions/{package}/ folder, which "
                                   f"{'--solutions' if args.solutions else '--reference-earlier'} needs")
            raise UsageProblem(f"there is no {package}/ folder in {display_path(root) or '.'}")
    return homes


def describe_sources(homes: dict[str, Path]) -> dict[str, str]:
    return {p: ("solutions" if root == SOLUTIONS_DIR else "student") for p, root in homes.items()}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = args.stage if args.stage.startswith("stage") else f"stage{args.stage}"
    try:
        if name not in stage_names():
            raise UsageProblem(f"there is no stage {args.stage!r}; the stages are {', '.join(stage_names())}")
        stage = load_stage(name)
        for exercise_id in args.exercise:
            if exercise_id not in {e.id for e in stage.exercises}:
                raise UsageProblem(f"{name} has no exercise {exercise_id!r}; "
                                   f"its exercises are {', '.join(e.id for e in stage.exercises)}")
        if args.json and not args.json.parent.is_dir():
            raise UsageProblem(f"--json {args.json}: the folder {args.json.parent} does not exist")
        if (args.timeout is not None and args.timeout <= 0) or args.run_timeout <= 0:
            raise UsageProblem("time limits must be positive numbers of seconds")
        if args.reference_earlier and not stage.requires:
            raise UsageProblem(f"{name} builds on no earlier stage, so --reference-earlier has nothing to replace")
        homes = choose_homes(stage, args)
    except UsageProblem as problem:
        parser.print_usage(sys.stderr)
        print(f"grader.py: error: {problem}", file=sys.stderr)
        return 2

    selected = [e for e in stage.exercises if not args.exercise or e.id in args.exercise]
    sources = describe_sources(homes)
    print(f"Running the {name} tests" + (f" of {', '.join(args.exercise)}" if args.exercise else "") + "...", flush=True)
    run = run_stage(stage, homes, args.exercise, args.timeout, args.run_timeout)
    results = score_exercises(stage, selected, run)

    selected_ids = {e.id for e in selected}
    import_problems = list(dict.fromkeys(explain(c["error"], stage) for c in run.collect_errors
                                         if selected_ids & set(c["exercises"])))
    source_lines = [f"{p} from solutions/{p}/ (reference)" if src == "solutions"
                    else f"{p} from {display_path(homes[p] / p)}/ (your code)" for p, src in sources.items()]
    command = shlex.join(["python", "grader.py", name] + (["--reference-earlier"] if args.reference_earlier else [])
                         + (["--solutions"] if args.solutions else [])
                         + (["--submission", str(args.submission)] if args.submission else []))
    root = homes[stage.package]
    earlier_are_students = any(sources[p] == "student" for p in stage.requires)
    print(render(stage, results, source_lines, root, args.verbose, import_problems, run, command, earlier_are_students))
    if args.json:
        implementation = "solutions" if args.solutions else "student"
        try:
            write_json(args.json, stage, implementation, sources, results)
        except OSError as error:
            print(f"grader.py: error: could not write --json {args.json}: {error.strerror}", file=sys.stderr)
            return 2
    return 0 if all(r.status == "passed" for r in results) else 1


def stop_on_signal(signum, frame):
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so the child process is killed on the way out


def run(argv: list[str] | None = None) -> int:
    """``main`` with the promise that a student never sees a traceback from the grader itself."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_on_signal)
    # Ctrl-C stops grading even when the grader was started with SIGINT ignored (a shell's background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("\ngrading interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the last line of defence, reported in plain words
        print(f"grader.py: internal error: {type(error).__name__}: {error}\n"
              "This is a bug in the grader, not in your code; please report it with the command you ran.",
              file=sys.stderr)
        return 3
