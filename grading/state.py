"""What the grader remembers between runs: the last result of each exercise and the hints already shown.

It lives in ``.grader/state.json`` at the root of this copy of the course: beside the student's folders,
never inside them (the grader writes nothing there), ignored by git, and gone with the copy. Delete the
folder to start afresh. Only runs on this copy's own stage folders are remembered: ``--solutions`` and
``--submission DIR`` runs leave it alone, so grading a class does not mix students up.

The file is a convenience: if it cannot be read or written, the grader works as before, only without
memory (``status`` then has nothing to show, and ``--hint`` starts again from the first hint).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from grading.registry import REPO_ROOT, Stage

STATE_DIR = REPO_ROOT / ".grader"
VERSION = 1


def newest_change(folder: Path) -> float:
    """The latest modification time of a Python file under ``folder`` (0.0 if none)."""
    times = [p.stat().st_mtime for p in folder.rglob("*.py") if "__pycache__" not in p.parts]
    return max(times, default=0.0)


class State:
    def __init__(self, directory: Path = STATE_DIR):
        self.path = directory / "state.json"
        self.data = self._read()

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"version": VERSION, "stages": {}, "hints": {}}
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return {"version": VERSION, "stages": {}, "hints": {}}
        data.setdefault("stages", {})
        data.setdefault("hints", {})
        return data

    def save(self) -> bool:
        """Write atomically (a watch and a run in another terminal may both save); False if it cannot."""
        tmp = self.path.with_name(f".state-{os.getpid()}.json")
        try:
            self.path.parent.mkdir(exist_ok=True)
            tmp.write_text(json.dumps(self.data, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
            return True
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False

    # ------------------------------------------------------------------ last results
    def record(self, stage: Stage, results, started_at: float, files_changed_at: float) -> None:
        """Remember each graded exercise's result (exercises not graded this time keep their last one)."""
        entry = self.data["stages"].setdefault(stage.name, {"exercises": {}})
        for r in results:
            entry["exercises"][r.exercise.id] = {
                "status": r.status, "score": r.score, "max_score": r.exercise.points,
                "message": r.message.splitlines()[0] if r.message else "", "graded_at": started_at,
            }
        entry["graded_at"] = started_at
        entry["files_changed_at"] = files_changed_at

    def last_results(self, stage: Stage) -> dict[str, dict]:
        """Exercise id -> its last recorded result, for the exercises the registry still has."""
        known = self.data["stages"].get(stage.name, {}).get("exercises", {})
        return {e.id: known[e.id] for e in stage.exercises if isinstance(known.get(e.id), dict)}

    def graded_at(self, stage: Stage) -> float | None:
        return self.data["stages"].get(stage.name, {}).get("graded_at")

    def files_changed_at(self, stage: Stage) -> float | None:
        return self.data["stages"].get(stage.name, {}).get("files_changed_at")

    # ------------------------------------------------------------------ hints
    def hints_shown(self, exercise_id: str) -> int:
        """How many hints of the exercise the student has seen: at least the first, which the table shows."""
        shown = self.data["hints"].get(exercise_id, 1)
        return shown if isinstance(shown, int) and shown >= 1 else 1

    def show_hints(self, exercise_id: str, count: int) -> None:
        self.data["hints"][exercise_id] = count


def age(seconds_ago: float) -> str:
    """``just now``, ``5 min ago``, ``3 h ago``, ``2 days ago``."""
    seconds_ago = max(0.0, seconds_ago)
    if seconds_ago < 60:
        return "just now"
    if seconds_ago < 3600:
        return f"{int(seconds_ago // 60)} min ago"
    if seconds_ago < 2 * 86400:
        return f"{int(seconds_ago // 3600)} h ago"
    return f"{int(seconds_ago // 86400)} days ago"


def now() -> float:
    return time.time()
