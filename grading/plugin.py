"""The pytest plugin the grader loads into its child process (``-p grading.plugin``).

It appends one JSON object per line to the log file the parent chose, flushing each, so the parent
knows what happened even if the child is killed or dies mid-test:

    {"event": "collecting", "path": ...}                  a test module is about to be imported
    {"event": "collect_error", "path": ..., "exercises": [...], "error": {...}}
    {"event": "collected", "tests": [{"nodeid": ..., "exercise": ..., "functions": [...]}, ...]}
    {"event": "start", "nodeid": ...}
    {"event": "result", "nodeid": ..., "outcome": ..., "error": {...} | null, "ran": [...]}

``ran``: the student's functions the test ran (``grading.spectrum``), for the pointer at a TODO.

A test that runs longer than its exercise's time limit is interrupted (SIGALRM) and recorded as
``timeout``; once an exercise has timed out, its remaining tests are recorded as ``not_run`` without
running (the exercise is lost already, and each would hang again). Likewise a module of the code under
test whose import timed out is not imported again: every later test module that imports it fails at
once with ``ImportBlocked`` instead of costing another import limit.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import hmac
import importlib
import importlib.abc
import json
import os
import sys
import re
import signal
import traceback
from pathlib import Path

import pytest

from grading.registry import exercises_marked_in, load_stage
from grading import remote, spectrum
from grading.remote import CodeUnderTestGone, RemoteError, RemoteModule
from grading.sandbox import FILE_SIZE_CAP, PROCESS_CAP, describe_bytes

STAGE_PACKAGES = re.compile(r"^stage\d+_\w+$")


LOG_KEY_VARIABLE = "GRADING_LOG_KEY"


def sign_record(key: bytes, sequence: int, record: dict) -> str:
    """One log line: the record with its sequence number, after the HMAC of both under ``key``."""
    body = json.dumps({**record, "seq": sequence})
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest() + " " + body


def verified_record(key: bytes, line: str, last_sequence: int) -> dict | None:
    """The record of a log line signed with ``key`` and numbered after ``last_sequence``; None otherwise."""
    mac, _, body = line.partition(" ")
    if not hmac.compare_digest(mac, hmac.new(key, body.encode(), hashlib.sha256).hexdigest()):
        return None
    record = json.loads(body)
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int) or record["seq"] <= last_sequence:
        return None
    return record


IMPORT_TIMEOUT = 30.0  # seconds to import one test module, and with it the code under test (and torch)
MIN_IMPORT_TIMEOUT = 10.0  # the least a shorter --timeout may make it


class TestTimedOut(BaseException):
    """Raised in the test by the alarm. A BaseException, so student code's ``except Exception`` can't swallow it."""


class ImportBlocked(ImportError):
    """Importing this module of the code under test timed out earlier in the run; it is not tried again."""


class HungImports(importlib.abc.MetaPathFinder):
    """Ahead of every other finder: refuses the stage modules whose import timed out. Python forgets a
    module whose import raised, so without this each test module importing it would hang again."""

    def __init__(self):
        self.refusals: dict[str, str] = {}  # module name -> why

    def find_spec(self, name, path=None, target=None):
        if name in self.refusals:
            raise ImportBlocked(self.refusals[name], name=name)
        return None


def import_time_limit(test_timeout: float | None) -> float:
    return IMPORT_TIMEOUT if not test_timeout else max(test_timeout, MIN_IMPORT_TIMEOUT)


@contextlib.contextmanager
def alarm(seconds: float | None, message: str):
    """Raise ``TestTimedOut(message)`` in the main thread if the body runs longer than ``seconds``
    (no limit for None). The parent kills the process if the body ignores it, and where there is no
    SIGALRM (Windows) the parent's kill at the limit is the only one."""
    if seconds is None or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise TestTimedOut(message)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def pytest_addoption(parser):
    group = parser.getgroup("grading", "the grader's child process")
    group.addoption("--grading-log", help="append one JSON line per event to this file, or to the open file "
                                          "descriptor N with fd:N (the grader's own file)")
    group.addoption("--grading-timeout", type=float, help="time limit per test in seconds (default: per exercise)")
    group.addoption("--grading-only", help="a file listing the node ids to run, one per line")
    group.addoption("--grading-exercises", help="comma-separated exercise ids to run (default: all)")


