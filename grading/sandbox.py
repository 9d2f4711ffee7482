"""Where and as whom the grader's child process runs, what it may use, and how nothing it starts survives.

Every run grades in a fresh workspace outside the repository: copies of ``tests/``, ``grading/`` and
``pyproject.toml``, and the stage packages under test as ``.py`` files only (from the student's folder, a
submission, or ``solutions/``). The child's current folder, HOME and TMPDIR lie in a scratch folder of that
workspace, so nothing it writes reaches the repository or the next submission: the workspace is rebuilt
for every child and removed afterwards.

The limits:
- RLIMIT_FSIZE: no file (pytest's captured output included) grows past ``FILE_SIZE_CAP``.
- memory: the parent sums the resident memory of the child and everything it started, and kills them past
  the limit. Not RLIMIT_AS: NumPy's BLAS and PyTorch reserve far more address space than they ever use
  (a thread stack and arena each), so an address-space cap small enough to matter breaks honest code; the
  child runs with one BLAS thread, and resident memory counts what is really used.
- processes: at most ``PROCESS_CAP`` at once (RLIMIT_NPROC for the child's own user when the grader runs as
  root; otherwise the parent counts them and stops the run past the cap).

As root (a container), the child runs as an unprivileged user of its own (one per concurrent run), in a
mount namespace where the repository is hidden under an empty tmpfs, so it cannot read ``solutions/``.
Without root it keeps the rights of the user who runs the grader.

The parent is a child subreaper (Linux): a process the child started and left behind (a double-forked
daemon) is re-parented to the grader instead of to init, and is killed when the child's turn ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import resource
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from grading.registry import REPO_ROOT, SOLUTIONS_DIR

FILE_SIZE_CAP = 64 * 2**20  # bytes, any one file the child writes (its output included)
PROCESS_CAP = 256  # processes the child may run at once, itself included
DEFAULT_MEMORY_LIMIT = 4 * 2**30  # bytes of resident memory, the child and everything it started
SANDBOX_UID_BASE = 61000  # the child's own user when the grader runs as root: one uid per concurrent run
SANDBOX_UID_SLOTS = 64

PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 1, 2, 4, 4096, 8192, 16384, 1 << 18

# The bootstrap the child runs (``python -s -P -B -c BOOTSTRAP WORKSPACE pytest-args...``): only the workspace
# on the import path, ahead of the installed packages, then pytest with the arguments the runner chose.
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


def _libc():
    return ctypes.CDLL(None, use_errno=True)


# --------------------------------------------------------------------------- the workspace
def _only_sources(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or (not n.endswith(".py") and not os.path.isdir(os.path.join(folder, n)))]


_NO_CACHES = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


@dataclass
class Workspace:
    """A fresh copy of what one child needs, at ``root``; ``homes`` are the real folders of the stage packages."""

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
            shutil.rmtree(self.root, ignore_errors=True)
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

    def clone(self, template: Path) -> None:
        """This workspace as a fresh copy of another one, built earlier (the student process's, each start)."""
        if self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)
        shutil.copytree(template, self.root, symlinks=True)

    def adopt(self, cmd: list[str]) -> list[str]:
        """The child's command with each path into the repository's tests, or into another folder of tests
        the runner names, turned into the workspace's copy (new folders are copied on the next build)."""
        tests = REPO_ROOT / "tests"
        adopted = []
        for arg in cmd:
            prefix, path = ("--ignore=", arg[len("--ignore="):]) if arg.startswith("--ignore=") else ("", arg)
            if path.startswith("/") and not path.startswith(str(self.root)):
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

    def to_real(self, value):
        """``value`` (a string, or a record of them) with every workspace path replaced by the real one,
        so that messages and locations name the student's own files."""
        if isinstance(value, str):
            for copy, real in self.replacements():
                if copy in value:
                    value = value.replace(copy, real)
            return value
        if isinstance(value, dict):
            return {key: self.to_real(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.to_real(item) for item in value]
        return value

    def open_to(self, identity: Identity | None) -> None:
        """Let the child's own user read the workspace and write only its scratch folder."""
        if identity is None:
            return
        for folder, dirs, files in os.walk(self.root):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        for folder, dirs, files in os.walk(self.scratch):
            os.chown(folder, identity.uid, identity.gid)
        os.chmod(self.root.parent, 0o711)


def child_environment(base: dict[str, str], workspace: Workspace) -> dict[str, str]:
    """The environment without any PYTHON* variable of the user's (no PYTHONPATH to the repository, no
    PYTHONSTARTUP) nor the shell's record of the folder the grader was started in, with HOME and the
    temporary folder in the scratch folder."""
    env = {key: value for key, value in base.items()
           if not key.startswith("PYTHON") and key not in ("PWD", "OLDPWD", "_", "INIT_CWD")}
    env.update(PWD=str(workspace.scratch), HOME=str(workspace.scratch / "home"), TMPDIR=str(workspace.scratch / "tmp"),
               MPLCONFIGDIR=str(workspace.scratch / "home"), XDG_CACHE_HOME=str(workspace.scratch / "home"),
               PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0", PYTHONNOUSERSITE="1")
    return env


def child_prefix(workspace: Workspace) -> list[str]:
    # -s: no user site folder; -P: no current folder on the path; -B: no bytecode written. Not -I: it would
    # also ignore PYTHONHASHSEED, and the environment is already ours (child_environment).
    return [sys.executable, "-s", "-P", "-B", "-c", BOOTSTRAP, str(workspace.root)]


# --------------------------------------------------------------------------- the child's own user (root only)
@dataclass
class Identity:
    uid: int
    gid: int
    lock_fd: int

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)


def acquire_identity() -> Identity | None:
    """When the grader runs as root, a user id no other grading run holds (a lock file per uid, so that
    concurrent graders, even in separate processes, never share one); None otherwise."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return None
    locks = Path(tempfile.gettempdir()) / "grader-users"
    locks.mkdir(mode=0o700, exist_ok=True)
    for uid in range(SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UID_SLOTS):
        fd = os.open(locks / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        kill_user(uid)  # a leftover of a grader that was itself killed
        identity = Identity(uid, uid, fd)
        if not sandbox_user_works(identity):  # say, a Python it may not run: the child keeps the grader's user
            identity.release()
            return None
        return identity
    raise RuntimeError("every sandbox user id is in use by another grading run")


def kill_user(uid: int) -> None:
    """SIGKILL every process of ``uid``: a process of that user sends kill(-1), which reaches all of them
    at once (a fork bomb cannot outrun it)."""
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


def hidden_folder() -> Path:
    """What the child's mount namespace covers: the whole repository, unless the Python that runs the
    child (a virtual environment inside the repository) or the temporary folder lies in it: then solutions/."""
    needed = [Path(sys.prefix), Path(sys.executable).resolve(), Path(tempfile.gettempdir()).resolve()]
    inside = any(path == REPO_ROOT or REPO_ROOT in path.parents for path in needed)
    return SOLUTIONS_DIR if inside else REPO_ROOT


def blocked_folders() -> dict[Path, set[str]]:
    """Folders on the way to the Python that runs the child which other users may not enter (a Python
    installed under /root, say), each with the names of the entries in it the child needs."""
    needed = {Path(sys.executable).parent, Path(os.path.realpath(sys.executable)).parent, Path(sys.prefix),
              Path(sys.base_prefix), *map(Path, site.getsitepackages())}
    blocked: dict[Path, set[str]] = {}
    for path in needed:
        path = Path(os.path.realpath(path))
        for folder in [*reversed(path.parents), path][:-1]:
            with contextlib.suppress(OSError):
                if not os.stat(folder).st_mode & 0o001:
                    blocked.setdefault(folder, set()).add(path.relative_to(folder).parts[0])
                    break
    return blocked


def _mount(source, target, kind, flags: int, options) -> None:
    encode = lambda value: None if value is None else os.fsencode(value)  # noqa: E731
    if _libc().mount(encode(source), encode(target), encode(kind), flags, encode(options)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {source} on {target}: {os.strerror(error)}")


def _hide(folders: list[Path], blocked: dict[Path, set[str]], holds: Path) -> None:
    """In the new process: a private mount namespace with an empty read-only tmpfs over each of ``folders``, and an
    open tmpfs over each blocked folder with only the entries the child needs mounted back into it."""
    if _libc().unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    for index, (parent, names) in enumerate(sorted(blocked.items())):
        held = []
        for name in sorted(names):
            hold = holds / f"{index}-{name}"
            hold.mkdir(exist_ok=True)
            _mount(parent / name, hold, None, MS_BIND | MS_REC, None)
            held.append((hold, parent / name))
        _mount("tmpfs", parent, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
        for hold, target in held:
            target.mkdir()
            _mount(hold, target, None, MS_MOVE, None)
    for folder in folders:
        _mount("tmpfs", folder, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0755")


_works: dict[str, bool] = {}


def _tried(name: str, cmd: list[str], setup) -> bool:
    if name not in _works:
        try:
            completed = subprocess.run(cmd, preexec_fn=setup, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, timeout=60)
            _works[name] = completed.returncode == 0
        except (OSError, subprocess.SubprocessError):
            _works[name] = False
    return _works[name]


def can_hide_repository() -> bool:
    """Whether this machine lets the grader start a process in a mount namespace (root, and a kernel or
    container that allows it); tried once."""
    with tempfile.TemporaryDirectory(prefix="grader-probe-") as holds, \
            tempfile.TemporaryDirectory(prefix="grader-probe-") as folder:
        return _tried("hide", ["true"], lambda: _hide([Path(folder)], blocked_folders(), Path(holds)))


def sandbox_user_works(identity: Identity) -> bool:
    """Whether the child's own user can start the grader's Python and import pytest and NumPy; tried once."""
    with tempfile.TemporaryDirectory(prefix="grader-probe-") as holds:
        return _tried("user", [sys.executable, "-s", "-P", "-B", "-c", "import pytest, numpy"],
                      preexec(identity, Path(holds)))


def preexec(identity: Identity | None, holds: Path, hide: list[Path] | None = None):
    """What runs in the new process before the child's Python starts: the limits, and as root the
    mount namespace (over ``hide``, by default the repository) and the switch to the child's own user.
    ``holds``: an empty folder of the parent's."""
    if identity is None or not can_hide_repository():
        hide = None
    elif hide is None:
        hide = [hidden_folder()]
    blocked = blocked_folders() if hide else {}

    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_CAP, FILE_SIZE_CAP))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if identity is None:
            return
        if hide:
            _hide(hide, blocked, holds)
        resource.setrlimit(resource.RLIMIT_NPROC, (PROCESS_CAP, PROCESS_CAP))
        os.setgroups([])
        os.setgid(identity.gid)
        os.setuid(identity.uid)

    return setup


