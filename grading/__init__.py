"""The grading machinery behind ``grader.py``: the exercise registry, the pytest plugin that runs in the
child process, the parent that supervises it, the report, and the skeleton generator."""
