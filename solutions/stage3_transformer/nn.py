"""The layers of a Transformer, with PyTorch's names, parameter layouts and semantics.

Everything builds on stage 2's ``Module``, ``Parameter``, ``Linear`` and ``Dropout`` and on this stage's
``functional`` (imported as ``F``). Parameter names are PyTorch's, so a state dict of
``torch.nn.MultiheadAttention``, ``TransformerEncoderLayer`` or ``Transformer`` loads into the layer of the
same name here, and back.

Shapes: ``B`` batch, ``T`` (``L``) target/query positions, ``S`` source/key positions, ``E`` = ``d_model``
features, ``h`` heads of ``E/h`` features each. Layers take ``batch_first=True`` inputs (B, T, E) unless
they are told otherwise (then (T, B, E), PyTorch's old default).

Every layer that creates parameters takes ``rng`` (a ``np.random.Generator``, an int seed or None) and
``dtype`` (float32 unless given), keyword-only, as stage 2's ``Linear``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np

from stage1_autograd.tensor import Tensor, concatenate
from stage2_mlp import functional as F2
from stage2_mlp import nn as nn2
from stage2_mlp.nn import Dropout, Module, Parameter
from stage3_transformer import functional as F
from stage3_transformer.speedups import add_at_rows


# ---------------------------------------------------------------------- given helpers
class Linear(nn2.Linear):
    """Stage 2's ``Linear`` (the same parameters, names and initialisation), computed by the fused
    ``F.linear``: one graph node and one output array where ``x @ W^T + b`` makes two. The layers of this
    stage use it for their projections."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class GELU(nn2.GELU):
    """Stage 2's ``GELU`` (the same ``approximate`` argument), computed by the fused ``F.gelu``: one graph
    node instead of a chain of them, for the wide hidden layer of every feed-forward block."""

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)


def xavier_uniform(shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32, gain: float = 1.0) -> np.ndarray:
    """Glorot & Bengio's initialisation, as ``torch.nn.init.xavier_uniform_``: uniform in +-a with
    a = gain * sqrt(6 / (fan_in + fan_out)), fan_in = shape[1] * r and fan_out = shape[0] * r, where r is the
    product of the remaining axes. It keeps the variance of both the forward signal and the backward
    gradient about constant from layer to layer (the compromise between 1/fan_in and 1/fan_out)."""
    receptive = math.prod(shape[2:])
    bound = gain * math.sqrt(6.0 / (shape[1] * receptive + shape[0] * receptive))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _as_ids(ids) -> np.ndarray:
    """Token ids from an int array-like or a Tensor (whose data may be stored as floats) as intp."""
    return np.asarray(ids.data if isinstance(ids, Tensor) else ids).astype(np.intp)


def _torch_mask(mask, dtype) -> np.ndarray:
    """A mask in PyTorch's ``nn.MultiheadAttention`` convention as a float array to add to the scores:
    bool True means "may NOT attend" (-inf), the opposite of ``F.scaled_dot_product_attention``'s
    convention; a float mask is taken as it is."""
    mask = np.asarray(mask.data if isinstance(mask, Tensor) else mask)
    if mask.dtype == bool:
        return F.additive_mask(~mask, dtype)
    return F.additive_mask(mask, dtype)


def _clones(module: Module, n: int) -> list[Module]:
    """``n`` independent deep copies of ``module`` (as PyTorch's ``_get_clones``).

    A deep copy also copies the random generators of the dropout layers in their current state, so every
    copy would drop the same units. Each copy's generators are therefore replaced by children spawned from
    the template's (``Generator.spawn``): reproducible from one seed, and independent of each other."""
    copies = [copy.deepcopy(module) for _ in range(n)]
    for name, template in module.named_modules():
        if isinstance(getattr(template, "rng", None), np.random.Generator):
            for clone, child in zip(copies, template.rng.spawn(n)):
                dict(clone.named_modules())[name].rng = child
    return copies


_ACTIVATIONS = {"relu": F2.relu, "gelu": F.gelu}  # the fused GELU of this stage


def _activation(activation: str | Callable) -> Callable:
    if callable(activation):
        return activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation should be 'relu' or 'gelu' (or a function), not {activation!r}")
    return _ACTIVATIONS[activation]


