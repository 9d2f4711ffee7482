"""Grade a stage of Scratch to GPT: ``python grader.py stage1`` (see ``--help``).

This file only starts the grader; the machinery lives in the ``grading`` package beside it. The grader
never imports your code: it runs the tests in a separate process and reads what they report.
"""

import sys

from grading.cli import run

if __name__ == "__main__":
    sys.exit(run())
