"""``python grader.py``: your progress; ``python grader.py STAGE``: grade one stage and print a score table;
``python grader.py doctor``: check the set-up."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import textwrap
from pathlib import Path

from grading import doctor, progress, sandbox
from grading.registry import REPO_ROOT, SOLUTIONS_DIR, Stage, all_stages, load_stage, stage_names
from grading.source import torch_imports
from grading.report import (EarlierStage, View, display_path, explain, find_todos, is_earlier_stage_todo,
                            reference_available, render, score_exercises, tidy, write_json)
from grading.runner import run_stage
from grading.state import State, age, newest_change, now
from grading.watch import watch

DEFAULT_RUN_TIMEOUT = 600.0
ERROR = "grader.py: error:"  # the one prefix of every usage error, argparse's own included
COMMANDS = {"status": "your progress in every stage (the default)", "doctor": "check the set-up this course needs"}


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"{ERROR} {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python grader.py",
        description="Grade a stage of Scratch to GPT: runs its tests against your code and scores each exercise.",
        epilog="examples:\n  python grader.py                  your progress in every stage\n"
               "  python grader.py stage1\n  python grader.py stage1 -x 1.3 -v\n"
               "  python grader.py stage1 --watch   grade again on every save\n"
               "  python grader.py stage1 --hint 1.7\n  python grader.py doctor\n"
               "  python grader.py stage1 --solutions   (instructors)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("stage", nargs="?", default="status", metavar="STAGE",
                        help=f"the stage to grade: {', '.join(stage_names())} (or just its number); or "
                             + "; ".join(f"{name}: {what}" for name, what in COMMANDS.items()))
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--solutions", action="store_true", help="grade the reference solutions in solutions/")
    who.add_argument("--submission", type=Path, metavar="DIR",
                     help="grade the stage folders found in DIR (default: this repository)")
    parser.add_argument("--authoritative", action=argparse.BooleanOptionalAction, default=None,
                        help="run the tests in a process of their own and the code under test in another, so that "
                             "no code under test can decide a verdict (default: on with --submission, as batch "
                             "grading and Gradescope use it; off for your own folder, which is faster)")
    parser.add_argument("--isolation", choices=("auto", *sandbox.LEVELS), default="auto",
                        help="(instructors, authoritative grading) how the code under test is kept apart: the best this "
                             "machine gives (auto), or insist on one; `python grader.py doctor` says which is possible")
    parser.add_argument("--reference-earlier", action="store_true",
                        help="use the reference solutions for the earlier stages this stage builds on")
    parser.add_argument("-x", "--exercise", action="append", default=[], metavar="ID",
                        help="grade only this exercise, e.g. -x 1.5 (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="list every failing test with its message, and pytest's full output for the first")
    parser.add_argument("--watch", action="store_true",
                        help="grade again each time a file of the stage is saved (Ctrl-C stops)")
    parser.add_argument("--hint", nargs="?", const="", metavar="ID",
                        help="show the next hint for exercise ID (default: the one to work on), one more each time")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the result as JSON to PATH")
    parser.add_argument("--extra-tests", type=Path, metavar="DIR",
                        help="(instructors) also run the hidden tests in DIR, laid out like tests/STAGE/ and marked "
                             "with the stage's exercise ids: they count toward those exercises")
    parser.add_argument("--partial-credit", action="store_true",
                        help="(instructors) score every exercise by the fraction of its tests that passed (points x "
                             "passed / counted, to 0.1), not all or nothing; a test stopped by another unfinished "
                             "exercise is not counted. Without it, tests/STAGE/exercises.toml's scoring decides")
    parser.add_argument("--conceal-hidden", action="store_true",
                        help="(instructors) name no --extra-tests test in the report, only how many of each "
                             "exercise's passed: what a student sees before the grades are published (the JSON keeps "
                             "everything)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="time limit per test (default: set per exercise, 20 s for most)")
    parser.add_argument("--run-timeout", type=float, default=DEFAULT_RUN_TIMEOUT, metavar="SECONDS",
                        help=f"time limit for the whole run (default: {DEFAULT_RUN_TIMEOUT:g} s)")
    parser.add_argument("--memory-limit", type=memory_size, default=sandbox.DEFAULT_MEMORY_LIMIT, metavar="SIZE",
                        help="resident memory the code under test may use, all its processes together, e.g. 600M "
                             f"or 8G (default: {sandbox.describe_bytes(sandbox.DEFAULT_MEMORY_LIMIT)})")
    return parser


def memory_size(text: str) -> int:
    try:
        return sandbox.parse_size(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 600M or 4G") from None


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


def command_for(stage_name: str, args, reference_earlier: bool = False) -> str:
    """The command that grades ``stage_name`` the way this run was asked to (same folders)."""
    return shlex.join(["python", "grader.py", stage_name] + (["--reference-earlier"] if reference_earlier else [])
                      + (["--solutions"] if args.solutions else [])
                      + (["--submission", str(args.submission)] if args.submission else []))


def remembers(stage: Stage, homes: dict[str, Path]) -> bool:
    """Results are remembered (for ``status``) only for this copy's own stage folders."""
    return homes[stage.package] == REPO_ROOT


