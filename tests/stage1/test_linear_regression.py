"""Exercise 1.9: linear regression trained by gradient descent with the Tensor engine."""

import functools
import re

import numpy as np
import pytest

from stage1_autograd import linear_regression
from stage1_autograd.linear_regression import fit_linear_regression, make_data
from tests.helpers import assert_close
from tests.student_side import printed

pytestmark = [pytest.mark.exercise("1.9"), pytest.mark.under_test("fit_linear_regression")]

TRUE_W, TRUE_B, NOISE, N = np.array([2.0, -3.0, 0.5]), 1.0, 0.1, 200


@functools.cache  # one fit shared by the tests below; called inside each test, so a failure is that test's
def fitted():
    x, y = make_data(n=N, w=TRUE_W, b=TRUE_B, noise=NOISE, seed=0)
    w, b, losses = fit_linear_regression(x, y, lr=0.1, steps=200)
    return x, y, w, b, losses


def test_returns_w_b_and_one_loss_per_step():
    _, _, w, b, losses = fitted()
    assert isinstance(w, np.ndarray) and w.shape == (3,), f"w should be an np.ndarray of shape (3,), got {w!r}"
    assert isinstance(b, float), f"b should be a Python float, got {type(b).__name__}"
    assert isinstance(losses, list) and len(losses) == 200, (
        f"losses should be a list with one loss per step (200), got {type(losses).__name__} of length {len(losses)}"
    )
    assert all(isinstance(loss, float) for loss in losses), "every loss should be a Python float (use .item())"


def test_recovers_the_true_line():
    # With x ~ N(0, 1), the least-squares estimate of each weight and of b scatters around the truth with a
    # standard deviation of about NOISE / sqrt(N) = 0.007. 0.035 is five of those: a correct fit is always
    # inside, while a fit that has not converged (or a wrong gradient) is off by far more.
    _, _, w, b, _ = fitted()
    tolerance = 5 * NOISE / np.sqrt(N)
    assert_close(w, TRUE_W, f"fitted w (data made with w = {TRUE_W.tolist()}, noise {NOISE})", atol=tolerance, rtol=0)
    assert_close(b, TRUE_B, f"fitted b (data made with b = {TRUE_B}, noise {NOISE})", atol=tolerance, rtol=0)


def test_matches_the_least_squares_solution():
    # Gradient descent with lr = 0.1 shrinks the distance to the minimum by a factor of about 0.85 per step
    # here, so after 200 steps it is at the least-squares solution to far better than 1e-6.
    x, y, w, b, _ = fitted()
    solution, *_ = np.linalg.lstsq(np.column_stack([x, np.ones(len(x))]), y, rcond=None)
    assert_close(w, solution[:3], "fitted w compared with the exact least-squares solution", atol=1e-6, rtol=0)
    assert_close(b, solution[3], "fitted b compared with the exact least-squares solution", atol=1e-6, rtol=0)


def test_losses_decrease_to_the_noise_level():
    _, _, _, _, losses = fitted()
    increases = [i for i in range(1, len(losses)) if losses[i] > losses[i - 1] + 1e-12]
    assert not increases, (
        f"gradient descent with a small learning rate should lower the loss at every step; it rose at step "
        f"{increases[0] + 1}: {losses[increases[0] - 1]:.6g} -> {losses[increases[0]]:.6g}"
    )
    # What is left at the minimum is the noise: its mean square is NOISE**2 = 0.01, give or take
    # NOISE**2 * sqrt(2 / N) = 0.001 (the spread of a mean of N squared Gaussians).
    assert 0.007 < losses[-1] < 0.013, f"the final loss should be near the noise level {NOISE**2}, got {losses[-1]:.6g}"
    assert losses[0] > 10, (
        f"the first loss (before any update, w = 0 and b = 0) should be mean(y**2) > 10, got {losses[0]:.6g}"
    )


def test_losses_are_those_of_gradient_descent_from_zero():
    """Every loss is the mean squared error at that step of plain gradient descent started from w = 0, b = 0
    (computed here with the gradient written out by hand): not just any decreasing curve."""
    x, y, _, _, losses = fitted()
    w, b, expected = np.zeros(x.shape[1]), 0.0, []
    for _ in range(len(losses)):
        residual = x @ w + b - y  # (N,)
        expected.append(np.mean(residual**2))
        w, b = w - 0.1 * 2 * x.T @ residual / len(y), b - 0.1 * 2 * residual.mean()
    assert_close(np.asarray(losses, dtype=np.float64), np.asarray(expected),
                 "losses[i], the loss before step i's update (gradient descent from w = 0, b = 0, lr = 0.1)",
                 atol=1e-9, rtol=1e-9)


def test_fits_other_data_and_hyperparameters():
    x, y = make_data(n=100, w=[-4.0], b=2.5, noise=0.05, seed=3)
    w, b, losses = fit_linear_regression(x, y, lr=0.05, steps=400)
    tolerance = 5 * 0.05 / np.sqrt(100)
    assert_close(w, [-4.0], "fitted w on 1-feature data made with w = [-4.0]", atol=tolerance, rtol=0)
    assert_close(b, 2.5, "fitted b on 1-feature data made with b = 2.5", atol=tolerance, rtol=0)
    assert len(losses) == 400, f"steps=400 should give 400 losses, got {len(losses)}"


@pytest.mark.integration
def test_main_prints_the_fit():
    _, out = printed(linear_regression.main)  # main runs beside the code under test, its stdout captured there
    lines = out.lower().splitlines()
    for word in ["true", "fitted", "loss"]:
        assert any(word in line for line in lines), (
            f"`python -m stage1_autograd.linear_regression` should print a line with '{word}', got:\n{out}"
        )
    loss_line = next(line for line in lines if "loss" in line)
    first, last = (float(v) for v in re.findall(r"\d+\.\d+", loss_line)[:2])
    assert last < first, f"the printed loss should go down from start to end, got: {loss_line}"
