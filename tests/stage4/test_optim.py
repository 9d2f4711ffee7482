"""Exercise 4.5: configure_optimizer's parameter groups, get_lr's schedule and clip_grad_norm_, against
torch.optim.AdamW with two param groups, torch's LinearLR + CosineAnnealingLR, and
torch.nn.utils.clip_grad_norm_.

The model here is a tiny language model made of stage 2 pieces (an embedding table, a gain vector, two
Linear layers and an output layer tied to the embedding), so these tests need nothing from model.py: they
grade the optimiser alone. It has what matters for the groups: matrices, biases, a 1-D gain and a tied
weight that must be decayed once, not twice. As a subclass of stage 2's Module it is defined in
tests/stage4/student_side.py, beside the code under test.
"""

import io

import numpy as np
import pytest
import torch

from stage2_mlp.nn import Parameter
from stage4_gpt.optim import clip_grad_norm_, configure_optimizer, get_lr
from tests.helpers import assert_close, assert_equal, assert_in_range
from tests.stage4.student_side import TinyLM  # a Module subclass: it lives beside the code under test
from tests.stage4.torch_training import torch_adamw, torch_schedule

pytestmark = [pytest.mark.exercise("4.5"), pytest.mark.under_test("configure_optimizer")]

VOCAB, WIDTH, HIDDEN = 7, 4, 6  # TinyLM's sizes (tests/stage4/student_side.py)


class TorchTinyLM(torch.nn.Module):
    def __init__(self, ours: TinyLM):
        super().__init__()
        state = {name: torch.tensor(value) for name, value in ours.state_dict().items()}
        self.wte = torch.nn.Parameter(state["wte"])
        self.gain = torch.nn.Parameter(state["gain"])
        self.fc1 = torch.nn.Linear(WIDTH, HIDDEN, dtype=torch.float64)
        self.fc2 = torch.nn.Linear(HIDDEN, WIDTH, dtype=torch.float64)
        self.head = torch.nn.Linear(WIDTH, VOCAB, dtype=torch.float64)
        self.head.weight = self.wte
        with torch.no_grad():
            for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "head.bias"):
                self.get_parameter(name).copy_(state[name])

    def loss(self, idx, targets):
        x = self.wte[idx]
        x = x + self.fc2(torch.tanh(self.fc1(x * self.gain)))
        logits = self.head(x)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def micro_batch(step: int, index: int):
    rng = np.random.default_rng(1000 + 10 * step + index)
    tokens = rng.integers(0, VOCAB, size=(3, 6))
    return tokens[:, :-1], tokens[:, 1:]


# ---------------------------------------------------------------------- the schedule
@pytest.mark.parametrize("warmup, total", [(4, 20), (1, 6), (0, 9), (10, 11)])
@pytest.mark.under_test("get_lr")
def test_get_lr_is_warmup_then_cosine_as_torch_schedulers(warmup, total):
    max_lr, min_lr = 6e-4, 6e-5
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    scheduler = torch_schedule(optimizer, max_lr, min_lr, warmup, total)
    for step in range(total + 1):
        expected = optimizer.param_groups[0]["lr"]
        got = get_lr(step, max_lr=max_lr, min_lr=min_lr, warmup=warmup, total=total)
        assert_close(got, expected, f"get_lr(step={step}, max_lr={max_lr}, min_lr={min_lr}, warmup={warmup}, "
                                    f"total={total}) (warmup: max_lr * (step + 1) / warmup; then the cosine)",
                     atol=1e-15, rtol=1e-12)
        optimizer.step()
        scheduler.step()
    for step in (total + 1, total + 7, 10 * total):
        assert_close(get_lr(step, max_lr, min_lr, warmup, total), min_lr,
                     f"get_lr(step={step}) after total={total}: the floor min_lr, not a cosine that rises again",
                     atol=0, rtol=1e-15)


@pytest.mark.under_test("get_lr")
def test_get_lr_when_total_is_not_after_warmup():
    # No cosine at all: after the warmup the rate is min_lr (no division by total - warmup = 0).
    for step, expected in ((0, 0.25), (3, 1.0), (4, 0.1), (9, 0.1)):
        assert_close(get_lr(step, max_lr=1.0, min_lr=0.1, warmup=4, total=4), expected,
                     f"get_lr(step={step}, max_lr=1.0, min_lr=0.1, warmup=4, total=4)", atol=0, rtol=1e-15)


# ---------------------------------------------------------------------- clipping
def grads_case(seed: int, scale: float, dtype):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (4,), (2, 2, 3), (5,)]
    values = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [scale * rng.standard_normal(s).astype(dtype) for s in shapes]
    grads[3] = None  # a parameter that took no part in the loss
    ours = [Parameter(v) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v)) for v in values]
    for p, t, g in zip(ours, theirs, grads):
        if g is not None:
            p.grad = g.copy()
            t.grad = torch.tensor(g)
    return ours, theirs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("scale, max_norm", [(1.0, 1.0), (0.05, 1.0), (3.0, 0.5)], ids=["clips", "below", "far-above"])
