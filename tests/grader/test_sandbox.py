"""Authoritative grading against a dishonest submission (``grading.sandbox``, ``grading.launcher``).

A submission that implements nothing tries, all at once: to plant a ``.pth`` file in the grader's
``site-packages`` (loaded by every later test process); to borrow the stage folder of a submission graded
beside it; to leave a process behind that outlives its student process; to use PyTorch; and to read the
instructor's copy, the hidden tests and the host's ``/tmp``. Another one swaps the folder a test writes
into for a link to the instructor's tests. Each earns 0, the instructor's copy is byte for byte unchanged,
and the next clean skeleton still earns 0, in both layouts an instructor has: the copy in a folder every
user may enter, graded by this Python, and the copy with its virtual environment inside a 0700 folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from grading import sandbox
from grading.registry import REPO_ROOT, SOLUTIONS_DIR

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="authoritative grading runs on Linux only"),
    pytest.mark.skipif(sandbox.bubblewrap_unavailable() is not None,
                       reason=f"bubblewrap cannot run here: {sandbox.bubblewrap_unavailable()}"),
]
AS_ROOT = sandbox.is_root()
TOKEN = "GRADER_SANDBOX_TEST_TOKEN"
COURSE = ("grader.py", "pyproject.toml", "requirements.txt", "grading", "tests", "solutions",
          "stage1_autograd", "stage2_mlp")


def make_layout(kind: str) -> tuple[Path, str]:
    """(the course's copy, the Python that grades with it). "open": a folder every user may enter, this Python.
    "closed": a 0700 folder holding the copy and a virtual environment (with this Python's packages, by a .pth)."""
    home = Path(tempfile.mkdtemp(prefix=f"course-{kind}-"))
    home.chmod(0o755 if kind == "open" else 0o700)
    course = home / "course"
    for name in COURSE:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, course / name, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        else:
            course.mkdir(exist_ok=True)
            shutil.copy(source, course / name)
    if kind == "open":
        return course, sys.executable
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    inner = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    Path(inner, "course-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return course, str(python)


@pytest.fixture(scope="module", params=["open", "closed"])
def layout(request):
    course, python = make_layout(request.param)
    yield course, python
    shutil.rmtree(course.parent, ignore_errors=True)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` by content, and every folder by owner and mode (bytecode caches aside)."""
    found = {}
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        info = os.stat(parent)
        found[parent] = f"{info.st_uid}:{info.st_mode:o}"
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                found[path] = hashlib.sha256(f.read()).hexdigest()
    return found


def site_snapshot() -> dict[str, str]:
    """The entries of every folder of installed packages, with their owner and mode (a planted .pth shows)."""
    found = {}
    for folder in sandbox.site_folders():
        for entry in os.scandir(folder):
            info = entry.stat(follow_symlinks=False)
            found[entry.path] = f"{info.st_uid}:{info.st_mode:o}"
    return found


ATTACK = '''
import glob, json, os, site, sys, time
FOUND = {"uid": os.getuid(), "planted": [], "neighbour": None}
# 1. a .pth file in every folder of installed packages it can find: every later Python would run it
for folder in {*site.getsitepackages(), *(p for p in sys.path if p.endswith("-packages"))}:
    try:
        with open(os.path.join(folder, "zz-planted.pth"), "w") as f:
            f.write("import sys\\n")
        FOUND["planted"].append(folder)
    except OSError:
        pass
# 2. the stage folder of the submission graded beside this one, on this package's path
until = time.monotonic() + 8
while FOUND["neighbour"] is None and time.monotonic() < until:
    for path in glob.glob("/tmp/**/stage1_autograd/tensor.py", recursive=True):
        if "raise NotImplementedError" not in open(path).read():
            __path__.insert(0, os.path.dirname(path))
            FOUND["neighbour"] = path
            break
    time.sleep(0.2)
# 4. a daemon that outlives its student process and keeps trying to take over the folders of packages
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            for folder in site.getsitepackages():
                try:
                    os.chown(folder, os.getuid(), os.getgid())
                except OSError:
                    pass
            time.sleep(0.05)
    os._exit(0)
# 5. PyTorch, for exercises that must be NumPy
try:
    import torch
    FOUND["torch"] = True
except ImportError:
    FOUND["torch"] = False
# the view: the instructor's copy, the hidden tests, the host's /tmp
FOUND["course"] = os.path.exists(COURSE)
FOUND["hidden"] = os.path.exists(HIDDEN)
FOUND["tmp"] = sorted(os.listdir("/tmp"))
from stage1_autograd import tensor
def exp(self):
    raise AssertionError("VIEW " + json.dumps(FOUND))
tensor.Tensor.exp = exp
'''

HIDDEN_TEST = '''
import os
import pytest

@pytest.mark.exercise("1.1")
def test_the_test_process_user():
    raise AssertionError(f"TESTS {os.getuid()}")
'''


def grade_batch(course: Path, python: str, submissions: Path, out: Path, *options: str) -> tuple[dict[str, dict], str]:
    """``python -m grading.batch stage1 SUBMISSIONS`` in the course's copy, with a token in the environment every
    process it starts inherits: (each submission's JSON by name, the token)."""
    token = uuid.uuid4().hex
    done = subprocess.run([python, "-m", "grading.batch", "stage1", str(submissions), "--out", str(out), *options],
                          cwd=course, capture_output=True, text=True, timeout=600, env={**os.environ, TOKEN: token})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return {path.stem: json.loads(path.read_text()) for path in out.glob("*.json") if path.stem != "summary"}, token


def status_of(data: dict, exercise: str) -> str:
    return next(entry["status"] for entry in data["exercises"] if entry["id"] == exercise)


def message_of(data: dict, exercise: str, mark: str) -> str:
    for entry in data["exercises"]:
        if entry["id"] == exercise:
            texts = [entry["message"] or ""] + [f.get("message") or "" for f in entry["failures"]]
            for text in texts:
                if mark in text:
                    return text[text.index(mark) + len(mark):].strip()
    raise AssertionError(f"no {mark!r} in exercise {exercise}'s messages: {data}")


def still_running(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"{TOKEN}={token}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_dishonest_submission_earns_nothing_and_changes_nothing(layout, tmp_path):
    course, python = layout
    hidden = tmp_path / "hidden" / "stage1"
    hidden.mkdir(parents=True)
    (hidden / "test_hidden.py").write_text(HIDDEN_TEST)
    submissions = tmp_path / "submissions"
    attacker = submissions / "attacker" / "stage1_autograd"
    shutil.copytree(course / "stage1_autograd", attacker)
    (attacker / "__init__.py").write_text((attacker / "__init__.py").read_text()
                                          + f"COURSE = {str(course)!r}\nHIDDEN = {str(hidden)!r}\n" + ATTACK)
    shutil.copytree(SOLUTIONS_DIR / "stage1_autograd", submissions / "neighbour" / "stage1_autograd")
    before, packages_before = snapshot(course), site_snapshot()

    results, token = grade_batch(course, python, submissions, tmp_path / "out", "--jobs", "2", "-x", "1.1", "-x", "1.3",
                          "--extra-tests", str(hidden.parent))

    seen = json.JSONDecoder().raw_decode(message_of(results["attacker"], "1.3", "VIEW"))[0]
    assert results["attacker"]["score"] == 0, results["attacker"]
    assert results["attacker"]["isolation"] == "bubblewrap"
    assert status_of(results["neighbour"], "1.3") == "passed", results["neighbour"]
    assert seen["planted"] == [] and seen["neighbour"] is None, seen
    assert seen["torch"] is False and seen["course"] is False and seen["hidden"] is False, seen
    python_paths = [Path(python), *sandbox.python_folders(), *sandbox.site_folders()]  # the way to the Python
    on_the_way = {path.parts[2] for path in python_paths if path.is_relative_to("/tmp") and len(path.parts) > 2}
    assert all(name.startswith("grader-") or name in on_the_way for name in seen["tmp"]), \
        f"the student process saw more of /tmp than the way to its workspace and its Python: {seen['tmp']}"
    test_uid = int(message_of(results["attacker"], "1.1", "TESTS").split()[0])
    if AS_ROOT:
        assert seen["uid"] != 0 and test_uid != 0, (seen["uid"], test_uid)
        assert seen["uid"] != test_uid, "the student process runs as the test process's uid"
    assert snapshot(course) == before, "grading changed the instructor's copy"
    assert site_snapshot() == packages_before, "grading changed a folder of installed packages"
    assert still_running(token) == [], "a process the submission started survived the run"

    clean = tmp_path / "clean"
    shutil.copytree(course / "stage1_autograd", clean / "skeleton" / "stage1_autograd")
    after, _ = grade_batch(course, python, clean, tmp_path / "out-clean", "-x", "1.3")
    assert after["skeleton"]["score"] == 0
    assert status_of(after["skeleton"], "1.3") == "not_started", after["skeleton"]


SWAP_FOR_A_LINK = '''
import os, tempfile
_state_dict = Module.state_dict
def state_dict(self):
    # the folder the test writes its checkpoint into becomes a link to the instructor's tests
    folder = tempfile.gettempdir()
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            try:
                os.rename(path, path + "-moved")
                os.symlink(TARGET, path)
            except OSError:
                pass
    return _state_dict(self)
Module.state_dict = state_dict
'''


def test_a_folder_swapped_for_a_link_leads_no_write_into_the_instructors_copy(layout, tmp_path):
    course, python = layout
    submissions = tmp_path / "submissions"
    package = submissions / "swapper" / "stage2_mlp"
    shutil.copytree(SOLUTIONS_DIR / "stage2_mlp", package)
    nn = package / "nn.py"
    nn.write_text(nn.read_text() + f"\nTARGET = {str(course / 'tests' / 'stage2')!r}\n" + SWAP_FOR_A_LINK)
    before = snapshot(course)
    done = subprocess.run([python, "grader.py", "stage2", "--submission", str(submissions / "swapper"),
                           "--reference-earlier", "-x", "2.1", "--json", str(tmp_path / "swapper.json")],
                          cwd=course, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert json.loads((tmp_path / "swapper.json").read_text())["isolation"] == "bubblewrap"
    assert snapshot(course) == before, "a write followed the submission's link into the instructor's copy"


@pytest.mark.skipif(not AS_ROOT, reason="the uid level exists only for a grader that runs as root")
def test_the_uid_level_is_refused_where_its_uid_cannot_run_this_python(monkeypatch):
    """Where no other user may run the grading Python (one under /root), the uid level is not offered, and
    without bubblewrap the level is "none", said with the reason."""
    problem = sandbox.uid_cannot_run_python(sandbox.SANDBOX_UID_BASE + 2 * sandbox.SANDBOX_UID_SLOTS)
    monkeypatch.setattr(sandbox, "bubblewrap_unavailable", lambda: "not installed (simulated)")
    if problem is None:
        isolation = sandbox.choose_isolation("auto")
        assert isolation.level == "uid", isolation
    else:
        with pytest.raises(RuntimeError, match="cannot run this Python"):
            sandbox.choose_isolation("uid")
        isolation = sandbox.choose_isolation("auto")
        assert isolation.level == "none" and "cannot run this Python" in isolation.reason, isolation
    isolation.release()


def test_without_root_the_sandbox_is_a_user_namespace_and_keeps_the_uid(monkeypatch):
    monkeypatch.setattr(sandbox, "is_root", lambda: False)
    command, _ = sandbox.confined(sandbox.Isolation("bubblewrap", "test"), None, sandbox.View(), ["python"])
    assert "--unshare-all" in command and "setpriv" not in command, command
    assert command[command.index("--") + 1:] == ["python"]


def test_a_student_process_has_no_torch_and_no_other_site_package():
    isolation = sandbox.choose_isolation("bubblewrap")  # as root, a uid pair no concurrent run holds
    try:
        student_uid = isolation.uids[1] if isolation.uids else None
        command, setup = sandbox.confined(isolation, student_uid, sandbox.View(distributions=sandbox.STUDENT_DISTRIBUTIONS),
                                          sandbox.python_command("-c", "import importlib.util as u, numpy; "
                                                                       "print(u.find_spec('torch'), u.find_spec('pytest'))"))
        done = subprocess.run(command, capture_output=True, text=True, preexec_fn=setup, timeout=60, cwd="/")
    finally:
        isolation.release()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None"], done.stdout


def test_a_runs_processes_share_one_cpu_and_runs_side_by_side_take_different_ones(monkeypatch):
    monkeypatch.setattr(sandbox.os, "sched_getaffinity", lambda pid: {4, 2}, raising=False)
    first, second = (sandbox.Isolation("bubblewrap", "", uids=(sandbox.SANDBOX_UID_BASE + 2 * slot,
                                                                sandbox.SANDBOX_UID_BASE + 2 * slot + 1))
                     for slot in (0, 1))
    assert (first.cpu, second.cpu) == (2, 4)
    monkeypatch.setattr(sandbox.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert first.cpu is None  # one CPU: nothing to choose
    monkeypatch.delattr(sandbox.os, "sched_getaffinity", raising=False)
    assert first.cpu is None  # macOS, Windows


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is a Linux call")
def test_the_confined_process_starts_on_the_runs_cpu():
    isolation = sandbox.Isolation("none", "a test")
    cmd, setup = sandbox.confined(isolation, None, sandbox.View(), [sys.executable, "-c",
                                                                    "import os; print(sorted(os.sched_getaffinity(0)))"])
    if isolation.cpu is None:
        pytest.skip("this machine lets the grader use one CPU only")
    printed = subprocess.run(cmd, preexec_fn=setup, capture_output=True, text=True, check=True).stdout
    assert json.loads(printed) == [isolation.cpu]