# --------------------------------------------------------------------------- no survivors
_children_lock = threading.Lock()
_live_children: set[int] = set()  # the children runners started and still wait for (other threads' too)


def become_subreaper() -> bool:
    """Make orphans of the code under test the grader's children, not init's (Linux; False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    return _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


@contextlib.contextmanager
def tracked(process: subprocess.Popen):
    with _children_lock:
        _live_children.add(process.pid)
    try:
        yield process
    finally:
        with _children_lock:
            _live_children.discard(process.pid)


@dataclass
class Proc:
    ppid: int
    rss_pages: int
    zombie: bool


def process_table() -> dict[int, Proc]:
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rindex(b")") + 2:].split()
        table[int(entry.name)] = Proc(int(fields[1]), int(fields[21]), fields[0] == b"Z")
    return table


def descendants(roots: set[int], table: dict[int, Proc]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    found, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def orphans(table: dict[int, Proc]) -> set[int]:
    """The grader's children that no runner started: left behind by code under test (subreaper)."""
    me = os.getpid()
    with _children_lock:
        live = set(_live_children)
    return {pid for pid, proc in table.items() if proc.ppid == me and pid not in live}


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def usage(child_pid: int, memory_limit: int) -> tuple[int, int]:
    """(memory in bytes, processes) of the child and everything it started, left-behind orphans included.
    Resident memory counts a page shared by forked processes once per process, so a sum past the limit is
    checked again with proportional memory (PSS: a shared page split among its users), slower to read."""
    if not sys.platform.startswith("linux"):
        return 0, 0
    table = process_table()
    pids = [pid for pid in descendants({child_pid} | orphans(table), table) if not table[pid].zombie]
    memory = sum(table[pid].rss_pages for pid in pids) * PAGE_SIZE
    if memory > memory_limit:
        memory = sum(proportional_memory(pid) for pid in pids)
    return memory, len(pids)


def proportional_memory(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        for line in f:
            if line.startswith(b"Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def kill_survivors(identity: Identity | None, patience: float = 10.0) -> None:
    """After the child has ended: SIGKILL and reap everything it left behind, until nothing is left."""
    if identity is not None:
        kill_user(identity.uid)
    if not sys.platform.startswith("linux"):
        return
    until = time.monotonic() + patience
    while time.monotonic() < until:
        table = process_table()
        left = orphans(table)
        if not left:
            return
        for pid in descendants(left, table):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in left:  # reaping a zombie orphan lets its own orphans come to us in turn
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        if identity is not None:
            kill_user(identity.uid)
        time.sleep(0.01)


def is_file_too_large(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EFBIG


def crash_message(returncode: int | None, when: str) -> str:
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the Python process was killed by {name} {when} (a crash in native code, or out of memory)"
    return f"the Python process exited with code {returncode} {when} (os._exit() or a crash)"
