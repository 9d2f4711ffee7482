"""PyTorch's side of the optimisation tests (4.5, 4.6): AdamW with nanoGPT's two parameter groups, and the
warmup + cosine schedule built from torch's own schedulers."""

from __future__ import annotations

import torch


def torch_adamw(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]):
    """torch.optim.AdamW with weight decay on the parameters with ndim >= 2 only (eps 1e-8)."""
    named = list(model.named_parameters())
    return torch.optim.AdamW([{"params": [p for _, p in named if p.ndim >= 2], "weight_decay": weight_decay},
                              {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0}],
                             lr=lr, betas=betas, eps=1e-8)


def torch_schedule(optimizer, max_lr: float, min_lr: float, warmup: int, total: int):
    """Linear warmup to max_lr over ``warmup`` steps (reaching it at step warmup - 1), then a cosine down to
    min_lr at ``total``: LinearLR followed by CosineAnnealingLR. Call ``.step()`` after each optimizer step."""
    for group in optimizer.param_groups:
        group["lr"] = max_lr
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=min_lr)
    if warmup == 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, end_factor=1.0,
                                               total_iters=warmup - 1)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])
