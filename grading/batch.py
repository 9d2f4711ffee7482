"""Grade a whole class: ``python -m grading.batch stage1 submissions/ --out results/``.

Each entry of the submissions folder is one student: a folder, or a ``.zip`` of one (unpacked into a
temporary folder). The stage packages the stage needs are found anywhere inside it (``alice/stage1_autograd``
or ``alice/my-copy/stage1_autograd``), copied into a temporary folder of their own, and graded there by
``python grader.py STAGE --submission DIR --json ...``, several students at once (one per core by default).
The results: ``OUT/<student>.json`` for each student, ``OUT/grades.csv`` (student, id, name, email, score,
max_score, one column per exercise, status, message, seconds, json) and ``OUT/summary.json`` (mean, median, each
exercise's pass rate), also printed. ``--roster`` fills in id, name and email from the class list and adds a
``missing`` row for each student on it without a submission; ``--merge`` updates an existing grades.csv
instead of replacing it.

A broken submission (no stage folder, a damaged zip, a name that is not UTF-8) gets a row saying what is
wrong, and the batch goes on.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from grading import sandbox
from grading.registry import REPO_ROOT, Stage, load_stage, stage_for_command_line, stage_names
from grading.report import tidy

SEARCH_DEPTH = 4  # how deep inside a submission a stage package is looked for
IGNORED_PARTS = {"__MACOSX", "__pycache__", ".git", ".venv", "venv", "node_modules"}
KILL_GRACE_SECONDS = 10.0  # after asking a grader to stop, before it is killed


class BrokenSubmission(Exception):
    """What is wrong with a submission, in words for the instructor."""


class MissingPackage(BrokenSubmission):
    """The submission has no folder (or files) of a stage package it needs."""

    def __init__(self, package: str):
        super().__init__(f"no {package}/ folder in it")
        self.package = package


# ---------------------------------------------------------------------------------------------- finding
def display_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by Python as surrogates) become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def safe_name(name: str) -> str:
    """A name usable as a file name on every system: letters, digits, ``.``, ``-`` and ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", display_name(name)).strip("._")
    return cleaned or "submission"


def find_package(root: Path, package: str, depth: int = SEARCH_DEPTH) -> Path | None:
    """The shallowest folder named ``package`` under ``root`` (``root`` itself counts as depth 0), or None.
    Among folders at the same depth, the first in sorted order: the same answer on every run."""
    level = [root]
    for _ in range(depth + 1):
        found = sorted(p for p in level if p.name == package and p.is_dir() and p != root)
        if found:
            return found[0]
        children = []
        for folder in level:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            children += [e for e in entries if e.is_dir() and not e.is_symlink() and e.name not in IGNORED_PARTS]
        level = children
    return None


def exercise_files(package: str) -> set[str]:
    """The files of ``package`` that hold its exercises (``{"value.py", "tensor.py", ...}``), from its registry."""
    for name in stage_names():
        stage = load_stage(name)
        if stage.package == package:
            return {e.file.split("/")[0] for e in stage.exercises}
    return set()


def find_loose_files(root: Path, package: str, depth: int = SEARCH_DEPTH) -> Path | None:
    """The shallowest folder under ``root`` (itself included) holding every exercise file of ``package`` but
    not inside a folder of that name: the package's files handed in without their folder."""
    wanted = exercise_files(package)
    level = [root]
    for _ in range(depth + 1):
        children = []
        for folder in level:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            if wanted and wanted <= {e.name for e in entries if e.is_file()}:
                return folder
            children += [e for e in entries if e.is_dir() and not e.is_symlink() and e.name not in IGNORED_PARTS]
        level = children
    return None


