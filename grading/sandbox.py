"""Where, as whom and with what view the grader's processes run, and how nothing they start survives.

The grader (the parent) never imports code under test. It starts the *test process* (pytest with the
grading plugin) and, in authoritative grading, every *student process* (the submission behind proxies, see
``grading.remote``) on the test process's request (``grading.launcher``). Each grades in a fresh workspace
outside the repository: copies of ``tests/``, ``grading/`` and ``pyproject.toml``, and the stage packages
under test as ``.py`` files only.

How well the student process is kept apart is decided once per run, never assumed, and recorded in the
report, the JSON and ``grader.py doctor`` (``Isolation``):

- ``bubblewrap``: every process of the run starts in a bubblewrap sandbox (``bwrap``, the sandbox Flatpak
  uses). A student process sees the Python installation and an allow-listed ``site-packages`` read-only
  (NumPy and what the course's given code imports; PyTorch only for the exercises that port to it), its own
  workspace read-only, a private writable scratch folder and ``/tmp``, a ``/proc`` of its own PID namespace,
  no network and no other path of the host. When it dies, everything it started dies with it. As root each
  process also runs as an unprivileged uid of its own (the test process's differs from the student's);
  without root it keeps the grader's uid: the promise is the view, not a separate user.
- ``uid``: root, without bubblewrap. Each process runs as its own unprivileged uid; the test process's
  workspace is a 0700 folder of its uid, the student's files are readable by its uid alone; leftovers are
  killed by uid. The student process can read whatever the host lets any user read.
- ``none``: neither (or a uid that cannot run this Python). The code under test has the grader's rights.

In student mode (``grader.py stage1`` on your own folder) the tests and your code share one process and
nothing is isolated: it is your own code.

Limits, at every level:
- ``FILE_SIZE_CAP``: no file (pytest's captured output included) grows past it (RLIMIT_FSIZE, Unix).
- memory: the parent sums the resident memory of the run's processes and stops them past the limit. Not
  RLIMIT_AS: NumPy's BLAS and PyTorch reserve far more address space than they use.
- processes: at most ``PROCESS_CAP`` at once (RLIMIT_NPROC for a process's own uid; the parent counts too).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from grading.registry import REPO_ROOT, SOLUTIONS_DIR

FILE_SIZE_CAP = 64 * 2**20  # bytes, any one file a process writes (its output included)
PROCESS_CAP = 256  # processes of one run at once
DEFAULT_MEMORY_LIMIT = 4 * 2**30  # bytes of resident memory, all processes of one run together
SCRATCH_SIZE = 256 * 2**20  # bytes, each private writable folder of a bubblewrap sandbox (memory-backed)
SANDBOX_UID_BASE = 62000  # as root: uids BASE+2i (a run's test process) and BASE+2i+1 (its student process)
SANDBOX_UID_SLOTS = 32

# What a student process may import besides the standard library: NumPy, and what the course's given code
# imports at run time (stage 2's digits, the plots, GPT-2's pre-tokeniser, the translation corpus), with what
# they require. PyTorch is added only for the exercises that port to it (``torch = true`` in exercises.toml).
STUDENT_DISTRIBUTIONS = ("numpy", "scipy", "scikit-learn", "matplotlib", "regex", "num2words")
TORCH_DISTRIBUTIONS = ("torch",)

# The bootstrap the test process runs (``python -s -P -B -c BOOTSTRAP WORKSPACE pytest-args...``): only the
# workspace on the import path, ahead of the installed packages, then pytest with the runner's arguments.
BOOTSTRAP = "import sys; sys.path.insert(0, sys.argv[1]); import pytest; sys.exit(pytest.main(sys.argv[2:]))"


def describe_bytes(n: int) -> str:
    return f"{n / 2**30:g} GiB" if n >= 2**30 else f"{n / 2**20:g} MB"


def parse_size(text: str) -> int:
    """``4G``, ``600M``, ``600MB``, ``4GiB`` or a number of megabytes -> bytes (binary units)."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(value[-1:], None)
    number = float(value[:-1] if scale else value)
    if number <= 0:
        raise ValueError(text)
    return int(number * (scale or 2**20))


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------- the workspace
def _only_sources(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or (not n.endswith(".py") and not os.path.isdir(os.path.join(folder, n)))]