# ---------------------------------------------------------------------- 3.2 normalisation layers
class LayerNorm(Module):
    """``F.layer_norm`` over the last axes ``normalized_shape``, with a learned scale ``weight`` (ones) and
    shift ``bias`` (zeros), both of shape normalized_shape. ``elementwise_affine=False``: neither;
    ``bias=False``: no bias (both are then None and no parameters). x (..., *normalized_shape) -> same."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True, *,
                 rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        self.normalized_shape = F.as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        # BEGIN SOLUTION 3.2: weight = ones, bias = zeros (Parameters of normalized_shape), or None when switched off
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=dtype)) if elementwise_affine and bias else None
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION 3.2: F.layer_norm with this layer's parameters
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        # END SOLUTION

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class RMSNorm(Module):
    """``F.rms_norm`` over the last axes ``normalized_shape`` with a learned scale ``weight`` (ones), or
    none with ``elementwise_affine=False``. ``eps=None``: np.finfo(x.dtype).eps. x (..., *shape) -> same."""

    def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True, *,
                 rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        self.normalized_shape = F.as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        # BEGIN SOLUTION 3.2: weight = ones of normalized_shape, or None
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=dtype)) if elementwise_affine else None
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION 3.2: F.rms_norm with this layer's weight
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)
        # END SOLUTION

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


# ---------------------------------------------------------------------- 3.3 embeddings and positions
class Embedding(Module):
    """A table of ``num_embeddings`` learned vectors of ``embedding_dim`` features: ids -> rows.

    ``weight`` (num_embeddings, embedding_dim) starts N(0, 1), as PyTorch's, drawn as
    ``rng.standard_normal((num_embeddings, embedding_dim))`` cast to ``dtype``. With ``padding_idx`` that row
    starts at zero and its gradient is always zero (a padding token learns nothing); a negative padding_idx
    counts from the end.

    forward(ids): ids an int array-like or Tensor of any shape -> (*ids.shape, embedding_dim). The gradient of
    the table adds g into the rows that were looked up, twice for an id used twice. An id outside
    [0, num_embeddings) is an IndexError naming it.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} must lie in [-{num_embeddings}, {num_embeddings})")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        rng = np.random.default_rng(rng)
        # BEGIN SOLUTION 3.3: weight ~ N(0, 1) of shape (num_embeddings, embedding_dim), its padding row zeroed
        weight = rng.standard_normal((num_embeddings, embedding_dim)).astype(dtype)
        if padding_idx is not None:
            weight[padding_idx] = 0
        self.weight = Parameter(weight)
        # END SOLUTION

    def forward(self, ids) -> Tensor:
        ids = _as_ids(ids)
        # BEGIN SOLUTION 3.3: check the ids, look the rows up (weight[ids]); backward scatter-adds g into a zero table with np.add.at
        outside = (ids < 0) | (ids >= self.num_embeddings)
        if outside.any():
            raise IndexError(f"Embedding: id {ids[outside].flat[0]} is outside [0, {self.num_embeddings}), "
                             f"the range of this table of {self.num_embeddings} embeddings")
        weight = self.weight

        def backward(g):
            grad = np.zeros_like(weight.data)
            # np.add.at(grad, ids, g): adds where an id repeats; add_at_rows gives the same, faster (speedups.py)
            add_at_rows(grad, ids.reshape(-1), g.reshape(-1, self.embedding_dim))
            if self.padding_idx is not None:
                grad[self.padding_idx] = 0
            return (grad,)

        return Tensor._from_op(weight.data[ids], (weight,), backward)
        # END SOLUTION

    def extra_repr(self) -> str:
        padding = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"