def pytest_configure(config):
    path = config.getoption("--grading-log")
    if path:
        config.pluginmanager.register(GradingRecorder(config, Path(path)), "grading-recorder")
        # The tests' own heavy imports, done before the clock starts on importing the code under test.
        for module in ("numpy", "torch"):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)


def exercise_of(item) -> str | None:
    marker = item.get_closest_marker("exercise")
    return marker.args[0] if marker else None


def functions_of(item) -> list[str]:
    """The functions a test says it tests (``@pytest.mark.under_test("GPT.forward", ...)``), for the report's
    pointer at a TODO when the failure is an assertion in the test itself; [] when it says nothing."""
    marker = item.get_closest_marker("under_test")
    return [str(name) for name in marker.args] if marker else []


class GradingRecorder:
    def __init__(self, config, log_path: Path):
        self.config = config
        fd = str(log_path).removeprefix("fd:")
        self.log = (os.fdopen(int(fd), "a", encoding="utf-8") if fd.isdigit()
                    else log_path.open("a", encoding="utf-8"))
        # Each line is signed with the key the parent gave (and then taken out of the environment that a
        # student process inherits): a line the code under test forges does not verify and is ignored.
        self.key = os.environ.pop(LOG_KEY_VARIABLE, "").encode()
        self.sequence = 0
        # The grader runs one stage's test folder, tests/<stage>; its registry has the time limits.
        self.stage = load_stage(Path(config.args[0]).name)
        self.lost_exercises: set[str] = set()
        self.outcomes: dict[str, tuple[str, dict | None]] = {}
        self.what_runs = WhatRuns()
        self.hung_imports = HungImports()
        self.detailed: set[tuple[str | None, str]] = set()  # (exercise, outcome) pairs whose output is kept

    def write(self, **record) -> None:
        self.sequence += 1
        self.log.write(sign_record(self.key, self.sequence, record) + "\n")
        self.log.flush()

    def pytest_sessionfinish(self, session):
        # Every result is written; the parent stops a process that lingers (say, in a thread left running).
        self.write(event="finished")

    # -------------------------------------------------------------- collection
    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector):
        """Importing a test module imports the code under test, which may hang too: time it like a test."""
        if not isinstance(collector, pytest.Module):
            yield
            return
        self.write(event="collecting", path=str(collector.path))
        limit = import_time_limit(self.config.getoption("--grading-timeout"))
        with alarm(limit, f"importing the code under test took longer than {limit:g} s"):
            yield

    def pytest_exception_interact(self, node, call, report):
        if isinstance(node, pytest.Module) and report.failed:
            value = call.excinfo.value
            error = describe_exception(value, during="importing the tests")
            if isinstance(value, TestTimedOut):
                self.refuse_hung_import(value)
            if isinstance(value, CodeUnderTestGone):  # authoritative grading: the student process died importing
                error.update(type="crashed", message=value.describe(
                    f"while importing {node.path.name} and the code under test it imports"))
            self.write(event="collect_error", path=str(node.path), exercises=exercises_marked_in(node.path), error=error)

    def refuse_hung_import(self, exc: BaseException) -> None:
        """Block the stage module whose top-level code was running when the import limit struck."""
        limit = import_time_limit(self.config.getoption("--grading-timeout"))
        for location in stage_frames(exc, follow_context=False):
            if location["function"] == "<module>":
                module = location["file"].removesuffix(".py").removesuffix("/__init__").replace("/", ".")
                self.refuse(module, f"blocked: importing {location['file']} took longer than {limit:g} s earlier in "
                            f"this run (it was at line {location['line']}), so it is not tried again; make it "
                            "import quickly")
                return
        for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
            remote = frame.f_locals.get("module") if frame.f_code.co_name == "exec_module" else None
            if isinstance(remote, RemoteModule):  # authoritative grading, and the student process said nothing
                self.refuse(remote.__name__, f"blocked: importing {remote.__name__} took longer than {limit:g} s "
                            "earlier in this run, so it is not tried again; make it import quickly")
                return

    def refuse(self, module: str, why: str) -> None:
        self.hung_imports.refusals[module] = why
        if self.hung_imports not in sys.meta_path:
            sys.meta_path.insert(0, self.hung_imports)
        if remote.STUDENT is not None:  # a stage module imported inside the student process is refused there too
            remote.STUDENT.refuse(module, why)

    @pytest.hookimpl(trylast=True)  # after tests/conftest.py's ordering: the log's order is the order they run in
    def pytest_collection_modifyitems(self, config, items):
        wanted = config.getoption("--grading-exercises")
        only = config.getoption("--grading-only")
        keep = items
        if wanted:
            ids = set(wanted.split(","))
            keep = [item for item in keep if exercise_of(item) in ids]
        if only:
            nodeids = set(Path(only).read_text(encoding="utf-8").split("\n"))
            keep = [item for item in keep if item.nodeid in nodeids]
        deselected = [item for item in items if item not in keep]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = keep
        self.write(event="collected", tests=[{"nodeid": i.nodeid, "exercise": exercise_of(i), "functions": functions_of(i)}
                                            for i in items])

    # -------------------------------------------------------------- running
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.write(event="start", nodeid=item.nodeid)
        exercise = exercise_of(item)
        lost = exercise in self.lost_exercises
        limit = self.stage.time_limit(exercise, self.config.getoption("--grading-timeout"))
        recording = not lost and self.what_runs.begin()
        with alarm(None if lost else limit, f"this test took longer than its time limit of {limit:g} s"):
            protocol = yield
        ran = self.what_runs.end() if recording else ()
        # A test passes only on a recorded pass of its call phase; anything else that ends it is not a pass.
        outcome, error = self.outcomes.pop(item.nodeid, ("error", {
            "type": "NoResult", "message": "the test ended without a result", "location": None}))
        if protocol.excinfo is not None:  # KeyboardInterrupt, pytest.exit(): the code under test stopped the run
            error = describe_exception(protocol.excinfo[1], during="call")
            reason = error["type"] + (f": {error['message']}" if error["message"] else "")
            error.update(type="crashed", message=f"the code under test stopped the whole test run ({reason})")
            outcome = "crashed"  # like a crash, it ends the process: the exercise's other tests are not run
        if lost:
            outcome, error = "not_run", {"type": "NotRun", "message": f"not run: an earlier test of exercise {exercise} timed out"}
        elif outcome == "timeout":
            self.lost_exercises.add(exercise)
        self.write(event="result", nodeid=item.nodeid, outcome=outcome, error=error, ran=list(ran))

    def pytest_runtest_setup(self, item):
        if exercise_of(item) in self.lost_exercises:
            pytest.skip("exercise already timed out")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = (yield).get_result()
        if report.passed:
            if call.when == "call":
                self.outcomes[item.nodeid] = ("passed", None)
            return
        if (item.nodeid in self.outcomes and self.outcomes[item.nodeid][0] != "passed") or call.excinfo is None:
            return  # keep the first problem (a teardown error after a failure adds nothing)
        value = call.excinfo.value
        error = describe_exception(value, during=call.when)
        if isinstance(value, RemoteError) and type(value).__name__ in ("KeyboardInterrupt", "Exit"):
            # what would stop a test run that shared the student's process: the same verdict here
            reason = error["type"] + (f": {error['message']}" if error["message"] else "")
            error.update(type="crashed", message=f"the code under test stopped the whole test run ({reason})")
            self.outcomes[item.nodeid] = ("crashed", error)
            return
        if isinstance(value, RemoteError) and type(value).__name__ == "Skipped":
            error["message"] = "the code under test skipped this test (pytest.skip); a test passes only by running"
            self.outcomes[item.nodeid] = ("error", error)
            return
        if report.skipped:
            if error["location"] is None:  # skipped by the test itself (say, an optional package is missing)
                reason = getattr(value, "msg", "") or error["message"]
                error.update(type="Skipped", message=f"this test was skipped ({reason}); a skipped test never "
                             "counts as passed")
                self.outcomes[item.nodeid] = ("skipped", error)
                return
            error["message"] = "the code under test skipped this test (pytest.skip); a test passes only by running"
            self.outcomes[item.nodeid] = ("error", error)
            return
        cap = cap_reached(value)
        if cap or isinstance(value, CodeUnderTestGone):
            outcome = "crashed"
        elif isinstance(value, TestTimedOut):
            outcome = "timeout"
        elif isinstance(value, NotImplementedError):
            outcome = "not_implemented"
        elif isinstance(value, AssertionError) and call.when == "call":
            outcome = "failed"
        else:
            outcome = "error"
        # pytest's full failure output, for -v: for the first failure of each kind in each exercise, the one
        # the report shows. Formatting every traceback would cost more than running the tests of a skeleton.
        if cap or outcome == "crashed":
            error.update(type="crashed", message=cap or error["message"])
        first_of_its_kind = (exercise_of(item), outcome)
        if first_of_its_kind not in self.detailed:
            self.detailed.add(first_of_its_kind)
            error["detail"] = long_failure_output(item, call.excinfo)
        self.outcomes[item.nodeid] = (outcome, error)


