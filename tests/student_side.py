"""What the tests run beside the code under test, in the process that imports it.

In authoritative grading the tests run in a process of their own and the stage packages in a student
process (``grading.remote``); a module named ``student_side`` is imported in the student process, and the
tests hold proxies of what it returns. Here:
- ``run_module``/``start_module``: run a module of the code under test in a fresh Python process, as
  ``python -m stage4_gpt.train ...`` would, with the same stage packages (the student's, the reference's,
  or a mix). A plain ``python -m`` would find the stage packages on ``sys.path`` instead of where the run
  chose them, so the new process installs the same finder first.
- ``printed``: what a call prints, for the tests of command lines and progress lines.
- ``new_folder``, ``read_bytes``, ``write_bytes``, ...: the files the code under test reads and writes, for
  ``tests.helpers.StudentPath`` (the ``student_tmp`` fixture).

Everything computed here is the student process's word, like any value its code returns: the tests use it
to drive and observe the code under test, and decide every verdict themselves, on values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import contextlib
import io

from grading.stage_imports import StagePackageFinder

REPO_ROOT = Path(__file__).resolve().parents[1]

_BOOT = """
import json, runpy, signal, sys
from pathlib import Path
from grading.stage_imports import StagePackageFinder
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C -> KeyboardInterrupt, even if it was ignored
homes = {name: Path(folder) for name, folder in json.loads(sys.argv[1]).items()}
sys.meta_path.insert(0, StagePackageFinder(homes))
module = sys.argv[2]
sys.argv = [module] + sys.argv[3:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def stage_homes() -> dict[str, str]:
    """Package name -> the folder this process imports it from."""
    for finder in sys.meta_path:
        if isinstance(finder, StagePackageFinder):
            return {name: str(folder) for name, folder in finder.homes.items()}
    raise RuntimeError("the stage packages' finder (grading.stage_imports) is not installed")


def module_command(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m module args...`` on this process's stage packages."""
    return [sys.executable, "-c", _BOOT, json.dumps(stage_homes()), module, *map(str, args)]


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)  # for tests.conftest; the stage packages come from the finder
    env["PYTHONUNBUFFERED"] = "1"
    env["MPLBACKEND"] = "Agg"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def run_module(module: str, *args: str, cwd, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the module to the end; returns the completed process (text stdout and stderr)."""
    return subprocess.run(module_command(module, *args), cwd=cwd, env=child_environment(), input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def start_module(module: str, *args: str, cwd) -> subprocess.Popen:
    """Start the module and return at once (stdout and stderr are pipes of text lines)."""
    return subprocess.Popen(module_command(module, *args), cwd=cwd, env=child_environment(), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def reraise_not_implemented(stderr: str) -> None:
    """If the child stopped at an unfinished exercise (its last line is ``NotImplementedError: ...``), raise
    that NotImplementedError here, so that the test reads as "not started" rather than as a failure."""
    lines = stderr.strip().splitlines()
    if lines and lines[-1].startswith("NotImplementedError"):
        raise NotImplementedError(lines[-1].partition(": ")[2] or lines[-1])


def printed(fn, *args, **kwargs) -> tuple[object, str]:
    """``(fn(*args, **kwargs), what it printed to stdout)``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args, **kwargs)
    return result, out.getvalue()


# ---------------------------------------------------------------------- files of the code under test
# In authoritative grading the test process never opens a path the code under test could have changed (it could
# have swapped a folder for a link): files cross as bytes, read and written here, beside the code under test.
def new_folder(name: str) -> str:
    """A fresh empty folder in this process's temporary folder (private to it under bubblewrap); its path."""
    import tempfile  # noqa: PLC0415

    return tempfile.mkdtemp(prefix=f"{name}-")


def read_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def write_bytes(path: str, data: bytes) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)


def exists(path: str) -> bool:
    return Path(path).exists()


def make_folder(path: str) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)


def names(folder: str, pattern: str = "*") -> list[str]:
    """The names in ``folder`` that match ``pattern``, sorted."""
    return sorted(p.name for p in Path(folder).glob(pattern))