class RotaryEmbedding(Module):
    """Rotary position embedding with precomputed tables: ``cos`` and ``sin`` (max_seq_len, head_dim/2) of the
    angles p * theta^(-2i/head_dim) (``F.rope_angles``). No parameters.

    forward(x, positions=None): x (..., seq, head_dim) -> the same, each pair of features rotated as
    ``F.apply_rope`` does; positions an int array-like (seq,), default 0 .. seq-1. A position outside
    [0, max_seq_len) is a ValueError.
    """

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        # BEGIN SOLUTION 3.3: the tables of F.rope_angles for positions 0 .. max_seq_len-1
        self.cos, self.sin = F.rope_angles(np.arange(max_seq_len), head_dim, theta)
        # END SOLUTION

    def forward(self, x: Tensor, positions=None) -> Tensor:
        positions = np.arange(x.shape[-2]) if positions is None else _as_ids(positions)
        # BEGIN SOLUTION 3.3: check the positions, then F.rotate_pairs with the rows of the tables
        if positions.size and (positions.min() < 0 or positions.max() >= self.max_seq_len):
            raise ValueError(f"RotaryEmbedding: positions must lie in [0, max_seq_len={self.max_seq_len}), "
                             f"got {positions.min()} .. {positions.max()}")
        return F.rotate_pairs(x, self.cos[positions], self.sin[positions])
        # END SOLUTION

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, max_seq_len={self.max_seq_len}, theta={self.theta}"