class WhatRuns:
    """Which of the student's functions each test runs (``grading.spectrum``), recorded where the student's code
    runs: here, or in the student process if it is up (a dead one is not restarted for this). What it says
    steers the pointer at a TODO, never a verdict.

    In authoritative grading each recording is a round trip, so a test costs one: its end also arms the
    functions for the next test (``spectrum.end_and_begin``); only a fresh student process needs ``begin``."""

    def __init__(self):
        self.armed = None  # the generation of the student process armed for the next test
        self.functions: tuple[int, object, object] | None = None  # (generation, begin, end_and_begin) proxies

    def _function(self, student, name: str):
        if self.functions is None or self.functions[0] != student.generation:
            module = student.request("import", None, "grading.spectrum")
            self.functions = (student.generation, student.request("getattr", module, "begin"),
                              student.request("getattr", module, "end_and_begin"))
        return self.functions[1 if name == "begin" else 2]

    def begin(self) -> bool:
        """Before a test: whether its functions are being recorded."""
        try:
            student = remote.STUDENT
            if student is None:
                spectrum.begin()
                return True
            if not student.alive:
                return False
            if self.armed != student.generation:
                student.request("call", self._function(student, "begin"), (), {})
                self.armed = student.generation
            return True
        except Exception:  # noqa: BLE001 - a student process that ended or misbehaves: no record, same verdicts
            return False

    def end(self) -> tuple[str, ...]:
        """After a test that was recorded: the functions it ran."""
        try:
            student = remote.STUDENT
            if student is None:
                return spectrum.clean(spectrum.end())
            self.armed = None
            if not student.alive:
                return ()
            names = student.request("call", self._function(student, "end"), (), {})
            self.armed = student.generation
            return spectrum.clean(names)
        except Exception:  # noqa: BLE001
            return ()


