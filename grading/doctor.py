"""``python grader.py doctor``: checks the set-up the course needs, one line per check with what to do.

It reads package metadata and files and changes nothing: no install, no cache, no file written. It never
imports PyTorch or matplotlib (slow, and matplotlib builds a font cache on its first import); it does load
NumPy, to ask its BLAS library how many threads it uses.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from grading.registry import REPO_ROOT, SOLUTIONS_DIR, all_stages

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?P<spec>[^;#]*)")


@dataclass
class Check:
    level: str  # "ok", "note" (worth knowing, nothing is broken) or "FAIL" (fix it before going on)
    text: str


def run() -> int:
    checks = checks_of_this_setup()
    for check in checks:
        print(f"  {check.level:<5} {check.text}")
    problems = sum(c.level == "FAIL" for c in checks)
    print()
    print("Everything the course needs is in place." if not problems else
          f"{problems} problem{'s' if problems > 1 else ''}: fix the FAIL line{'s' if problems > 1 else ''} above, "
          "then run `python grader.py doctor` again.")
    return 1 if problems else 0


def checks_of_this_setup() -> list[Check]:
    return [python_version(), virtual_environment(), *requirements(REPO_ROOT / "requirements.txt"), torch_build(),
            matplotlib_backend(), blas_threads(), *course_folders(), solutions_folder(), *this_system(),
            *grading_host()]


# ---------------------------------------------------------------------- versions
def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``2.13.0+cpu`` -> (2, 13, 0); ``8.3.0rc1`` -> (8, 3, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets a specifier such as ``>=2.0`` or ``>=1.3,<2`` (release numbers only)."""
    have = release(version)
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        op, wanted = re.match(r"(==|>=|<=|!=|~=|>|<)?\s*(.*)", clause).groups()
        want = release(wanted)
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        ok = {"==": a == b, None: a == b, ">=": a >= b, "<=": a <= b, "!=": a != b, ">": a > b, "<": a < b,
              "~=": a >= b and a[:max(len(want) - 1, 1)] == b[:max(len(want) - 1, 1)]}[op]
        if not ok:
            return False
    return True


def python_version() -> Check:
    try:
        needed = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    except (OSError, KeyError, ValueError):
        needed = ">=3.11"
    have = ".".join(map(str, sys.version_info[:3]))
    if satisfies(have, needed):
        return Check("ok", f"Python {have} (the course needs {needed})")
    return Check("FAIL", f"Python {have}, but the course needs {needed}: install a newer Python (python.org), make "
                         "the virtual environment with it, and install the requirements again")


def virtual_environment() -> Check:
    if sys.prefix != sys.base_prefix:
        return Check("ok", f"running in a virtual environment ({sys.prefix})")
    return Check("note", "not in a virtual environment: the README's quick start makes one (python -m venv .venv), "
                         "so the course's packages do not mix with the system's")


def required_packages(path: Path = REPO_ROOT / "requirements.txt") -> list[tuple[str, str]]:
    """``(name, version specifier)`` of each package ``path`` lists (OSError if it cannot be read)."""
    packages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = REQUIREMENT.match(line)
        if line and not line.startswith("-") and match:
            packages.append((match["name"], match["spec"].strip()))
    return packages


def missing_requirements() -> list[str]:
    """The packages of requirements.txt that this Python does not have installed (read from their metadata:
    nothing is imported). Empty when requirements.txt cannot be read: then there is nothing to compare with."""
    try:
        packages = required_packages()
    except OSError:
        return []
    missing = []
    for name, _ in packages:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def requirements(path: Path) -> list[Check]:
    try:
        packages = required_packages(path)
    except OSError:
        return [Check("FAIL", f"{path.name} is missing from this copy of the course: get a fresh copy")]
    checks = []
    for name, spec in packages:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check("FAIL", f"{name} is not installed: run `python -m pip install -r requirements.txt`"
                                        + (" (on Linux, first the CPU build of torch: see below)" if name == "torch" else "")))
            continue
        if spec and not satisfies(version, spec):
            checks.append(Check("FAIL", f"{name} {version} is installed, but the course needs {name}{spec}: run "
                                        f"`python -m pip install '{name}{spec}'`"))
        else:
            checks.append(Check("ok", f"{name} {version}" + (f" (needs {spec})" if spec else "")))
    return checks


