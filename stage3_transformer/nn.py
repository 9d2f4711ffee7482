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
        # TODO 3.2: weight = ones, bias = zeros (Parameters of normalized_shape), or None when switched off
        raise NotImplementedError("Exercise 3.2 (LayerNorm and RMSNorm) is not done yet")

    def forward(self, x: Tensor) -> Tensor:
        # TODO 3.2: F.layer_norm with this layer's parameters
        raise NotImplementedError("Exercise 3.2 (LayerNorm and RMSNorm) is not done yet")

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
        # TODO 3.2: weight = ones of normalized_shape, or None
        raise NotImplementedError("Exercise 3.2 (LayerNorm and RMSNorm) is not done yet")

    def forward(self, x: Tensor) -> Tensor:
        # TODO 3.2: F.rms_norm with this layer's weight
        raise NotImplementedError("Exercise 3.2 (LayerNorm and RMSNorm) is not done yet")

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
        # TODO 3.3: weight ~ N(0, 1) of shape (num_embeddings, embedding_dim), its padding row zeroed
        raise NotImplementedError("Exercise 3.3 (Embeddings, sinusoidal and rotary positions) is not done yet")

    def forward(self, ids) -> Tensor:
        ids = _as_ids(ids)
        # TODO 3.3: check the ids, look the rows up (weight[ids]); backward scatter-adds g into a zero table with np.add.at
        raise NotImplementedError("Exercise 3.3 (Embeddings, sinusoidal and rotary positions) is not done yet")

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
        # TODO 3.3: the tables of F.rope_angles for positions 0 .. max_seq_len-1
        raise NotImplementedError("Exercise 3.3 (Embeddings, sinusoidal and rotary positions) is not done yet")

    def forward(self, x: Tensor, positions=None) -> Tensor:
        positions = np.arange(x.shape[-2]) if positions is None else _as_ids(positions)
        # TODO 3.3: check the positions, then F.rotate_pairs with the rows of the tables
        raise NotImplementedError("Exercise 3.3 (Embeddings, sinusoidal and rotary positions) is not done yet")

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
        # TODO 3.5: in_proj_weight Xavier-uniform (3E, E), in_proj_bias zeros (3E,), out_proj Linear(E, E) with its bias zeroed
        raise NotImplementedError("Exercise 3.5 (Multi-head attention) is not done yet")

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask=None, need_weights: bool = True,
                attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        batched = query.ndim == 3
        # TODO 3.5: project, (B, T, E) -> (B, h, T, E/h), combine the masks into one float mask, F.attention, merge heads, out_proj
        raise NotImplementedError("Exercise 3.5 (Multi-head attention) is not done yet")

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
        # TODO 3.6: three bias-free Linears, created in the order w1, w2, w3 from the same rng
        raise NotImplementedError("Exercise 3.6 (SwiGLU and the Transformer layers) is not done yet")

    def forward(self, x: Tensor) -> Tensor:
        # TODO 3.6: w2(silu(w1 x) * w3 x)
        raise NotImplementedError("Exercise 3.6 (SwiGLU and the Transformer layers) is not done yet")


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
        # TODO 3.6: PyTorch's sub-modules, in its order: self_attn, linear1, dropout, linear2, norm1, norm2, dropout1, dropout2
        raise NotImplementedError("Exercise 3.6 (SwiGLU and the Transformer layers) is not done yet")

    def forward(self, src: Tensor, src_mask=None, src_key_padding_mask=None, is_causal: bool = False) -> Tensor:
        # TODO 3.6: the two residual blocks, norm before (norm_first) or after the residual addition
        raise NotImplementedError("Exercise 3.6 (SwiGLU and the Transformer layers) is not done yet")

    def _self_attention_block(self, x: Tensor, attn_mask, key_padding_mask, is_causal: bool) -> Tensor:
        # TODO 3.6: dropout1 of self_attn(x, x, x) without weights
        raise NotImplementedError("Exercise 3.6 (SwiGLU and the Transformer layers) is not done yet")

    def _feed_forward_block(self, x: Tensor) -> Tensor:
        # TODO 3.6: linear1, activation, dropout, linear2, dropout2
        raise NotImplementedError("Exercise 3.6 (SwiGLU and the Transformer layers) is not done yet")


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
        # TODO 3.6: self_attn, multihead_attn, linear1, dropout, linear2, norm1..norm3, dropout1..dropout3
        raise NotImplementedError("Exercise 3.6 (SwiGLU and the Transformer layers) is not done yet")

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool = False, memory_is_causal: bool = False) -> Tensor:
        # TODO 3.6: three residual blocks: self-attention, cross-attention on memory, feed-forward
        raise NotImplementedError("Exercise 3.6 (SwiGLU and the Transformer layers) is not done yet")

    def _self_attention_block(self, x: Tensor, attn_mask, key_padding_mask, is_causal: bool) -> Tensor:
        # TODO 3.6: dropout1 of self_attn(x, x, x)
        raise NotImplementedError("Exercise 3.6 (SwiGLU and the Transformer layers) is not done yet")

    def _cross_attention_block(self, x: Tensor, memory: Tensor, attn_mask, key_padding_mask,
                               is_causal: bool) -> Tensor:
        # TODO 3.6: dropout2 of multihead_attn(x, memory, memory)
        raise NotImplementedError("Exercise 3.6 (SwiGLU and the Transformer layers) is not done yet")

    def _feed_forward_block(self, x: Tensor) -> Tensor:
        # TODO 3.6: linear1, activation, dropout, linear2, dropout3
        raise NotImplementedError("Exercise 3.6 (SwiGLU and the Transformer layers) is not done yet")


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
        # TODO 3.7: layers = _clones(encoder_layer, num_layers); norm as given
        raise NotImplementedError("Exercise 3.7 (The encoder-decoder Transformer) is not done yet")

    def forward(self, src: Tensor, mask=None, src_key_padding_mask=None, is_causal: bool | None = None) -> Tensor:
        # TODO 3.7: each layer in turn with the same masks, then norm if there is one
        raise NotImplementedError("Exercise 3.7 (The encoder-decoder Transformer) is not done yet")