# ---------------------------------------------------------------------- 3.5 multi-head attention
class MultiheadAttention(Module):
    """PyTorch's ``nn.MultiheadAttention`` (same parameters, masks and outputs).

    Parameters: ``in_proj_weight`` (3E, E), the query, key and value projections stacked (Xavier-uniform);
    ``in_proj_bias`` (3E,) zeros; ``out_proj`` a Linear(E, E) whose bias starts at zero. ``bias=False``: no
    biases. The E features are split into ``num_heads`` heads of E/h: each head attends on its own, in its
    own subspace, and ``out_proj`` mixes the heads' results.

    forward(query (B, L, E), key (B, S, E), value (B, S, E)) -> (output (B, L, E), weights):
      * ``attn_mask`` (L, S) or (B*h, L, S), ``key_padding_mask`` (B, S): bool True means the query may NOT
        attend to that key (PyTorch's convention, the opposite of scaled_dot_product_attention's); float
        masks are added to the scores. ``is_causal=True`` without attn_mask applies the causal mask;
        with attn_mask it is only a hint, and attn_mask is used.
      * ``weights`` the attention probabilities, (B, L, S) averaged over the heads, or (B, h, L, S) with
        ``average_attn_weights=False``; None with ``need_weights=False``.
      * ``batch_first=False``: inputs and output are (L, B, E); unbatched inputs (L, E) work too.
      * dropout on the attention weights, in training mode only.
    A query whose every key is masked gets output 0 (where PyTorch's MultiheadAttention gives NaN).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = True, *, rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        rng = np.random.default_rng(rng)
        self.rng = rng  # draws the attention dropout masks
        # BEGIN SOLUTION 3.5: in_proj_weight Xavier-uniform (3E, E), in_proj_bias zeros (3E,), out_proj Linear(E, E) with its bias zeroed
        self.in_proj_weight = Parameter(xavier_uniform((3 * embed_dim, embed_dim), rng, dtype))
        self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype=dtype)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, rng=rng, dtype=dtype)
        if bias:
            self.out_proj.bias.data[...] = 0
        # END SOLUTION

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask=None, need_weights: bool = True,
                attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        batched = query.ndim == 3
        # BEGIN SOLUTION 3.5: project, (B, T, E) -> (B, h, T, E/h), combine the masks into one float mask, F.attention, merge heads, out_proj
        E, h, hd = self.embed_dim, self.num_heads, self.head_dim
        if not batched:  # (L, E): a batch of one
            query, key, value = (t.reshape(1, *t.shape) for t in (query, key, value))
        elif not self.batch_first:  # (L, B, E) -> (B, L, E)
            query, key, value = (t.transpose(1, 0, 2) for t in (query, key, value))
        B, L, S = query.shape[0], query.shape[1], key.shape[1]

        def project(x: Tensor, block: int, length: int) -> Tensor:
            """x (B, length, E) @ W_block^T + b_block -> (B, h, length, hd)."""
            rows = slice(block * E, (block + 1) * E)
            bias = self.in_proj_bias[rows] if self.in_proj_bias is not None else None
            y = F.linear(x, self.in_proj_weight[rows], bias)  # (B, length, E)
            return y.reshape(B, length, h, hd).transpose(0, 2, 1, 3)

        q = project(query, 0, L)
        k = project(key, 1, S)
        v = project(value, 2, S)

        mask = None
        if attn_mask is not None:
            mask = _torch_mask(attn_mask, q.dtype)
            if mask.ndim == 3:  # (B*h, L, S) -> (B, h, L, S)
                mask = mask.reshape(B, h, L, S)
        elif is_causal:
            mask = F.additive_mask(F.causal_mask(L, S), q.dtype)
        if key_padding_mask is not None:
            padding = _torch_mask(key_padding_mask, q.dtype).reshape(B, 1, 1, S)
            mask = padding if mask is None else mask + padding
        dropout_p = self.dropout if self.training else 0.0
        out, weights = F.attention(q, k, v, mask, dropout_p, rng=self.rng)  # (B, h, L, hd), (B, h, L, S)

        out = self.out_proj(out.transpose(0, 2, 1, 3).reshape(B, L, E))  # heads side by side again
        if not batched:
            out = out.reshape(L, E)
        elif not self.batch_first:
            out = out.transpose(1, 0, 2)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(axis=1)  # (B, L, S)
        return out, (weights.reshape(*weights.shape[1:]) if not batched else weights)
        # END SOLUTION

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"


# ---------------------------------------------------------------------- 3.6 feed-forward and the layers
class SwiGLU(Module):
    """The gated feed-forward block of LLaMA and Mixtral: w2(silu(w1 x) * w3 x).

    ``w1``, ``w3`` Linear(d_model, d_ff) and ``w2`` Linear(d_ff, d_model), all without bias, drawn from
    ``rng`` in the order w1, w2, w3. x (..., d_model) -> (..., d_model). The gate silu(w1 x) decides, per
    feature, how much of the value w3 x passes.
    """

    def __init__(self, d_model: int, d_ff: int, *, rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(rng)
        # BEGIN SOLUTION 3.6: three bias-free Linears, created in the order w1, w2, w3 from the same rng
        self.w1 = Linear(d_model, d_ff, bias=False, rng=rng, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, bias=False, rng=rng, dtype=dtype)
        self.w3 = Linear(d_model, d_ff, bias=False, rng=rng, dtype=dtype)
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION 3.6: w2(silu(w1 x) * w3 x)
        return self.w2(F2.silu(self.w1(x)) * self.w3(x))
        # END SOLUTION


class TransformerEncoderLayer(Module):
    """PyTorch's ``nn.TransformerEncoderLayer``: self-attention, then a feed-forward block, each with dropout,
    a residual connection and a LayerNorm.

        norm_first=False (post-norm, the original):  x = norm1(x + sa(x));   x = norm2(x + ff(x))
        norm_first=True  (pre-norm, GPT-2's):         x = x + sa(norm1(x));   x = x + ff(norm2(x))
        sa(x) = dropout1(self_attn(x, x, x));         ff(x) = dropout2(linear2(dropout(activation(linear1(x)))))

    forward(src (B, T, E), src_mask, src_key_padding_mask, is_causal) -> (B, T, E); the masks are
    ``MultiheadAttention``'s (True = may not attend). ``activation``: 'relu', 'gelu' or a function.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Callable = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = True,
                 norm_first: bool = False, bias: bool = True, *, rng: np.random.Generator | int | None = None,
                 dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(rng)
        self.norm_first, self.batch_first = norm_first, batch_first
        self.activation = _activation(activation)
        # BEGIN SOLUTION 3.6: PyTorch's sub-modules, in its order: self_attn, linear1, dropout, linear2, norm1, norm2, dropout1, dropout2
        self.self_attn = MultiheadAttention(d_model, nhead, dropout, bias=bias, batch_first=batch_first, rng=rng,
                                            dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, rng=rng, dtype=dtype)
        self.dropout = Dropout(dropout, rng=rng)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, rng=rng, dtype=dtype)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout, rng=rng)
        self.dropout2 = Dropout(dropout, rng=rng)
        # END SOLUTION

    def forward(self, src: Tensor, src_mask=None, src_key_padding_mask=None, is_causal: bool = False) -> Tensor:
        # BEGIN SOLUTION 3.6: the two residual blocks, norm before (norm_first) or after the residual addition
        x = src
        if self.norm_first:
            x = x + self._self_attention_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._feed_forward_block(self.norm2(x))
        else:
            x = self.norm1(x + self._self_attention_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._feed_forward_block(x))
        return x
        # END SOLUTION

    def _self_attention_block(self, x: Tensor, attn_mask, key_padding_mask, is_causal: bool) -> Tensor:
        # BEGIN SOLUTION 3.6: dropout1 of self_attn(x, x, x) without weights
        out, _ = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False,
                                attn_mask=attn_mask, is_causal=is_causal)
        return self.dropout1(out)
        # END SOLUTION

    def _feed_forward_block(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION 3.6: linear1, activation, dropout, linear2, dropout2
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))
        # END SOLUTION


