"""The student edition: ``python -m grading.export DEST`` writes this course without its reference.

It takes the files of this repository's last commit and writes the edition into ``DEST``, a new folder, as a
fresh git repository with one commit (none of this repository's history, which holds the solutions):

- ``--through stage2``: only stages 1 and 2 (their folders and tests; no file of a later stage, which could
  answer an earlier exercise: stage 3's given ``functional.py`` holds a complete ``cross_entropy``).
  ``--add stage3`` later adds the next stage to an existing edition as one new commit, for students to
  ``git pull``, once the earlier stages' deadlines have passed.
- ``--with-reference stage1``: the reference of stages 1..1 goes in (``solutions/stage1_autograd/``), where
  ``--reference-earlier`` finds it; the reference of later stages never does.
- ``--hints N``: each exercise ships at most its first N hints (the last is close to the code).

Never in it: ``tests/grader/`` and ``.ci/`` and ``.github/`` (the course's self-test, which needs the whole
reference), a file that imports a stage package the edition does not have (a benchmark of a later stage),
and what any ``--exclude`` names. Its Markdown files are edited for it: a block between
``<!-- BEGIN EDITION: X -->`` and ``<!-- END EDITION -->`` is kept only where X holds (``instructors``:
never; ``reference``: the edition has a reference; ``stage3``: it has stage 3), and a table row naming the
folder of a stage it does not have is left out.

It then checks the edition as a student would find it: ``python grader.py stage1`` there grades every
exercise "not started", 0 points; every link in its Markdown files leads to a file it has; and every
``python grader.py`` and ``python -m pytest`` command its README names runs to a plain end (exit code 0,
1 for a grade below full marks, or a one-line message), never a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from grading.gradescope import working_files
from grading.registry import REPO_ROOT, SOLUTIONS_DIR, Stage, all_stages, stage_names

ALWAYS_LEFT_OUT = ("tests/grader", ".ci", ".github")  # the course's self-test and its CI, which need the reference
COMMIT_MESSAGE = "Scratch to GPT: the course, ready to start"
FALLBACK_IDENTITY = {"GIT_AUTHOR_NAME": "Scratch to GPT", "GIT_AUTHOR_EMAIL": "course@localhost",
                     "GIT_COMMITTER_NAME": "Scratch to GPT", "GIT_COMMITTER_EMAIL": "course@localhost"}
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
EDITION_BLOCK = re.compile(r"^[ \t]*<!-- BEGIN EDITION: ([\w-]+) -->[ \t]*\n(.*?)^[ \t]*<!-- END EDITION -->[ \t]*\n",
                           re.S | re.M)
STAGE_IMPORT = re.compile(r"^\s*(?:from|import)\s+(stage\d+_\w+)", re.M)
CHECK_TIMEOUT = 600.0
COMMAND_TIMEOUT = 300.0  # one README command, in the check


@dataclass
class Edition:
    """Which part of the course an edition holds."""
    through: int  # stages 1..through
    reference_through: int = 0  # the reference of stages 1..reference_through (0: none)
    hints: int | None = None  # at most this many hints per exercise (None: all)
    excluded: list[str] = field(default_factory=list)

    def stages(self) -> list[Stage]:
        return [s for s in all_stages() if number(s) <= self.through]

    def later_packages(self) -> set[str]:
        return {s.package for s in all_stages() if number(s) > self.through}

    def keeps(self, name: str) -> bool:
        """Whether the file ``name`` (relative to the repository root) goes into the edition."""
        parts = name.split("/")
        if any(name == p or name.startswith(p.strip("/") + "/") for p in (*ALWAYS_LEFT_OUT, *self.excluded)):
            return False
        if parts[0] == SOLUTIONS_DIR.name:
            released = {s.package for s in all_stages() if number(s) <= self.reference_through}
            return len(parts) > 2 and parts[1] in released
        if parts[0] in self.later_packages():
            return False
        if parts[0] == "tests" and len(parts) > 2 and parts[1] in {s.name for s in all_stages()}:
            return int(parts[1].removeprefix("stage")) <= self.through
        return True

    def edit(self, name: str, data: bytes) -> bytes | None:
        """The file as the edition has it (None: leave it out)."""
        if name.endswith(".py") and not name.startswith(SOLUTIONS_DIR.name + "/"):
            if set(STAGE_IMPORT.findall(data.decode("utf-8", "replace"))) & self.later_packages():
                return None  # e.g. a benchmark of a stage not handed out yet
        if name.endswith(".md"):
            return self.edit_markdown(data.decode("utf-8")).encode("utf-8")
        if self.hints is not None and re.fullmatch(r"tests/stage\d+/exercises\.toml", name):
            return cut_hints(data.decode("utf-8"), self.hints, name).encode("utf-8")
        return data

    def edit_markdown(self, text: str) -> str:
        def block(match: re.Match) -> str:
            what, body = match.group(1), match.group(2)
            keep = {"instructors": False, "reference": self.reference_through > 0}.get(what)
            if keep is None and re.fullmatch(r"stage\d+", what):
                keep = int(what.removeprefix("stage")) <= self.through
            if keep is None:
                raise ExportProblem(f"an edition block names {what!r}; it can be instructors, reference or stageN")
            return body if keep else ""
        text = EDITION_BLOCK.sub(block, text)
        later = self.later_packages()
        lines = [line for line in text.splitlines(keepends=True)
                 if not (line.lstrip().startswith("|") and any(f"{p}/" in line for p in later))]
        return "".join(lines)


def number(stage: Stage) -> int:
    return int(stage.name.removeprefix("stage"))


def cut_hints(text: str, keep: int, name: str) -> str:
    """An exercises.toml whose every ``hints = [...]`` array holds at most its first ``keep`` hints."""
    wanted = [e["hints"][:keep] for e in tomllib.loads(text)["exercise"]]
    arrays = iter(wanted)

    def shorter(match: re.Match) -> str:
        return "hints = [\n" + "".join(f"    {json.dumps(h, ensure_ascii=False)},\n" for h in next(arrays)) + "]\n"
    edited = re.sub(r"^hints = \[\n.*?^\]\n", shorter, text, flags=re.S | re.M)
    if [e["hints"] for e in tomllib.loads(edited)["exercise"]] != wanted:
        raise ExportProblem(f"{name}: its hints could not be cut to {keep} (write each list as `hints = [`, one hint "
                            "a line, then `]` on a line of its own)")
    return edited


class ExportProblem(Exception):
    pass


def last_commit() -> dict[str, tuple[bytes, int]]:
    """The files of this repository's last commit (HEAD), name -> (bytes, mode): the course as committed,
    whatever is being edited in the working tree. Without git, every file of this copy as it is now."""
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=REPO_ROOT, capture_output=True)
    except OSError:
        archive = None
    files = {}
    if archive is not None and archive.returncode == 0:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    files[member.name] = (tar.extractfile(member).read(), 0o755 if member.mode & 0o111 else 0o644)
        return files
    for name in working_files(REPO_ROOT):
        path = REPO_ROOT / name
        files[name] = (path.read_bytes(), 0o755 if os.access(path, os.X_OK) else 0o644)
    return files


def edition_files(edition: Edition) -> dict[str, tuple[bytes, int]]:
    files = {}
    for name, (data, mode) in last_commit().items():
        if edition.keeps(name):
            edited = edition.edit(name, data)
            if edited is not None:
                files[name] = (edited, mode)
    return files


def write_files(dest: Path, files: dict[str, tuple[bytes, int]]) -> None:
    for name, (data, mode) in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)


def uncommitted_changes() -> list[str]:
    """Tracked files changed since the last commit (what the edition does not contain)."""
    try:
        done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                              capture_output=True, text=True)
    except OSError:
        return []
    return [line[3:] for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def git(dest: Path, *arguments: str) -> None:
    env = dict(os.environ)
    try:
        known = subprocess.run(["git", "config", "user.email"], cwd=dest, capture_output=True, text=True).stdout.strip()
    except OSError:
        known = ""
    if not known:
        env.update({k: v for k, v in FALLBACK_IDENTITY.items() if k not in env})
    try:
        done = subprocess.run(["git", *arguments], cwd=dest, capture_output=True, text=True, env=env)
    except OSError as error:
        raise ExportProblem(f"git could not be run ({error.strerror}); the student edition is a git repository") from None
    if done.returncode != 0:
        raise ExportProblem(f"`git {' '.join(arguments)}` failed in {dest}: {done.stderr.strip()}")


def broken_links(root: Path) -> list[str]:
    """Links in the Markdown files under ``root`` that lead to no file or folder there (web links and
    anchors are not checked)."""
    problems = []
    for page in sorted(root.rglob("*.md")):
        if ".git" in page.relative_to(root).parts:
            continue
        for target in MARKDOWN_LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = target.split("#")[0]
            if path and not (page.parent / path).exists():
                problems.append(f"{page.relative_to(root).as_posix()}: a link to {target}, which this copy does not have")
    return problems


def check_fresh_copy(dest: Path, stage: str = "stage1") -> list[str]:
    """Grade ``stage`` in the new copy as a student would: what is wrong, if anything (the empty list when it
    grades 0 points with every exercise "not started")."""
    had_state = (dest / ".grader").exists()
    with tempfile.TemporaryDirectory(prefix="export-check-") as tmp:
        json_path = Path(tmp) / "result.json"
        try:
            done = subprocess.run([sys.executable, "grader.py", stage, "--json", str(json_path)], cwd=dest,
                                  capture_output=True, text=True, errors="replace", timeout=CHECK_TIMEOUT)
        except subprocess.TimeoutExpired:
            return [f"`python grader.py {stage}` took longer than {CHECK_TIMEOUT:g} s"]
        finally:
            if not had_state:
                shutil.rmtree(dest / ".grader", ignore_errors=True)  # the edition starts with no progress recorded
        try:
            result = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            last = done.stderr.strip().splitlines()
            return [f"`python grader.py {stage}` wrote no result (exit code {done.returncode}"
                    + (f": {last[-1]}" if last else "") + ")"]
    problems = []
    if done.returncode != 1:
        problems.append(f"`python grader.py {stage}` exited with code {done.returncode}, not 1")
    if "Traceback" in done.stdout + done.stderr:
        problems.append(f"`python grader.py {stage}` printed a Python traceback")
    if result["score"] != 0:
        problems.append(f"`python grader.py {stage}` gave {result['score']}/{result['max_score']}, not 0")
    problems += [f"exercise {e['id']} is {e['status']!r}, not 'not_started': {e['message']}"
                 for e in result["exercises"] if e["status"] != "not_started"]
    return problems


def released_stages(dest: Path) -> list[int]:
    """The stages an existing edition has (by their registries)."""
    return sorted(int(p.parent.name.removeprefix("stage")) for p in dest.glob("tests/stage*/exercises.toml"))


def check_edition(dest: Path, check: bool) -> list[str]:
    problems = broken_links(dest)
    if check:
        problems += check_fresh_copy(dest, stage_names()[0])
        problems += check_readme_commands(dest)
    return problems


def export(dest: Path, edition: Edition, check: bool = True) -> list[str]:
    """Write the student edition to ``dest``; returns the problems the checks found (empty when none)."""
    dest = dest.resolve()
    if dest == REPO_ROOT or REPO_ROOT in dest.parents:
        raise ExportProblem(f"{dest} is inside this repository; choose a folder outside it")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportProblem(f"{dest} already exists and is not an empty folder (to add a stage to it: --add STAGE)")
    files = edition_files(edition)
    if not files:
        raise ExportProblem("there is no file to export here")
    dest.mkdir(parents=True, exist_ok=True)
    write_files(dest, files)
    git(dest, "init", "-q")
    git(dest, "add", "--all")
    git(dest, "commit", "-q", "-m", COMMIT_MESSAGE)
    return check_edition(dest, check)


def add_stage(dest: Path, edition: Edition, check: bool = True) -> tuple[list[str], list[str]]:
    """Add stage ``edition.through`` to the edition in ``dest`` as one new commit. Returns (the files it
    changed that the edition had before, the problems the checks found)."""
    dest = dest.resolve()
    if not (dest / ".git").is_dir() or not released_stages(dest):
        raise ExportProblem(f"{dest} is not a student edition (a git repository with tests/stage1/); write one "
                            "first with --through")
    have = released_stages(dest)
    if edition.through != have[-1] + 1:
        raise ExportProblem(f"{dest} has stages {', '.join(map(str, have))}: the next to add is "
                            f"stage{have[-1] + 1}, not stage{edition.through}")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=dest, capture_output=True, text=True).stdout
    if status.strip():
        raise ExportProblem(f"{dest} has changes not committed; commit or remove them first")
    files = edition_files(edition)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=dest, capture_output=True, text=True).stdout.split("\0")
    tracked = [n for n in tracked if n]
    changed = [n for n in tracked if n in files and (dest / n).read_bytes() != files[n][0]]
    for name in tracked:
        if name not in files:
            (dest / name).unlink()
            changed.append(name)
    write_files(dest, files)
    git(dest, "add", "--all")
    git(dest, "commit", "-q", "-m", f"Scratch to GPT: stage {edition.through} added")
    return sorted(changed), check_edition(dest, check)


def readme_commands(text: str) -> list[str]:
    """The ``python grader.py ...`` and ``python -m pytest`` commands a README names, in code spans or blocks."""
    found = []
    for command in re.findall(r"`([^`\n]+)`", text) + re.findall(r"^(python [^\n#]+?)\s*(?:#.*)?$", text, re.M):
        command = command.strip()
        if (command.startswith("python grader.py") or command.startswith("python -m pytest")) and command not in found:
            found.append(command)
    return found


def check_readme_commands(dest: Path) -> list[str]:
    """Run each command the edition's README names there, as a student would: each must end plainly."""
    problems = []
    had_state = (dest / ".grader").exists()
    try:
        for command in readme_commands((dest / "README.md").read_text(encoding="utf-8")):
            problem = run_readme_command(dest, command)
            if problem:
                problems.append(f"`{command}` (in README.md): {problem}")
    finally:
        if not had_state:
            shutil.rmtree(dest / ".grader", ignore_errors=True)
    return problems