def check_usage(args) -> Stage | None:
    """The stage to grade (None for status and doctor); raises UsageProblem for what cannot work."""
    if args.stage in COMMANDS:
        extra = [flag for flag, given in [("--solutions", args.solutions), ("--submission", args.submission),
                                          ("--reference-earlier", args.reference_earlier), ("-x", args.exercise),
                                          ("-v", args.verbose), ("--watch", args.watch), ("--hint", args.hint is not None),
                                          ("--json", args.json), ("--extra-tests", args.extra_tests),
                                          ("--partial-credit", args.partial_credit),
                                          ("--conceal-hidden", args.conceal_hidden),
                                          ("--timeout", args.timeout is not None),
                                          ("--run-timeout", args.run_timeout != DEFAULT_RUN_TIMEOUT),
                                          ("--memory-limit", args.memory_limit != sandbox.DEFAULT_MEMORY_LIMIT)] if given]
        if extra:
            raise UsageProblem(f"`{args.stage}` takes no options ({', '.join(extra)} given); they are for grading a stage")
        return None
    name = args.stage if args.stage.startswith("stage") else f"stage{args.stage}"
    if name not in stage_names():
        raise UsageProblem(f"there is no stage {args.stage!r}; the stages are {', '.join(stage_names())}, "
                           f"and the commands {', '.join(COMMANDS)}")
    stage = load_stage(name)
    for exercise_id in args.exercise + ([args.hint] if args.hint else []):
        if exercise_id not in {e.id for e in stage.exercises}:
            raise UsageProblem(f"{name} has no exercise {exercise_id!r}; "
                               f"its exercises are {', '.join(e.id for e in stage.exercises)}")
    if args.hint is not None and (args.watch or args.exercise or args.json):
        raise UsageProblem("--hint only shows a hint; run it without -x, --watch or --json")
    if args.json and not args.json.parent.is_dir():
        raise UsageProblem(f"--json {args.json}: the folder {args.json.parent} does not exist")
    if (args.timeout is not None and args.timeout <= 0) or args.run_timeout <= 0:
        raise UsageProblem("time limits must be positive numbers of seconds")
    if args.extra_tests is not None:
        if not args.extra_tests.is_dir():
            raise UsageProblem(f"--extra-tests {args.extra_tests}: there is no such folder")
        stage = dataclasses.replace(stage, extra_tests=(args.extra_tests.resolve(),))
    if args.reference_earlier and not stage.requires:
        raise UsageProblem(f"{name} builds on no earlier stage, so --reference-earlier has nothing to replace")
    return stage


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        stage = check_usage(args)
        homes = choose_homes(stage, args) if stage is not None and args.hint is None else {}
        if stage is not None and args.hint is None and is_authoritative(args):
            if not sys.platform.startswith("linux"):
                raise UsageProblem(f"authoritative grading (--submission, --authoritative) runs on Linux only, not on "
                                   f"{sys.platform}; grade your own folder without them, or grade submissions on Linux")
            choose_isolation(args).release()  # the level asked for can be had (each run takes it again)
    except UsageProblem as problem:
        parser.print_usage(sys.stderr)
        print(f"{ERROR} {problem}", file=sys.stderr)
        return 2
    if stage is None:
        return doctor.run() if args.stage == "doctor" else progress.show(State())
    if args.hint is not None:
        return show_hint(stage, args.hint, State())
    missing = doctor.missing_requirements()
    if missing:  # the tests would fail to import, file by file, with nothing of the student's code graded
        print(f"{ERROR} this Python ({sys.executable}) does not have {', '.join(missing)}, which the tests need. "
              "Install the course's requirements, in the virtual environment of the README's quick start: "
              "`python -m pip install -r requirements.txt`. `python grader.py doctor` checks the whole set-up.",
              file=sys.stderr)
        return 2
    if args.watch:
        return watch(lambda: grade(stage, args, homes), [homes[p] / p for p in homes])
    code, text = grade(stage, args, homes)
    print(text)
    return code


