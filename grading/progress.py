"""``python grader.py`` (or ``status``): every stage's last results and the next exercise, without grading.

It shows what the grader remembered from the last runs on this copy's own folders (see grading.state),
says how old each stage's results are and whether its files changed since, and names the command to run
next. It runs no test and writes nothing.
"""

from __future__ import annotations

from grading.registry import REPO_ROOT, Stage, load_stage, stage_names
from grading.report import display_path
from grading.state import State, age, newest_change, now


def show(state: State) -> int:
    print(render(state))
    return 0


def render(state: State) -> str:
    lines = ["Scratch to GPT · your progress",
             f"  the last results remembered in {display_path(state.path)}; this command grades nothing "
             "(`python grader.py stageN` grades a stage)", ""]
    next_command = None
    for name in stage_names():
        try:
            stage = load_stage(name)
        except (OSError, ValueError, KeyError, TypeError) as error:  # a registry being edited
            lines += [f"  {name}: its registry cannot be read ({error})", ""]
            continue
        stage_lines, command = stage_status(stage, state)
        lines += stage_lines + [""]
        next_command = next_command or command
    if next_command:
        lines.append(f"Next: {next_command}")
    else:
        lines.append("Every exercise of every stage passed when last graded.")
    return "\n".join(lines)


def stage_status(stage: Stage, state: State) -> tuple[list[str], str | None]:
    """The lines of one stage, and the command to run next for it (None when it is complete)."""
    folder = REPO_ROOT / stage.package
    head = f"  {stage.name:<7} {stage.title:<24}"
    if not folder.is_dir():
        return [f"{head} no {stage.package}/ folder in this copy"], None
    last = state.last_results(stage)
    passed = [e for e in stage.exercises if last.get(e.id, {}).get("status") == "passed"]
    todo = next((e for e in stage.exercises if e not in passed), None)
    if not last:
        lines = [f"{head} not graded yet (lesson: {display_path(folder / 'README.md')})"]
    else:
        score = sum(last[e.id]["score"] for e in passed)
        graded = state.graded_at(stage)
        when = f"graded {age(now() - graded)}" if graded else "graded"
        changed_at = state.files_changed_at(stage)
        if changed_at is not None and newest_change(folder) > changed_at:
            when += ", files changed since"
        never = len(stage.exercises) - len(last)
        lines = [f"{head} {score:>3}/{stage.max_score}   {len(passed)} of {len(stage.exercises)} exercises passed"
                 + (f", {never} never graded" if never else "") + f"   ({when})"]
    if todo is None:
        lines.append(f"{'':<10}complete")
        return lines, None
    command = f"python grader.py {stage.name} -x {todo.id}"
    state_of_todo = last.get(todo.id, {}).get("status", "not graded")
    lines.append(f"{'':<10}next: {todo.id} {todo.title} ({state_of_todo.replace('_', ' ')}): `{command}`")
    return lines, f"`{command}` ({stage.name}, {todo.id} {todo.title})"