class TransformerDecoderLayer(Module):
    """PyTorch's ``nn.TransformerDecoderLayer``: masked self-attention on the target, cross-attention from
    the target to the encoder's output ``memory``, then a feed-forward block; each with dropout, a residual
    connection and a LayerNorm, before (norm_first) or after the residual addition:

        post-norm: x = norm1(x + sa(x));   x = norm2(x + ca(x, memory));   x = norm3(x + ff(x))
        pre-norm:  x = x + sa(norm1(x));   x = x + ca(norm2(x), memory);   x = x + ff(norm3(x))

    forward(tgt (B, T, E), memory (B, S, E), ...) -> (B, T, E). ``tgt_mask`` (T, T) is usually causal;
    ``memory_mask`` (T, S); the padding masks (B, T) and (B, S). True = may not attend.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Callable = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = True,
                 norm_first: bool = False, bias: bool = True, *, rng: np.random.Generator | int | None = None,
                 dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(rng)
        self.norm_first, self.batch_first = norm_first, batch_first
        self.activation = _activation(activation)
        # BEGIN SOLUTION 3.6: self_attn, multihead_attn, linear1, dropout, linear2, norm1..norm3, dropout1..dropout3
        self.self_attn = MultiheadAttention(d_model, nhead, dropout, bias=bias, batch_first=batch_first, rng=rng,
                                            dtype=dtype)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout, bias=bias, batch_first=batch_first,
                                                 rng=rng, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, rng=rng, dtype=dtype)
        self.dropout = Dropout(dropout, rng=rng)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, rng=rng, dtype=dtype)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout, rng=rng)
        self.dropout2 = Dropout(dropout, rng=rng)
        self.dropout3 = Dropout(dropout, rng=rng)
        # END SOLUTION

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool = False, memory_is_causal: bool = False) -> Tensor:
        # BEGIN SOLUTION 3.6: three residual blocks: self-attention, cross-attention on memory, feed-forward
        x = tgt
        if self.norm_first:
            x = x + self._self_attention_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._cross_attention_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask,
                                                memory_is_causal)
            x = x + self._feed_forward_block(self.norm3(x))
        else:
            x = self.norm1(x + self._self_attention_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._cross_attention_block(x, memory, memory_mask, memory_key_padding_mask,
                                                           memory_is_causal))
            x = self.norm3(x + self._feed_forward_block(x))
        return x
        # END SOLUTION

    def _self_attention_block(self, x: Tensor, attn_mask, key_padding_mask, is_causal: bool) -> Tensor:
        # BEGIN SOLUTION 3.6: dropout1 of self_attn(x, x, x)
        out, _ = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False,
                                attn_mask=attn_mask, is_causal=is_causal)
        return self.dropout1(out)
        # END SOLUTION

    def _cross_attention_block(self, x: Tensor, memory: Tensor, attn_mask, key_padding_mask,
                               is_causal: bool) -> Tensor:
        # BEGIN SOLUTION 3.6: dropout2 of multihead_attn(x, memory, memory)
        out, _ = self.multihead_attn(x, memory, memory, key_padding_mask=key_padding_mask, need_weights=False,
                                     attn_mask=attn_mask, is_causal=is_causal)
        return self.dropout2(out)
        # END SOLUTION

    def _feed_forward_block(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION 3.6: linear1, activation, dropout, linear2, dropout3
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))
        # END SOLUTION


# ---------------------------------------------------------------------- 3.7 stacks and the Transformer
class TransformerEncoder(Module):
    """``num_layers`` independent copies of ``encoder_layer`` (``layers.0``, ``layers.1``, ...) applied in
    turn, then ``norm`` (a LayerNorm, or None for none), as PyTorch's ``nn.TransformerEncoder``.

    forward(src (B, S, E), mask, src_key_padding_mask, is_causal) -> (B, S, E); every layer gets the same
    masks. ``is_causal`` None means False (it is only a hint when ``mask`` is given).
    """

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Module | None = None):
        super().__init__()
        self.num_layers = num_layers
        # BEGIN SOLUTION 3.7: layers = _clones(encoder_layer, num_layers); norm as given
        self.layers = _clones(encoder_layer, num_layers)
        self.norm = norm
        # END SOLUTION

    def forward(self, src: Tensor, mask=None, src_key_padding_mask=None, is_causal: bool | None = None) -> Tensor:
        # BEGIN SOLUTION 3.7: each layer in turn with the same masks, then norm if there is one
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return self.norm(x) if self.norm is not None else x
        # END SOLUTION


class TransformerDecoder(Module):
    """``num_layers`` independent copies of ``decoder_layer`` (``layers.0``, ...), then ``norm``, as
    PyTorch's ``nn.TransformerDecoder``. forward(tgt (B, T, E), memory (B, S, E), ...) -> (B, T, E)."""

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: Module | None = None):
        super().__init__()
        self.num_layers = num_layers
        # BEGIN SOLUTION 3.7: layers = _clones(decoder_layer, num_layers); norm as given
        self.layers = _clones(decoder_layer, num_layers)
        self.norm = norm
        # END SOLUTION

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool | None = None,
                memory_is_causal: bool = False) -> Tensor:
        # BEGIN SOLUTION 3.7: each layer in turn on (x, memory) with the same masks, then norm if there is one
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal)
        return self.norm(x) if self.norm is not None else x
        # END SOLUTION


