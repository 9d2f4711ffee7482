"""``python grader.py stage1 --watch``: grade, wait for a file of the stage to be saved, grade again.

Saves are noticed by polling: every half second the watcher stats the Python files of the watched
folders and compares their modification times and sizes with the last look. A stage folder holds about
a dozen files, so a look costs well under a millisecond and the process sleeps in between (no busy loop).
Polling needs no extra package and behaves the same on Linux, macOS and Windows, on network drives and in
containers with mounted folders, where change notifications (inotify and friends) are often not
delivered. Half a second of delay is nothing next to a grading run of several seconds.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from grading.report import display_path

POLL_SECONDS = 0.5
SETTLE_SECONDS = 0.2  # editors may write a file in several steps; grade once it has stopped changing


def snapshot(folders: list[Path]) -> dict[str, tuple[int, int]]:
    """Path -> (modification time in ns, size) of every Python file under ``folders``."""
    seen = {}
    for folder in folders:
        for directory, subdirs, files in os.walk(folder):
            subdirs[:] = [d for d in subdirs if d != "__pycache__" and not d.startswith(".")]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    try:
                        info = os.stat(path)
                    except OSError:  # deleted between the listing and the stat
                        continue
                    seen[path] = (info.st_mtime_ns, info.st_size)
    return seen


def wait_for_change(folders: list[Path], before: dict[str, tuple[int, int]]) -> list[str]:
    """Sleep until a file under ``folders`` differs from ``before`` and has settled; the changed paths."""
    while True:
        time.sleep(POLL_SECONDS)
        now = snapshot(folders)
        if now != before:
            while True:  # let a save in several writes finish
                time.sleep(SETTLE_SECONDS)
                settled = snapshot(folders)
                if settled == now:
                    break
                now = settled
            return sorted(p for p in set(now) | set(before) if now.get(p) != before.get(p))


def clear_screen() -> None:
    if sys.stdout.isatty():
        print("\033[2J\033[H", end="")
    else:  # a log or a pipe: a rule between runs instead of control characters
        print("\n" + "=" * 100)


def watch(grade: Callable[[], tuple[int, str]], folders: list[Path]) -> int:
    """Run ``grade`` now and after every save under ``folders`` until Ctrl-C, which ends it cleanly."""
    shown = ", ".join(f"{display_path(f)}/" for f in folders)
    reason = "first run"
    try:
        while True:
            before = snapshot(folders)  # taken before grading: a save during the run triggers the next one
            clear_screen()
            print(f"[watch] {time.strftime('%H:%M:%S')}: {reason}", flush=True)
            _code, text = grade()
            print(text)
            print(f"\nWatching {shown}: save a file to grade again; Ctrl-C to stop.", flush=True)
            changed = wait_for_change(folders, before)
            reason = "changed: " + ", ".join(display_path(Path(p)) for p in changed[:3]) + \
                     (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    except KeyboardInterrupt:
        print("\nstopped watching", flush=True)
        return 0