_NO_CACHES = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


@dataclass
class Workspace:
    """A fresh copy of what one process needs, at ``root``; ``homes`` are the real folders of the stage packages."""

    root: Path
    homes: dict[str, Path]
    extra: dict[Path, Path] = field(default_factory=dict)  # a real folder the command names -> its copy

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    def folder_for(self, real_root: Path) -> Path:
        return self.root / ("solutions" if real_root == SOLUTIONS_DIR else "submission")

    def workspace_homes(self) -> dict[str, Path]:
        return {package: self.folder_for(real) for package, real in self.homes.items()}

    def build(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)  # never follows a link (fd-based on Linux)
        self.root.mkdir(parents=True)
        shutil.copytree(REPO_ROOT / "tests", self.root / "tests", ignore=_NO_CACHES)
        shutil.copytree(REPO_ROOT / "grading", self.root / "grading", ignore=_NO_CACHES)
        shutil.copy(REPO_ROOT / "pyproject.toml", self.root / "pyproject.toml")
        for package, real in self.homes.items():
            shutil.copytree(real / package, self.folder_for(real) / package, ignore=_only_sources)
        for real, copy in self.extra.items():
            shutil.copytree(real, copy, ignore=_NO_CACHES)
        for sub in ("home", "tmp"):
            (self.scratch / sub).mkdir(parents=True)

    def give_to(self, uid: int, gid: int, mode: int = 0o700) -> None:
        """(As root, right after ``build``, before any process of ``uid`` runs.) The workspace becomes ``uid``'s
        alone, or with ``mode=0o750`` readable by group ``gid`` too, while root keeps owning it."""
        owner = uid if mode == 0o700 else 0
        for folder, _dirs, files in os.walk(self.root):
            os.chown(folder, owner, gid, follow_symlinks=False)
            os.chmod(folder, mode)
            for name in files:
                os.chown(os.path.join(folder, name), owner, gid, follow_symlinks=False)
                os.chmod(os.path.join(folder, name), mode & 0o640 if mode != 0o700 else 0o600)
        os.chown(self.scratch, uid, gid, follow_symlinks=False)
        for sub in self.scratch.iterdir():
            os.chown(sub, uid, gid, follow_symlinks=False)

    def adopt(self, cmd: list[str]) -> list[str]:
        """The command with each path into the repository's tests, or into another folder of tests the runner
        names, turned into the workspace's copy (new folders are copied on the next build)."""
        tests = REPO_ROOT / "tests"
        adopted = []
        for arg in cmd:
            prefix, path = ("--ignore=", arg[len("--ignore="):]) if arg.startswith("--ignore=") else ("", arg)
            if os.path.isabs(path) and not path.startswith(str(self.root)):
                real = Path(path)
                if real == tests or tests in real.parents:
                    path = str(self.root / real.relative_to(REPO_ROOT))
                elif real.is_dir() and not str(real).startswith(str(self.root.parent)):
                    copy = self.extra.setdefault(real, self.root / "extra" / str(len(self.extra)))
                    path = str(copy)
            adopted.append(prefix + path)
        return adopted

    def replacements(self) -> list[tuple[str, str]]:
        pairs = [(str(self.folder_for(real)), str(real)) for real in self.homes.values()]
        pairs += [(str(copy), str(real)) for real, copy in self.extra.items()]
        pairs += [(str(self.root / name), str(REPO_ROOT / name)) for name in ("tests", "grading", "pyproject.toml")]
        return sorted(set(pairs), key=lambda pair: -len(pair[0]))

    def to_real(self, value, pairs: list[tuple[str, str]] | None = None):
        """``value`` (a string, or a record of them) with every workspace path replaced by the real one,
        so that messages and locations name the student's own files."""
        pairs = self.replacements() if pairs is None else pairs  # once per record, not once per string in it
        if isinstance(value, str):
            for copy, real in pairs:
                if copy in value:
                    value = value.replace(copy, real)
            return value
        if isinstance(value, dict):
            return {key: self.to_real(item, pairs) for key, item in value.items()}
        if isinstance(value, list):
            return [self.to_real(item, pairs) for item in value]
        return value


