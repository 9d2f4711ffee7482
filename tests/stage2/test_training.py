"""Exercise 2.9: the training loop. The pieces are compared with PyTorch doing the same steps; then whole runs
of ``python -m stage2_mlp.train_mlp`` (through ``main``) must reach their accuracy targets."""

import re

import numpy as np
import pytest
import torch

from stage1_autograd.tensor import Tensor
from stage2_mlp.data import DataLoader
from stage2_mlp.nn import Dropout, Linear, Sequential, Tanh
from stage2_mlp.optim import SGD
from stage2_mlp.train_mlp import build_mlp, evaluate, main, predict, train_epoch
from tests.helpers import assert_close
from tests.stage2.student_side import RecordsGraph, printed_without_matplotlib
from tests.student_side import printed

pytestmark = [pytest.mark.exercise("2.9"), pytest.mark.under_test("train_epoch")]

LAST_LINE = re.compile(r"test accuracy: (0\.\d{4}|1\.0000)")


def torch_copy(model, layers):
    """A torch.nn.Sequential of ``layers`` carrying our model's parameters (float64)."""
    net = torch.nn.Sequential(*layers).double()
    net.load_state_dict({k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in model.state_dict().items()})
    return net


def run_main(args, without_matplotlib=False):
    """main(args) run beside the code under test, with what it printed there."""
    history, out = (printed_without_matplotlib if without_matplotlib else printed)(main, args)
    lines = out.strip().splitlines()
    assert lines, f"main({args}) printed nothing"
    assert LAST_LINE.fullmatch(lines[-1].strip()), (
        f"main({args}): the last line printed should be 'test accuracy: 0.XXXX', got {lines[-1]!r}"
    )
    return history, lines, float(LAST_LINE.fullmatch(lines[-1].strip()).group(1))


def epoch_lines(lines, epochs):
    return [line for line in lines if re.match(rf"epoch\s+\d+/{epochs}\b", line)]


# ---------------------------------------------------------------------- build_mlp
@pytest.mark.under_test("build_mlp")
def test_build_mlp_is_the_same_network_as_torch():
    model = build_mlp(4, (8, 6), 3, seed=0)
    names = [name for name, _ in model.named_parameters()]
    expected_names = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert names == expected_names, (
        f"build_mlp(4, (8, 6), 3): expected Linear, activation, Linear, activation, Linear in a Sequential, "
        f"with parameters {expected_names}; got {names}"
    )
    net = torch_copy(model, [torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6), torch.nn.ReLU(),
                             torch.nn.Linear(6, 3)])
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    assert_close(model(Tensor(x)), net(torch.tensor(x, dtype=torch.float64)),
                 "build_mlp(4, (8, 6), 3) on x (5, 4), compared with torch Linear-ReLU-Linear-ReLU-Linear",
                 atol=1e-5, rtol=1e-5)

    tanh_model = build_mlp(4, (8,), 3, activation="tanh", seed=0)
    assert isinstance(tanh_model[1], Tanh), f"build_mlp(..., activation='tanh'): layer 1 should be Tanh, got {tanh_model[1]!r}"


@pytest.mark.under_test("build_mlp")
def test_build_mlp_is_seeded():
    a, b, c = (build_mlp(3, (5,), 2, seed=s).state_dict() for s in (0, 0, 1))
    for name in a:
        assert np.array_equal(a[name], b[name]), f"build_mlp(..., seed=0) twice gave two different {name}"
    assert not np.array_equal(a["0.weight"], c["0.weight"]), "build_mlp with seeds 0 and 1 gave the same 0.weight"
    rng = np.random.default_rng(0)
    first, second = Linear(3, 5, rng=rng), Linear(5, 2, rng=rng)
    for name, expected in [("0.weight", first.weight), ("0.bias", first.bias), ("2.weight", second.weight),
                           ("2.bias", second.bias)]:
        assert_close(a[name], expected, f"build_mlp(3, (5,), 2, seed=0): {name} should be drawn from one generator "
                     "np.random.default_rng(0) shared by all the layers, layer after layer (rng=rng for each Linear)")


# ---------------------------------------------------------------------- train_epoch
def test_train_epoch_takes_the_same_steps_as_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=10)
    model = build_mlp(3, (5,), 3, seed=0)
    net = torch_copy(model, [torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)])
    loader = DataLoader(x, y, batch_size=4)  # batches of 4, 4 and 2, in order

    mean_loss = train_epoch(model, loader, SGD(model.parameters(), lr=0.5))

    losses = []
    for start in range(0, 10, 4):
        xb, yb = torch.tensor(x[start : start + 4], dtype=torch.float64), torch.tensor(y[start : start + 4])
        net.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        loss.backward()
        with torch.no_grad():  # torch.optim.SGD's step, without the seconds torch.optim takes to import
            for p in net.parameters():
                p -= 0.5 * p.grad
        losses.append(loss.item() * len(yb))
    state = net.state_dict()
    for name, value in model.state_dict().items():
        assert_close(value, state[name],
                     f"parameter {name} after one train_epoch (3 batches, SGD lr 0.5), compared with torch doing "
                     "zero_grad, forward, cross_entropy, backward, step per batch (did you zero the gradients?)",
                     atol=1e-5, rtol=1e-4)
    assert mean_loss == pytest.approx(sum(losses) / 10, rel=1e-4), (
        f"train_epoch should return the mean loss over the epoch's samples (each batch's mean loss weighted by "
        f"its size): expected {sum(losses) / 10:.6f}, got {mean_loss}"
    )


