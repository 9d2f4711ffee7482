"""The GPT: a decoder-only Transformer that reads tokens and predicts, at every position, the next one.

    idx (B, T) token ids
      -> wte(idx) [+ wpe(positions)]              (B, T, C)  token embeddings (+ learned positions)
      -> dropout
      -> n_layer x Block                          (B, T, C)
             x = x + attn(ln_1(x))                 causal self-attention: each position reads itself and the past
             x = x + mlp(ln_2(x))                  the same MLP at every position (GELU, or SwiGLU)
      -> ln_f                                     (B, T, C)
      -> lm_head                                  (B, T, vocab)  logits: scores of the next token at every position

B is the batch, T the number of positions (at most ``block_size``), C = ``n_embd`` the width, and the
attention splits C into ``n_head`` heads of ``head_dim = C / n_head`` features.

One ``GPTConfig`` describes both families this file builds:
  * GPT-2 (the defaults): LayerNorm with biases, learned positions, a GELU MLP, lm_head tied to wte;
  * Llama-style: ``norm='rmsnorm', pos='rope', mlp='swiglu', bias=False, tie_weights=False``.

The parameters have nanoGPT's names (``transformer.wte.weight``, ``transformer.h.0.attn.c_attn.weight``,
..., ``lm_head.weight``), so weights move to and from PyTorch (stage 4.9) and GPT-2's checkpoints.

The exercises: the model (4.3), its loss (4.4), sampling (4.7) and the key/value cache (4.8).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stage1_autograd.tensor import Tensor, no_grad
from stage2_mlp import nn as nn2
from stage2_mlp.nn import Dropout, Module
from stage3_transformer import functional as F
from stage3_transformer.nn import GELU, Embedding, LayerNorm, Linear, RMSNorm, RotaryEmbedding, SwiGLU

_CHOICES = {"norm": ("layernorm", "rmsnorm", "none"), "pos": ("learned", "rope", "none"), "mlp": ("gelu", "swiglu"),
            "gelu_approximate": ("none", "tanh"), "norm_position": ("pre", "post")}


# ---------------------------------------------------------------------- the configuration (given)
@dataclass
class GPTConfig:
    """The sizes and the design choices of a GPT. The defaults are GPT-2 small (124M parameters).

    vocab_size      number of token ids the model reads and scores
    block_size      the longest sequence the model takes (its context length)
    n_layer         number of Blocks
    n_head          attention heads per Block; n_embd must be a multiple of it
    n_embd          C, the width of the residual stream
    dropout         probability of dropout after the embeddings, on the attention weights and after each
                    residual branch (training mode only)
    bias            biases in the Linears of attention and MLP and in the LayerNorms
    norm            'layernorm' (GPT-2) or 'rmsnorm' (Llama); 'none' (an experiment): no normalisation at all
    pos             'learned' (a table wpe of block_size positions, GPT-2) or 'rope' (rotary, Llama);
                    'none' (an experiment): no wpe and no rotation, the model is told no positions
    mlp             'gelu' (c_fc, GELU, c_proj) or 'swiglu' (w1, w2, w3; never biased)
    tie_weights     lm_head.weight is transformer.wte.weight, the same Parameter (GPT-2)
    norm_eps        the eps of every norm
    rope_theta      the base of the rotary frequencies
    ffn_hidden      the MLP's hidden width; None picks ``ffn_dim``'s default
    gelu_approximate  'none' (erf) or 'tanh' (GPT-2's original), torch's names
    residual        each Block adds its branches to the stream (x + f(x)); False (an experiment): x = f(x)
    norm_position   'pre' (GPT-2: x + f(norm(x))) or 'post' (the original Transformer: norm(x + f(x)))

The four settings marked "an experiment" are the ablations of the lesson's Experiments section; the
defaults are GPT-2's, and ``ablations()`` lists the settings that differ from them.
    ``to_dict()`` / ``from_dict()`` turn it into plain values and back, for checkpoints.
    """

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    norm: str = "layernorm"
    pos: str = "learned"
    mlp: str = "gelu"
    tie_weights: bool = True
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    ffn_hidden: int | None = None
    gelu_approximate: str = "none"
    residual: bool = True
    norm_position: str = "pre"

    def __post_init__(self):
        for field, allowed in _CHOICES.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"GPTConfig: {field} must be one of {allowed}, not {getattr(self, field)!r}")
        sizes = {"vocab_size": self.vocab_size, "block_size": self.block_size, "n_layer": self.n_layer,
                 "n_head": self.n_head, "n_embd": self.n_embd}
        if self.ffn_hidden is not None:
            sizes["ffn_hidden"] = self.ffn_hidden
        for name, value in sizes.items():
            if int(value) != value or value < 1:
                raise ValueError(f"GPTConfig: {name} must be a positive integer, not {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be a multiple of n_head={self.n_head} "
                             "(each head gets n_embd / n_head features)")
        if self.pos == "rope" and self.head_dim % 2:
            raise ValueError(f"GPTConfig: rotary positions rotate pairs of features, so head_dim = n_embd / n_head "
                             f"must be even; it is {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout is a probability in [0, 1), not {self.dropout}")
        if not isinstance(self.residual, (bool, np.bool_)):
            raise ValueError(f"GPTConfig: residual must be True or False, not {self.residual!r}")

    def ablations(self) -> list[str]:
        """The experiments' settings this config uses, e.g. ``["pos='none'", 'residual=False']``; [] for the
        designs of GPT-2 and Llama."""
        found = [f"{name}='none'" for name in ("norm", "pos") if getattr(self, name) == "none"]
        if not self.residual:
            found.append("residual=False")
        if self.norm_position != "pre":
            found.append(f"norm_position={self.norm_position!r}")
        return found

    @property
    def head_dim(self) -> int:
        """The features of one attention head: n_embd / n_head."""
        return self.n_embd // self.n_head

    @property
    def ffn_dim(self) -> int:
        """The MLP's hidden width: ``ffn_hidden`` if given; else 4 * n_embd for GELU (GPT-2) and, for SwiGLU,
        Llama's rule: 2/3 of 4 * n_embd (SwiGLU has three matrices instead of two, so the same number of
        parameters), rounded up to a multiple of 8: 2048 for n_embd = 768, 88 for n_embd = 32."""
        if self.ffn_hidden is not None:
            return int(self.ffn_hidden)
        if self.mlp == "gelu":
            return 4 * self.n_embd
        return -(-(8 * self.n_embd // 3) // 8) * 8

    def to_dict(self) -> dict:
        """Every field as a plain Python value (JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> GPTConfig:
        """The config ``to_dict`` described. An unknown field is an error (a checkpoint from another program);
        a missing one takes its default (a checkpoint written before the field existed)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"GPTConfig.from_dict: unknown fields {unknown}; the fields are {sorted(known)}")
        return cls(**dict(values))


# ---------------------------------------------------------------------- given helpers
class ModuleDict(Module):
    """Sub-modules under the names given as keywords, as ``torch.nn.ModuleDict``: ``ModuleDict(wte=...,
    h=[...])`` names their parameters ``wte.weight``, ``h.0.ln_1.weight``, ..."""

    def __init__(self, **modules):
        super().__init__()
        for name, module in modules.items():
            setattr(self, name, module)


class Identity(Module):
    """The norm of ``norm='none'``: returns its input unchanged, and has no parameters."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class KVCache:
    """The keys and values that one attention layer has computed so far in a generation (exercise 4.8).

    ``keys`` and ``values`` are arrays (B, n_head, T_cached, head_dim), or None while the cache is empty.
    The keys are stored after RoPE, rotated at their own positions: a position's key never changes once it
    is computed, so it is computed once. ``len(cache)`` is T_cached, the number of positions it holds.
    The cache is for inference: no gradient flows into what it holds.
    """

    def __init__(self):
        self.keys: np.ndarray | None = None
        self.values: np.ndarray | None = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def clear(self) -> None:
        self.keys = self.values = None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the keys and values of the newest positions, k and v (B, n_head, T_new, head_dim), and
        return the keys and values of every position so far, (B, n_head, T_cached + T_new, head_dim)."""
        # BEGIN SOLUTION 4.8: concatenate the new k and v after the stored ones along the time axis (-2), keep the arrays, return them as Tensors
        self.keys = k.data if self.keys is None else np.concatenate([self.keys, k.data], axis=-2)
        self.values = v.data if self.values is None else np.concatenate([self.values, v.data], axis=-2)
        return Tensor(self.keys), Tensor(self.values)
        # END SOLUTION


# ---------------------------------------------------------------------- 4.3 the parts of a Block
def norm_layer(config: GPTConfig, dtype=np.float32) -> Module:
    """The norm the config asks for, over the n_embd features: ``LayerNorm`` (with a bias if config.bias) or
    ``RMSNorm``, both with eps = config.norm_eps. (``norm='none'``, an experiment, is given: ``Identity``.)"""
    if config.norm == "none":
        return Identity()
    # BEGIN SOLUTION 4.3: LayerNorm(n_embd, eps, bias=config.bias) or RMSNorm(n_embd, eps), from stage 3
    if config.norm == "layernorm":
        return LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias, dtype=dtype)
    return RMSNorm(config.n_embd, eps=config.norm_eps, dtype=dtype)
    # END SOLUTION


class CausalSelfAttention(Module):
    """Multi-head causal self-attention, nanoGPT's layout: one Linear ``c_attn`` (C -> 3C) makes the queries,
    keys and values of every head at once, and ``c_proj`` (C -> C) mixes the heads' outputs.

        x (B, T, C) -> c_attn -> q | k | v              (B, T, C) each, side by side in that order
          -> split into heads                          (B, n_head, T, head_dim): head h has features h*hd .. (h+1)*hd
          -> RoPE on q and k (pos='rope')
          -> softmax(q k^T / sqrt(head_dim) + causal mask) v     (B, n_head, T, head_dim)
          -> heads side by side again -> c_proj -> dropout       (B, T, C)

    Attributes: ``c_attn``, ``c_proj`` (biased if config.bias), ``resid_dropout``, ``rotary`` (a stage 3
    ``RotaryEmbedding`` of block_size positions for pos='rope', else None), ``n_head``, ``dropout`` (the
    probability for the attention weights) and ``rng`` (the generator of their dropout).
    """

    def __init__(self, config: GPTConfig, *, rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(rng)
        # BEGIN SOLUTION 4.3: c_attn (C -> 3C), c_proj (C -> C), resid_dropout, rotary (or None), n_head, dropout, rng
        C = config.n_embd
        self.c_attn = Linear(C, 3 * C, bias=config.bias, rng=rng, dtype=dtype)
        self.c_proj = Linear(C, C, bias=config.bias, rng=rng, dtype=dtype)
        self.resid_dropout = Dropout(config.dropout, rng=rng)
        self.rotary = (RotaryEmbedding(config.head_dim, config.block_size, theta=config.rope_theta)
                       if config.pos == "rope" else None)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.rng = rng
        # END SOLUTION

    def forward(self, x: Tensor, positions: np.ndarray, kv_cache: KVCache | None = None) -> Tensor:
        """x (B, T, C) -> (B, T, C).

        ``positions`` (T,) ints: where these T tokens sit in the sequence; RoPE rotates q and k by them.
        ``kv_cache`` None: the T tokens are the whole sequence, and position t attends to 0..t (training).
        ``kv_cache`` a ``KVCache`` (generation, exercise 4.8): x holds only the newest T tokens; their keys
        and values join the cached ones, and each new query attends to every cached position and to the new
        ones up to itself.
        """
        B, T, C = x.shape
        # BEGIN SOLUTION 4.3: q, k, v from c_attn(x), each (B, n_head, T, head_dim); RoPE on q and k at positions
        qkv = self.c_attn(x).reshape(B, T, 3, self.n_head, C // self.n_head)  # q | k | v, each split into heads
        q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # (B, n_head, T, hd)
        k = qkv[:, :, 1].transpose(0, 2, 1, 3)  # (B, n_head, T, hd)
        v = qkv[:, :, 2].transpose(0, 2, 1, 3)  # (B, n_head, T, hd)
        if self.rotary is not None:
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        # END SOLUTION
        if kv_cache is None:
            # BEGIN SOLUTION 4.3: y = causal attention of q, k, v (B, n_head, T, head_dim): stage 3's scaled_dot_product_attention or fused_attention, dropout only in training
            # fused_attention (3.10): scaled_dot_product_attention's result as one node, faster (lesson, section 3)
            y = F.fused_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                  is_causal=True, rng=self.rng)
            # END SOLUTION
        else:
            # BEGIN SOLUTION 4.8: k, v = kv_cache.update(k, v); y = attention in which new query i (at position S - T + i) sees keys 0 .. S - T + i
            k, v = kv_cache.update(k, v)  # (B, n_head, S, hd), S = cached + T
            S = k.shape[-2]
            # is_causal would align the mask top-left (query 0 sees key 0 only): here the queries are the
            # last T positions, so the mask is aligned bottom-right. For T = 1 it lets the query see everything.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=np.tri(T, S, S - T, dtype=bool))
            # END SOLUTION
        # BEGIN SOLUTION 4.3: y's heads side by side again (B, T, C), then c_proj and resid_dropout
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))
        # END SOLUTION


class MLP(Module):
    """GPT-2's MLP at every position: x (B, T, C) -> c_fc (C -> ffn_dim) -> GELU -> c_proj (ffn_dim -> C)
    -> dropout. Attributes ``c_fc``, ``gelu`` (stage 3's fused ``GELU`` with config.gelu_approximate),
    ``c_proj``, ``dropout``; the Linears are biased if config.bias."""

    def __init__(self, config: GPTConfig, *, rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(rng)
        # BEGIN SOLUTION 4.3: c_fc, gelu, c_proj, dropout
        self.c_fc = Linear(config.n_embd, config.ffn_dim, bias=config.bias, rng=rng, dtype=dtype)
        self.gelu = GELU(approximate=config.gelu_approximate)
        self.c_proj = Linear(config.ffn_dim, config.n_embd, bias=config.bias, rng=rng, dtype=dtype)
        self.dropout = Dropout(config.dropout, rng=rng)
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION 4.3: c_fc, gelu, c_proj, dropout
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))
        # END SOLUTION


class SwiGLUMLP(SwiGLU):
    """Llama's MLP: stage 3's ``SwiGLU`` (w2(silu(w1 x) * w3 x), no biases, hidden width ffn_dim), then
    ``dropout``, so that both kinds of MLP end the same way. Its parameters are w1, w2, w3."""

    def __init__(self, config: GPTConfig, *, rng: np.random.Generator | int | None = None, dtype=np.float32):
        rng = np.random.default_rng(rng)
        # BEGIN SOLUTION 4.3: SwiGLU.__init__ with (n_embd, ffn_dim), then a Dropout
        super().__init__(config.n_embd, config.ffn_dim, rng=rng, dtype=dtype)
        self.dropout = Dropout(config.dropout, rng=rng)
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION 4.3: SwiGLU's forward, then dropout
        return self.dropout(super().forward(x))
        # END SOLUTION


class Block(Module):
    """One pre-norm Transformer block: x (B, T, C) -> (B, T, C),

        x = x + attn(ln_1(x), positions, kv_cache)
        x = x + mlp(ln_2(x))

    Each branch reads a normalised copy of the residual stream and adds its result back: the stream itself
    is never normalised, so a gradient reaches the first layer undiminished through the additions.
    Attributes ``ln_1``, ``attn``, ``ln_2``, ``mlp`` (``MLP`` or ``SwiGLUMLP``).

    The lesson's experiments change the block (``forward_experiment``, given): ``norm_position='post'``
    normalises after the addition, ``residual=False`` drops the addition.
    """

    def __init__(self, config: GPTConfig, *, rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(rng)
        self.residual, self.norm_position = config.residual, config.norm_position  # for forward_experiment
        # BEGIN SOLUTION 4.3: ln_1, attn, ln_2, mlp, created in this order
        self.ln_1 = norm_layer(config, dtype)
        self.attn = CausalSelfAttention(config, rng=rng, dtype=dtype)
        self.ln_2 = norm_layer(config, dtype)
        self.mlp = (MLP if config.mlp == "gelu" else SwiGLUMLP)(config, rng=rng, dtype=dtype)
        # END SOLUTION

    def forward(self, x: Tensor, positions: np.ndarray, kv_cache: KVCache | None = None) -> Tensor:
        if not self.residual or self.norm_position != "pre":
            return self.forward_experiment(x, positions, kv_cache)
        # BEGIN SOLUTION 4.3: the two residual branches
        x = x + self.attn(self.ln_1(x), positions, kv_cache)
        return x + self.mlp(self.ln_2(x))
        # END SOLUTION

    def forward_experiment(self, x: Tensor, positions: np.ndarray, kv_cache: KVCache | None = None) -> Tensor:
        """The block of the lesson's experiments (given): each branch f (attention, then the MLP) with its norm,

            norm_position='pre',  residual:        x = x + f(norm(x))      (forward's own, GPT-2's)
            norm_position='post', residual:        x = norm(x + f(x))      (the original Transformer's)
            residual=False:                        x = f(norm(x))  or  x = norm(f(x))   (no stream to add to)
        """
        branches = ((self.ln_1, lambda h: self.attn(h, positions, kv_cache)), (self.ln_2, self.mlp))
        for norm, branch in branches:
            if self.norm_position == "pre":
                out = branch(norm(x))
                x = x + out if self.residual else out
            else:
                x = norm(x + branch(x) if self.residual else branch(x))
        return x


# ---------------------------------------------------------------------- 4.3 the GPT
class GPT(Module):
    """The whole model (see the diagram at the top of this file), with nanoGPT's names:

        transformer.wte        Embedding(vocab_size, C)        the token embeddings
        transformer.wpe        Embedding(block_size, C)        learned positions (pos='learned' only)
        transformer.drop       Dropout
        transformer.h          [Block] * n_layer               transformer.h.0.ln_1.weight, ...
        transformer.ln_f       the final norm
        lm_head                Linear(C, vocab_size, bias=False)

    With ``tie_weights``, ``lm_head.weight`` IS ``transformer.wte.weight`` (one Parameter under two names):
    the same matrix turns ids into vectors and vectors into scores of ids.

    Initialisation (GPT-2's): every Linear and Embedding weight N(0, 0.02), every bias 0, norms' weights 1,
    and the projections that end a residual branch (attn.c_proj and mlp.c_proj, or mlp.w2) N(0, 0.02 /
    sqrt(2 * n_layer)): the stream adds 2 * n_layer branches, and this keeps its variance from growing with
    depth. Draws come from ``np.random.default_rng(rng)``, so a seed fixes the model; ``dtype`` is the
    dtype of every parameter (float32, or float64 for exact comparisons).
    """

    def __init__(self, config: GPTConfig, *, rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        self.config = config
        rng = np.random.default_rng(rng)
        # BEGIN SOLUTION 4.3: transformer (ModuleDict: wte, [wpe: pos='learned'], drop, h, ln_f), lm_head, tying, initialize_weights(rng)
        parts = {"wte": Embedding(config.vocab_size, config.n_embd, rng=rng, dtype=dtype)}
        if config.pos == "learned":
            parts["wpe"] = Embedding(config.block_size, config.n_embd, rng=rng, dtype=dtype)
        parts["drop"] = Dropout(config.dropout, rng=rng)
        parts["h"] = [Block(config, rng=rng, dtype=dtype) for _ in range(config.n_layer)]
        parts["ln_f"] = norm_layer(config, dtype)
        self.transformer = ModuleDict(**parts)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False, rng=rng, dtype=dtype)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight  # one Parameter, two names
        self.initialize_weights(rng)
        # END SOLUTION

    def initialize_weights(self, rng: np.random.Generator) -> None:
        """Overwrite the weights in place with GPT-2's initialisation (see the class docstring)."""
        # BEGIN SOLUTION 4.3: each Linear/Embedding weight N(0, 0.02) (residual projections 0.02/sqrt(2 n_layer)), biases 0; a tied weight once
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        done: set[int] = set()
        for name, module in self.named_modules():
            # nn2.Linear: stage 2's Linear, of which stage 3's fused Linear (used here and in SwiGLU) is a kind
            if not isinstance(module, (nn2.Linear, Embedding)) or id(module.weight) in done:
                continue
            done.add(id(module.weight))  # a tied weight is drawn once
            std = residual_std if name.endswith(("attn.c_proj", "mlp.c_proj", "mlp.w2")) else 0.02
            module.weight.data[...] = rng.normal(0.0, std, size=module.weight.shape)  # in place: keeps dtype and ties
            if getattr(module, "bias", None) is not None:
                module.bias.data[...] = 0.0
        # END SOLUTION

    def num_parameters(self) -> int:
        """The number of numbers training changes: each distinct Parameter once (a tied one once)."""
        # BEGIN SOLUTION 4.3: parameters() already lists a tied Parameter once
        return sum(p.size for p in self.parameters())
        # END SOLUTION

    def forward(self, idx, targets=None, ignore_index: int = -1, *,
                kv_cache: list[KVCache] | None = None) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) int token ids -> (logits (B, T, vocab_size), loss).

        logits[b, t] scores every possible token to follow idx[b, :t + 1]. ``loss`` is None without
        ``targets``; with targets (B, T) ints it is the mean cross-entropy of the logits against them over
        the positions whose target is not ``ignore_index`` (padding), a 0-d Tensor (exercise 4.4).

        T + (the positions already in ``kv_cache``) may not exceed block_size: a ValueError says so.
        ``kv_cache`` (generation, exercise 4.8): a list of one ``KVCache`` per layer (``new_kv_cache()``);
        idx then holds only the tokens that follow the ``len(kv_cache[0])`` positions the cache has seen,
        they get the positions after those, and their keys and values are added to the cache.
        """
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        start = 0 if kv_cache is None else len(kv_cache[0])  # the position of idx[:, 0] in the sequence
        # BEGIN SOLUTION 4.3: check idx is (B, T), start + T <= block_size; wte [+ wpe(positions): pos='learned'], drop, blocks, ln_f, lm_head
        if idx.ndim != 2:
            raise ValueError(f"GPT: idx must be a (B, T) array of token ids, got shape {idx.shape}")
        B, T = idx.shape
        if start + T > self.config.block_size:
            raise ValueError(f"GPT: a sequence of {start + T} tokens is longer than block_size="
                             f"{self.config.block_size}, the most this model reads; crop it to the last "
                             f"{self.config.block_size} tokens")
        positions = np.arange(start, start + T)
        x = self.transformer.wte(idx)  # (B, T, C)
        if self.config.pos == "learned":
            x = x + self.transformer.wpe(positions)  # (T, C) broadcasts over the batch
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, positions, None if kv_cache is None else kv_cache[i])
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        # END SOLUTION
        loss = None
        if targets is not None:
            # BEGIN SOLUTION 4.4: targets (B, T) like idx; cross-entropy of logits (B*T, vocab) against targets (B*T,), ignore_index left out
            targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
            if targets.shape != idx.shape:
                raise ValueError(f"GPT: targets must have the shape of idx, {idx.shape}, got {targets.shape}")
            vocab = logits.shape[-1]
            loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=ignore_index)
            # END SOLUTION
        return logits, loss

    # ------------------------------------------------------------------ 4.3 GPT-2's weights
    @classmethod
    def from_gpt2_state_dict(cls, state_dict: Mapping[str, np.ndarray], n_head: int | None = None, *,
                             dtype=np.float32) -> GPT:
        """A GPT holding the weights of a Hugging Face GPT-2 checkpoint (``GPT2LMHeadModel.state_dict()`` with
        every tensor converted to a NumPy array; nothing is downloaded here).

        Its names are ours (``transformer.h.0.attn.c_attn.weight``, ...; the ``transformer.`` prefix may be
        missing, as in ``GPT2Model``), but its four projections are ``Conv1D`` layers, whose weight is stored
        (in_features, out_features), the transpose of a Linear's: attn.c_attn, attn.c_proj, mlp.c_fc and
        mlp.c_proj are transposed. The causal-mask buffers ``attn.bias`` / ``attn.masked_bias`` are not
        weights and are skipped, and so is ``lm_head.weight`` (tied to wte in GPT-2). The config comes from
        ``gpt2_config_from_state_dict``; the model uses GPT-2's tanh GELU.
        """
        # BEGIN SOLUTION 4.3: config from the shapes; rename/transpose/skip as described; a strict load_state_dict
        config = gpt2_config_from_state_dict(state_dict, n_head)
        ours = {}
        for name, array in state_dict.items():
            name = name.removeprefix("transformer.")
            if name == "lm_head.weight" or name.endswith((".attn.bias", ".attn.masked_bias")):
                continue  # tied to wte / the causal-mask buffers of the attention
            array = np.asarray(array)
            if name.endswith(_CONV1D_WEIGHTS):
                array = array.T  # Conv1D (in, out) -> Linear (out, in)
            ours["transformer." + name] = array
        ours["lm_head.weight"] = ours["transformer.wte.weight"]  # the second name of the tied Parameter
        model = cls(config, rng=0, dtype=dtype)
        model.load_state_dict(ours)  # strict: a missing or mis-shaped weight is an error naming it
        return model
        # END SOLUTION

    # ------------------------------------------------------------------ 4.7 sampling
    def new_kv_cache(self) -> list[KVCache]:
        """An empty key/value cache: one ``KVCache`` per layer."""
        return [KVCache() for _ in range(self.config.n_layer)]

    def next_token_logits(self, idx: np.ndarray, kv_cache: list[KVCache] | None = None) -> np.ndarray:
        """The logits (B, vocab_size) of the token that follows each row of idx (B, T), an ndarray.

        Without a cache: the model reads the last block_size tokens (at most) and the last position's logits
        are returned (exercise 4.7). With a cache (exercise 4.8): only the tokens the cache has not seen yet
        are read; once idx is longer than block_size the context window slides, which moves every position,
        so the cache is rebuilt from the last block_size tokens (see section 8 of the lesson).
        ``kv_cache`` must have been filled from the start of this same idx.
        """
        if kv_cache is None:
            # BEGIN SOLUTION 4.7: run the model on idx[:, -block_size:], keep the last position's logits (as an ndarray)
            logits, _ = self(idx[:, -self.config.block_size:])
            return logits.data[:, -1, :]
            # END SOLUTION
        # BEGIN SOLUTION 4.8: feed idx[:, len(cache):]; past block_size, clear every layer's cache and feed the last block_size tokens
        block_size = self.config.block_size
        if idx.shape[1] > block_size:
            # The window slid by one: every token moved to another position, and every key and value
            # computed for the old window is stale. Rebuild the cache on the new window.
            for layer_cache in kv_cache:
                layer_cache.clear()
            new_tokens = idx[:, -block_size:]
        else:
            new_tokens = idx[:, len(kv_cache[0]):]
        logits, _ = self(new_tokens, kv_cache=kv_cache)
        return logits.data[:, -1, :]
        # END SOLUTION

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, rng: np.random.Generator | int | None = None,
                 stop_token: int | None = None, use_cache: bool = True) -> np.ndarray:
        """Continue each row of idx (B, T) by up to ``max_new_tokens`` tokens; returns (B, T + n) int64,
        the prompt followed by the n new tokens.

        Each step takes the logits of the next token (``next_token_logits``), turns them into a
        distribution (``sampling_distribution``: temperature, top_k, top_p) and draws one token per row
        from ``rng`` (``draw_tokens``). ``temperature=0`` is greedy decoding: the argmax, no randomness.
        With ``stop_token``, a row that has produced it is finished: its later tokens are ``stop_token``
        again (padding), and generation ends as soon as every row is finished.
        ``use_cache``: keep every layer's keys and values, so that each step reads one new token (4.8).

        The model runs in evaluation mode (no dropout) and without recording a graph; its training mode is
        restored afterwards. Bad settings (temperature < 0, top_k < 1, top_p outside (0, 1],
        max_new_tokens < 0) are a ValueError.
        """
        # BEGIN SOLUTION 4.7: check the settings; in eval mode and no_grad: logits -> distribution -> draw, append, stop when every row is finished
        check_sampling_settings(temperature, top_k, top_p)
        if int(max_new_tokens) != max_new_tokens or max_new_tokens < 0:
            raise ValueError(f"generate: max_new_tokens must be a non-negative integer, not {max_new_tokens!r}")
        idx = np.array(idx.data if isinstance(idx, Tensor) else idx).astype(np.int64)
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise ValueError(f"generate: idx must be a (B, T) array of token ids with T >= 1, got shape {idx.shape}; "
                             "for one prompt pass idx[None]")
        rng = np.random.default_rng(rng)
        kv_cache = self.new_kv_cache() if use_cache else None
        finished = np.zeros(len(idx), dtype=bool)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                for _ in range(int(max_new_tokens)):
                    logits = self.next_token_logits(idx, kv_cache)  # (B, vocab)
                    if temperature == 0:
                        next_tokens = logits.argmax(axis=-1)
                    else:
                        next_tokens = draw_tokens(sampling_distribution(logits, temperature, top_k, top_p), rng)
                    if stop_token is not None:
                        next_tokens = np.where(finished, stop_token, next_tokens)
                        finished |= next_tokens == stop_token
                    idx = np.concatenate([idx, next_tokens[:, None].astype(np.int64)], axis=1)
                    if finished.all():
                        break
        finally:
            self.train(was_training)
        return idx
        # END SOLUTION


# ---------------------------------------------------------------------- 4.3 GPT-2's checkpoints
# The four published GPT-2 models: n_embd -> n_head (small, medium, large, XL).
GPT2_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}
# Hugging Face stores these as Conv1D, weight (in_features, out_features): the transpose of a Linear's.
_CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_config_from_state_dict(state_dict: Mapping[str, np.ndarray], n_head: int | None = None) -> GPTConfig:
    """The ``GPTConfig`` of a Hugging Face GPT-2 state dict, every size read from the shapes:

        vocab_size, n_embd   wte.weight            (vocab_size, n_embd)
        block_size           wpe.weight            (block_size, n_embd)
        n_layer              the number of distinct i in the names h.{i}.
        ffn_hidden           h.0.mlp.c_fc.weight   (n_embd, ffn_hidden)   (Conv1D layout)

    and GPT-2's design: LayerNorm with biases, learned positions, a tanh-GELU MLP, tied weights.
    The shapes do not tell the number of heads: ``n_head`` is needed, except for the four published sizes
    (``GPT2_HEADS``: n_embd 768, 1024, 1280, 1600 -> 12, 16, 20, 25 heads); otherwise a ValueError asks for it.
    """
    # BEGIN SOLUTION 4.3: read the sizes from the shapes (the "transformer." prefix may be missing); n_head from GPT2_HEADS or a ValueError
    shapes = {name.removeprefix("transformer."): np.shape(array) for name, array in state_dict.items()}
    for needed in ("wte.weight", "wpe.weight", "h.0.mlp.c_fc.weight"):
        if needed not in shapes:
            raise ValueError(f"gpt2_config_from_state_dict: no {needed!r} (or 'transformer.{needed}') in the state "
                             "dict: this is not a GPT-2 checkpoint")
    vocab_size, n_embd = shapes["wte.weight"]
    n_layer = len({int(m.group(1)) for name in shapes if (m := re.match(r"h\.(\d+)\.", name))})
    if n_head is None:
        if n_embd not in GPT2_HEADS:
            raise ValueError(f"gpt2_config_from_state_dict: n_embd={n_embd} is not one of the published GPT-2 sizes "
                             f"{sorted(GPT2_HEADS)}, and the shapes do not tell the number of heads: pass n_head=")
        n_head = GPT2_HEADS[n_embd]
    return GPTConfig(vocab_size=int(vocab_size), block_size=int(shapes["wpe.weight"][0]), n_layer=n_layer,
                     n_head=int(n_head), n_embd=int(n_embd), ffn_hidden=int(shapes["h.0.mlp.c_fc.weight"][1]),
                     bias=True, norm="layernorm", pos="learned", mlp="gelu", tie_weights=True,
                     gelu_approximate="tanh")
    # END SOLUTION


# ---------------------------------------------------------------------- 4.7 sampling
def check_sampling_settings(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """ValueError, saying what is allowed, unless temperature >= 0, top_k is None or an integer >= 1, and
    top_p is None or in (0, 1]."""
    # BEGIN SOLUTION 4.7: one clear ValueError per bad setting
    if not temperature >= 0:  # also catches NaN
        raise ValueError(f"temperature must be >= 0 (0 means greedy), not {temperature}")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1 (the number of tokens kept), not {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be None or in (0, 1] (the probability mass kept), not {top_p}")
    # END SOLUTION


def sampling_distribution(logits, temperature: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None) -> np.ndarray:
    """The distribution ``generate`` draws the next token from: logits (..., vocab) -> probabilities
    (..., vocab) float64, each row summing to 1. In this order:

      1. temperature: p = softmax(logits / temperature). Below 1 it sharpens the distribution, above 1 it
         flattens it; temperature = 0 puts all the mass on the argmax (the first one on ties): greedy.
      2. top_k: only the tokens whose logit is at least the k-th largest keep their probability (all of
         them if several tie there; top_k >= vocab keeps everything); renormalise.
      3. top_p (nucleus): sort the tokens by probability, most likely first (ties: lower id first), and
         keep each token while the probability of the tokens before it is below top_p: the smallest set of
         most likely tokens whose total reaches top_p. The most likely token is always kept; top_p = 1
         keeps everything. Renormalise.

    Bad settings are a ValueError (``check_sampling_settings``).
    """
    # BEGIN SOLUTION 4.7: check; temperature (0 -> one-hot argmax); top_k threshold at the k-th largest logit; softmax; top_p on the sorted cumulative mass; renormalise
    check_sampling_settings(temperature, top_k, top_p)
    logits = np.asarray(logits, dtype=np.float64)
    vocab = logits.shape[-1]
    if temperature == 0:
        probs = np.zeros_like(logits)
        np.put_along_axis(probs, logits.argmax(axis=-1)[..., None], 1.0, axis=-1)
        return probs
    scaled = logits / temperature
    if top_k is not None and top_k < vocab:
        kth_largest = np.partition(scaled, vocab - int(top_k), axis=-1)[..., vocab - int(top_k), None]
        scaled = np.where(scaled >= kth_largest, scaled, -np.inf)
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, axis=-1, kind="stable")  # most likely first, lower id first on ties
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
        keep = np.empty(probs.shape, dtype=bool)
        np.put_along_axis(keep, order, mass_before < top_p, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs
    # END SOLUTION


def draw_tokens(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row of probs (B, vocab), token i with probability probs[b, i], as int64 (B,).

    The inverse of the cumulative distribution: one uniform number u per row (``rng.random``), scaled to
    the row's total, and the first token whose cumulative probability exceeds u. One draw for the whole
    batch, no loop over rows; a token of probability 0 is never drawn.
    """
    # BEGIN SOLUTION 4.7: cdf = cumsum; u = rng.random((B, 1)) * total; the number of cdf entries <= u is the token
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(cdf.shape[:-1] + (1,)) * cdf[..., -1:]
    tokens = (cdf <= u).sum(axis=-1)
    # Rounding can make u equal the total; then fall back to the last token that can be drawn.
    last_possible = probs.shape[-1] - 1 - np.argmax(probs[..., ::-1] > 0, axis=-1)
    return np.minimum(tokens, last_possible).astype(np.int64)
    # END SOLUTION
