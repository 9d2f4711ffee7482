"""Keeps the tests of stage 1 independent of each other."""

import sys

import pytest


@pytest.fixture(autouse=True)
def gradient_recording_switched_on():
    """A ``no_grad()`` that fails to restore the recording flag is caught by its own test (exercise 1.7);
    it must not also make every later test of other exercises fail."""
    yield
    tensor = sys.modules.get("stage1_autograd.tensor")
    if tensor is not None and getattr(tensor, "_grad_enabled", True) is not True:  # one read: a round trip, remotely
        tensor._grad_enabled = True