@pytest.mark.under_test("clip_grad_norm_")
def test_clip_grad_norm_matches_torch(scale, max_norm, dtype):
    ours, theirs = grads_case(3, scale, dtype)
    total = clip_grad_norm_(ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    atol, rtol = (1e-12, 1e-12) if dtype == np.float64 else (1e-6, 2e-6)
    what = f"clip_grad_norm_(4 parameters, one without grad, max_norm={max_norm}) on {np.dtype(dtype)} gradients"
    assert_equal(type(total), float, f"{what}: the type of the returned total norm")
    assert_close(total, expected, f"{what}: the returned norm of all gradients before clipping", atol=atol, rtol=rtol)
    for i, (p, t) in enumerate(zip(ours, theirs)):
        if t.grad is None:
            assert_equal(p.grad, None, f"{what}: .grad of parameter {i}, which had none")
        else:
            assert_close(p.grad, t.grad, f"{what}: parameter {i}'s gradient after clipping (scaled in place by "
                                         f"min(1, max_norm / (total + 1e-6)))", atol=atol, rtol=rtol)


@pytest.mark.under_test("clip_grad_norm_")
def test_clip_grad_norm_accepts_a_generator_of_parameters():
    ours, theirs = grads_case(5, 2.0, np.float64)
    total = clip_grad_norm_((p for p in ours), 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert_close(total, expected, "clip_grad_norm_ given a generator (it may be walked only once)", atol=1e-12, rtol=1e-12)
    assert_close(ours[0].grad, theirs[0].grad, "clip_grad_norm_ given a generator: the first gradient after clipping",
                 atol=1e-12, rtol=1e-12)


# ---------------------------------------------------------------------- groups
def test_weight_decay_reaches_matrices_only_and_a_tied_weight_once():
    # With zero gradients Adam's step is 0/(0 + eps) = 0, so all that moves a parameter is the decoupled
    # weight decay p <- p * (1 - lr * weight_decay), which must reach exactly the parameters with ndim >= 2.
    model = TinyLM(seed=1)
    before = model.state_dict()
    lr, weight_decay = 0.1, 0.5
    optimizer = configure_optimizer(model, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    for p in model.parameters():
        p.grad = np.zeros_like(p.data)
    optimizer.step()
    for name, p in model.named_parameters():
        decayed = p.ndim >= 2
        expected = before[name] * (1 - lr * weight_decay) if decayed else before[name]
        what = (f"configure_optimizer(lr={lr}, weight_decay={weight_decay}): parameter {name!r} {p.shape} after one "
                f"step with zero gradients ({'ndim >= 2: decayed once' if decayed else 'ndim < 2: no weight decay'})")
        assert_close(p, expected, what, atol=1e-15, rtol=1e-13)
    assert_equal(model.head.weight is model.wte, True, "head.weight and wte are still one and the same Parameter")


def test_optimizer_learning_rate_is_settable():
    model = TinyLM(seed=2)
    optimizer = configure_optimizer(model, lr=1.0, weight_decay=0.5, betas=(0.9, 0.95))
    optimizer.lr = 0.2  # what the schedule does before each step
    before = model.state_dict()
    for p in model.parameters():
        p.grad = np.zeros_like(p.data)
    optimizer.step()
    assert_close(model.fc1.weight, before["fc1.weight"] * (1 - 0.2 * 0.5),
                 "fc1.weight after optimizer.lr = 0.2 and a step with zero gradients: decayed with the new lr",
                 atol=1e-15, rtol=1e-13)


def run_side_by_side(steps: int, micro_batches: int, max_norm: float, seed: int = 0):
    """Our model with configure_optimizer, get_lr, clip_grad_norm_ and gradient accumulation, and the torch
    model with AdamW's two param groups, torch's schedulers and clip_grad_norm_, step by step."""
    max_lr, min_lr, warmup, total, weight_decay, betas = 0.05, 0.005, 2, steps - 1, 0.1, (0.9, 0.95)
    ours = TinyLM(seed)
    theirs = TorchTinyLM(ours)
    optimizer = configure_optimizer(ours, lr=max_lr, weight_decay=weight_decay, betas=betas)
    torch_optimizer = torch_adamw(theirs, lr=max_lr, weight_decay=weight_decay, betas=betas)
    scheduler = torch_schedule(torch_optimizer, max_lr, min_lr, warmup, total)
    norms = []
    for step in range(steps):
        optimizer.zero_grad()
        torch_optimizer.zero_grad()
        for index in range(micro_batches):  # gradient accumulation: each loss divided by their number
            x, y = micro_batch(step, index)
            (ours.loss(x, y) * (1.0 / micro_batches)).backward()
            (theirs.loss(torch.tensor(x), torch.tensor(y)) / micro_batches).backward()
        norm = clip_grad_norm_(ours.parameters(), max_norm)
        expected_norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
        norms.append(float(expected_norm))
        assert_close(norm, expected_norm, f"step {step}: clip_grad_norm_'s total norm of the accumulated gradients")
        optimizer.lr = get_lr(step, max_lr, min_lr, warmup, total)
        optimizer.step()
        torch_optimizer.step()
        scheduler.step()
        ours_by_name = dict(ours.named_parameters())
        for name, p in theirs.named_parameters():
            group = "decay" if p.ndim >= 2 else "no decay"
            assert_close(ours_by_name[name], p, f"parameter {name!r} after step {step} (lr {optimizer.lr:.4g}, "
                                                f"{group}, max_norm {max_norm})")
    return norms


@pytest.mark.under_test("configure_optimizer", "get_lr", "clip_grad_norm_")
@pytest.mark.integration
def test_steps_match_torch_adamw_with_groups_schedule_clipping_and_accumulation():
    norms = run_side_by_side(steps=4, micro_batches=2, max_norm=1.0)
    # The test itself checks that it exercised the clipping: some steps above max_norm, some not needed.
    assert_in_range(max(norms), 1.0, None, "the largest gradient norm of this run (so that clipping happens)")
    assert_in_range(min(norms), None, 1.0, "the smallest gradient norm of this run (so that a step needs no clipping)")


def test_optimizer_state_survives_npz_round_trip():
    """Two steps, save the optimizer's state to an .npz, load it into a fresh optimizer for a copy of the
    model: the third step must be the same to the last bit."""
    lr, weight_decay = 0.03, 0.1
    model = TinyLM(seed=4)
    optimizer = configure_optimizer(model, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    for step in range(2):
        optimizer.zero_grad()
        model.loss(*micro_batch(step, 0)).backward()
        optimizer.step()
    buffer = io.BytesIO()
    np.savez(buffer, **model.state_dict(), **{f"optimizer.{k}": v for k, v in optimizer.state_dict().items()})
    buffer.seek(0)
    saved = dict(np.load(buffer, allow_pickle=False))

    copy = TinyLM(seed=99)
    copy.load_state_dict({k: v for k, v in saved.items() if not k.startswith("optimizer.")})
    resumed = configure_optimizer(copy, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    resumed.load_state_dict({k.removeprefix("optimizer."): v for k, v in saved.items() if k.startswith("optimizer.")})
    for m, opt in ((model, optimizer), (copy, resumed)):
        opt.zero_grad()
        m.loss(*micro_batch(2, 0)).backward()
        opt.step()
    for name, p in model.named_parameters():
        assert_equal(dict(copy.named_parameters())[name].data, p.data,
                     f"parameter {name!r} after 2 steps, save, load into a new optimizer and a third step, vs without "
                     "the save (state_dict must hold every moment m, v and step count t)")


def test_optimizer_state_dict_holds_torch_adamws_moments_and_steps():
    """The state_dict's own values, checked here: after three steps, m.<name>, v.<name> and t.<name> for every
    parameter are torch AdamW's exp_avg, exp_avg_sq and step after the same steps (a tied weight once)."""
    lr, weight_decay, betas = 0.03, 0.1, (0.9, 0.95)
    ours = TinyLM(seed=5)
    theirs = TorchTinyLM(ours)
    optimizer = configure_optimizer(ours, lr=lr, weight_decay=weight_decay, betas=betas)
    torch_optimizer = torch_adamw(theirs, lr=lr, weight_decay=weight_decay, betas=betas)
    for step in range(3):
        optimizer.zero_grad()
        torch_optimizer.zero_grad()
        x, y = micro_batch(step, 0)
        ours.loss(x, y).backward()
        theirs.loss(torch.tensor(x), torch.tensor(y)).backward()
        optimizer.step()
        torch_optimizer.step()
    state = optimizer.state_dict()
    what = "configure_optimizer(TinyLM) after 3 steps: state_dict()"
    names = [name for name, _ in theirs.named_parameters()]
    expected_keys = sorted(f"{kind}.{name}" for name in names for kind in "mvt")
    assert_equal(sorted(state), expected_keys, f"{what}: its keys, m.<name>, v.<name> and t.<name> for every parameter")
    for name, p in theirs.named_parameters():
        saved = torch_optimizer.state[p]
        assert_close(state[f"m.{name}"], saved["exp_avg"], f"{what}['m.{name}'], the running mean of the gradients "
                     "(torch AdamW's exp_avg)", atol=1e-12, rtol=1e-10)
        assert_close(state[f"v.{name}"], saved["exp_avg_sq"], f"{what}['v.{name}'], the running mean of the squared "
                     "gradients (torch AdamW's exp_avg_sq)", atol=1e-15, rtol=1e-10)
        assert_equal(int(np.asarray(state[f"t.{name}"])), int(saved["step"]), f"{what}['t.{name}'], the step count")
