"""The grader against submissions that attack it: they plant files for the next submission, exhaust memory,
output, processes, or leave a daemon behind. Each ends within the limits with nothing left running, the
repository unchanged, and the cap it hit reported on its exercise."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from grading.registry import REPO_ROOT
from tests.grader.test_grading import broken_exp, statuses, submission

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the attacks and their checks (/proc, fork, uids) are Linux's")

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TOKEN_NAME = "GRADER_ISOLATION_TEST_TOKEN"


def grade_marked(*args: str, json_path: Path, timeout: float = 120) -> tuple[str, dict | None, str]:
    """``python grader.py ARGS --json JSON_PATH`` with a token in its environment that every process the
    code under test starts inherits: (output, JSON, token)."""
    token = uuid.uuid4().hex
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "grader.py"), *args, "--json", str(json_path)],
                               capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                               env={**os.environ, TOKEN_NAME: token})
    output = completed.stdout + completed.stderr
    assert "Traceback" not in output, f"the grader printed a traceback:\n{output}"
    data = json.loads(json_path.read_text()) if json_path.exists() else None
    return output, data, token


def still_running(token: str) -> list[int]:
    """Processes (zombies aside) started by a grading run marked with ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"{TOKEN_NAME}={token}".encode() in (entry / "environ").read_bytes():
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def once(code: str) -> str:
    """``code`` run by the first call of ``Tensor.exp`` only (each of exercise 1.3's tests calls it)."""
    body = "".join(f"    {line}\n" for line in code.splitlines())
    return f"if not getattr(Tensor, '_attacked', False):\n    Tensor._attacked = True\n{body}"


def exercise(data: dict, exercise_id: str) -> dict:
    return next(e for e in data["exercises"] if e["id"] == exercise_id)


