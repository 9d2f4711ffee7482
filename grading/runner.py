"""The trusted parent: runs one stage's tests in a child process and collects every test's outcome.

The parent never imports the code under test. It starts pytest in a child Python, in a fresh workspace
with the limits and the identity ``grading.sandbox`` sets up, with the grading plugin,
which logs each event to a file as it happens; the parent follows the log, enforces the time limits,
and kills the child's whole process group when a test hangs past its limit or the run past its own.
When the child dies or is killed mid-run, the test it was in is charged with it and a new child runs
the tests that have no outcome yet, so one hang or crash costs one exercise, not the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from grading import sandbox
from grading.launcher import Launcher, StudentSettings, remove_scratch
from grading.sandbox import crash_message
from grading.spectrum import clean
from grading.plugin import LOG_KEY_VARIABLE, import_time_limit, verified_record
from grading.registry import Stage, all_stages, exercises_marked_in

GRACE_SECONDS = 3.0  # after a test's own limit, before the parent kills a child that ignored the alarm
MAX_RESTARTS = 25  # a submission that kills every child it gets is not retried forever
LINGER_SECONDS = 2.0  # how long a child may outlive the end of its test session
MAX_OUTPUT_CHARS = 2_000_000  # of pytest's output kept for -v
USAGE_POLL_SECONDS = 0.1  # how often the parent sums the memory and counts the processes of the child


@dataclass
class TestResult:
    nodeid: str
    exercise: str | None
    outcome: str  # passed, skipped, failed, not_implemented, error, timeout, crashed, not_run
    error: dict | None = None
    functions: tuple[str, ...] = ()  # the functions the test says it tests (its under_test marker)
    ran: tuple[str, ...] = ()  # the student's functions it ran, "stage2_mlp/nn.py::Linear.forward" (grading.spectrum)


@dataclass
class RunResult:
    tests: dict[str, TestResult] = field(default_factory=dict)  # in collection order
    collect_errors: list[dict] = field(default_factory=list)  # {"path", "exercises", "error"}
    output: str = ""  # what pytest printed, for -v
    run_timed_out: bool = False


def child_command(stage: Stage, homes: dict[str, Path], log: str, exercises: list[str], test_timeout: float | None,
                  only: Path | None, ignored: list[str], student_process: dict | None = None) -> list[str]:
    """pytest's arguments (the runner starts pytest through ``sandbox.child_prefix``, in the workspace).
    With ``student_process`` (authoritative grading) the stage packages run in a process of their own."""
    cmd = [
        str(stage.tests_dir), *(str(d) for d in stage.extra_tests),
        "-p", "grading.plugin", "--grading-log", log,
        # --tb=no: the plugin formats the few tracebacks the report can show (formatting all is slow)
        "-q", "--tb=no", "--continue-on-collection-errors", "-p", "no:cacheprovider", "-o", "addopts=",
    ]
    if student_process is not None:
        cmd += ["--student-process", json.dumps(student_process)]
    else:
        for package, root in homes.items():
            cmd += ["--implementation", f"{package}={root}"]
    if exercises:
        cmd += ["--grading-exercises", ",".join(exercises)]
    if test_timeout:
        cmd += ["--grading-timeout", str(test_timeout)]
    if only is not None:
        cmd += ["--grading-only", str(only)]
    cmd += [f"--ignore={path}" for path in ignored]
    return cmd


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    # sandbox.child_environment then drops the user's PYTHON* variables and points HOME and TMPDIR into
    # the workspace: the child finds the tests and the grading plugin there, never the repository.
    env["MPLBACKEND"] = "Agg"
    # One BLAS thread: the same float rounding on a busy machine as on an idle one (same code, same score),
    # and no oversubscription of a small machine's cores by NumPy and PyTorch at once.
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    env.pop(LOG_KEY_VARIABLE, None)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only our plugin: no installed plugin may reorder or change tests
    return env


@dataclass
class Processes:
    """The processes of one test process's turn: it, the student processes it asked for, and (in student mode
    on Linux) what they left behind and was re-parented to the grader."""

    test: psutil.Popen
    isolation: sandbox.Isolation | None
    launcher: Launcher | None = None

    def roots(self) -> list[int]:
        students = self.launcher.pids() if self.launcher is not None else []
        return [self.test.pid, *students, *sandbox.orphans({self.test.pid, *students})]

    def kill(self) -> None:
        sandbox.kill_tree(self.roots())
        if self.launcher is not None:
            self.launcher.stop()
        if self.isolation is not None and self.isolation.level == "uid":
            for uid in self.isolation.uids:  # what left the tree (a double fork) is still that uid's
                sandbox.kill_user(uid)
        sandbox.reap_orphans({self.test.pid})
        with contextlib.suppress(psutil.Error, subprocess.TimeoutExpired):
            self.test.wait(timeout=10)


def run_stage(stage: Stage, homes: dict[str, Path], exercises: list[str], test_timeout: float | None,
              run_timeout: float, memory_limit: int = sandbox.DEFAULT_MEMORY_LIMIT,
              isolation: sandbox.Isolation | None = None) -> RunResult:
    """Run ``stage``'s tests with each stage package imported from the folder ``homes`` gives.

    Each child runs in a fresh copy of the tests and of those packages (see ``grading.sandbox``); what it
    reports names the real files again. When this returns, nothing the child started is left running.

    ``isolation`` (authoritative grading): the test process (which decides every verdict) has no student code;
    the stage packages run in student processes the grader starts for it (``grading.launcher``), at that
    isolation level. ``None``: student mode, the tests and the code under test share one process."""
    result = RunResult()
    deadline = time.monotonic() + run_timeout
    sandbox.become_subreaper()
    authoritative = isolation is not None
    test_uid = isolation.uids[0] if authoritative and isolation.uids else None
    outputs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="grader-", ignore_cleanup_errors=True) as tmp:
        tmpdir = Path(tmp).resolve()
        if test_uid is not None:
            tmpdir.chmod(0o711)  # its uids pass through to their own folders, and list nothing
        log_path, only_path = tmpdir / "log.jsonl", tmpdir / "only.txt"
        workspace = sandbox.Workspace(tmpdir / "ws", {} if authoritative else homes)
        launcher, translate = None, workspace.to_real
        if authoritative:
            launcher, student_workspace = prepare_student_processes(tmpdir, homes, isolation)
            translate = lambda record: student_workspace.to_real(workspace.to_real(record))  # noqa: E731
        ignored: list[str] = []
        collected: dict[str, str | None] | None = None  # nodeid -> exercise, once the first child collected
        functions: dict[str, tuple[str, ...]] = {}  # nodeid -> the functions it says it tests
        tests_before = 0
        for attempt in range(MAX_RESTARTS + 1):
            key = secrets.token_hex(32).encode()  # signs the child's log lines (grading.plugin)
            only = None
            if collected is not None:
                todo = still_to_run(collected, result)
                if not todo:
                    break
                only_path.write_text("\n".join(todo), encoding="utf-8")
                only_path.chmod(0o644)
                only = only_path
            log_path.write_text("")
            log_path.chmod(0o600)
            # The child writes its log through a descriptor of the grader's file: it needs no path to it. (Windows
            # passes no descriptors to a child; there the child is the student's own code, graded as the student.)
            log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND) if os.name == "posix" else None
            control = control_child = None
            fds = [log_fd] if log_fd is not None else []
            if authoritative:
                control, control_child = socket.socketpair()
                fds.append(control_child.fileno())
            student_process = ({"control_fd": control_child.fileno(), "torch_modules": torch_modules()}
                               if authoritative else None)
            log = f"fd:{log_fd}" if log_fd is not None else str(log_path)
            pytest_args = child_command(stage, workspace.workspace_homes(), log, exercises, test_timeout, only, ignored,
                                        student_process)
            cmd = sandbox.child_prefix(workspace) + workspace.adopt(pytest_args)
            workspace.build()  # fresh for every child: nothing one leaves in it reaches the next
            if test_uid is not None and isolation.level == "uid":
                workspace.give_to(test_uid, test_uid)  # a 0700 folder of its own: the student's uid reads none of it
            view = sandbox.View(readable=(workspace.root, *([only_path] if only is not None else [])),
                                private=(workspace.scratch,))
            cmd, setup = sandbox.confined(isolation, test_uid, view, cmd)
            out_path = tmpdir / f"pytest-output-{attempt}.txt"
            try:
                with out_path.open("wb") as out:
                    process = psutil.Popen(cmd, cwd=workspace.scratch, stdout=out, stderr=subprocess.STDOUT,
                                           env={**sandbox.child_environment(child_environment(), workspace.scratch),
                                                LOG_KEY_VARIABLE: key.decode()},
                                           stdin=subprocess.DEVNULL, pass_fds=fds, preexec_fn=setup,
                                           start_new_session=os.name == "posix")
            finally:
                if log_fd is not None:
                    os.close(log_fd)
                if control_child is not None:
                    control_child.close()
            processes = Processes(process, isolation, launcher)
            if launcher is not None:
                launcher.serve_in_thread(control)
            try:
                state = follow(processes, log_path, result, stage, test_timeout, deadline, memory_limit, translate, key)
            finally:  # also on Ctrl-C, and to end anything the code under test started in the background
                processes.kill()
            outputs.append(translate(output_tail(out_path)))
            if state.cap is None and output_cap_reached(process.returncode, out_path):
                state.cap = OUTPUT_CAP_MESSAGE
            if collected is None:
                collected = state.collected
            functions.update(state.functions)
            if state.run_timed_out:
                result.run_timed_out = True
                if state.current_test is not None:
                    result.tests[state.current_test] = TestResult(
                        state.current_test, (collected or {}).get(state.current_test), "timeout",
                        problem("timeout", f"the whole run's time limit of {run_timeout:g} s was reached during this test"),
                        functions.get(state.current_test, ()))
                break
            if state.current_test is not None:  # the child died or was killed inside a test
                exercise = (collected or {}).get(state.current_test)
                error = (problem("crashed", f"{state.cap} during this test") if state.cap
                         else problem("timeout", f"this test ran past its time limit of {stage.time_limit(exercise, test_timeout):g} s "
                                      "and had to be stopped") if state.killed
                         else problem("crashed", crash_message(process.returncode, "in the middle of this test")))
                result.tests[state.current_test] = TestResult(state.current_test, exercise, error["type"], error,
                                                              functions.get(state.current_test, ()))
            elif state.collecting is not None and not state.finished:  # it died, or hung, while importing tests
                module = Path(state.collecting).name
                error = (problem("crashed", f"{state.cap} while importing {module} and the code under test it imports")
                         if state.cap
                         else problem("timeout", f"importing {module}, and the code under test it imports, took longer than "
                                      f"{import_time_limit(test_timeout):g} s and had to be stopped") if state.killed
                         else problem("crashed", crash_message(process.returncode, f"while importing {module} and "
                                                               "the code under test it imports")))
                result.collect_errors.append({"path": state.collecting,
                                              "exercises": exercises_marked_in(Path(state.collecting)), "error": error})
                ignored.append(state.collecting)
            elif collected is None or len(result.tests) == tests_before:
                break  # the child finished (or made no progress: a restart would not either)
            tests_before = len(result.tests)
        if launcher is not None:
            outputs.append(translate(output_tail(launcher.settings.output)))
            remove_scratch(tmpdir)
    result.output = "".join(outputs)[-MAX_OUTPUT_CHARS:]
    if collected is not None:
        missing = (problem("timeout", f"not run: the whole run's time limit of {run_timeout:g} s was reached")
                   if result.run_timed_out else problem("NotRun", "this test has no recorded outcome"))
        result.tests = {n: result.tests.get(n) or TestResult(n, ex, "timeout" if result.run_timed_out else "not_run",
                                                             missing)
                        for n, ex in collected.items()}
    return result


def torch_modules() -> list[str]:
    """The modules whose code may import PyTorch: the files of the exercises that port to it."""
    return [f"{stage.package}.{Path(e.file).stem}" for stage in all_stages() for e in stage.exercises if e.torch]


def prepare_student_processes(tmpdir: Path, homes: dict[str, Path], isolation: sandbox.Isolation):
    """The grader's side of the student processes: the workspace they all start from (read-only to them),
    and the launcher that starts them when the test process asks."""
    template = sandbox.Workspace(tmpdir / "student", homes)
    template.build()
    student_uid = isolation.uids[1] if isolation.uids else None
    if student_uid is not None and isolation.level == "uid":
        template.give_to(student_uid, student_uid, mode=0o750)  # root's, readable by the student's uid alone
    output, stack = tmpdir / "student-output.txt", tmpdir / "student-stack.txt"
    output.write_bytes(b"")
    settings = StudentSettings(template, sandbox.child_environment(child_environment(), template.scratch), output, stack)
    return Launcher(isolation, settings, tmpdir), template


OUTPUT_CAP_MESSAGE = (f"a file or the output grew past the {sandbox.describe_bytes(sandbox.FILE_SIZE_CAP)} cap "
                      "and the Python process was stopped")


def output_tail(path: Path) -> str:
    """The end of one child's output: at most MAX_OUTPUT_CHARS bytes are read back, however much it wrote."""
    with contextlib.suppress(OSError), path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - MAX_OUTPUT_CHARS))
        return f.read().decode("utf-8", errors="replace")
    return ""


