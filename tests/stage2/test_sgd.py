"""Exercise 2.5: SGD with momentum, Nesterov momentum and weight decay, step for step against torch.optim.SGD."""

import pytest
import torch

from stage2_mlp.optim import SGD
from tests.stage2.optim_parity import run_side_by_side, shared_gradient_step

pytestmark = [pytest.mark.exercise("2.5"), pytest.mark.under_test("SGD.step")]

SETTINGS = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True),
]


def describe(settings):
    return "SGD(" + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")"


@pytest.mark.parametrize("settings", SETTINGS, ids=describe)
def test_sgd_matches_torch_step_for_step(settings):
    run_side_by_side(lambda params: SGD(params, **settings), lambda params: torch.optim.SGD(params, **settings),
                     label=describe(settings))


def test_sgd_with_shared_gradient_arrays():
    settings = dict(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    shared_gradient_step(lambda params: SGD(params, **settings), lambda params: torch.optim.SGD(params, **settings),
                         label=describe(settings))
