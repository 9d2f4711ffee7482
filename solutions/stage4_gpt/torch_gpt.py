"""The same GPT in PyTorch: weights both ways, a GPU when there is one, and many processes with DDP.

Everything else in this course runs on NumPy, on one CPU core, so that every number is one you can follow.
This file is the way out: the GPT of ``model.py`` written with ``torch.nn``, with the same parameter names,
so that a model moves between the two without any change:

    torch_model = to_torch(model)          # our GPT -> TorchGPT, identical logits
    model = from_torch(torch_model)        # and back

and a training entry point that runs on a GPU when PyTorch sees one, and on several GPUs (or several CPU
processes) with ``torch.distributed``: data parallelism, each process a copy of the model and its own share
of every batch, the gradients averaged across processes after each backward pass.

    python -m stage4_gpt.torch_gpt --max-steps 2000                         # one process: CUDA if present
    torchrun --standalone --nproc-per-node 2 -m stage4_gpt.torch_gpt        # two processes (DDP)

``torchrun`` starts the processes and tells each, through environment variables, who it is: ``RANK`` (0 ..
WORLD_SIZE - 1), ``LOCAL_RANK`` (its GPU on this machine), ``WORLD_SIZE``, and where rank 0 listens
(``MASTER_ADDR``, ``MASTER_PORT``). The checkpoint it writes is the ``.npz`` of ``train.py`` (weights,
config, tokenizer), so ``python -m stage4_gpt.sample`` reads it with NumPy.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as TF

from stage4_gpt.data import get_batch, split_tokens
from stage4_gpt.model import GPT, GPTConfig
from stage4_gpt.optim import get_lr
from stage4_gpt.train import build_parser, build_tokenizer, model_config_from, read_corpus, save_weights


# ---------------------------------------------------------------------- the model
def rope_tables(config: GPTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (block_size, head_dim/2), float64, of the rotary angles p * theta^(-2i/head_dim): the
    tables of stage 3's ``RotaryEmbedding``."""
    frequencies = config.rope_theta ** (-torch.arange(0, config.head_dim, 2, dtype=torch.float64) / config.head_dim)
    angle = torch.outer(torch.arange(config.block_size, dtype=torch.float64), frequencies)
    return torch.cos(angle), torch.sin(angle)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[..., 2i], x[..., 2i+1]) of position t by the angle of cos[t, i], sin[t, i]
    (interleaved pairs, as ``F.rotate_pairs``): x (B, n_head, T, head_dim), cos and sin (T, head_dim/2)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def torch_norm(config: GPTConfig) -> nn.Module:
    """LayerNorm (biased if config.bias) or RMSNorm over n_embd, eps = config.norm_eps."""
    if config.norm == "layernorm":
        return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)
    return nn.RMSNorm(config.n_embd, eps=config.norm_eps)


class TorchCausalSelfAttention(nn.Module):
    """``model.CausalSelfAttention`` in torch: c_attn (C -> 3C), c_proj (C -> C), resid_dropout; q | k | v
    side by side in c_attn's output, head h on features h*hd .. (h+1)*hd; RoPE on q and k for pos='rope'
    (the tables are buffers, not parameters, and stay out of the state dict)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        # BEGIN SOLUTION 4.9: c_attn, c_proj, resid_dropout; for pos='rope' the cos/sin tables as non-persistent buffers
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.dropout, self.rope = config.n_head, config.dropout, config.pos == "rope"
        if self.rope:
            cos, sin = rope_tables(config)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C), causal: position t attends to 0..t."""
        # BEGIN SOLUTION 4.9: split c_attn(x) into q, k, v (B, n_head, T, hd); RoPE; TF.scaled_dot_product_attention(is_causal=True); c_proj
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.rope:
            q, k = rotate_pairs(q, self.cos[:T], self.sin[:T]), rotate_pairs(k, self.cos[:T], self.sin[:T])
        y = TF.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))
        # END SOLUTION


