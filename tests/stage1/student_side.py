"""What the tests of stage 1 run beside the code under test (see tests/student_side.py).

In authoritative grading this module is imported in the student process, where the tensors live: a weak
reference taken in the test process would only see the copy of an array that crossed over, never the array the
graph holds. The long chains of the recursion tests are built here too: thousands of operations, each a round
trip between the two processes if the test process made them. Their values are checked in the test.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np


def data_probe(tensor) -> weakref.ref:
    """A weak reference to ``tensor.data``, the array itself (not a copy)."""
    return weakref.ref(tensor.data)


def still_alive(probe: weakref.ref) -> bool:
    """Whether the array behind ``probe`` is still alive after a garbage collection, here beside the code under
    test. This is the student process's word: test_backward_releases_the_graph also checks the gradient's values,
    and exercise 1.7 has many value checks of its own."""
    gc.collect()
    return probe() is not None


def chain_of_values(x, factor: float, length: int):
    """``x * factor * factor * ...`` (``length`` multiplications), with the student's ``Value``."""
    y = x
    for _ in range(length):
        y = y * factor
    return y


def chain_of_products(x, factor, length: int):
    """The sum of ``x * factor * ... * factor`` (``length`` products), made with the given ``Tensor._from_op`` and
    textbook gradients like tests.helpers' reference ops: only the engine (1.7) is under test."""
    from stage1_autograd.tensor import Tensor  # noqa: PLC0415 - the stage package under test

    factor_data = factor.data
    y = x
    for _ in range(length):
        y_data = y.data
        y = Tensor._from_op(y_data * factor_data, (y, factor),
                            lambda g, y_data=y_data: (g * factor_data, g * y_data))
    y_data = y.data
    return Tensor._from_op(y_data.sum(), (y,), lambda g: (np.broadcast_to(g, y_data.shape),))