def output_cap_reached(returncode: int | None, out_path: Path) -> bool:
    file_too_large = getattr(signal, "SIGXFSZ", None)  # Unix; bubblewrap reports a signal as 128 + its number
    if file_too_large is not None and returncode in (-file_too_large, 128 + file_too_large):
        return True
    with contextlib.suppress(OSError):
        return out_path.stat().st_size >= sandbox.FILE_SIZE_CAP
    return False


def still_to_run(collected: dict[str, str | None], result: RunResult) -> list[str]:
    """Tests with no outcome yet, except those of an exercise that crashed or hung: it is lost already,
    and running its other tests would most likely repeat that."""
    lost = {t.exercise for t in result.tests.values() if t.outcome in ("crashed", "timeout")}
    return [n for n, exercise in collected.items() if n not in result.tests and exercise not in lost]


@dataclass
class ChildState:
    collected: dict[str, str | None] | None = None
    functions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # nodeid -> its under_test functions
    current_test: str | None = None
    collecting: str | None = None
    killed: bool = False
    run_timed_out: bool = False
    finished: bool = False  # the child reported the end of its session
    cap: str | None = None  # the limit the child was stopped for, in words (memory, processes, output)


def follow(processes: Processes, log_path: Path, result: RunResult, stage: Stage, test_timeout: float | None,
           deadline: float, memory_limit: int = sandbox.DEFAULT_MEMORY_LIMIT, translate=lambda record: record,
           key: bytes = b"") -> ChildState:
    """Read the child's log as it grows until the child exits; kill it when a limit is passed. Only lines
    signed with ``key`` count (see grading.plugin.sign_record). ``translate`` turns each record's workspace
    paths into the real ones."""
    state = ChildState()
    last_sequence = 0
    started_at = collecting_since = finished_at = 0.0
    next_usage_check = 0.0
    exercise_of: dict[str, str | None] = {}
    functions_of = state.functions
    with log_path.open(encoding="utf-8") as log:
        pending = ""
        while True:
            finished = processes.test.poll() is not None
            chunk = log.read()
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                try:
                    record = verified_record(key, line, last_sequence)
                    if record is None:
                        continue  # not ours: a line the code under test managed to write into the log
                    last_sequence = record["seq"]
                    record = translate(record)
                    event = record["event"]
                except (ValueError, KeyError, TypeError):
                    continue  # not ours: a line the code under test managed to write into the log
                if event == "finished":
                    state.finished, finished_at = True, time.monotonic()
                if event == "collecting":
                    state.collecting, collecting_since = record["path"], time.monotonic()
                elif event == "collect_error":
                    result.collect_errors.append(record)
                elif event == "collected":
                    state.collecting = None
                    state.collected = {t["nodeid"]: t["exercise"] for t in record["tests"]}
                    exercise_of.update(state.collected)
                    functions_of.update({t["nodeid"]: tuple(t.get("functions") or ()) for t in record["tests"]})
                elif event == "start":
                    state.current_test, started_at = record["nodeid"], time.monotonic()
                elif event == "result":
                    nodeid = record["nodeid"]
                    result.tests[nodeid] = TestResult(nodeid, exercise_of.get(nodeid), record["outcome"], record["error"],
                                                      functions_of.get(nodeid, ()), clean(record.get("ran")))
                    state.current_test = None
            if finished:
                return state
            now = time.monotonic()
            if state.finished and now - finished_at > LINGER_SECONDS:
                return state  # the results are in; whatever keeps the process alive is killed by the caller
            if now > deadline:
                processes.kill()
                state.run_timed_out = True
                return state
            if now >= next_usage_check:
                members = sandbox.tree(processes.roots())
                memory = sandbox.usage(members)
                if memory > memory_limit:  # a page shared by forked processes counted once per process: look closer
                    memory = sandbox.proportional_usage(members)
                # Reading many processes' memory is slow (a fork bomb's): the parent takes at most a tenth of a core
                next_usage_check = now + max(USAGE_POLL_SECONDS, 10 * (time.monotonic() - now))
                if len(members) > sandbox.PROCESS_CAP:
                    state.cap = f"it started more than {sandbox.PROCESS_CAP} processes at once and was stopped"
                elif memory > memory_limit:
                    state.cap = (f"it used more than {sandbox.describe_bytes(memory_limit)} of memory (the grader's "
                                 "--memory-limit) and was stopped")
                if state.cap:
                    processes.kill()
                    state.killed = True
                    return state
            if state.current_test is not None:
                limit = stage.time_limit(exercise_of.get(state.current_test), test_timeout)
                overdue = now - started_at > limit + GRACE_SECONDS
            else:
                overdue = (state.collecting is not None
                           and now - collecting_since > import_time_limit(test_timeout) + GRACE_SECONDS)
            if overdue:
                processes.kill()
                state.killed = True
                return state
            time.sleep(0.02)


def problem(kind: str, message: str) -> dict:
    """An outcome's error record for what the parent saw itself (the child could not report it)."""
    return {"type": kind, "message": message, "location": None}