class Transformer(Module):
    """PyTorch's ``nn.Transformer``: an encoder stack and a decoder stack, each ending with its own LayerNorm.

        memory = encoder(src)                 src (B, S, E) -> (B, S, E)
        output = decoder(tgt, memory)         tgt (B, T, E) -> (B, T, E)

    The inputs are already embedded (E = d_model features); the embedding and the output projection belong
    to the model around it. After the layers are built, every parameter with more than one axis is drawn
    again Xavier-uniform (PyTorch's ``_reset_parameters``), from ``rng`` in the order of ``parameters()``.
    """

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, activation: str | Callable = "relu",
                 layer_norm_eps: float = 1e-5, batch_first: bool = True, norm_first: bool = False, bias: bool = True,
                 *, rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        rng = np.random.default_rng(rng)
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first
        layer_args = dict(dim_feedforward=dim_feedforward, dropout=dropout, activation=activation,
                          layer_norm_eps=layer_norm_eps, batch_first=batch_first, norm_first=norm_first, bias=bias,
                          rng=rng, dtype=dtype)
        # BEGIN SOLUTION 3.7: encoder and decoder stacks with final LayerNorms, then Xavier-uniform for every parameter with ndim > 1
        self.encoder = TransformerEncoder(TransformerEncoderLayer(d_model, nhead, **layer_args), num_encoder_layers,
                                          LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype))
        self.decoder = TransformerDecoder(TransformerDecoderLayer(d_model, nhead, **layer_args), num_decoder_layers,
                                          LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype))
        for p in self.parameters():
            if p.ndim > 1:
                p.data[...] = xavier_uniform(p.shape, rng, p.dtype)
        # END SOLUTION

    def forward(self, src: Tensor, tgt: Tensor, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
                src_is_causal: bool | None = None, tgt_is_causal: bool | None = None,
                memory_is_causal: bool = False) -> Tensor:
        batch_axis = 0 if self.batch_first else 1
        if src.ndim == 3 and src.shape[batch_axis] != tgt.shape[batch_axis]:
            raise ValueError(f"Transformer: src and tgt must have the same batch size, got shapes {src.shape} "
                             f"and {tgt.shape} (batch_first={self.batch_first})")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(f"Transformer: src and tgt must have d_model={self.d_model} features, got shapes "
                             f"{src.shape} and {tgt.shape}")
        # BEGIN SOLUTION 3.7: memory = encoder(src, ...); return decoder(tgt, memory, ...)
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        # END SOLUTION

    @staticmethod
    def generate_square_subsequent_mask(size: int, dtype=np.float32) -> np.ndarray:
        """The causal mask as a float (size, size) array for the ``*_mask`` arguments: 0 on and below the
        diagonal (may attend), -inf above it (a later position)."""
        # BEGIN SOLUTION 3.7: -inf strictly above the diagonal, 0 elsewhere
        return np.triu(np.full((size, size), -np.inf, dtype=dtype), k=1)
        # END SOLUTION


