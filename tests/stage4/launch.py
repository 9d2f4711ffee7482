"""Run a module of the code under test in a fresh Python process, as ``python -m stage4_gpt.train ...`` would,
with the same stage packages this test process imports (the student's, the reference's, or a mix).

A plain ``python -m`` in a child process would find the stage packages on ``sys.path`` instead of where
the test run chose them (``tests/conftest.py``), so the child installs the same finder first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import StagePackageFinder

REPO_ROOT = Path(__file__).resolve().parents[2]

_BOOT = """
import json, runpy, sys
from pathlib import Path
from tests.conftest import StagePackageFinder
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
    raise RuntimeError("the stage packages' finder of tests/conftest.py is not installed")


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
