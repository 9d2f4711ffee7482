"""A GPT in PyTorch for the tests of stage 4: the architecture of stage4_gpt.model, with the same parameter
names, written independently of it (and of the student's PyTorch port, exercise 4.9), so that the NumPy
model can be compared with it number for number.

It takes the fields of ``GPTConfig`` as keyword arguments (``ReferenceGPT(**fields)``), so a test can build
it without trusting the student's config class. Every variant: LayerNorm or RMSNorm, learned or rotary
positions (interleaved pairs, as stage 3's ``apply_rope``), a GELU (exact or tanh) or SwiGLU MLP, biases
on or off, lm_head tied to wte or not; and the lesson's experiments: no positions (pos='none'), no norms
(norm='none'), no residual connections (residual=False), the norm after the addition (norm_position='post').
No dropout: the comparisons run without it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as TF


def ffn_width(n_embd: int, mlp: str, ffn_hidden: int | None) -> int:
    """The MLP's hidden width, as the lesson states it: ffn_hidden if given, else 4 * n_embd for GELU and,
    for SwiGLU, 8 * n_embd // 3 rounded up to a multiple of 8 (Llama's rule)."""
    if ffn_hidden is not None:
        return ffn_hidden
    return 4 * n_embd if mlp == "gelu" else 8 * math.ceil((8 * n_embd // 3) / 8)


def rotate_interleaved(x: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE on x (B, h, T, hd): each pair (x[..., 2i], x[..., 2i+1]) of position p rotated by the angle
    p * theta^(-2i/hd)."""
    T, hd = x.shape[-2], x.shape[-1]
    frequencies = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)  # (hd/2,)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * frequencies[None, :]  # (T, hd/2)
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


class ReferenceAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool, rope_theta: float | None):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.n_head, self.rope_theta = n_head, rope_theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.rope_theta is not None:
            q, k = rotate_interleaved(q, self.rope_theta), rotate_interleaved(k, self.rope_theta)
        y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class ReferenceMLP(nn.Module):
    def __init__(self, n_embd: int, hidden: int, bias: bool, approximate: str):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.approximate = approximate

    def forward(self, x):
        return self.c_proj(TF.gelu(self.c_fc(x), approximate=self.approximate))


class ReferenceSwiGLU(nn.Module):
    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(n_embd, hidden, bias=False)
        self.w2 = nn.Linear(hidden, n_embd, bias=False)
        self.w3 = nn.Linear(n_embd, hidden, bias=False)

    def forward(self, x):
        return self.w2(TF.silu(self.w1(x)) * self.w3(x))


def reference_norm(n_embd: int, norm: str, bias: bool, eps: float) -> nn.Module:
    if norm == "none":
        return nn.Identity()
    return nn.LayerNorm(n_embd, eps=eps, bias=bias) if norm == "layernorm" else nn.RMSNorm(n_embd, eps=eps)


class ReferenceBlock(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.ln_1 = reference_norm(c["n_embd"], c["norm"], c["bias"], c["norm_eps"])
        self.attn = ReferenceAttention(c["n_embd"], c["n_head"], c["bias"],
                                       c["rope_theta"] if c["pos"] == "rope" else None)
        self.ln_2 = reference_norm(c["n_embd"], c["norm"], c["bias"], c["norm_eps"])
        hidden = ffn_width(c["n_embd"], c["mlp"], c["ffn_hidden"])
        self.mlp = (ReferenceMLP(c["n_embd"], hidden, c["bias"], c["gelu_approximate"]) if c["mlp"] == "gelu"
                    else ReferenceSwiGLU(c["n_embd"], hidden))
        self.residual, self.post_norm = c["residual"], c["norm_position"] == "post"

    def forward(self, x):
        if self.post_norm and self.residual:  # the original Transformer
            x = self.ln_1(x + self.attn(x))
            return self.ln_2(x + self.mlp(x))
        if self.post_norm:
            return self.ln_2(self.mlp(self.ln_1(self.attn(x))))
        if self.residual:  # GPT-2
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))
        return self.mlp(self.ln_2(self.attn(self.ln_1(x))))


DEFAULTS = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=True,
                norm="layernorm", pos="learned", mlp="gelu", tie_weights=True, norm_eps=1e-5, rope_theta=10000.0,
                ffn_hidden=None, gelu_approximate="none", residual=True, norm_position="pre")


class ReferenceGPT(nn.Module):
    """nanoGPT's module tree: transformer.{wte, wpe (learned positions only), h.i, ln_f} and lm_head."""

    def __init__(self, **fields):
        super().__init__()
        unknown = set(fields) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"ReferenceGPT: unknown config fields {sorted(unknown)}")
        c = {**DEFAULTS, **fields}
        assert c["dropout"] == 0.0, "the reference has no dropout"
        self.c = c
        parts = {"wte": nn.Embedding(c["vocab_size"], c["n_embd"])}
        if c["pos"] == "learned":
            parts["wpe"] = nn.Embedding(c["block_size"], c["n_embd"])
        parts["h"] = nn.ModuleList(ReferenceBlock(c) for _ in range(c["n_layer"]))
        parts["ln_f"] = reference_norm(c["n_embd"], c["norm"], c["bias"], c["norm_eps"])
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=False)
        if c["tie_weights"]:
            self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, ignore_index: int = -1):
        T = idx.shape[1]
        x = self.transformer.wte(idx)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(T))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)
        return logits, loss