def grade(stage: Stage, args, homes: dict[str, Path]) -> tuple[int, str]:
    """Grade once: (exit code, the report). Remembers the results when they are this copy's own."""
    selected = [e for e in stage.exercises if not args.exercise or e.id in args.exercise]
    sources = describe_sources(homes)
    remember = remembers(stage, homes)
    state = State()
    started_at = now()
    changed_at = newest_change(homes[stage.package] / stage.package) if remember else 0.0
    print(f"Running the {stage.name} tests" + (f" of {', '.join(args.exercise)}" if args.exercise else "") + "...",
          flush=True)
    isolation = choose_isolation(args)
    try:
        run = run_stage(stage, homes, args.exercise, args.timeout, args.run_timeout, args.memory_limit, isolation)
    finally:
        if isolation is not None:
            isolation.release()
    results = score_exercises(stage, selected, run, args.partial_credit, args.conceal_hidden)
    find_todos(stage, results, homes, run)

    if remember:
        state.record(stage, results, started_at, changed_at)
        state.save()
    view = View(
        sources=[f"{p} from solutions/{p}/ (reference)" if src == "solutions"
                 else f"{p} from {display_path(homes[p] / p)}/ (your code)" for p, src in sources.items()],
        command=command_for(stage.name, args, args.reference_earlier),
        hint_command=f"python grader.py {stage.name} --hint",
        verbose=args.verbose,
        import_problems=import_problems(stage, selected, run),
        partial=len(selected) < len(stage.exercises),
        selected=list(dict.fromkeys(args.exercise)),
        earlier_are_students=any(sources[p] == "student" for p in stage.requires),
        reference_earlier=reference_available(stage) and not args.reference_earlier and not args.solutions,
        hints_shown={e.id: state.hints_shown(e.id) for e in stage.exercises},
        isolation=isolation.describe() if isolation is not None else None,
        warnings=torch_warnings(stage, homes),
        conceal_hidden=args.conceal_hidden,
        copies=(REPO_ROOT, *{root for root in homes.values() if root != SOLUTIONS_DIR}),
    )
    if all(r.status == "passed" for r in results):
        plan_next(stage, results, view, state if remember else None, args)
    view.earlier = earlier_stages(stage, run, homes, state, args)
    text = render(stage, results, run, view)
    if args.json:
        implementation = "solutions" if args.solutions else "student"
        try:
            write_json(args.json, stage, implementation, sources, results,
                       (isolation.level, isolation.reason) if isolation is not None
                       else ("none", "not authoritative: the tests and the code under test share one process"))
        except OSError as error:
            print(f"{ERROR} could not write --json {args.json}: {error.strerror}", file=sys.stderr)
            return 2, text
    return (0 if all(r.status == "passed" for r in results) else 1), text


def torch_warnings(stage: Stage, homes: dict[str, Path]) -> list[str]:
    """The student's files that import PyTorch outside the exercises that port to it: the course is NumPy, and
    authoritative grading has no PyTorch there (it passes here only because your tests run beside it)."""
    allowed = {(s.package, e.file) for s in all_stages() for e in s.exercises if e.torch}
    warnings = []
    for package, root in homes.items():
        if root == SOLUTIONS_DIR:
            continue
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root / package).as_posix()
            for line in ([] if (package, relative) in allowed else torch_imports(path)):
                warnings.append(f"{display_path(path)}, line {line}, imports torch: the exercises are NumPy only, and "
                                "when your work is graded for the record (authoritative grading) torch is not there")
    return warnings


def is_authoritative(args) -> bool:
    return args.authoritative if args.authoritative is not None else args.submission is not None


def choose_isolation(args) -> sandbox.Isolation | None:
    """The isolation level of an authoritative run (None in student mode); raises UsageProblem if the level
    asked for cannot be had here."""
    if not is_authoritative(args):
        return None
    try:
        return sandbox.choose_isolation(args.isolation)
    except RuntimeError as error:
        raise UsageProblem(f"--isolation {args.isolation}: {error}") from None


def import_problems(stage: Stage, selected, run) -> list[str]:
    """One line per file that could not be imported. A module refused because its import hung earlier in
    the run is not listed again when the hang itself is."""
    ids = {e.id for e in selected}
    errors = [c["error"] for c in run.collect_errors if ids & set(c["exercises"])]
    first_hand = [e for e in errors if e["type"] != "ImportBlocked"]
    return list(dict.fromkeys(explain(e, stage) for e in (first_hand or errors)))