# ---------------------------------------------------------------------- 3.9 mixture of experts
class MoE(Module):
    """A sparse mixture-of-experts feed-forward layer (Switch Transformer, Mixtral).

    ``router`` = Linear(d_model, num_experts, bias=False) scores the experts for every token; ``experts`` are
    ``num_experts`` SwiGLU(d_model, d_ff) (parameters ``experts.0.w1.weight``, ...). For each token x:

        p = softmax(router(x))                           (num_experts,)
        chosen = the top_k experts by p (ties -> the lower index)
        w_e = p_e / sum_{c in chosen} p_c                the chosen probabilities renormalised to sum 1
        y = sum_{e in chosen} w_e * expert_e(x)

    Each token runs only top_k of the experts: num_experts times the parameters for top_k/num_experts of the
    cost. top_k == num_experts is the dense mixture.

    After forward, ``self.aux_loss`` is Switch Transformer's load-balancing loss, a differentiable 0-d Tensor
    to add (times a small coefficient) to the training loss:

        aux_loss = num_experts * sum_i f_i * P_i
        f_i = (number of (token, slot) assignments to expert i) / (tokens * top_k)     a constant
        P_i = mean over the tokens of p_i                                            differentiable

    It is 1 when the routing is uniform and grows as it concentrates on few experts.
    x (..., d_model) -> (..., d_model).
    """

    def __init__(self, d_model: int, d_ff: int, num_experts: int, top_k: int, *,
                 rng: np.random.Generator | int | None = None, dtype=np.float32):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"MoE: top_k must lie in [1, num_experts={num_experts}], got {top_k}")
        rng = np.random.default_rng(rng)
        self.d_model, self.num_experts, self.top_k = d_model, num_experts, top_k
        self.aux_loss: Tensor | None = None
        # BEGIN SOLUTION 3.9: router = Linear without bias, then the experts, all from the same rng
        self.router = Linear(d_model, num_experts, bias=False, rng=rng, dtype=dtype)
        self.experts = [SwiGLU(d_model, d_ff, rng=rng, dtype=dtype) for _ in range(num_experts)]
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION 3.9: route, pick top_k per token, run each expert on its tokens, mix back; set self.aux_loss
        tokens = x.reshape(-1, self.d_model)  # (N, d)
        N, k = tokens.shape[0], self.top_k
        probs = F.softmax(self.router(tokens), axis=-1)  # (N, n_experts)
        chosen = np.argsort(-probs.data, axis=-1, kind="stable")[:, :k]  # (N, k); stable: ties -> lower index
        gate = probs[np.arange(N)[:, None], chosen]  # (N, k), differentiable
        gate = gate / gate.sum(axis=-1, keepdims=True)

        # Sort the N*k (token, slot) assignments by expert: expert e's are then one contiguous block.
        order = np.argsort(chosen.reshape(-1), kind="stable")  # (N*k,) indices into the flattened (N, k)
        counts = np.bincount(chosen.reshape(-1), minlength=self.num_experts)
        starts = np.concatenate(([0], np.cumsum(counts)))
        # Every expert runs, on zero tokens if none chose it, so that each parameter gets a gradient (zeros).
        outputs = concatenate([expert(tokens[order[starts[e]:starts[e + 1]] // k])
                               for e, expert in enumerate(self.experts)])  # (N*k, d) in expert order
        weighted = outputs * gate.reshape(-1)[order].reshape(-1, 1)  # (N*k, d) in expert order
        y = F.index_add(N, order // k, weighted)  # (N, d): each token's k weighted outputs added in its row

        fraction = (counts / (N * k)).astype(probs.dtype)  # f_i, a constant
        self.aux_loss = (probs.mean(axis=0) * fraction).sum() * self.num_experts
        return y.reshape(x.shape)
        # END SOLUTION

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_experts={self.num_experts}, top_k={self.top_k}"