def unpack_zip(archive: Path, into: Path) -> None:
    """Unpack ``archive`` into ``into``, refusing members with an absolute path or a ``..`` (which would be
    written outside ``into``) and links."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = PurePosixPath(info.filename.replace("\\", "/"))
                if name.is_absolute() or ".." in name.parts or re.match(r"^[A-Za-z]:", info.filename):
                    raise BrokenSubmission(f"the zip holds a file outside its own folder ({info.filename!r}); "
                                           "nothing was unpacked from it")
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise BrokenSubmission(f"the zip holds a symbolic link ({info.filename!r}); nothing was unpacked")
            zf.extractall(into)
    except zipfile.BadZipFile as error:
        raise BrokenSubmission(f"not a readable zip file ({error})") from None
    except OSError as error:
        raise BrokenSubmission(f"the zip could not be unpacked ({error.strerror or error})") from None


def copy_packages(source_root: Path, stage: Stage, packages: list[str], into: Path) -> None:
    """Copy each package found under ``source_root`` into ``into/<package>`` (compiled files left out).
    Raises BrokenSubmission naming the first package that is nowhere to be found."""
    for package in packages:
        found = find_package(source_root, package) or find_loose_files(source_root, package)
        if found is None:
            raise MissingPackage(package)
        try:
            shutil.copytree(found, into / package, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".grader"))
        except (OSError, shutil.Error) as error:
            raise BrokenSubmission(f"its {package}/ folder could not be copied ({error})") from None
        if not (into / package / "__init__.py").exists():  # loose files: the package's __init__ is docs only
            (into / package / "__init__.py").write_text("")


def prepare_source(entry: Path, package: str, scratch: Path) -> Path:
    """The folder to look for the stage packages in: ``entry`` itself, or where its zip was unpacked (a .zip
    entry, or a folder whose only way to the package is a zip inside it)."""
    if entry.is_file():
        if not zipfile.is_zipfile(entry):
            raise BrokenSubmission("not a readable zip file" if entry.name.lower().endswith(".zip")
                                   else "neither a folder nor a .zip file")
        archive = entry
    elif entry.is_dir():
        if find_package(entry, package) or find_loose_files(entry, package):
            return entry
        archives = sorted(p for p in entry.rglob("*") if p.suffix.lower() == ".zip" and p.is_file())
        if not archives:
            return entry
        archive = archives[0]
    else:
        raise BrokenSubmission("neither a folder nor a .zip file")
    unpacked = scratch / "unzipped"
    unpacked.mkdir()
    unpack_zip(archive, unpacked)
    return unpacked


# ---------------------------------------------------------------------------------------------- grading
@dataclass
class Row:
    student: str  # as shown (display_name of the entry, without .zip)
    file_stem: str  # the name of its JSON file in OUT
    status: str  # graded, missing, error
    score: int | float = 0
    max_score: int = 0
    exercises: dict[str, dict] = field(default_factory=dict)  # id -> {"score", "status"}
    message: str = ""
    seconds: float = 0.0


def grader_command(stage: Stage, submission: Path, json_path: Path, options: argparse.Namespace) -> list[str]:
    command = [sys.executable, str(REPO_ROOT / "grader.py"), stage.name, "--submission", str(submission),
               "--json", str(json_path)]
    for exercise in options.exercise:
        command += ["-x", exercise]
    if options.reference_earlier:
        command.append("--reference-earlier")
    if options.timeout is not None:
        command += ["--timeout", str(options.timeout)]
    if options.run_timeout is not None:
        command += ["--run-timeout", str(options.run_timeout)]
    if getattr(options, "extra_tests", None):
        command += ["--extra-tests", str(options.extra_tests)]
    if getattr(options, "partial_credit", False):
        command.append("--partial-credit")
    return command


def run_grader(command: list[str], limit: float) -> tuple[int | None, str]:
    """Run one grader to its end (or stop it after ``limit`` seconds): (exit code or None, its stderr)."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, errors="replace")
    try:
        _, err = process.communicate(timeout=limit)
        return process.returncode, err
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the grader stops its own test process on the way out
        try:
            _, err = process.communicate(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        return None, err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def grade_one(entry: Path, stage: Stage, out: Path, file_stem: str, options: argparse.Namespace) -> Row:
    name = entry.name[:-4] if entry.name.lower().endswith(".zip") and entry.is_file() else entry.name
    row = Row(display_name(name), file_stem, "error", max_score=selected_max(stage, options.exercise))
    started = time.monotonic()
    json_path = out / f"{file_stem}.json"
    packages = [stage.package] + ([] if options.reference_earlier else list(stage.requires))
    with tempfile.TemporaryDirectory(prefix="batch-") as tmp:
        work = Path(tmp) / "submission"
        work.mkdir()
        try:
            copy_packages(prepare_source(entry, stage.package, Path(tmp)), stage, packages, work)
        except BrokenSubmission as problem:
            row.status = "missing" if getattr(problem, "package", None) == stage.package else "error"
            row.message = f"{row.student}: {problem}"
        else:
            limit = (options.run_timeout or 600.0) + 60.0
            code, err = run_grader(grader_command(stage, work, json_path, options), limit)
            try:
                data = json.loads(json_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = None
            if code in (0, 1) and data is not None:
                row.status = "graded"
                row.score, row.max_score = data["score"], data["max_score"]
                row.exercises = {e["id"]: e for e in data["exercises"]}
                problems = [f"{e['id']} {e['status'].replace('_', ' ')}" for e in data["exercises"]
                            if e["status"] != "passed"]
                row.message = ", ".join(problems)
            else:
                last = [line for line in err.splitlines() if line.strip()]
                why = "the grader was stopped at its time limit" if code is None else (last[-1] if last else f"exit code {code}")
                row.message = f"{row.student}: could not be graded: {why}"
    row.seconds = time.monotonic() - started
    if row.status != "graded":
        write_json(json_path, {"student": row.student, "stage": stage.name, "status": row.status,
                               "message": row.message, "score": 0, "max_score": row.max_score, "exercises": []})
    else:
        data["student"], data["status"] = row.student, row.status
        write_json(json_path, data)
    return row


def selected_max(stage: Stage, exercises: list[str]) -> int:
    return sum(e.points for e in stage.exercises if not exercises or e.id in exercises)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- reporting
class Progress:
    """A plain-text progress bar on stderr: redrawn in place on a terminal, one line per student otherwise."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.live = stream.isatty()
        self.lock = threading.Lock()

    def step(self, row: Row) -> None:
        with self.lock:
            self.done += 1
            width = 30
            filled = round(width * self.done / max(self.total, 1))
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
            what = f"{row.student}: {row.score}/{row.max_score}" if row.status == "graded" else f"{row.student}: {row.status}"
            if self.live:
                self.stream.write(f"\r\033[K{bar} {what}" + ("\n" if self.done == self.total else ""))
            else:
                self.stream.write(f"{bar} {what}\n")
            self.stream.flush()


FIXED_COLUMNS = ["student", "id", "name", "email", "score", "max_score", "status", "message", "seconds", "json"]


def csv_row(row: Row, exercise_ids: list[str], person: dict[str, str] | None) -> dict[str, str]:
    """A row of grades.csv, every cell text: one column per exercise, and the roster's id, name and email."""
    person = person or {}
    cells = {"student": row.student, "id": person.get("id", ""), "name": person.get("name", ""),
             "email": person.get("email", ""), "score": str(row.score), "max_score": str(row.max_score),
             "status": row.status, "message": row.message, "seconds": f"{row.seconds:.1f}",
             "json": f"{row.file_stem}.json" if row.file_stem else ""}
    cells.update({i: str(row.exercises[i]["score"]) if i in row.exercises else "" for i in exercise_ids})
    return cells


def columns(exercise_ids: list[str]) -> list[str]:
    return [*FIXED_COLUMNS[:6], *exercise_ids, *FIXED_COLUMNS[6:]]


def read_grades(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The exercise columns and the rows of an existing grades.csv (none when there is no such file)."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except FileNotFoundError:
        return [], []
    if "student" not in header:
        raise BrokenSubmission(f"{path} has no 'student' column, so it is not a grades.csv this tool wrote")
    return [c for c in header if c not in FIXED_COLUMNS], rows


def merged(old: list[dict[str, str]], new: list[dict[str, str]], keep_old: set[str]) -> list[dict[str, str]]:
    """--merge: the rows graded now, and every earlier row of a student not graded now. A student in
    ``keep_old`` (a roster student without a submission this time) keeps an earlier row if there is one."""
    fresh = {r["student"]: r for r in new if not (r["student"] in keep_old and any(o["student"] == r["student"] for o in old))}
    return [r for r in old if r["student"] not in fresh] + list(fresh.values())


def write_csv(path: Path, rows: list[dict[str, str]], exercise_ids: list[str]) -> None:
    header = columns(exercise_ids)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, header, restval="", extrasaction="ignore")
        writer.writeheader()
        for r in sorted(rows, key=lambda r: r["student"]):
            writer.writerow(r)


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def summarise(rows: list[dict[str, str]], stage: Stage, exercise_ids: list[str]) -> dict:
    """Statistics over the rows of grades.csv that were graded; the others are counted by status. An exercise
    counts as passed where it earned all its points."""
    graded = [r for r in rows if r["status"] == "graded"]
    scores = [tidy(number(r["score"]) or 0) for r in graded]
    points = {e.id: e.points for e in stage.exercises}
    return {
        "stage": stage.name,
        "submissions": len(rows),
        "graded": len(graded),
        "missing": sum(r["status"] == "missing" for r in rows),
        "errors": sum(r["status"] == "error" for r in rows),
        "max_score": sum(points[i] for i in exercise_ids if i in points),
        "mean": round(statistics.fmean(scores), 2) if scores else None,
        "median": statistics.median(scores) if scores else None,
        "pass_rate": {i: (round(sum(number(r.get(i) or "") == points.get(i) for r in graded) / len(graded), 3)
                          if graded else None)
                      for i in exercise_ids},
    }


def summary_text(summary: dict, problems: list[Row]) -> str:
    lines = [f"{summary['stage']}: {summary['submissions']} submissions, {summary['graded']} graded, "
             f"{summary['missing']} missing, {summary['errors']} could not be graded"]
    if summary["graded"]:
        lines.append(f"score out of {summary['max_score']}: mean {summary['mean']:g}, median {summary['median']:g}")
        lines.append("passed by: " + ", ".join(f"{i} {rate:.0%}" for i, rate in summary["pass_rate"].items()))
    lines += [f"  {r.message}" for r in problems]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the roster
ROSTER_COLUMNS = ["submission", "id", "name", "email"]


def read_roster(path: Path) -> dict[str, dict[str, str]]:
    """``submission`` (a folder or zip name in the submissions folder, without .zip) -> the student's id, name and
    email. Raises BrokenSubmission, in words for the instructor, for a roster that cannot be used."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = [c.strip() for c in reader.fieldnames or []]
    except OSError as error:
        raise BrokenSubmission(f"--roster {path}: {error.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise BrokenSubmission(f"--roster {path}: not a UTF-8 CSV file ({error})") from None
    missing = [c for c in ROSTER_COLUMNS if c not in header]
    if missing:
        raise BrokenSubmission(f"--roster {path}: no column {', '.join(missing)} (its first line must name the columns "
                               f"{','.join(ROSTER_COLUMNS)}; it names {','.join(header) or 'none'})")
    roster: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        name = row["submission"].removesuffix(".zip")
        if not name:
            raise BrokenSubmission(f"--roster {path}, line {line}: the submission column is empty")
        if name in roster:
            raise BrokenSubmission(f"--roster {path}, line {line}: the submission {name!r} is listed twice")
        roster[name] = {c: row[c] for c in ROSTER_COLUMNS[1:]}
    return roster


def roster_text(unmatched: list[str], absent: list[str]) -> list[str]:
    lines = []
    if unmatched:
        lines.append(f"not in the roster ({len(unmatched)}): " + ", ".join(unmatched))
    if absent:
        lines.append(f"in the roster, with no submission ({len(absent)}, status missing): " + ", ".join(absent))
    return lines


# ---------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m grading.batch",
        description="Grade every submission in a folder (one folder or .zip per student) with this copy's tests.",
        epilog="example:\n  python -m grading.batch stage1 submissions/ --out results/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", help=f"the stage to grade: {', '.join(stage_names())} (or just its number)")
    parser.add_argument("submissions", type=Path, help="a folder holding one folder or .zip per student")
    parser.add_argument("--out", type=Path, required=True, help="where to write the results (created if missing)")
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                        help="submissions graded at once (default: one per core, %(default)s here)")
    parser.add_argument("-x", "--exercise", action="append", default=[], metavar="ID",
                        help="grade only this exercise (repeatable)")
    parser.add_argument("--reference-earlier", action="store_true",
                        help="grade on the reference solutions of the earlier stages instead of the students' own")
    parser.add_argument("--extra-tests", type=Path, metavar="DIR",
                        help="also run the instructors' hidden tests in DIR (see grader.py --help)")
    parser.add_argument("--partial-credit", action="store_true",
                        help="score each exercise by the fraction of its tests that passed (see grader.py --help)")
    parser.add_argument("--roster", type=Path, metavar="CSV",
                        help="the class list, a CSV file with the columns submission,id,name,email: grades.csv gets "
                             "each student's id, name and email, and a row (status missing) for each roster student "
                             "without a submission")
    parser.add_argument("--merge", action="store_true",
                        help="update OUT/grades.csv: the rows of the students graded now change, every other row is "
                             "kept as it was (a roster student without a submission now keeps an earlier row)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="time limit per test (the grader's default)")
    parser.add_argument("--run-timeout", type=float, metavar="SECONDS",
                        help="time limit for one submission (the grader's default, 600 s)")
    parser.add_argument("--allow-unisolated", action="store_true",
                        help="grade even where the submissions' code cannot be kept apart from the tests (isolation "
                             "'none': no bubblewrap and not root; see `python grader.py doctor`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    try:
        stage = stage_for_command_line(options.stage, options.exercise)
    except ValueError as problem:
        parser.error(str(problem))
    if options.jobs < 1:
        parser.error("--jobs must be at least 1")
    if not sys.platform.startswith("linux"):
        parser.error(f"grading submissions runs on Linux only (their code must be kept apart), not on {sys.platform}")
    isolation = sandbox.choose_isolation("auto")
    isolation.release()
    if isolation.level == "none" and not options.allow_unisolated:
        parser.error(f"refusing to grade: {isolation.describe()}. Install bubblewrap or run as root, or pass "
                     "--allow-unisolated to grade anyway")
    print(f"isolation: {isolation.describe()}", file=sys.stderr)
    if not options.submissions.is_dir():
        parser.error(f"{options.submissions} is not a folder")
    if options.extra_tests is not None:
        options.extra_tests = options.extra_tests.resolve()
    try:
        roster = read_roster(options.roster) if options.roster is not None else None
        old_ids, old_rows = read_grades(options.out / "grades.csv") if options.merge else ([], [])
    except BrokenSubmission as problem:
        parser.error(str(problem))
    options.out.mkdir(parents=True, exist_ok=True)
    out = options.out.resolve()
    entries = sorted((e for e in options.submissions.iterdir()
                      if not e.name.startswith(".") and e.resolve() != out), key=lambda e: e.name)
    stems: dict[Path, str] = {}
    taken: set[str] = set()
    for entry in entries:
        base = safe_name(entry.name[:-4] if entry.name.lower().endswith(".zip") else entry.name)
        stem, n = base, 2
        while stem.lower() in taken or stem in ("grades", "summary"):
            stem, n = f"{base}-{n}", n + 1
        taken.add(stem.lower())
        stems[entry] = stem
    exercise_ids = [e.id for e in stage.exercises if not options.exercise or e.id in options.exercise]
    progress = Progress(len(entries))
    rows: list[Row] = []
    pool = ThreadPoolExecutor(max_workers=options.jobs)
    try:
        futures = [pool.submit(grade_one, entry, stage, out, stems[entry], options) for entry in entries]
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            progress.step(row)
    except KeyboardInterrupt:
        # The graders running now got the same Ctrl-C and stop their tests; the others never start.
        pool.shutdown(wait=True, cancel_futures=True)
        print(f"\ninterrupted after {len(rows)} of {len(entries)} submissions; grades.csv not written", file=sys.stderr)
        return 130
    pool.shutdown()
    table = [csv_row(r, exercise_ids, (roster or {}).get(r.student)) for r in rows]
    unmatched, absent = [], []
    if roster is not None:
        unmatched = sorted(r.student for r in rows if r.student not in roster)
        absent = sorted(set(roster) - {r.student for r in rows})
        table += [csv_row(Row(name, "", "missing", max_score=selected_max(stage, options.exercise),
                              message=f"{name}: no submission"), exercise_ids, roster[name]) for name in absent]
    if options.merge:
        table = merged(old_rows, table, set(absent))
        exercise_ids = [e.id for e in stage.exercises if e.id in {*old_ids, *exercise_ids}] + \
                       [i for i in old_ids if i not in {e.id for e in stage.exercises}]
    write_csv(out / "grades.csv", table, exercise_ids)
    summary = summarise(table, stage, exercise_ids)
    write_json(out / "summary.json", summary)
    print(summary_text(summary, sorted((r for r in rows if r.status != "graded"), key=lambda r: r.student)))
    for line in roster_text(unmatched, absent):
        print(line)
    print(f"results: {options.out / 'grades.csv'}, {options.out / 'summary.json'} and one JSON per student")
    return 0


if __name__ == "__main__":
    sys.exit(main())
