"""How fast and how big is our GPT's training step next to PyTorch's on the CPU? Prints ratios measured in one run.

    python -m tests.benchmarks.gpt_speed                        # the reference in solutions/
    python -m tests.benchmarks.gpt_speed --implementation .     # your stage folders
    python -m tests.benchmarks.gpt_speed --profile              # and the NumPy step's top functions (cProfile)
    OMP_NUM_THREADS=2 python -m tests.benchmarks.gpt_speed      # both sides on two threads

The workload is one training step (zero_grad, forward, cross-entropy, backward, gradient clipping, AdamW) of
the GPT of stage 4 in float32: vocabulary 96, 4 layers, 4 heads, width 128, block 64, batch 32 (2 048 tokens),
GPT-2's design (LayerNorm, learned positions, exact GELU, tied weights). Ours is ``stage4_gpt.model.GPT`` with
``train.train_step`` (after ``train.keep_freed_memory()``, as ``python -m stage4_gpt.train`` does: the
allocator reuses the previous step's pages instead of faulting in new ones); PyTorch's is the port
``stage4_gpt.torch_gpt.TorchGPT`` with torch.optim.AdamW.

  * Time: each side runs in a process of its own, several rounds, alternating, and the best step counts
    (the least disturbed by other work on the machine). Both sides use the same number of threads: NumPy's
    BLAS reads OMP_NUM_THREADS when it starts (default here: 1) and PyTorch gets torch.set_num_threads().
    Also the CPU time of a step (time.process_time, all threads together): on a busy machine it is the
    steadier measure of the work each side does, while the wall-clock time waits for the other programs.
  * Memory: the growth of the process's resident memory from just after the imports to its peak during the
    steps (``ru_maxrss``), in a fresh process per side. It counts the weights, gradients, optimizer moments
    and the largest set of activations alive at once, whoever allocated them. (tracemalloc sees NumPy's
    arrays but not PyTorch's allocator, so it cannot compare the two.)
  * The floor: the step's matrix products (the Linears, attention's two batched products, lm_head: about
    10.6 GFLOP for a training step of the default config) at the rate NumPy's BLAS reaches on large float32
    products, measured in the same run. No NumPy step can be faster; the rest of ours is elementwise passes
    (GELU, norms, softmax) and products slower than that rate (small matrices, short inner dimensions).
  * Sizes: a second table follows the ratio to larger models, each row with ours, torch, the ratio and ours
    as a multiple of the row's floor (by the best wall-clock step, and by CPU time): the default config,
    nanoGPT's Shakespeare-char config (6 layers, 6 heads, width 384, block 256, batch 8: 2 048 tokens a
    training step) and GPT-2 small's forward pass on 1 x 256 tokens (no training).
  * Sampling: tokens per second of ``GPT.generate`` with and without the key/value cache (batch 1, a 255-token
    continuation of one token, the same model with block 256 so the cache never has to slide), beside a
    cached PyTorch generation of the same weights (written here: the port itself has no cache).
  * BPE: the time to train the 1 000-token vocabulary of ``tests.benchmarks.bpe_speed`` (1 MB of text).

The matrix products are most of the step, so the report names NumPy's BLAS and the kernel it runs. OpenBLAS
picks the kernel for the CPU unless OPENBLAS_CORETYPE names one; a machine that pins an older kernel
(say Haswell on a CPU that has AVX-512) makes the NumPy side slower than it need be.

A ratio below 1 means ours is faster (or smaller). This is a benchmark, not a test: timings depend on the
machine and its load, so nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = dict(vocab_size=96, block_size=64, n_layer=4, n_head=4, n_embd=128)
BATCH = 32
# The rows of the table of sizes: name -> (GPT config, batch, sequence length, training step or forward only).
ROWS = {
    "default": (CONFIG, BATCH, CONFIG["block_size"], True),
    "shakespeare-char": (dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384), 8, 256, True),
    "gpt2-forward": (dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768), 1, 256, False),
}


def resident_mb() -> float:
    """The process's resident memory now, in MB (Linux's /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def peak_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KB on Linux


def batch(row: str = "default"):
    import numpy as np

    config, batch_size, length, _ = ROWS[row]
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config["vocab_size"], size=(batch_size, length + 1))
    return tokens[:, :-1], tokens[:, 1:]


def matmul_flops(row: str) -> float:
    """The floating-point operations of the matrix products of one step of ``row`` (a multiply and an add
    count two): per layer the four Linears (C -> 3C, C -> C, C -> 4C, 4C -> C) and attention's two batched
    products over all T x T query-key pairs (as ours computes them, masked ones included), then lm_head.
    A training step is three times its forward pass: the backward pass of a product is two products."""
    config, batch_size, length, training = ROWS[row]
    tokens, width = batch_size * length, config["n_embd"]
    linears = 2 * tokens * (3 * width * width + width * width + 2 * width * 4 * width)
    attention = 2 * 2 * batch_size * length * length * width  # q k^T and weights @ v, all heads together
    forward = config["n_layer"] * (linears + attention) + 2 * tokens * width * config["vocab_size"]
    return forward * (3 if training else 1)