# ---------------------------------------------------------------------- predict and evaluate
# RecordsGraph (student_side.py) wraps a model and remembers whether its output was part of a graph.
@pytest.mark.under_test("predict", "evaluate")
def test_predict_and_evaluate_use_eval_mode_and_no_grad():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    linear = Linear(3, 4, rng=np.random.default_rng(1))
    model = RecordsGraph(Sequential(linear, Dropout(0.5, rng=2)))
    expected = (x @ linear.weight.data.T + linear.bias.data).argmax(axis=1)

    got = predict(model, x)
    assert isinstance(got, np.ndarray) and got.shape == (40,), f"predict on x (40, 3): expected an ndarray (40,), got {got!r}"
    assert np.array_equal(got, expected), (
        "predict gave other classes than the argmax of the logits without dropout: put the model in eval mode"
    )
    assert model.output_required_grad is False, (
        "predict built a graph (its logits require grad): compute them under no_grad()"
    )
    y = expected.copy()
    y[:10] = (y[:10] + 1) % 4  # 30 of the 40 right
    accuracy = evaluate(model, x, y)
    assert isinstance(accuracy, float) and accuracy == pytest.approx(0.75), (
        f"evaluate: 30 of 40 predictions match y, expected the float 0.75, got {accuracy!r}"
    )


# ---------------------------------------------------------------------- whole runs
@pytest.mark.under_test("train_epoch", "build_mlp", "evaluate")
@pytest.mark.integration
def test_digits_reach_97_percent_test_accuracy():
    history, lines, accuracy = run_main(["--dataset", "digits", "--no-plots"])
    epochs = len(history["test_accuracy"])
    assert len(epoch_lines(lines, epochs)) == epochs, (
        f"expected one progress line per epoch ('epoch k/{epochs} ...'), got:\n" + "\n".join(lines)
    )
    assert accuracy >= 0.97, (
        f"python -m stage2_mlp.train_mlp --dataset digits: test accuracy {accuracy:.4f}, expected at least 0.97. "
        "Training loss by epoch: " + ", ".join(f"{v:.3f}" for v in history["train_loss"])
    )


@pytest.mark.under_test("train_epoch", "build_mlp", "evaluate")
@pytest.mark.integration
def test_spirals_fit_the_training_set():
    history, lines, accuracy = run_main(["--dataset", "spirals", "--no-plots"])
    train_accuracy = history["train_accuracy"][-1]
    assert train_accuracy >= 0.99, (
        f"python -m stage2_mlp.train_mlp --dataset spirals: train accuracy {train_accuracy:.4f}, expected at least "
        "0.99. Training loss by epoch: " + ", ".join(f"{v:.3f}" for v in history["train_loss"][::5])
    )
    assert accuracy >= 0.9, f"spirals: test accuracy {accuracy:.4f} on the held-out points, expected at least 0.9"


@pytest.mark.under_test("train_epoch", "build_mlp", "evaluate")
@pytest.mark.integration
def test_plots_are_written(student_tmp):
    pytest.importorskip("matplotlib")
    history, lines, _ = run_main(["--dataset", "spirals", "--epochs", "2", "--plots-dir", str(student_tmp)])
    assert len(epoch_lines(lines, 2)) == 2, "--epochs 2: expected two progress lines 'epoch 1/2 ...', 'epoch 2/2 ...', got:\n" + "\n".join(lines)
    pngs = student_tmp.names("*.png")
    assert pngs == ["spirals_decision_boundary.png", "spirals_loss.png"], (
        f"--plots-dir {student_tmp}: expected spirals_loss.png and spirals_decision_boundary.png there, got {pngs}"
    )
    for name in pngs:
        assert (student_tmp / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG file"
        assert any(name in line for line in lines), f"the output should say where {name} was written"


@pytest.mark.under_test("train_epoch", "build_mlp", "evaluate")
@pytest.mark.integration
def test_training_goes_on_without_matplotlib(student_tmp):
    # main runs with sys.modules["matplotlib"] = None there, which makes `import matplotlib` raise ImportError
    _, lines, _ = run_main(["--dataset", "spirals", "--epochs", "1", "--plots-dir", str(student_tmp)], without_matplotlib=True)
    assert any("matplotlib" in line for line in lines[:-1]), "without matplotlib, main should say in one line that it makes no plots"
    assert not student_tmp.names("*.png"), "without matplotlib there should be no PNG"