def plan_next(stage: Stage, results, view: View, state: State | None, args) -> None:
    """After a run in which everything passed: the exercise to do next, or the next stage."""
    if view.partial:
        # The stage's first exercise not passed when last graded (an earlier one skipped comes first); with no
        # results remembered besides this run's, simply the one after the exercises just graded.
        graded = {r.exercise.id for r in results}
        known = {i: r for i, r in (state.last_results(stage) if state else {}).items() if i not in graded}
        if known:
            order = stage.exercises
        else:
            ids = [e.id for e in stage.exercises]
            last = max(ids.index(i) for i in graded)
            order = stage.exercises[last + 1:] + stage.exercises[:last + 1]
        todo = [e for e in order if e.id not in graded and known.get(e.id, {}).get("status") != "passed"]
        view.next_exercise = todo[0] if todo else None
        view.rest_known_passed = not todo
        return
    names = stage_names()
    position = names.index(stage.name)
    if position + 1 < len(names):
        try:
            view.next_stage = load_stage(names[position + 1])
        except (OSError, ValueError, KeyError, TypeError):  # a registry being written; say nothing of it
            return
        view.next_stage_command = command_for(view.next_stage.name, args)


def earlier_stages(stage: Stage, run, homes: dict[str, Path], state: State, args) -> list[EarlierStage]:
    """What this run says about each earlier stage it ran on the student's code of: the exercises its tests
    ran into unfinished, and that stage's score when it was last graded (this copy's folders only)."""
    found = []
    errors = [t.error for t in run.tests.values() if t.error] + [c["error"] for c in run.collect_errors]
    for package in stage.requires:
        if homes[package] == SOLUTIONS_DIR:
            continue
        name = package.split("_")[0]  # "stage1_autograd" is stage1's package
        if name not in stage_names():
            continue
        earlier = load_stage(name)
        number = earlier.name.removeprefix("stage")
        hit = {e["exercise"] for e in errors if is_earlier_stage_todo(e, stage) and e["exercise"].split(".")[0] == number}
        needed = [e.id for e in earlier.exercises if e.id in hit]
        score = "" if homes[package] != REPO_ROOT else None
        if homes[package] == REPO_ROOT:
            last = state.last_results(earlier)
            if last:
                points = tidy(sum(r["score"] for r in last.values()))
                when = state.graded_at(earlier)
                notes = ([age(now() - when)] if when else []) + (
                    [f"{len(last)} of its {len(earlier.exercises)} exercises graded"]
                    if len(last) < len(earlier.exercises) else [])
                score = f"{points}/{earlier.max_score} when last graded" + (f" ({'; '.join(notes)})" if notes else "")
        found.append(EarlierStage(earlier, f"{display_path(homes[package] / package)}/", needed, score,
                                  command_for(earlier.name, args)))
    return found


def show_hint(stage: Stage, exercise_id: str, state: State) -> int:
    """The hints of one exercise unlock one at a time: each call shows those seen so far and one more."""
    if not exercise_id:
        last = state.last_results(stage)
        exercise_id = next((e.id for e in stage.exercises if last.get(e.id, {}).get("status") != "passed"),
                           stage.exercises[0].id)
    exercise = stage.exercise(exercise_id)
    total, shown = len(exercise.hints), min(state.hints_shown(exercise.id), len(exercise.hints))
    new = shown < total
    if new:
        shown += 1
        state.show_hints(exercise.id, shown)
        state.save()
    print(f"{exercise.id} {exercise.title}: hint {shown} of {total}")
    for number, hint in enumerate(exercise.hints[:shown], start=1):
        label = f"  {number}. " + ("(new) " if new and number == shown else "")
        print(textwrap.fill(hint, width=110, initial_indent=label, subsequent_indent=" " * 5))
    remaining = total - shown
    command = f"python grader.py {stage.name} --hint {exercise.id}"
    if remaining:
        print(f"{remaining} more hint{'s' if remaining > 1 else ''} for {exercise.id}, each closer to the answer: "
              f"run `{command}` again for the next.")
    else:
        print(f"That is the last hint for {exercise.id}: all {total} are shown above.")
    return 0


def stop_on_signal(signum, frame):
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so the child process is killed on the way out


def run(argv: list[str] | None = None) -> int:
    """``main`` with the promise that a student never sees a traceback from the grader itself."""
    for stream in (sys.stdout, sys.stderr):  # a console that cannot show a character (Windows' cp1252) shows "?"
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace")
    for name in ("SIGTERM", "SIGHUP"):  # no SIGHUP on Windows
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop_on_signal)
    # Ctrl-C stops grading even when the grader was started with SIGINT ignored (a shell's background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("\ngrading interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`python grader.py ... | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:  # noqa: BLE001 - the last line of defence, reported in plain words
        print(f"grader.py: internal error: {type(error).__name__}: {error}\n"
              "This is a bug in the grader, not in your code; please report it with the command you ran.",
              file=sys.stderr)
        return 3