def cap_reached(exc: BaseException) -> str | None:
    """In words, the grader's limit that made ``exc`` happen (see grading.sandbox), or None."""
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return (f"a file or the output grew past the {describe_bytes(FILE_SIZE_CAP)} cap "
                f"({exc.strerror or 'File too large'})")
    if isinstance(exc, BlockingIOError) and exc.errno == errno.EAGAIN and finite_process_limit():
        return f"it could not start another process: the cap of {PROCESS_CAP} processes was reached"
    return None


def finite_process_limit() -> bool:
    try:
        import resource  # noqa: PLC0415 - Unix only
    except ImportError:
        return False
    return resource.getrlimit(resource.RLIMIT_NPROC)[0] != resource.RLIM_INFINITY


def long_failure_output(item, excinfo) -> str:
    """What ``pytest --tb=long`` prints for this failure. The child runs with ``--tb=no``, so pytest formats
    no traceback by itself; this formats one, for the failures the report can show."""
    option = item.config.option
    saved, option.tbstyle = option.tbstyle, "long"
    try:
        return absolute_locations(str(item.repr_failure(excinfo)))
    except Exception as error:  # noqa: BLE001 - the output is a courtesy; the verdict does not depend on it
        return f"(pytest's output could not be formatted: {type(error).__name__})"
    finally:
        option.tbstyle = saved


MESSAGE_LINES = 20  # of an exception's message kept for the report; the rest is in pytest's output (-v)
MESSAGE_CHARACTERS = 4000


def message_of(exc: BaseException) -> str:
    """The exception's message, whole up to MESSAGE_LINES lines: a message such as load_state_dict's lists what
    is wrong on the lines after its first. Without the introspection pytest appends to a failed ``assert x, msg``
    ("assert 0.06 <= 0.05"), which repeats the message's values in Python's words."""
    lines = str(exc).strip().splitlines()
    if isinstance(exc, AssertionError):
        cut = next((i for i, line in enumerate(lines) if i and line.startswith("assert ")), len(lines))
        lines = lines[:cut]
    kept = lines[:MESSAGE_LINES]
    if len(lines) > len(kept):
        kept.append(f"... ({len(lines) - len(kept)} more lines; add -v for pytest's whole output)")
    message = "\n".join(kept)
    return message if len(message) <= MESSAGE_CHARACTERS else message[:MESSAGE_CHARACTERS] + " ... (cut)"