class TransformerDecoder(Module):
    """``num_layers`` independent copies of ``decoder_layer`` (``layers.0``, ...), then ``norm``, as
    PyTorch's ``nn.TransformerDecoder``. forward(tgt (B, T, E), memory (B, S, E), ...) -> (B, T, E)."""

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: Module | None = None):
        super().__init__()
        self.num_layers = num_layers
        # TODO 3.7: layers = _clones(decoder_layer, num_layers); norm as given
        raise NotImplementedError("Exercise 3.7 (The encoder-decoder Transformer) is not done yet")

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool | None = None,
                memory_is_causal: bool = False) -> Tensor:
        # TODO 3.7: each layer in turn on (x, memory) with the same masks, then norm if there is one
        raise NotImplementedError("Exercise 3.7 (The encoder-decoder Transformer) is not done yet")


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
        # TODO 3.7: encoder and decoder stacks with final LayerNorms, then Xavier-uniform for every parameter with ndim > 1
        raise NotImplementedError("Exercise 3.7 (The encoder-decoder Transformer) is not done yet")

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
        # TODO 3.7: memory = encoder(src, ...); return decoder(tgt, memory, ...)
        raise NotImplementedError("Exercise 3.7 (The encoder-decoder Transformer) is not done yet")

    @staticmethod
    def generate_square_subsequent_mask(size: int, dtype=np.float32) -> np.ndarray:
        """The causal mask as a float (size, size) array for the ``*_mask`` arguments: 0 on and below the
        diagonal (may attend), -inf above it (a later position)."""
        # TODO 3.7: -inf strictly above the diagonal, 0 elsewhere
        raise NotImplementedError("Exercise 3.7 (The encoder-decoder Transformer) is not done yet")


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
        # TODO 3.9: router = Linear without bias, then the experts, all from the same rng
        raise NotImplementedError("Exercise 3.9 (Mixture of experts) is not done yet")

    def forward(self, x: Tensor) -> Tensor:
        # TODO 3.9: route, pick top_k per token, run each expert on its tokens, mix back; set self.aux_loss
        raise NotImplementedError("Exercise 3.9 (Mixture of experts) is not done yet")

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_experts={self.num_experts}, top_k={self.top_k}"
