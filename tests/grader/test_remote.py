"""The channel between the test process and the student process (grading.remote), on its own: both ends run
here, the student's in a thread, over a socket pair. What crosses as a value, what stays a handle, and the
rules that keep a verdict out of the student's reach."""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import types

import numpy as np
import pytest

from grading.remote import Channel, ProtocolError, Proxy


@pytest.fixture
def student():
    """``(test side, student side)``: the student side answers in a thread until the test side hangs up."""
    ours, theirs = socket.socketpair()
    tests, students = Channel(ours, trusted=True), Channel(theirs, trusted=False)
    thread = threading.Thread(target=students.serve_forever, daemon=True)
    thread.start()
    yield tests, students
    tests.close()
    thread.join(timeout=5)
    students.close()


def handle_to(tests: Channel, students: Channel, obj) -> Proxy:
    """A proxy, on the test side, of ``obj`` living on the student side."""
    module = types.ModuleType("student_module")
    module.obj = obj
    sys.modules["student_module"] = module
    try:
        return tests.request("getattr", tests.request("import", None, "student_module"), "obj")
    finally:
        del sys.modules["student_module"]


def test_values_cross_as_values(student):
    tests, students = student
    values = [None, True, 3, 2**80, -0.0, float("nan"), 1 + 2j, "text", b"bytes", [1, (2, 3)], {"a": {1, 2}},
              slice(1, None, 2), np.arange(6, dtype=np.float32).reshape(2, 3), np.array(["a", "bc"]),
              np.float64(0.5), np.int8(-3), np.dtype("float16"), np.float32, float]
    for value in values:
        back = tests.request("call", handle_to(tests, students, lambda: value), (), {})
        assert type(back) is type(value)
        if isinstance(value, np.ndarray):
            assert back.dtype == value.dtype and np.array_equal(back, value)
        elif value == value:  # not NaN
            assert back == value


def test_a_subclass_sent_as_a_value_arrives_as_its_plain_base(student):
    tests, students = student

    class Close(np.ndarray):
        def __eq__(self, other):
            return np.ones(np.shape(other), bool)

    back = tests.request("call", handle_to(tests, students, lambda: np.zeros(3).view(Close)), (), {})
    assert type(back) is Proxy  # not a plain ndarray: it stays there...
    array = np.asarray(back)  # ...and what comes back is a plain array of its numbers
    assert type(array) is np.ndarray and not np.array_equal(array, np.ones(3))


def test_an_object_equal_to_anything_is_equal_only_to_itself(student):
    tests, students = student

    class Anything:
        def __eq__(self, other):
            return True

    proxy = handle_to(tests, students, Anything())
    assert (proxy == 3) is False and (proxy == np.ones(2)) is False and proxy != 3
    assert proxy == proxy and len({proxy, proxy}) == 1
    with pytest.raises(TypeError):
        np.asarray(handle_to(tests, students, [Anything()]))  # a list is a value... of a handle: not numbers


def test_an_array_of_python_objects_never_crosses(student):
    tests, students = student
    with pytest.raises(TypeError, match="Python objects"):
        np.asarray(handle_to(tests, students, object()))


def test_exit_never_swallows_the_tests_exception(student):
    tests, students = student

    class Swallow:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return True

    with pytest.raises(AssertionError), handle_to(tests, students, Swallow()):
        raise AssertionError("a failed check")


def test_the_student_side_may_call_a_callback_but_not_read_its_attributes(student):
    tests, students = student
    secret = {"expected": 42}

    def callback(x):
        return x + 1

    callback.secret = secret
    call = handle_to(tests, students, lambda f: f(1))
    assert tests.request("call", call, (callback,), {}) == 2
    peek = handle_to(tests, students, lambda f: f.secret)
    with pytest.raises(PermissionError):
        tests.request("call", peek, (callback,), {})


def test_a_failed_check_in_a_callback_fails_even_if_the_student_catches_it(student):
    tests, students = student

    def check(x):
        raise AssertionError("wrong")

    def swallow(f):
        try:
            f(1)
        except Exception:  # noqa: BLE001 - what a dishonest submission would do
            return "fine"

    with pytest.raises(AssertionError, match="wrong"):
        tests.request("call", handle_to(tests, students, swallow), (check,), {})


def test_a_generator_lent_to_the_student_side_draws_as_one_object(student):
    tests, students = student
    rng = np.random.default_rng(0)
    draw = handle_to(tests, students, lambda r: (isinstance(r, np.random.Generator), r.normal(size=2)))
    is_generator, first = tests.request("call", draw, (rng,), {})
    second = rng.normal(size=2)
    again = np.random.default_rng(0)
    assert is_generator and np.array_equal(first, again.normal(size=2)) and np.array_equal(second, again.normal(size=2))


def test_a_student_exception_keeps_its_name_and_builtin_bases(student):
    tests, students = student

    class GradcheckError(AssertionError):
        pass

    def fail():
        raise GradcheckError("input 0, element 3")

    with pytest.raises(AssertionError) as info:
        tests.request("call", handle_to(tests, students, fail), (), {})
    assert type(info.value).__name__ == "GradcheckError" and "element 3" in str(info.value)
    assert info.value.remote_chain[0]["frames"][-1][2] == "fail"


@pytest.mark.parametrize("garbage", [b"\xff" * 8, struct.pack("<II", 2, 5) + b"[]" + b"{bad}",
                                     struct.pack("<II", 2, 2**31) + b"[]"])
def test_a_malformed_answer_is_a_protocol_error(garbage):
    ours, theirs = socket.socketpair()
    tests = Channel(ours, trusted=True)
    theirs.sendall(garbage)
    theirs.close()
    with pytest.raises(ProtocolError):
        tests.wait()
    tests.close()


def test_a_value_tagged_as_an_object_array_is_refused():
    ours, theirs = socket.socketpair()
    tests = Channel(ours, trusted=True)
    header = json.dumps({"k": "ret", "v": {"t": "array", "d": "|O", "s": [1], "b": 0}}).encode()
    sizes = json.dumps([8]).encode()
    theirs.sendall(struct.pack("<II", len(sizes), len(header)) + sizes + header + b"\0" * 8)
    with pytest.raises(ProtocolError):
        tests.wait()
    tests.close()
    theirs.close()