def repository_snapshot() -> dict[str, str]:
    """Every file of the repository, ignored ones included, by content (not .git, nor the bytecode caches
    that concurrent test processes write; planted bytecode is looked for by name)."""
    found = {}
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__")]
        for name in files:
            path = Path(folder, name)
            try:
                found[str(path.relative_to(REPO_ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                continue
    return found


PLANT = '''
import pathlib, sys
HOOK = "import pytest\\n@pytest.hookimpl(tryfirst=True)\\ndef pytest_runtest_call(item):\\n    pass\\n"
own_root = pathlib.Path(__file__).resolve().parents[1]
tests = pathlib.Path(sys.modules["tests"].__file__).resolve().parent
targets = [own_root / "conftest.py", own_root / "sitecustomize.py", tests / "conftest.py", tests / "stage1" / "conftest.py",
           tests.parent / "sitecustomize.py", tests.parent / "usercustomize.py",
           tests / "stage1" / "__pycache__" / "conftest.cpython-311.pyc"]
targets += [pathlib.Path(folder) / name for folder in EXTRA for name in ("conftest.py", "sitecustomize.py")]
targets += [pathlib.Path(folder) / "__pycache__" / "conftest.cpython-311.pyc" for folder in EXTRA]
for target in targets:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".pyc":
            target.write_bytes(b"planted")
        elif target.name == "conftest.py" and target.exists():
            target.write_text(target.read_text() + HOOK)
        else:
            target.write_text(HOOK)
    except OSError:
        pass
'''


@pytest.mark.parametrize("by_absolute_path", [False, pytest.param(True, marks=pytest.mark.skipif(
    not AS_ROOT, reason="without root the child keeps the user's rights over the repository (documented)"))])
def test_planted_files_do_not_reach_the_repository_or_the_next_submission(tmp_path, by_absolute_path):
    extra = [str(REPO_ROOT), str(REPO_ROOT / "tests"), str(REPO_ROOT / "tests" / "stage1"), str(REPO_ROOT / "grading")]
    planted = [Path(folder) / name for folder in extra for name in ("conftest.py", "sitecustomize.py")
               if not (Path(folder) / name).exists()]
    planted += [Path(folder) / "__pycache__" / "conftest.cpython-311.pyc" for folder in extra]
    before = repository_snapshot()
    code = once(f"EXTRA = {extra if by_absolute_path else []!r}\n" + PLANT)
    output, data, token = grade_marked("stage1", "--submission", str(broken_exp(tmp_path / "evil", code)), "-x", "1.3",
                                       json_path=tmp_path / "evil.json")
    assert data is not None, output
    assert [str(p) for p in planted if p.exists()] == []
    assert repository_snapshot() == before
    assert still_running(token) == []
    skeleton = submission(tmp_path / "clean", "stage1_autograd")
    output, data, _ = grade_marked("stage1", "--submission", str(skeleton), "-x", "1.3", json_path=tmp_path / "clean.json")
    assert data["score"] == 0, output
    assert statuses(data) == {"1.3": "not_started"}, output


def test_a_memory_bomb_is_stopped_at_the_memory_limit(tmp_path):
    code = ("import numpy, time\nblocks = []\nfor _ in range(40):\n"
            "    blocks.append(numpy.ones(10_000_000))\n    time.sleep(0.01)\ntime.sleep(60)\n")
    output, data, token = grade_marked("stage1", "--submission", str(broken_exp(tmp_path, code)), "-x", "1.3",
                                       "--memory-limit", "600M", json_path=tmp_path / "result.json")
    result = exercise(data, "1.3")
    assert result["status"] == "crashed", output
    assert "more than 600 MB of memory" in result["message"], output
    assert still_running(token) == []


def test_a_huge_print_is_capped_and_reported(tmp_path):
    code = once("print('x' * 100_000_000)")
    output, data, token = grade_marked("stage1", "--submission", str(broken_exp(tmp_path, code)), "-x", "1.3", "-v",
                                       json_path=tmp_path / "result.json")
    result = exercise(data, "1.3")
    assert result["status"] == "crashed", output
    assert "64 MB cap" in result["message"], output
    assert len(output) < 10_000_000
    assert still_running(token) == []


def test_a_fork_bomb_ends_with_nothing_left(tmp_path):
    code = once("import os, time\nfor _ in range(2000):\n    if os.fork() == 0:\n"
                "        time.sleep(60)\n        os._exit(0)\n")
    output, data, token = grade_marked("stage1", "--submission", str(broken_exp(tmp_path, code)), "-x", "1.3",
                                       json_path=tmp_path / "result.json")
    result = exercise(data, "1.3")
    assert result["status"] == "crashed", output
    assert "256 processes" in result["message"], output
    assert still_running(token) == []


def test_a_daemon_is_gone_and_cannot_rewrite_the_json(tmp_path):
    json_path = tmp_path / "result.json"
    forged = json.dumps({"score": 100})
    code = once(f"import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(2)\n"
            f"        try:\n            open({str(json_path)!r}, 'w').write({forged!r})\n"
            f"        finally:\n            os._exit(0)\n    os._exit(0)\n")
    output, data, token = grade_marked("stage1", "--submission", str(broken_exp(tmp_path, code)), "-x", "1.3",
                                       json_path=json_path)
    assert still_running(token) == []
    written = json_path.read_text()
    subprocess.run(["sleep", "2.5"], check=True)  # past the moment the daemon would have written
    assert json_path.read_text() == written
    assert data["score"] == 10, output  # the daemon's parent returned: the exercise itself passes


@pytest.mark.skipif(not AS_ROOT, reason="only a grader running as root can hide the reference from the child")
def test_the_reference_cannot_be_read_by_its_path(tmp_path):
    reference = REPO_ROOT / "solutions" / "stage1_autograd" / "tensor.py"
    code = (f"try:\n    text = open({str(reference)!r}).read()\nexcept OSError as error:\n"
            f"    raise AssertionError(f'could not read the reference: {{error}}')\n"
            f"raise AssertionError(f'read the reference: {{len(text)}} characters')\n")
    output, data, _ = grade_marked("stage1", "--submission", str(broken_exp(tmp_path, code)), "-x", "1.3",
                                   json_path=tmp_path / "result.json")
    result = exercise(data, "1.3")
    assert "could not read the reference" in result["message"], output
