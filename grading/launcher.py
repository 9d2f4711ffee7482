"""Student processes, started by the grader when the test process asks for one (authoritative grading).

The test process is never privileged and never starts student code itself: it holds one end of a control
socket whose other end a thread of the grader serves (``Launcher``). Asked to ``start``, the grader stops
the previous student process and everything it started, starts a new one at the run's isolation level
(``grading.sandbox``) with a fresh private scratch folder, and hands the test process one end of a socket
pair whose other end the student process holds (``grading.remote``'s channel). The test process cannot
choose what runs, where, as whom, or with what view: only when, and whether PyTorch is in it (for the
exercises that port to it). It can also ask where the student process is (its stack, for a test that ran
out of time) and how it ended.

One long-lived thread starts every student process of a test process: bubblewrap's ``--die-with-parent``
follows the thread that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from grading import sandbox

SERVE = "grading.remote import serve"  # in every student process's command line: how the grader finds it
# The workspace first on the import path, and the grader's folders of packages it may not find by itself (one a .pth
# file adds: the student process's site-packages keep only the allowed packages, not the .pth files)
BOOTSTRAP = ("import json, sys; sys.path.insert(0, sys.argv[1]); sys.path += [p for p in json.loads(sys.argv[5]) if p "
             f"not in sys.path]; from {SERVE}; serve(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))")


@dataclass
class StudentSettings:
    """What every student process of a run gets; the runner decides it, the test process cannot change it."""

    template: sandbox.Workspace  # the stage packages, grading/ and the tests' student_side modules
    environment: dict[str, str]
    output: Path  # what the student processes print, for -v
    stack: Path  # where a student process writes its stack when asked


class Launcher:
    """(In the grader.) Serves one test process's control socket from a thread of its own."""

    def __init__(self, isolation: sandbox.Isolation, settings: StudentSettings, workdir: Path):
        self.isolation, self.settings, self.workdir = isolation, settings, workdir
        self.process: psutil.Popen | None = None
        self.lock = threading.Lock()
        self.starts = 0
        self.thread: threading.Thread | None = None

    @property
    def student_uid(self) -> int | None:
        return self.isolation.uids[1] if self.isolation.uids else None

    def serve_in_thread(self, control: socket.socket) -> None:
        self.thread = threading.Thread(target=self._serve, args=(control,), name="student-launcher", daemon=True)
        self.thread.start()

    def _serve(self, control: socket.socket) -> None:
        reader = control.makefile("rb")
        try:
            for line in reader:
                try:
                    request = json.loads(line)
                    op, number = request["op"], int(request["id"])
                except (ValueError, KeyError, TypeError):
                    break  # not our client: the test process is not well, and gets no more student processes
                answer, fds = self._answer(op, request)
                payload = (json.dumps({"id": number, **answer}) + "\n").encode()
                try:
                    socket.send_fds(control, [payload], fds) if fds else control.sendall(payload)
                finally:
                    for fd in fds:
                        os.close(fd)
        except OSError:
            pass
        finally:
            reader.close()
            control.close()
            self.stop()

    def _answer(self, op: str, request: dict) -> tuple[dict, list[int]]:
        if op == "start":
            return {"ok": True}, [self.start(bool(request.get("torch")))]
        if op == "stop":
            return {"returncode": self.stop()}, []
        if op == "returncode":
            return {"returncode": self.returncode(float(request.get("wait", 0)))}, []
        if op == "where":
            return {"frames": self.where()}, []
        return {"error": f"unknown request {op!r}"}, []

    def pids(self) -> list[int]:
        with self.lock:
            return [self.process.pid] if self.process is not None and self.process.poll() is None else []

    def start(self, torch: bool) -> int:
        """A new student process; returns the test process's end of its channel."""
        self.stop()
        self.starts += 1
        template, level, uid = self.settings.template, self.isolation.level, self.student_uid
        scratch = self.workdir / f"student-scratch-{self.starts}"
        if level == "bubblewrap":
            scratch = template.scratch  # a private tmpfs over the template's (empty) scratch folder
        else:  # a fresh folder of a new name, made whole before its uid owns it (and none of its processes runs)
            for sub in ("", "home", "tmp"):
                (scratch / sub).mkdir(mode=0o700)
            for sub in ("home", "tmp", "") if uid is not None else ():
                os.chown(scratch / sub, uid, uid, follow_symlinks=False)
        view = sandbox.View(distributions=sandbox.STUDENT_DISTRIBUTIONS + (sandbox.TORCH_DISTRIBUTIONS if torch else ()),
                            readable=(template.root,), private=(template.scratch,))
        ours, theirs = socket.socketpair()
        stack = os.open(self.settings.stack, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        homes = {package: str(folder) for package, folder in template.workspace_homes().items()}
        cmd, setup = sandbox.confined(self.isolation, uid, view, sandbox.python_command(
            "-c", BOOTSTRAP, str(template.root), str(theirs.fileno()), json.dumps(homes), str(stack),
            json.dumps([p for p in sys.path if Path(os.path.realpath(p)) in sandbox.site_folders()])))
        try:
            with open(self.settings.output, "ab") as output:
                process = psutil.Popen(cmd, cwd=scratch, env=sandbox.child_environment(self.settings.environment, scratch),
                                       stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                       pass_fds=[theirs.fileno(), stack], preexec_fn=setup,
                                       start_new_session=os.name == "posix")
        finally:
            theirs.close()
            os.close(stack)
        with self.lock:
            self.process = process
        return ours.detach()

    def stop(self) -> int | None:
        """Stop the student process and everything it started; its exit code (None if there was none)."""
        with self.lock:
            process, self.process = self.process, None
        if process is None:
            return None
        sandbox.kill_tree([process.pid])
        if self.student_uid is not None and self.isolation.level == "uid":
            sandbox.kill_user(self.student_uid)  # what left the tree (a double fork) is still this uid's
        with contextlib.suppress(Exception):
            return process.wait(timeout=5)
        return None

    def returncode(self, wait: float) -> int | None:
        with self.lock:
            process = self.process
        if process is None:
            return None
        with contextlib.suppress(psutil.TimeoutExpired, psutil.Error):
            return process.wait(timeout=wait)
        return None

    def where(self) -> list[list]:
        """Where the student process is now, innermost frame last (it writes its stack on SIGUSR1)."""
        with self.lock:
            process = self.process
        if process is None:
            return []
        python = next((p for p in sandbox.tree([process.pid]) if _is_student_python(p)), None)
        if python is None:
            return []
        with contextlib.suppress(OSError, psutil.Error):
            size = self.settings.stack.stat().st_size
            python.send_signal(signal.SIGUSR1)
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                time.sleep(0.02)
                with self.settings.stack.open("rb") as f:
                    f.seek(size)
                    text = f.read(1_000_000).decode("utf-8", errors="replace")
                if text.endswith("\n") and "File" in text:
                    frames = [[file, int(line), function] for file, line, function in
                              re.findall(r'File "(.+)", line (\d+) in (\S+)', text)]
                    return frames[::-1]
        return []


def _is_student_python(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return any(SERVE in part for part in process.cmdline()) and not process.name().startswith(("bwrap", "setpriv"))
    return False


class LauncherClient:
    """(In the test process.) Asks the grader for student processes over the control socket."""

    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)
        self.number = 0
        self.buffer = b""

    def _ask(self, op: str, **fields) -> tuple[dict, list[int]]:
        self.number += 1
        self.sock.sendall((json.dumps({"op": op, "id": self.number, **fields}) + "\n").encode())
        while True:  # answers to requests a test's time limit interrupted come first: skip them
            while b"\n" not in self.buffer:
                data, fds, _flags, _address = socket.recv_fds(self.sock, 1 << 16, 4)
                if not data:
                    raise ConnectionError("the grader closed the control socket")
                self.buffer += data
                if fds:
                    self._fds = getattr(self, "_fds", []) + fds
            line, _, self.buffer = self.buffer.partition(b"\n")
            answer = json.loads(line)
            fds, self._fds = getattr(self, "_fds", []), []
            if answer.get("id") == self.number:
                return answer, fds
            for fd in fds:
                os.close(fd)

    def start(self, torch: bool = False) -> socket.socket:
        answer, fds = self._ask("start", torch=torch)
        if not fds:
            raise ConnectionError(answer.get("error", "the grader did not start a student process"))
        return socket.socket(fileno=fds[0])

    def stop(self) -> int | None:
        return self._ask("stop")[0].get("returncode")

    def returncode(self, wait: float = 2.0) -> int | None:
        return self._ask("returncode", wait=wait)[0].get("returncode")

    def where(self) -> list[list]:
        return self._ask("where")[0].get("frames", [])


def remove_scratch(workdir: Path) -> None:
    """The student processes' scratch folders of a run (never following a link the code under test made)."""
    for folder in workdir.glob("student-scratch-*"):
        shutil.rmtree(folder, ignore_errors=True)