# ---------------------------------------------------------------------- torch, matplotlib, BLAS
def torch_build() -> Check:
    """CPU or CUDA build, read from torch/version.py without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return Check("FAIL", "PyTorch is not installed (the tests compare with it). On Linux install its CPU build "
                             f"first: `python -m pip install torch --index-url {CPU_INDEX}`, then the requirements")
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = version_file.read_text(encoding="utf-8")
    except OSError:
        return Check("note", "PyTorch is installed, but its build (CPU or CUDA) could not be read")
    cuda = re.search(r"^cuda\b[^=]*=\s*(?P<value>.+)$", text, re.MULTILINE)
    value = cuda["value"].strip().strip("'\"") if cuda else "None"
    if value in ("None", ""):
        return Check("ok", "PyTorch is the CPU build (all the course needs)")
    nvidia = [d.metadata["Name"] for d in importlib.metadata.distributions()
              if (d.metadata["Name"] or "").lower().startswith("nvidia-")]
    return Check("note", f"PyTorch is a CUDA {value} build" + (f" with {len(nvidia)} NVIDIA packages" if nvidia else "")
                 + ": it works, but the course needs only the CPU build, a fraction of the download. To switch: "
                 f"`python -m pip install --force-reinstall torch==<same version> --index-url {CPU_INDEX}`")


def matplotlib_backend() -> Check:
    if importlib.util.find_spec("matplotlib") is None:
        return Check("FAIL", "matplotlib is not installed (the training scripts draw loss curves with it): run "
                             "`python -m pip install -r requirements.txt`")
    backend = os.environ.get("MPLBACKEND")
    where = f"MPLBACKEND={backend}" if backend else "no window is needed"
    return Check("ok", f"matplotlib is installed; the course's scripts write their plots to files ({where})")


def blas_threads() -> Check:
    cores = os.cpu_count() or 1
    try:
        from threadpoolctl import threadpool_info  # installed with scikit-learn

        import numpy  # noqa: F401  (loads the BLAS library threadpoolctl then reports)

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    except Exception as error:  # noqa: BLE001 - a report line, not a crash
        return Check("note", f"the BLAS library's threads could not be read ({type(error).__name__})")
    if not pools:
        return Check("note", "NumPy's BLAS library did not report its threads")
    pool = pools[0]
    threads = pool.get("num_threads")
    text = (f"NumPy's BLAS ({pool.get('internal_api', 'unknown')}) uses {threads} thread(s) on {cores} core(s); "
            "the grader runs tests with one thread, so scores do not depend on the machine")
    if threads and threads > 1 and cores <= 4:
        text += ("; for the training scripts on a small machine, OPENBLAS_NUM_THREADS=1 (or OMP_NUM_THREADS=1) is "
                 "often faster")
    return Check("ok", text)


# ---------------------------------------------------------------------- this copy of the course
def course_folders() -> list[Check]:
    checks = []
    try:
        stages = all_stages()
    except (OSError, ValueError, KeyError, TypeError) as error:
        return [Check("FAIL", f"an exercise registry (tests/stageN/exercises.toml) cannot be read: {error}")]
    for stage in stages:
        folder = REPO_ROOT / stage.package
        if folder.is_dir():
            checks.append(Check("ok", f"{stage.package}/ is here ({stage.name}: {stage.title})"))
        else:
            checks.append(Check("note", f"{stage.package}/ is missing: {stage.name} cannot be graded in this copy "
                                        "(get a fresh copy of the course if you need it)"))
    return checks


def solutions_folder() -> Check:
    stages = all_stages()
    released = [s for s in stages if (SOLUTIONS_DIR / s.package).is_dir()]
    if released and len(released) < len(stages):  # a student edition with the reference of the stages past
        return Check("ok", f"solutions/ holds the reference of {', '.join(s.name for s in released)}: "
                           "--reference-earlier grades a later stage on it")
    if SOLUTIONS_DIR.is_dir():
        return Check("ok", "solutions/ is here (an instructor's copy): --solutions, --reference-earlier and "
                           "`python -m pytest`, the course's self-test, work")
    return Check("ok", "solutions/ is not here (a student's copy): grading your own code needs nothing more; "
                       "--solutions, --reference-earlier and `python -m pytest` are for instructors")


def this_system() -> list[Check]:
    """What the grader cannot promise on this system, said once (see the README's platform table)."""
    if sys.platform.startswith("linux"):
        return []
    name = {"win32": "Windows", "darwin": "macOS"}.get(sys.platform, sys.platform)
    caps = "" if os.name == "posix" else "; there is no cap on the size of a file the code under test writes"
    return [Check("note", f"on {name} the grader grades your own work as on Linux: a test that hangs or uses too much "
                          f"memory is stopped with everything it started; a process your code detaches from its "
                          f"parent is not followed{caps}. Grading other people's submissions needs Linux")]


def grading_host() -> list[Check]:
    """For an instructor's copy that grades submissions: what authoritative grading can promise on this machine
    (see the README, "For instructors")."""
    if not SOLUTIONS_DIR.is_dir() or not sys.platform.startswith("linux"):
        return []
    from grading import sandbox  # noqa: PLC0415 - Linux only from here on

    try:
        isolation = sandbox.choose_isolation("auto")
    except (RuntimeError, ImportError, OSError) as error:
        return [Check("note", f"grading submissions here: what isolation this machine gives could not be told ({error})")]
    isolation.release()
    if isolation.level == "bubblewrap":
        return [Check("ok", f"grading submissions here: {isolation.describe()}")]
    install = ("; install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap) "
               "for the best level")
    return [Check("note", f"grading submissions here: {isolation.describe()}{install}"
                          + ("; grading.batch and Gradescope refuse this level unless given --allow-unisolated"
                             if isolation.level == "none" else ""))]