def child_environment(base: dict[str, str], scratch: Path) -> dict[str, str]:
    """The environment without any PYTHON* variable of the user's (no PYTHONPATH to the repository, no
    PYTHONSTARTUP) nor the shell's record of the folder the grader was started in, with HOME and the
    temporary folder in the scratch folder."""
    env = {key: value for key, value in base.items()
           if not key.startswith("PYTHON") and key not in ("PWD", "OLDPWD", "_", "INIT_CWD")}
    env.update(PWD=str(scratch), HOME=str(scratch / "home"), TMPDIR=str(scratch / "tmp"),
               MPLCONFIGDIR=str(scratch / "home"), XDG_CACHE_HOME=str(scratch / "home"),
               PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0", PYTHONNOUSERSITE="1")
    return env


def python_command(*args: str) -> list[str]:
    # -s: no user site folder; -P: no current folder on the path; -B: no bytecode written. Not -I: it would
    # also ignore PYTHONHASHSEED, and the environment is already ours (child_environment).
    return [os.path.normpath(sys.executable), "-s", "-P", "-B", *args]


def child_prefix(workspace: Workspace) -> list[str]:
    return python_command("-c", BOOTSTRAP, str(workspace.root))


# --------------------------------------------------------------------------- the isolation level
@dataclass(frozen=True)
class Isolation:
    level: str  # "bubblewrap", "uid" or "none"
    reason: str  # why this level and not a better one, in words
    uids: tuple[int, int] | None = None  # as root: (test process, student process)
    lock_fds: tuple[int, ...] = ()  # held while the run uses those uids

    @property
    def as_root(self) -> bool:
        return self.uids is not None

    @property
    def cpu(self) -> int | None:
        """The one CPU a run's test process and student processes share (Linux, two CPUs or more). Their exchanges
        are synchronous, one process waiting while the other works, so sharing a CPU costs no parallelism; and a
        reply then wakes its reader on the CPU it runs on. On a virtual machine, waking an idle CPU takes 100-200
        microseconds, and a stage's ten thousand exchanges made that seconds. Runs side by side (grading.batch
        --jobs) take different CPUs: by their uid slot as root, else by the grader's process id."""
        if not hasattr(os, "sched_getaffinity"):
            return None
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return None
        slot = (self.uids[0] - SANDBOX_UID_BASE) // 2 if self.uids else os.getpid()
        return cpus[slot % len(cpus)]

    def release(self) -> None:
        for fd in self.lock_fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def describe(self) -> str:
        return {
            "bubblewrap": "bubblewrap: the code under test sees only the Python installation, NumPy and its own "
                          "workspace" + (", as a uid of its own" if self.as_root else ", with the grader's uid"),
            "uid": "uid: the code under test runs as a uid of its own, but sees what any user of this machine may read",
            "none": "none: the code under test has the grader's own rights",
        }[self.level] + f" ({self.reason})"


LEVELS = ("bubblewrap", "uid", "none")


def choose_isolation(wanted: str = "auto") -> Isolation:
    """The best level this machine gives (``wanted="auto"``), or the level asked for if it can be had.
    Raises ``RuntimeError`` (with the reason) when a level asked for cannot."""
    bubblewrap_problem = bubblewrap_unavailable()
    if wanted in ("auto", "bubblewrap") and bubblewrap_problem is None:
        uids, fds = acquire_uids() if is_root() else (None, ())
        return Isolation("bubblewrap", "bubblewrap works here" + (", as root" if uids else ", without root"), uids, fds)
    if wanted == "bubblewrap":
        raise RuntimeError(f"bubblewrap cannot be used: {bubblewrap_problem}")
    why_not_bwrap = f"bubblewrap cannot be used: {bubblewrap_problem}"
    if wanted in ("auto", "uid"):
        if not is_root():
            if wanted == "uid":
                raise RuntimeError("uid isolation needs the grader to run as root")
            return Isolation("none", f"{why_not_bwrap}; and without root the code under test keeps the grader's uid")
        uids, fds = acquire_uids()
        problem = uid_cannot_run_python(uids[1])
        if problem is None:
            return Isolation("uid", why_not_bwrap if wanted == "auto" else "asked for", uids, fds)
        Isolation("none", "", uids, fds).release()
        if wanted == "uid":
            raise RuntimeError(problem)
        return Isolation("none", f"{why_not_bwrap}; and {problem}")
    return Isolation("none", "asked for")


@functools.lru_cache(maxsize=None)
def bubblewrap_unavailable() -> str | None:
    """Why bubblewrap cannot start a sandbox here (not Linux, not installed, or user namespaces forbidden);
    None when it can. Tried once."""
    if not sys.platform.startswith("linux"):
        return f"it exists only on Linux, not on {sys.platform}"
    if shutil.which("bwrap") is None:
        return "the bwrap command is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if is_root() and shutil.which("setpriv") is None:
        return "the setpriv command (util-linux) is not installed"
    try:
        completed = subprocess.run([*bwrap_prefix(View(python=False)), "true"], capture_output=True, text=True,
                                   timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap did not start ({exc})"
    if completed.returncode != 0:
        said = completed.stderr.strip().splitlines()
        return f"bwrap could not make a sandbox ({said[-1] if said else f'exit code {completed.returncode}'})"
    return None


def uid_cannot_run_python(uid: int) -> str | None:
    """Why ``uid`` cannot start this Python and import NumPy (a Python under /root, say); None if it can."""
    try:
        completed = subprocess.run(python_command("-c", "import numpy"), preexec_fn=switch_user(uid),
                                   capture_output=True, timeout=60, stdin=subprocess.DEVNULL, cwd="/")
        works = completed.returncode == 0
    except (OSError, subprocess.SubprocessError):
        works = False
    if works:
        return None
    return (f"an unprivileged uid cannot run this Python and import NumPy (is it installed under a folder other "
            f"users may not enter, like /root?): {sys.executable}")


def acquire_uids() -> tuple[tuple[int, int], tuple[int, ...]]:
    """(As root.) Two uids no other grading run holds, test process's and student's, and the lock that holds
    them: a lock file per uid, so that concurrent graders, even in separate processes or of other versions of
    this course, never share one."""
    import fcntl  # noqa: PLC0415 - Unix only, and only as root

    locks = Path(tempfile.gettempdir()) / "grader-users"
    locks.mkdir(mode=0o700, exist_ok=True)
    if locks.is_symlink() or locks.stat().st_uid != 0:
        raise RuntimeError(f"{locks} is not root's own folder")
    for slot in range(SANDBOX_UID_SLOTS):
        uids = (SANDBOX_UID_BASE + 2 * slot, SANDBOX_UID_BASE + 2 * slot + 1)
        fds = []
        for uid in uids:
            fd = os.open(locks / str(uid), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                break
            fds.append(fd)
        if len(fds) < len(uids):
            for fd in fds:
                os.close(fd)
            continue
        for uid in uids:
            kill_user(uid)  # a leftover of a grader that was itself killed
        return uids, tuple(fds)
    raise RuntimeError("every sandbox uid is in use by another grading run")


# --------------------------------------------------------------------------- starting a confined process
@dataclass
class View:
    """What a process under bubblewrap sees: the Python installation read-only (with only the
    ``site-packages`` entries of ``distributions``, or all of them when None), ``readable`` folders read-only,
    and ``private`` folders as empty writable memory-backed folders of its own."""

    python: bool = True
    distributions: tuple[str, ...] | None = None
    readable: tuple[Path, ...] = ()
    private: tuple[Path, ...] = ()


def bwrap_prefix(view: View) -> list[str]:
    # As root, no user namespace: with one, the sandboxed process would be uid 0 on the host. setpriv then
    # drops to the process's own uid inside. Without root, --unshare-all makes a user namespace.
    namespaces = (["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
                  if is_root() else ["--unshare-all"])
    cmd = ["bwrap", *namespaces, "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev",
           "--perms", "01777", "--size", str(SCRATCH_SIZE), "--tmpfs", "/tmp"]
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64"):
        path = Path("/", name)
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "fonts"):
        if Path("/etc", name).exists():
            cmd += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    made: set[Path] = {Path("/")}
    bound: list[Path] = []
    readable = [*(python_folders() + site_folders() if view.python else ()), *view.readable]
    for folder in _outermost(readable):
        cmd += _parents(folder, made) + ["--ro-bind", str(folder), str(folder)]
        made.add(folder)
        bound.append(folder)
    if view.python and view.distributions is not None:
        cmd += _only_distributions(view.distributions)
    for folder in view.private:
        inside = any(b in folder.parents for b in bound)  # its mount point is in that folder already
        cmd += ([] if inside else _parents(folder, made)) + ["--perms", "01777", "--size", str(SCRATCH_SIZE), "--tmpfs", str(folder)]
    return cmd


def _parents(folder: Path, made: set[Path]) -> list[str]:
    """Each folder above ``folder`` made traversable in the sandbox (the host's may be closed to other users)."""
    cmd = []
    for parent in reversed(folder.parents):
        if parent not in made:
            made.add(parent)
            cmd += ["--perms", "0755", "--dir", str(parent)]
    return cmd


def _outermost(folders) -> list[Path]:
    unique = sorted({Path(os.path.realpath(f)) for f in folders} | {Path(os.path.abspath(f)) for f in folders})
    return [f for f in unique if not any(other in f.parents for other in unique)
            and not f.is_relative_to("/usr") and f.exists()]


def python_folders() -> list[Path]:
    """The folders this Python runs from: its installation, and the virtual environment if it runs in one."""
    return [Path(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                              os.path.dirname(os.path.normpath(sys.executable)),
                              os.path.dirname(os.path.realpath(sys.executable))}]


def site_folders() -> list[Path]:
    """Every folder of installed packages this Python uses (a ``.pth`` file may add one from elsewhere), and those
    of the installation under its virtual environment."""
    found = {*site.getsitepackages(), *site.getsitepackages([sys.base_prefix, sys.base_exec_prefix]),
             *(p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages"))}
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        found.add(site.getusersitepackages())
    return sorted(Path(os.path.realpath(p)) for p in found if os.path.isdir(p))


@functools.lru_cache(maxsize=None)
def distribution_entries(names: tuple[str, ...]) -> dict[Path, frozenset[str]]:
    """The top-level entries (packages, modules, ``.dist-info``, bundled libraries) of the distributions
    ``names`` and of everything they require, by the folder they are installed in."""
    import importlib.metadata as metadata  # noqa: PLC0415

    from packaging.requirements import Requirement  # noqa: PLC0415 - installed with pytest

    entries: dict[Path, set[str]] = {}
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional one this machine lacks: the student process lacks it too
        home = Path(os.path.realpath(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        entries.setdefault(home, set()).update(t for t in tops if t != "__pycache__")
        for text in dist.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return {home: frozenset(names) for home, names in entries.items()}


def _only_distributions(names: tuple[str, ...]) -> list[str]:
    """Each folder of installed packages emptied, then the entries of ``names`` put back, read-only."""
    entries = distribution_entries(names)
    cmd = []
    for folder in site_folders():
        cmd += ["--tmpfs", str(folder)]
        for name in sorted(entries.get(folder, ())):
            if (folder / name).exists():
                cmd += ["--ro-bind", str(folder / name), str(folder / name)]
        cmd += ["--remount-ro", str(folder)]
    return cmd


def switch_user(uid: int | None, limits: bool = True):
    """What runs in the new process before it executes (Unix): the limits, and the switch to ``uid``. Where
    the system has no such limits (Windows) there is nothing to run: the parent's watch is the only limit."""
    try:
        import resource  # noqa: PLC0415 - Unix only
    except ImportError:
        resource = None
    if os.name != "posix" or (resource is None and uid is None):
        return None

    def setup() -> None:
        if limits and resource is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_CAP, FILE_SIZE_CAP))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:
            if resource is not None:
                resource.setrlimit(resource.RLIMIT_NPROC, (PROCESS_CAP, PROCESS_CAP))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return setup


def confined(isolation: Isolation | None, uid: int | None, view: View, cmd: list[str]) -> tuple[list[str], object]:
    """The command that runs ``cmd`` at ``isolation``'s level (as ``uid`` when the grader is root), and the
    function to run before it starts (``preexec_fn``). ``None``: only the limits (student mode)."""
    if isolation is None:
        return cmd, switch_user(None)
    cmd, setup = _confined(isolation, uid, view, cmd)
    cpu = isolation.cpu
    if cpu is None:
        return cmd, setup

    def on_the_runs_cpu() -> None:  # inherited by bwrap, setpriv and Python
        os.sched_setaffinity(0, {cpu})
        setup()

    return cmd, on_the_runs_cpu


def _confined(isolation: Isolation, uid: int | None, view: View, cmd: list[str]) -> tuple[list[str], object]:
    if isolation.level == "none":
        return cmd, switch_user(None)
    if isolation.level == "uid":
        return cmd, switch_user(uid)
    prefix = bwrap_prefix(view)
    if isolation.as_root:  # RLIMIT_NPROC then counts this uid's processes, which root's bwrap does not
        prefix += ["--", "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
                   "--inh-caps=-all", "--bounding-set=-all"]
        setup = switch_user(None)

        def with_process_cap() -> None:
            import resource  # noqa: PLC0415 - bubblewrap exists only on Linux

            setup()
            resource.setrlimit(resource.RLIMIT_NPROC, (PROCESS_CAP, PROCESS_CAP))

        return [*prefix, *cmd], with_process_cap
    return [*prefix, "--", *cmd], switch_user(None)


# --------------------------------------------------------------------------- no survivors
def become_subreaper() -> bool:
    """Make orphans of the code under test the grader's children, not init's (Linux; False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # noqa: PLC0415

    return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER


def tree(roots: list[int]) -> list[psutil.Process]:
    """The processes ``roots`` and everything they started that is still alive (zombies aside)."""
    found: dict[int, psutil.Process] = {}
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                found[process.pid] = process
    alive = []
    for process in found.values():
        with contextlib.suppress(psutil.Error):
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def usage(processes: list[psutil.Process]) -> int:
    """Resident memory in bytes of ``processes``. A page shared by forked processes counts once per process,
    so past the limit the caller checks again with proportional memory (``proportional_usage``)."""
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


def proportional_usage(processes: list[psutil.Process]) -> int:
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except (psutil.Error, AttributeError):  # no PSS outside Linux: resident memory then
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
    return total


def kill_tree(roots: list[int], patience: float = 10.0) -> None:
    """SIGKILL ``roots`` and everything they started, again until nothing is left (a fork bomb keeps forking
    while the tree is walked). The same on every system."""
    until = time.monotonic() + patience
    while time.monotonic() < until:
        processes = tree(roots)
        if not processes:
            return
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(processes, timeout=0.5)


def orphans(known: set[int]) -> list[int]:
    """The grader's children that none of its runs started: left behind by code under test (subreaper)."""
    with contextlib.suppress(psutil.Error):
        return [child.pid for child in psutil.Process().children() if child.pid not in known]
    return []


def reap_orphans(known: set[int]) -> None:
    """Kill and reap what the code under test left behind and was re-parented to the grader (Linux)."""
    for _ in range(100):
        left = orphans(known)
        if not left:
            return
        kill_tree(left, patience=2.0)
        for pid in left:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def kill_user(uid: int) -> None:
    """(Root, Unix.) SIGKILL every process of ``uid``: a process of that user sends kill(-1), which reaches all
    of them at once (a fork bomb cannot outrun it)."""
    pid = os.fork()
    if pid == 0:  # only system calls here, then out: no Python-level cleanup in a forked copy of the grader
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def is_file_too_large(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EFBIG


def crash_message(returncode: int | None, when: str) -> str:
    if returncode is not None and (returncode < 0 or 129 <= returncode <= 159):
        number = -returncode if returncode < 0 else returncode - 128  # bubblewrap reports a signal as 128 + it
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"the Python process was killed by {name} {when} (a crash in native code, or out of memory)"
    return f"the Python process exited with code {returncode} {when} (os._exit() or a crash)"