def randomize(model: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
    """Give every parameter seeded random values, so that no bias is 0 and no norm weight is 1: a mistake in
    any of them then shows in the comparison. Norm weights are near 1 (1 + N(0, 0.1)); the rest are
    N(0, scale^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype)
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                p.copy_(1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            else:
                p.copy_(scale * noise)
    return model


def numpy_state(model: nn.Module) -> dict[str, np.ndarray]:
    """The state dict as NumPy arrays (a tied weight under each of its names, as torch lists it)."""
    return {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}


def assert_gpt_matches_reference(fields: dict, what: str, *, weights_seed: int, data_seed: int, T: int) -> None:
    """Our GPT of ``fields`` in float64 with the weights of a randomised ``ReferenceGPT``: its logits for random
    ids (2, T), and the gradient of every parameter for a random upstream gradient of the logits."""
    from stage4_gpt.model import GPT, GPTConfig  # noqa: PLC0415 - the code under test, chosen at run time
    from tests.helpers import assert_close  # noqa: PLC0415

    reference = randomize(ReferenceGPT(**fields).double(), seed=weights_seed)
    model = GPT(GPTConfig(**fields), rng=0, dtype=np.float64)
    model.load_state_dict(numpy_state(reference))
    rng = np.random.default_rng(data_seed)
    idx = rng.integers(0, fields["vocab_size"], (2, T))
    upstream = rng.normal(size=(2, T, fields["vocab_size"]))
    logits, _ = model(idx)
    expected, _ = reference(torch.tensor(idx))
    assert_close(logits, expected, f"{what}: logits for idx of shape {idx.shape}")
    (expected * torch.tensor(upstream)).sum().backward()
    logits.backward(upstream)
    theirs = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert_close(p.grad, theirs[name].grad, f"{what}: gradient of {name!r} for an upstream gradient w of the logits")


def hf_gpt2_state_dict(model: ReferenceGPT, prefix: str = "transformer.") -> dict[str, np.ndarray]:
    """The state dict of a GPT-2-style reference in Hugging Face's layout: the four projections as Conv1D
    (weight transposed to (in_features, out_features)), the attention's causal-mask buffers ``attn.bias``
    (1, 1, block, block) and ``attn.masked_bias`` as GPT2LMHeadModel carries them, and lm_head.weight."""
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    block = model.c["block_size"]
    out = {}
    for name, array in numpy_state(model).items():
        if name.startswith("transformer."):
            short = name.removeprefix("transformer.")
            out[prefix + short] = array.T.copy() if short.endswith(conv1d) else array
        else:
            out[name] = array
    for i in range(model.c["n_layer"]):
        out[f"{prefix}h.{i}.attn.bias"] = np.tril(np.ones((block, block), dtype=np.float32))[None, None]
        out[f"{prefix}h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    return out
