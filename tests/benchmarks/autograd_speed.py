"""How fast is our autograd next to PyTorch on the CPU? Prints times and ratios measured in one run.

    python -m tests.benchmarks.autograd_speed                       # the reference in solutions/
    python -m tests.benchmarks.autograd_speed --implementation .    # your stage folders

Three workloads, all float32, forward + backward (+ optimizer step for the MLP):
  * per-op overhead: a few ops on 4x4 tensors, where the cost is the framework, not the arithmetic;
  * an MLP training step on a digits-sized batch (64 x 64 -> 128 -> 10, cross-entropy, Adam);
  * a large matmul, where both sides spend their time in BLAS.
A ratio below 1 means ours is faster. This is a benchmark, not a test: timings depend on the machine
and its load, so nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]


def best_time(fn, repeat: int = 5, number: int | None = None) -> float:
    """Seconds per call: the best of ``repeat`` rounds of ``number`` calls (the least disturbed round)."""
    fn()  # warm up
    if number is None:  # aim for rounds of about 0.1 s
        start = time.perf_counter()
        fn()
        number = max(1, int(0.1 / max(time.perf_counter() - start, 1e-6)))
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - start) / number)
    return min(rounds)


def small_ops(Tensor, torch):
    rng = np.random.default_rng(0)
    a_np, b_np = rng.standard_normal((2, 4, 4), dtype=np.float32)
    a, b = Tensor(a_np, requires_grad=True), Tensor(b_np, requires_grad=True)
    ta, tb = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)

    def ours():
        ((a * b + a).tanh() @ b).sum().backward()

    def theirs():
        ((ta * tb + ta).tanh() @ tb).sum().backward()

    return ours, theirs


def mlp_step(Tensor, torch):
    from stage2_mlp import functional as F
    from stage2_mlp.nn import Linear, ReLU, Sequential
    from stage2_mlp.optim import Adam

    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((64, 64), dtype=np.float32)
    y_np = rng.integers(0, 10, size=64)
    model = Sequential(Linear(64, 128, rng=rng), ReLU(), Linear(128, 10, rng=rng))
    optimizer = Adam(model.parameters(), lr=1e-3)
    x = Tensor(x_np)

    torch_model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    torch_optimizer = torch.optim.Adam(torch_model.parameters(), lr=1e-3)
    tx, ty = torch.tensor(x_np), torch.tensor(y_np)

    def ours():
        optimizer.zero_grad()
        F.cross_entropy(model(x), y_np).backward()
        optimizer.step()

    def theirs():
        torch_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(torch_model(tx), ty).backward()
        torch_optimizer.step()

    return ours, theirs


def big_matmul(Tensor, torch):
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((256, 512), dtype=np.float32)
    b_np = rng.standard_normal((512, 512), dtype=np.float32)
    a, b = Tensor(a_np, requires_grad=True), Tensor(b_np, requires_grad=True)
    ta, tb = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)

    def ours():
        (a @ b).sum().backward()

    def theirs():
        (ta @ tb).sum().backward()

    return ours, theirs


WORKLOADS = {
    "per-op overhead (4x4: mul, add, tanh, matmul, sum)": small_ops,
    "MLP training step (64x64 -> 128 -> 10, Adam)": mlp_step,
    "large matmul (256x512 @ 512x512)": big_matmul,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--implementation", type=Path, default=REPO_ROOT / "solutions", metavar="DIR",
                        help="the folder holding stage1_autograd/ and stage2_mlp/ (default: solutions/)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.implementation.resolve()))  # ahead of the current folder's stage packages

    import torch

    from stage1_autograd.tensor import Tensor

    print(f"implementation: {args.implementation}   numpy {np.__version__}, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'workload':<52} {'ours':>10} {'torch':>10} {'ours/torch':>11}")
    for name, make in WORKLOADS.items():
        ours, theirs = make(Tensor, torch)
        t_ours, t_theirs = best_time(ours), best_time(theirs)
        print(f"{name:<52} {t_ours * 1e6:>8.1f}us {t_theirs * 1e6:>8.1f}us {t_ours / t_theirs:>10.2f}x")


if __name__ == "__main__":
    main()