# "../tests/stage2/test_linear.py:63: AssertionError": pytest's place of a traceback entry, relative to the folder
# it runs in when that is shorter. That folder is the grading workspace, which means nothing to the student.
LOCATION = re.compile(r"^(?P<path>[^\s:][^:\n]*\.py)(?=:\d+:)", re.MULTILINE)


def absolute_locations(text: str) -> str:
    """pytest's output with each traceback entry's file as an absolute path, which the parent maps from the
    workspace back to the real file (``grading.sandbox.Workspace.to_real``) and shows relative to the student's
    copy (``grading.report.relative_to_copies``)."""
    return LOCATION.sub(lambda m: m["path"] if os.path.isabs(m["path"]) else
                        os.path.normpath(os.path.join(os.getcwd(), m["path"])), text)


def describe_exception(exc: BaseException, during: str, longrepr: str = "") -> dict:
    """What the parent needs to explain an exception: its type, message (see ``message_of``), and where in a
    stage package it was raised (the innermost frame in student or reference code, not in the tests)."""
    original = exc.__cause__ if exc.__cause__ is not None and type(exc).__name__ == "CollectError" else exc
    message = message_of(original)
    location = None
    frames = stage_frames(original)
    if isinstance(original, SyntaxError) and original.filename:
        location = stage_location(original.filename, original.lineno or 0)
        message = f"{original.msg}"
        frames = [location] if location else []
    else:
        own = stage_frames(original, follow_context=False)
        location = own[0] if own else None
    exercise = re.search(r"Exercise (\d+\.\d+)", message) if isinstance(original, NotImplementedError) else None
    return {
        "type": type(original).__name__,
        "message": message,
        "location": location,
        "exercise": exercise.group(1) if exercise else None,
        "during": during,
        "exit_code": original.code if isinstance(original, SystemExit) else None,
        "detail": longrepr,
        "frames": frames,
    }


def stage_frames(exc: BaseException, follow_context: bool = True, limit: int = 20) -> list[dict]:
    """The frames of ``exc``'s traceback that lie in a stage package, innermost first (each place once);
    with ``follow_context``, then those of the exception it was raised from or while handling: an
    AssertionError raised on catching a RecursionError leads back to the function that recursed."""
    frames: list[dict] = []
    seen: set[tuple] = set()
    for _ in range(5):  # a chain of causes is short; a cycle would not end
        if exc is None:
            break
        places = [(frame.f_code.co_filename, lineno, frame.f_code.co_name)
                  for frame, lineno in reversed(list(traceback.walk_tb(exc.__traceback__)))]
        # raised in the student process (authoritative grading): its frames, sent with it, come first, then
        # those of the exceptions it was raised from or while handling
        remote = [[tuple(place) for place in reversed(link.get("frames", []))]
                  for link in getattr(exc, "remote_chain", None) or []]
        if remote:
            places = remote[0] + places + [place for link in (remote[1:] if follow_context else []) for place in link]
        for filename, lineno, function in places:
            location = stage_location(str(filename), int(lineno), str(function))
            if location and (key := (location["root"], location["file"], lineno)) not in seen:
                seen.add(key)
                frames.append(location)
                if len(frames) >= limit:
                    return frames
        if not follow_context:
            break
        exc = exc.__cause__ if exc.__cause__ is not None else exc.__context__
    return frames


def stage_location(filename: str, lineno: int, function: str | None = None) -> dict | None:
    """``{"package", "root", "file", "line", "function"}`` when ``filename`` lies in a stage package."""
    place = package_of(filename)
    if place is None:
        return None
    package, root, file = place
    return {"package": package, "root": root, "file": file, "line": lineno, "function": function}


@functools.lru_cache(maxsize=256)
def package_of(filename: str) -> tuple[str, str, str] | None:
    """(package, root, file within the root) for a file in a stage package (a deep recursion asks often)."""
    path = Path(filename).resolve()
    for index, part in enumerate(path.parts[:-1]):
        if STAGE_PACKAGES.match(part):
            return part, str(Path(*path.parts[:index])), Path(*path.parts[index:]).as_posix()
    return None