def numpy_step(row: str = "default"):
    import numpy as np

    from stage1_autograd.tensor import no_grad
    from stage4_gpt.model import GPT, GPTConfig
    from stage4_gpt.optim import configure_optimizer
    from stage4_gpt.train import keep_freed_memory, train_step

    keep_freed_memory()  # as python -m stage4_gpt.train does: a step reuses the previous step's pages
    config, _, _, training = ROWS[row]
    model = GPT(GPTConfig(**config), rng=0, dtype=np.float32)
    x, y = batch(row)
    if not training:
        model.eval()

        def forward():
            with no_grad():
                return model(x)

        return forward
    optimizer = configure_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    return lambda: train_step(model, optimizer, [(x, y)], 1e-3, 1.0)


def torch_step(threads: int, row: str = "default"):
    import torch

    from stage4_gpt.model import GPTConfig
    from stage4_gpt.torch_gpt import TorchGPT, torch_adamw

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config, _, _, training = ROWS[row]
    model = TorchGPT(GPTConfig(**config))
    x, y = (torch.from_numpy(a) for a in batch(row))
    if not training:
        model.eval()

        def forward():
            with torch.no_grad():
                return model(x)

        return forward
    optimizer = torch_adamw(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))

    def step():
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return step


def worker(side: str, steps: int, threads: int, row: str = "default") -> dict:
    """Build one side, run ``steps`` steps after one warm-up; the milliseconds of each and the memory."""
    import numpy  # noqa: F401  (imported before the baseline, as torch is)

    if side == "torch":
        import torch  # noqa: F401
    base = resident_mb()
    step = numpy_step(row) if side == "numpy" else torch_step(threads, row)
    step()  # warm-up: the optimizer's moments exist from here on in both
    times, cpu_times = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        times.append((time.perf_counter() - start) * 1e3)
        cpu_times.append((time.process_time() - cpu_start) * 1e3)
    return {"ms": times, "cpu_ms": cpu_times, "base_mb": base, "peak_mb": peak_mb()}


def sampling_speed() -> dict:
    import numpy as np

    from stage4_gpt.model import GPT, GPTConfig

    model = GPT(GPTConfig(**{**CONFIG, "block_size": 256}), rng=0)
    result = {}
    for use_cache in (True, False):
        start = time.perf_counter()
        out = model.generate(np.zeros((1, 1), dtype=np.int64), SAMPLE_TOKENS, temperature=1.0, rng=0,
                             use_cache=use_cache)
        result["cached" if use_cache else "uncached"] = (out.shape[1] - 1) / (time.perf_counter() - start)
    return result


SAMPLE_TOKENS = 255