def run_readme_command(dest: Path, command: str) -> str:
    """What is wrong with what ``command`` did in ``dest`` ("" when nothing). A ``--watch`` command is stopped
    with Ctrl-C, as the README says, once it has printed a score."""
    arguments = [sys.executable, *shlex.split(command)[1:]]
    watch = "--watch" in arguments
    process = subprocess.Popen(arguments, cwd=dest, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               errors="replace", stdin=subprocess.DEVNULL, start_new_session=watch)
    if watch:
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(iter(process.stdout.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while not any(line.startswith("Score: ") for line in seen) and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return f"still running after {COMMAND_TIMEOUT:g} s and a Ctrl-C"
        reader.join()
        out, err = "".join(seen), process.stderr.read()
    else:
        try:
            out, err = process.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return f"still running after {COMMAND_TIMEOUT:g} s"
    if "Traceback" in out + err:
        return "it printed a Python traceback"
    code = process.returncode
    grading = len(arguments) > 2 and arguments[1] == "grader.py" and arguments[2].startswith("stage") \
        and "--hint" not in arguments
    if code == 0 or (code == 1 and grading and "Score: " in out) or (code == 130 and watch and "Score: " in out):
        return ""
    lines = [line for line in (out + err).splitlines() if line.strip()]
    if code in (2, 4) and len([l for l in lines if "error" in l.lower()]) == 1:
        return ""  # a usage error: one line saying what to do instead
    return f"exit code {code}: " + (lines[-1] if lines else "no output")


def main(argv: list[str] | None = None) -> int:
    names = stage_names()
    parser = argparse.ArgumentParser(
        prog="python -m grading.export",
        description="Write the student edition of this course (what git tracks, without the reference solutions "
                    "and the course's self-test) to a new folder, as a fresh git repository, and check that it "
                    "works there as its README says; or add the next stage to an edition written before.",
        epilog="examples:\n  python -m grading.export ../student --through stage1 --hints 2\n"
               "  python -m grading.export ../student --add stage2 --with-reference stage1 --hints 2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="a folder that does not exist yet (or is empty); with --add, the edition")
    release = parser.add_mutually_exclusive_group()
    release.add_argument("--through", metavar="STAGE", help=f"hand out stages 1 to STAGE only (default: {names[-1]})")
    release.add_argument("--add", metavar="STAGE",
                         help="add STAGE, the next one, to the edition in DEST as one new commit (students git pull)")
    parser.add_argument("--with-reference", metavar="STAGE",
                        help="also put in the reference of stages 1 to STAGE (their deadlines passed), where "
                             "--reference-earlier finds it; it must be an earlier stage than the edition's last")
    parser.add_argument("--hints", type=int, metavar="N", help="ship at most the first N hints of each exercise")
    parser.add_argument("--exclude", action="append", default=[], metavar="PATH",
                        help="also leave out this folder or file, relative to the repository root (repeatable)")
    parser.add_argument("--no-check", action="store_true", help="do not check the edition afterwards")
    options = parser.parse_args(argv)

    def stage_number(text: str, option: str) -> int:
        name = text if text.startswith("stage") else f"stage{text}"
        if name not in names:
            parser.error(f"{option} {text}: there is no such stage; the stages are {', '.join(names)}")
        return int(name.removeprefix("stage"))
    through = stage_number(options.add or options.through or names[-1], "--add" if options.add else "--through")
    reference = stage_number(options.with_reference, "--with-reference") if options.with_reference else 0
    if reference >= through:
        parser.error(f"--with-reference stage{reference} would hand out the answers of stage{through}, the edition's "
                     f"last stage: give an earlier stage")
    if options.hints is not None and options.hints < 1:
        parser.error("--hints N: N must be at least 1 (each exercise's first hint is the one the score table shows)")
    edition = Edition(through, reference, options.hints, options.exclude)
    try:
        if options.add:
            changed, problems = add_stage(options.dest, edition, check=not options.no_check)
        else:
            problems = export(options.dest, edition, check=not options.no_check)
    except ExportProblem as problem:
        print(f"python -m grading.export: error: {problem}", file=sys.stderr)
        return 2
    holds = f"stages 1 to {through}" if through > 1 else "stage 1"
    holds += f", the reference of stage{'s 1 to ' if reference > 1 else ' '}{reference}" if reference else ", no reference"
    if options.add:
        print(f"added stage {through} to the student edition in {options.dest} as one commit ({holds}); "
              "students get it with `git pull`")
        if changed:  # a student who edited one of these gets a merge to make on `git pull`
            print(f"the commit also changes {len(changed)} file(s) the edition had: {', '.join(changed[:8])}"
                  + (", ..." if len(changed) > 8 else ""))
    else:
        print(f"wrote the student edition to {options.dest} (a git repository with one commit: {holds})")
    changed = [n for n in uncommitted_changes() if edition.keeps(n)]
    if changed:
        print(f"it holds this repository's last commit: {len(changed)} uncommitted change(s) are not in it "
              f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''})")
    if problems:
        print("but it has problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if not options.no_check:
        print(f"checked: `python grader.py {names[0]}` there gives 0 points, every exercise not started; every link "
              "in its Markdown files leads to a file it has; every grader.py and pytest command its README names "
              "ends plainly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
