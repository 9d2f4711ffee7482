"""The student edition: ``python -m grading.export DEST`` writes this course without its reference.

It copies every file of this repository's last commit except ``solutions/`` (and any folder or file named
with ``--exclude``) into ``DEST``, a new folder, makes it a fresh git repository with one commit (none of this
repository's history, which holds the solutions), and then checks the edition as a student would find it:
``python grader.py stage1`` there must grade every exercise "not started", 0 points, and every link in its
Markdown files must lead to a file it has.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from grading.gradescope import working_files
from grading.registry import REPO_ROOT, SOLUTIONS_DIR, stage_names

ALWAYS_LEFT_OUT = (SOLUTIONS_DIR.relative_to(REPO_ROOT).as_posix(),)
COMMIT_MESSAGE = "Scratch to GPT: the course, ready to start"
FALLBACK_IDENTITY = {"GIT_AUTHOR_NAME": "Scratch to GPT", "GIT_AUTHOR_EMAIL": "course@localhost",
                     "GIT_COMMITTER_NAME": "Scratch to GPT", "GIT_COMMITTER_EMAIL": "course@localhost"}
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CHECK_TIMEOUT = 600.0


class ExportProblem(Exception):
    pass


def left_out(name: str, excluded: list[str]) -> bool:
    """True for ``solutions/`` and what is under it, and for each excluded path and what is under it."""
    prefixes = [p.strip("/") for p in (*ALWAYS_LEFT_OUT, *excluded)]
    return any(name == p or name.startswith(p + "/") for p in prefixes)


def copy_last_commit(dest: Path, excluded: list[str]) -> int:
    """Copy the files of this repository's last commit (HEAD), less what is left out, into ``dest``: the course
    as committed, whatever is being edited in the working tree. Returns how many files were copied; 0 when
    git cannot read this repository."""
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=REPO_ROOT, capture_output=True)
    except OSError:
        return 0
    if archive.returncode != 0:
        return 0
    count = 0
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        for member in tar.getmembers():
            if not member.isfile() or left_out(member.name, excluded):
                continue
            target = dest / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            target.chmod(0o755 if member.mode & 0o111 else 0o644)
            count += 1
    return count


def copy_working_tree(dest: Path, excluded: list[str]) -> int:
    """Without git: every file of this copy as it is now, less what is left out."""
    names = [n for n in working_files(REPO_ROOT) if not left_out(n, excluded)]
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    return len(names)


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


def export(dest: Path, excluded: list[str], check: bool = True) -> list[str]:
    """Write the student edition to ``dest``; returns the problems the checks found (empty when none)."""
    dest = dest.resolve()
    if dest == REPO_ROOT or REPO_ROOT in dest.parents:
        raise ExportProblem(f"{dest} is inside this repository; choose a folder outside it")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportProblem(f"{dest} already exists and is not an empty folder")
    dest.mkdir(parents=True, exist_ok=True)
    if not (copy_last_commit(dest, excluded) or copy_working_tree(dest, excluded)):
        raise ExportProblem("there is no file to export here")
    git(dest, "init", "-q")
    git(dest, "add", "--all")
    git(dest, "commit", "-q", "-m", COMMIT_MESSAGE)
    problems = broken_links(dest)
    if check:
        problems += check_fresh_copy(dest, stage_names()[0])
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grading.export",
        description="Write the student edition of this course (everything git tracks but solutions/) to a new "
                    "folder, as a fresh git repository, and check that it grades 0 points cleanly.",
        epilog="example:\n  python -m grading.export ../scratch-to-gpt-student",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="a folder that does not exist yet (or is empty)")
    parser.add_argument("--exclude", action="append", default=[], metavar="PATH",
                        help="also leave out this folder or file, relative to the repository root (repeatable)")
    parser.add_argument("--no-check", action="store_true", help="do not grade the new copy afterwards")
    options = parser.parse_args(argv)
    try:
        problems = export(options.dest, options.exclude, check=not options.no_check)
    except ExportProblem as problem:
        print(f"python -m grading.export: error: {problem}", file=sys.stderr)
        return 2
    print(f"wrote the student edition to {options.dest} (a git repository with one commit, no solutions/)")
    changed = [n for n in uncommitted_changes() if not left_out(n, options.exclude)]
    if changed:
        print(f"it holds this repository's last commit: {len(changed)} uncommitted change(s) are not in it "
              f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''})")
    if problems:
        print("but it has problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if not options.no_check:
        print(f"checked: `python grader.py {stage_names()[0]}` there gives 0 points, every exercise not started, "
              "and every link in its Markdown files leads to a file it has")
    return 0


if __name__ == "__main__":
    sys.exit(main())