def torch_sampling_speed(threads: int) -> float:
    """Tokens per second of a cached generation in PyTorch: the same model as ``sampling_speed``'s (ours,
    moved by ``to_torch``), batch 1, one new token per step, each layer's keys and values kept and extended,
    as ``GPT.generate`` with its cache does. Written here, for GPT-2's design (learned positions, GELU MLP)."""
    import numpy as np
    import torch
    import torch.nn.functional as TF

    from stage4_gpt.model import GPT, GPTConfig
    from stage4_gpt.torch_gpt import to_torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = to_torch(GPT(GPTConfig(**{**CONFIG, "block_size": 256}), rng=0, dtype=np.float32)).eval()
    n_head, width = model.config.n_head, model.config.n_embd
    start = time.perf_counter()
    with torch.no_grad():
        keys, values = [None] * len(model.transformer.h), [None] * len(model.transformer.h)
        token = torch.zeros((1, 1), dtype=torch.long)
        for position in range(SAMPLE_TOKENS):
            x = model.transformer.wte(token) + model.transformer.wpe(torch.tensor([position]))  # (1, 1, C)
            for i, block in enumerate(model.transformer.h):
                q, k, v = block.attn.c_attn(block.ln_1(x)).split(width, dim=2)
                q, k, v = (t.view(1, 1, n_head, width // n_head).transpose(1, 2) for t in (q, k, v))  # (1, nh, 1, hd)
                keys[i] = k if keys[i] is None else torch.cat([keys[i], k], dim=2)  # (1, nh, position + 1, hd)
                values[i] = v if values[i] is None else torch.cat([values[i], v], dim=2)
                y = TF.scaled_dot_product_attention(q, keys[i], values[i])  # the newest query sees every key
                x = x + block.attn.c_proj(y.transpose(1, 2).reshape(1, 1, width))
                x = x + block.mlp(block.ln_2(x))
            logits = model.lm_head(model.transformer.ln_f(x))[:, -1]  # (1, vocab)
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1)
    return SAMPLE_TOKENS / (time.perf_counter() - start)


def sgemm_rate() -> float:
    """NumPy's float32 matrix-product rate, GFLOP/s: the best of square products of 512 and 1024 (the rate
    the BLAS reaches on large operands). The floor of a step is its matrix-product FLOPs at this rate."""
    import numpy as np

    rng = np.random.default_rng(0)
    best = 0.0
    for n in (512, 1024):
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        out = np.empty((n, n), np.float32)
        np.matmul(a, b, out=out)  # warm-up
        for _ in range(5 if n == 1024 else 20):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def blas_kernel() -> str:
    """Which BLAS NumPy runs and which of its kernels (OpenBLAS picks one for the CPU when it loads, unless
    OPENBLAS_CORETYPE names one): the matrix products are most of the step, so the figures depend on it.
    Read with threadpoolctl (installed with scikit-learn) when it is there."""
    import numpy  # noqa: F401  (loads the BLAS)

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl is not installed)"
    blas = [f"{i.get('internal_api')} {i.get('version')}, kernel {i.get('architecture')}"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(blas) or "none found"


def bpe_seconds() -> float:
    from stage4_gpt.bpe import BPETokenizer
    from tests.benchmarks.bpe_speed import VOCAB_SIZE, stdlib_text

    text = stdlib_text()
    start = time.perf_counter()
    BPETokenizer.train(text, VOCAB_SIZE, special_tokens=["<|endoftext|>"])
    return time.perf_counter() - start


def profile(steps: int, top: int = 15) -> None:
    import cProfile
    import pstats

    step = numpy_step()
    step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    print(f"\nthe NumPy step's top {top} functions by their own time ({steps} steps; cProfile slows Python code "
          "down, so the shares matter, not the seconds):")
    pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats("tottime").print_stats(top)


def run_worker(args, side: str, row: str = "default", steps: int | None = None) -> str:
    """One side in a fresh process (without the other's library loaded: PyTorch's threads and NumPy's BLAS
    threads in one process slow each other down), with the thread count in its environment before NumPy
    starts. Returns what it printed."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "tests.benchmarks.gpt_speed", "--worker", side, "--row", row,
           "--steps", str(args.steps if steps is None else steps), "--implementation", str(args.implementation)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the {side} worker failed:\n{done.stderr[-2000:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--implementation", type=Path, default=REPO_ROOT / "solutions", metavar="DIR",
                        help="the folder holding the stage packages (default: solutions/)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side, alternating")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries of the NumPy step")
    parser.add_argument("--skip-sampling", action="store_true")
    parser.add_argument("--skip-bpe", action="store_true")
    parser.add_argument("--skip-sizes", action="store_true", help="leave out the table of larger models")
    parser.add_argument("--worker", choices=("numpy", "torch", "profile", "sampling", "torch-sampling", "bpe",
                                             "blas", "sgemm"), help=argparse.SUPPRESS)
    parser.add_argument("--row", choices=tuple(ROWS), default="default", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.implementation = args.implementation.resolve()
    args.threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    sys.path.insert(0, str(args.implementation))  # ahead of the current folder's stage packages
    if args.worker == "profile":
        profile(args.steps)
        return
    if args.worker == "sampling":
        print(json.dumps(sampling_speed()))
        return
    if args.worker == "torch-sampling":
        print(json.dumps(torch_sampling_speed(args.threads)))
        return
    if args.worker == "sgemm":
        print(json.dumps(sgemm_rate()))
        return
    if args.worker == "blas":
        print(json.dumps(blas_kernel()))
        return
    if args.worker == "bpe":
        print(json.dumps(bpe_seconds()))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.threads, args.row)))
        return

    from importlib.metadata import version

    import numpy as np

    print(f"implementation: {args.implementation}   numpy {np.__version__}, torch {version('torch')}, "
          f"{args.threads} thread(s) each (OMP_NUM_THREADS)")
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    print(f"NumPy's BLAS: {json.loads(run_worker(args, 'blas').strip().splitlines()[-1])}"
          + (f" (OPENBLAS_CORETYPE={coretype} is set)" if coretype else ""))
    print(f"GPT {CONFIG}, batch {BATCH}, float32: one training step (forward, backward, clipping, AdamW)")
    results = {"numpy": [], "torch": []}
    for _ in range(args.rounds):
        for side in results:
            results[side].append(json.loads(run_worker(args, side).strip().splitlines()[-1]))
    best = {side: min(min(r["ms"]) for r in rounds) for side, rounds in results.items()}
    cpu = {side: min(min(r["cpu_ms"]) for r in rounds) for side, rounds in results.items()}
    median = {side: float(np.median([t for r in rounds for t in r["ms"]])) for side, rounds in results.items()}
    memory = {side: min(r["peak_mb"] - r["base_mb"] for r in rounds) for side, rounds in results.items()}
    print(f"{'':<34} {'ours':>10} {'torch':>10} {'ours/torch':>11}")
    print(f"{'step time, best (ms)':<34} {best['numpy']:>10.1f} {best['torch']:>10.1f} {best['numpy'] / best['torch']:>10.2f}x")
    print(f"{'step time, median (ms)':<34} {median['numpy']:>10.1f} {median['torch']:>10.1f} "
          f"{median['numpy'] / median['torch']:>10.2f}x")
    print(f"{'CPU time per step, best (ms)':<34} {cpu['numpy']:>10.1f} {cpu['torch']:>10.1f} {cpu['numpy'] / cpu['torch']:>10.2f}x")
    print(f"{'peak memory growth (MB)':<34} {memory['numpy']:>10.1f} {memory['torch']:>10.1f} "
          f"{memory['numpy'] / memory['torch']:>10.2f}x")
    print(f"tokens per second in training: ours {BATCH * CONFIG['block_size'] / best['numpy'] * 1e3:,.0f}, "
          f"torch {BATCH * CONFIG['block_size'] / best['torch'] * 1e3:,.0f}")
    gflops = json.loads(run_worker(args, "sgemm").strip().splitlines()[-1])
    floor_ms = matmul_flops("default") / gflops / 1e6
    print(f"NumPy's sgemm: {gflops:.1f} GFLOP/s (best of 512 and 1024 square products); the step's matrix "
          f"products: {matmul_flops('default') / 1e9:.2f} GFLOP, the floor {floor_ms:.1f} ms; ours is "
          f"{best['numpy'] / floor_ms:.2f}x its floor (best), {cpu['numpy'] / floor_ms:.2f}x (CPU time)")
    if args.profile:
        print(run_worker(args, "profile"), end="")
    if not args.skip_sizes:
        print(f"\nhow the ratio moves with size ({args.threads} thread(s) each; best of {args.rounds} rounds of "
              "2 steps for the larger rows; floor: the row's matrix-product FLOPs at NumPy's sgemm rate)")
        print(f"{'':<40} {'GFLOP':>6} {'ours ms':>8} {'torch ms':>9} {'ours/torch':>11} {'ours/floor':>11}   "
              f"{'CPU: ours/torch':>15} {'ours/floor':>11}")
        for row, (config, batch_size, length, training) in ROWS.items():
            if row == "default":
                ours, theirs, ours_cpu, theirs_cpu = best["numpy"], best["torch"], cpu["numpy"], cpu["torch"]
            else:
                runs = {"numpy": [], "torch": []}
                for _ in range(args.rounds):
                    for side in runs:
                        runs[side].append(json.loads(run_worker(args, side, row, steps=2).strip().splitlines()[-1]))
                ours, theirs = (min(min(r["ms"]) for r in runs[side]) for side in runs)
                ours_cpu, theirs_cpu = (min(min(r["cpu_ms"]) for r in runs[side]) for side in runs)
            label = (f"{row}: {config['n_layer']}L {config['n_embd']}w, {batch_size}x{length} "
                     + ("train" if training else "forward"))
            flops = matmul_flops(row)
            floor = flops / gflops / 1e6
            print(f"{label:<40} {flops / 1e9:>6.1f} {ours:>8.1f} {theirs:>9.1f} {ours / theirs:>10.2f}x "
                  f"{ours / floor:>10.2f}x   {ours_cpu / theirs_cpu:>14.2f}x {ours_cpu / floor:>10.2f}x")
    if not args.skip_sampling:
        speed = json.loads(run_worker(args, "sampling").strip().splitlines()[-1])
        theirs = json.loads(run_worker(args, "torch-sampling").strip().splitlines()[-1])
        print(f"sampling (batch 1, {SAMPLE_TOKENS} tokens): {speed['cached']:,.0f} tokens/s with the KV cache, "
              f"{speed['uncached']:,.0f} without: {speed['cached'] / speed['uncached']:.1f}x faster; torch with "
              f"a KV cache {theirs:,.0f} tokens/s (ours/torch {theirs / speed['cached']:.2f}x the time)")
    if not args.skip_bpe:
        seconds = json.loads(run_worker(args, "bpe").strip().splitlines()[-1])
        print(f"BPE training (1 MB of text, 1000 tokens): {seconds:.1f} s")


if __name__ == "__main__":
    main()
