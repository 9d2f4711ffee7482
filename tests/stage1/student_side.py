"""What the tests of stage 1 run beside the code under test (see tests/student_side.py).

In authoritative grading this module is imported in the student process, where the tensors live: a weak
reference taken in the test process would only see the copy of an array that crossed over, never the array the
graph holds.
"""

from __future__ import annotations

import gc
import weakref


def data_probe(tensor) -> weakref.ref:
    """A weak reference to ``tensor.data``, the array itself (not a copy)."""
    return weakref.ref(tensor.data)


def still_alive(probe: weakref.ref) -> bool:
    """Whether the array behind ``probe`` is still alive after a garbage collection, here beside the code under
    test. This is the student process's word: test_backward_releases_the_graph also checks the gradient's values,
    and exercise 1.7 has many value checks of its own."""
    gc.collect()
    return probe() is not None