class TorchMLP(nn.Module):
    """``model.MLP``: c_fc (C -> ffn_dim), GELU (config.gelu_approximate), c_proj, dropout."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        # BEGIN SOLUTION 4.9: c_fc, gelu, c_proj, dropout
        self.c_fc = nn.Linear(config.n_embd, config.ffn_dim, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj = nn.Linear(config.ffn_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 4.9: c_fc, gelu, c_proj, dropout
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))
        # END SOLUTION


class TorchSwiGLU(nn.Module):
    """``model.SwiGLUMLP``: w2(silu(w1 x) * w3 x), no biases, then dropout."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        # BEGIN SOLUTION 4.9: w1, w2, w3 (no bias), dropout
        self.w1 = nn.Linear(config.n_embd, config.ffn_dim, bias=False)
        self.w2 = nn.Linear(config.ffn_dim, config.n_embd, bias=False)
        self.w3 = nn.Linear(config.n_embd, config.ffn_dim, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 4.9: w2(silu(w1 x) * w3 x), dropout
        return self.dropout(self.w2(TF.silu(self.w1(x)) * self.w3(x)))
        # END SOLUTION


class TorchBlock(nn.Module):
    """``model.Block``: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        # BEGIN SOLUTION 4.9: ln_1, attn, ln_2, mlp
        self.ln_1 = torch_norm(config)
        self.attn = TorchCausalSelfAttention(config)
        self.ln_2 = torch_norm(config)
        self.mlp = TorchMLP(config) if config.mlp == "gelu" else TorchSwiGLU(config)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 4.9: the two residual branches
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))
        # END SOLUTION


class TorchGPT(nn.Module):
    """``model.GPT`` in PyTorch, parameter for parameter: ``transformer.wte``, ``transformer.wpe`` (learned
    positions only), ``transformer.drop``, ``transformer.h.{i}``, ``transformer.ln_f``, ``lm_head`` (no
    bias; the same Parameter as ``transformer.wte.weight`` when config.tie_weights). GPT-2's initialisation:
    weights N(0, 0.02), the residual projections (attn.c_proj, mlp.c_proj, mlp.w2) N(0, 0.02 / sqrt(2 *
    n_layer)), biases 0, norm weights 1. ``forward(idx, targets=None, ignore_index=-1) -> (logits, loss)``
    as ``GPT.forward``.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        refuse_experiments(config)
        self.config = config
        # BEGIN SOLUTION 4.9: transformer (nn.ModuleDict), lm_head, tying, then GPT-2's initialisation
        parts = {"wte": nn.Embedding(config.vocab_size, config.n_embd)}
        if config.pos == "learned":
            parts["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        parts["drop"] = nn.Dropout(config.dropout)
        parts["h"] = nn.ModuleList(TorchBlock(config) for _ in range(config.n_layer))
        parts["ln_f"] = torch_norm(config)
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        with torch.no_grad():
            for name, module in self.named_modules():  # a tied weight is drawn twice, from the same N(0, 0.02)
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    std = residual_std if name.endswith(("attn.c_proj", "mlp.c_proj", "mlp.w2")) else 0.02
                    nn.init.normal_(module.weight, 0.0, std)
                    if getattr(module, "bias", None) is not None:
                        nn.init.zeros_(module.bias)
        # END SOLUTION

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, ignore_index: int = -1):
        """idx (B, T) int64 -> (logits (B, T, vocab_size), mean cross-entropy over the targets that are not
        ignore_index, or None)."""
        # BEGIN SOLUTION 4.9: wte (+ wpe), drop, blocks, ln_f, lm_head; TF.cross_entropy on (B*T, vocab)
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"TorchGPT: {T} tokens is longer than block_size={self.config.block_size}")
        x = self.transformer.wte(idx)
        if self.config.pos == "learned":
            x = x + self.transformer.wpe(torch.arange(T, device=idx.device))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = TF.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), ignore_index=ignore_index)
        return logits, loss
        # END SOLUTION


# ---------------------------------------------------------------------- weights both ways
def refuse_experiments(config: GPTConfig) -> None:
    """A one-line ValueError for a config of the lesson's experiments (pos or norm 'none', no residual,
    post-norm): the port builds only the designs of GPT-2 and Llama."""
    if config.ablations():
        raise ValueError(f"the PyTorch port builds GPT-2's and Llama's designs, not the experiment "
                         f"{', '.join(config.ablations())}: train that one with python -m stage4_gpt.train")


TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def to_torch(model: GPT, device: str | torch.device = "cpu") -> TorchGPT:
    """A ``TorchGPT`` with ``model``'s config and a copy of its weights, in its dtype (float32 or float64),
    on ``device``. Its logits equal ``model``'s (up to the order of floating-point operations).
    The lesson's experiments (``config.ablations()``) are refused: the port builds GPT-2's and Llama's designs."""
    refuse_experiments(model.config)
    # BEGIN SOLUTION 4.9: TorchGPT(model.config) in the weights' dtype; load_state_dict of torch.tensor copies of model.state_dict()
    state = model.state_dict()
    dtype = TORCH_DTYPES[state["transformer.wte.weight"].dtype]
    torch_model = TorchGPT(model.config).to(dtype)
    torch_model.load_state_dict({name: torch.tensor(value) for name, value in state.items()})
    return torch_model.to(device)
    # END SOLUTION


def from_torch(torch_model: TorchGPT) -> GPT:
    """Our ``GPT`` with ``torch_model``'s config and a copy of its weights, in their dtype (from any device).
    A tied ``lm_head.weight`` stays tied: it is one Parameter in both."""
    # BEGIN SOLUTION 4.9: GPT(config, dtype=...); load_state_dict of the torch state dict as NumPy arrays (.detach().cpu().numpy())
    state = {name: t.detach().cpu().numpy() for name, t in torch_model.state_dict().items()}
    model = GPT(torch_model.config, rng=0, dtype=state["transformer.wte.weight"].dtype)
    model.load_state_dict(state)
    return model
    # END SOLUTION


# ---------------------------------------------------------------------- devices and processes
@dataclass
class Distributed:
    """Who this process is: ``rank`` among ``world_size`` processes (0 of 1 without torchrun),
    ``local_rank`` on this machine, and the ``device`` it computes on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 prints, evaluates and writes checkpoints; the others only train."""
        return self.rank == 0


def pick_device(local_rank: int = 0) -> torch.device:
    """``cuda:<local_rank>`` when PyTorch sees a GPU, else the CPU."""
    return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def setup_distributed() -> Distributed:
    """Join the process group that ``torchrun`` set up, or run alone.

    Without ``WORLD_SIZE`` in the environment (a plain ``python -m``): one process, rank 0 of 1, on
    ``pick_device()``, and no process group. With it: ``dist.init_process_group`` with the backend for the
    device, NCCL for GPUs and gloo for CPUs (it reads RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from the
    environment itself), on ``pick_device(LOCAL_RANK)``, and for a GPU ``torch.cuda.set_device`` to it.
    """
    # BEGIN SOLUTION 4.9: no WORLD_SIZE -> Distributed(0, 0, 1, pick_device()); else init_process_group("nccl" or "gloo"), ranks from the environment
    if "WORLD_SIZE" not in os.environ:
        return Distributed(rank=0, local_rank=0, world_size=1, device=pick_device())
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size(), device=device)
    # END SOLUTION


def wrap_for_training(model: TorchGPT, distributed: Distributed) -> nn.Module:
    """The module to train: ``model`` itself in a single process; in a process group, ``model`` wrapped in
    ``DistributedDataParallel`` (on a GPU with ``device_ids=[local_rank]``), which averages the gradients of
    all processes during ``backward()``. ``model`` must already be on ``distributed.device``."""
    # BEGIN SOLUTION 4.9: world_size 1 -> model; else nn.parallel.DistributedDataParallel(model, device_ids=...)
    if distributed.world_size == 1:
        return model
    device_ids = [distributed.local_rank] if distributed.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    # END SOLUTION


def shard(batch: torch.Tensor, distributed: Distributed) -> torch.Tensor:
    """This process's rows of a global batch (B, ...): rows rank * B/W .. (rank + 1) * B/W, W = world_size.
    B must be a multiple of W (ValueError otherwise), so that every process gets the same number of rows and
    the average of the processes' mean gradients is the mean gradient of the whole batch."""
    # BEGIN SOLUTION 4.9: check B % W; the rank's contiguous slice
    size, remainder = divmod(len(batch), distributed.world_size)
    if remainder:
        raise ValueError(f"shard: a batch of {len(batch)} rows does not split evenly over {distributed.world_size} "
                         "processes")
    return batch[distributed.rank * size:(distributed.rank + 1) * size]
    # END SOLUTION


