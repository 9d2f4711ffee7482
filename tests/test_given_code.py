"""Given code of the stages, which students call but do not write: tested by the course's self-test against
PyTorch, never graded (a passing test of given code would make an untouched exercise read "failed", not
"not started")."""

from __future__ import annotations

import numpy as np
import torch

from stage1_autograd.tensor import Tensor
from stage3_transformer import functional as F
from tests.helpers import assert_close, assert_raises, run_backward


def test_index_add_adds_rows_into_their_places_like_torch():
    rng = np.random.default_rng(0)
    index = np.array([3, 0, 3, 1, 3])  # row 3 three times: its rows add up; row 2 none: it stays zero
    source = rng.standard_normal((5, 4))
    ours = Tensor(source.copy(), requires_grad=True)
    theirs = torch.tensor(source, requires_grad=True)
    out = F.index_add(4, index, ours)
    expected = torch.zeros(4, 4, dtype=torch.float64).index_add(0, torch.tensor(index), theirs)
    assert_close(out, expected, "index_add(4, [3, 0, 3, 1, 3], source): values")
    upstream = rng.standard_normal((4, 4))
    run_backward(out, upstream)
    expected.backward(torch.tensor(upstream))
    assert_close(ours.grad, theirs.grad, "index_add: the gradient of source (g's rows gathered at index)")


def test_index_add_names_a_wrong_index():
    assert_raises(ValueError, lambda: F.index_add(4, np.array([0, 1]), Tensor(np.ones((3, 2)))),
                  "index_add with 2 ids for 3 rows of source", match="one id per row of source")
