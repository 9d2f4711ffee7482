"""The grading machinery behind ``grader.py``: the exercise registry, the pytest plugin that runs in the
child process, the parent that supervises it, the report (and the source reading that finds the TODO to
point at), what the grader remembers between runs, progress across stages, watch mode, the set-up check,
and the skeleton generator."""