def cleanup_distributed() -> None:
    """Leave the process group. The barrier first: a process that tears its connections down while another is
    still using them can make gloo abort that other process at exit."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------------- training
def torch_adamw(model: TorchGPT, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW with configure_optimizer's two groups: decay on parameters with ndim >= 2 only."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=torch.cuda.is_available() or None)


@torch.no_grad()
def torch_evaluate(model: TorchGPT, tokens: np.ndarray, batch_size: int, block_size: int, n_batches: int, seed,
                   device: torch.device) -> float:
    """``train.evaluate`` for a TorchGPT: the mean loss over the same seeded batches, without dropout."""
    if len(tokens) <= block_size:
        return float("nan")
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    losses = [model(*(torch.from_numpy(a).to(device) for a in get_batch(tokens, batch_size, block_size, rng)))[1].item()
              for _ in range(n_batches)]
    model.train(was_training)
    return float(np.mean(losses))


def main(argv: list[str] | None = None) -> int:
    """Train a TorchGPT with the flags of ``python -m stage4_gpt.train`` (``--batch-size`` per process),
    on CUDA when present, data-parallel under ``torchrun``; rank 0 evaluates, prints and writes
    ``<out>/ckpt.npz`` (weights, config, tokenizer: ``python -m stage4_gpt.sample`` reads it)."""
    parser = build_parser()
    parser.prog = "python -m stage4_gpt.torch_gpt"
    settings = vars(parser.parse_args(argv))
    if settings.pop("resume"):
        parser.error("--resume is for the NumPy trainer; the PyTorch one starts from scratch")
    experiments = model_config_from(settings, vocab_size=1).ablations()
    if experiments:
        parser.error(f"{', '.join(experiments)}: the PyTorch port builds GPT-2's and Llama's designs only; "
                     "train the experiments with python -m stage4_gpt.train")
    distributed = setup_distributed()
    try:
        torch.manual_seed(settings["seed"])  # the same initial weights in every process (DDP also broadcasts them)
        text = read_corpus(settings)
        tokenizer = build_tokenizer(settings["tokenizer"], text, settings["bpe_vocab_size"])
        tokens = np.array(tokenizer.encode(text), dtype=np.int64)
        train_tokens, val_tokens = split_tokens(tokens, settings["val_fraction"])
        config = model_config_from(settings, tokenizer.vocab_size)
        model = TorchGPT(config).to(distributed.device)
        trained = wrap_for_training(model, distributed)
        optimizer = torch_adamw(model, settings["lr"], settings["weight_decay"], (settings["beta1"], settings["beta2"]))
        rng = np.random.default_rng([settings["seed"], distributed.rank])  # each process its own batches
        B, T, steps = settings["batch_size"], settings["block_size"], settings["max_steps"]
        decay_steps = settings["lr_decay_steps"] or steps
        if distributed.is_main:
            print(f"{distributed.world_size} process(es) on {distributed.device}; {sum(p.numel() for p in model.parameters()):,} "
                  f"parameters; {B * settings['grad_accum'] * T * distributed.world_size:,} tokens per step")
        started = time.perf_counter()
        for step in range(steps):
            lr = get_lr(step, settings["lr"], settings["min_lr"], settings["warmup_steps"], decay_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for micro in range(settings["grad_accum"]):
                x, y = (torch.from_numpy(a).to(distributed.device) for a in get_batch(train_tokens, B, T, rng))
                # Under DDP, only the last micro-batch's backward needs to average the gradients across processes.
                last = micro == settings["grad_accum"] - 1
                context = trained.no_sync() if distributed.world_size > 1 and not last else contextlib.nullcontext()
                with context:
                    _, loss = trained(x, y)
                    (loss / settings["grad_accum"]).backward()
                total += loss.item() / settings["grad_accum"]
            if settings["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip"])
            optimizer.step()
            if distributed.is_main and ((step + 1) % settings["log_interval"] == 0 or step + 1 == steps):
                per_step = (time.perf_counter() - started) / (step + 1)
                print(f"step {step + 1:>6}/{steps} | loss {total:.4f} | lr {lr:.2e} | "
                      f"{B * settings['grad_accum'] * T * distributed.world_size / per_step:,.0f} tok/s", flush=True)
        if distributed.is_main:
            val = torch_evaluate(model, val_tokens, B, T, settings["eval_batches"], settings["seed"], distributed.device)
            path = Path(settings["out"]) / "ckpt.npz"
            save_weights(path, from_torch(model), tokenizer, settings, step=steps)
            print(f"val loss {val:.4f}; weights saved to {path} (python -m stage4_gpt.sample --checkpoint {path})")
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
