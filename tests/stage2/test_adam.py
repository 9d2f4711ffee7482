"""Exercise 2.6: Adam and AdamW, step for step against torch.optim.Adam and torch.optim.AdamW."""

import pytest
import torch

from stage2_mlp.optim import Adam, AdamW
from tests.stage2.optim_parity import run_side_by_side, shared_gradient_step

pytestmark = [pytest.mark.exercise("2.6"), pytest.mark.under_test("Adam.step")]

SETTINGS = [
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),  # AdamW's default weight_decay is 1e-2, as in PyTorch
    ("AdamW", dict(lr=0.02, betas=(0.85, 0.95), weight_decay=0.5)),
]
OURS = {"Adam": Adam, "AdamW": AdamW}


def describe(case):
    name, settings = case
    return f"{name}(" + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")"


@pytest.mark.parametrize("case", SETTINGS, ids=describe)
def test_adam_matches_torch_step_for_step(case):
    name, settings = case
    run_side_by_side(lambda params: OURS[name](params, **settings),
                     lambda params: getattr(torch.optim, name)(params, **settings),
                     label=describe(case) + " (each parameter counts its own steps t: a step without a grad "
                                            "leaves it and its t unchanged)")


@pytest.mark.parametrize("case", [("Adam", dict(lr=0.1, weight_decay=0.1)), ("AdamW", dict(lr=0.1, weight_decay=0.1))],
                         ids=describe)
def test_adam_with_shared_gradient_arrays(case):
    name, settings = case
    shared_gradient_step(lambda params: OURS[name](params, **settings),
                         lambda params: getattr(torch.optim, name)(params, **settings), label=describe(case))
