"""The functions a Transformer is made of: fused softmax and log-softmax, layer and RMS norm, positions
(sinusoidal and rotary), scaled dot-product attention, and attention again as one fused node.

Stage 2 wrote softmax as a chain of Tensor ops (subtract, exp, sum, divide), which records four graph
nodes and keeps four arrays alive for the backward pass. Here the hot functions are *fused*: each
computes its value in NumPy and records ONE node with ``Tensor._from_op``, whose backward is derived by
hand (the derivations are in the lesson, stage3_transformer/README.md). Fewer nodes, fewer temporaries,
and the forward pass's results are reused in the backward pass. Attention is then composed of these
fused pieces and batched matmuls, with no loop over the batch, the heads or the positions. Where a line calls
a helper of ``speedups.py`` (``sum_along``, ``sum_of_products``), it computes a plain NumPy expression, named
there, faster.

Every function keeps the dtype: float32 in gives float32 out, and float32 gradients.
Shapes: ``B`` batch, ``T`` (or ``L``) query positions, ``S`` key positions, ``C``/``E`` features,
``h`` heads; ``...`` means any number of leading axes.
"""

from __future__ import annotations

import math

import numpy as np

from stage1_autograd.tensor import Tensor, unbroadcast
from stage2_mlp import functional as F2
from stage3_transformer.speedups import (add_at_rows, gelu_and_slope_float32, in_blocks, sum_along, sum_of_products,
                                         transposed)


# ---------------------------------------------------------------------- given: linear and GELU, fused
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight^T + bias, what ``nn.Linear`` computes, as ONE graph node: the product and the bias land in
    one array instead of two, which matters for the large activations of attention and feed-forward blocks.

    x (..., in); weight (out, in); bias (out,) or None -> (..., out). Backward, with x and g as 2-D (rows, .):
    dx = g @ weight,  dweight = g^T @ x,  dbias = sum of g over the rows.
    """
    rows = x.data.reshape(-1, x.shape[-1])  # (N, in): one 2-D product for all the leading axes
    out = rows @ weight.data.T  # (N, out)
    if bias is not None:
        out += bias.data  # in place: no second array
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(g):
        g_rows = g.reshape(-1, g.shape[-1])
        grads = [(g_rows @ weight.data).reshape(x.shape) if x.requires_grad else None,
                 g_rows.T @ rows if weight.requires_grad else None]
        if bias is not None:
            grads.append(sum_along(g_rows, 0).reshape(-1) if bias.requires_grad else None)  # column sums
        return tuple(grads)

    return Tensor._from_op(out.reshape(*x.shape[:-1], weight.shape[0]), parents, backward)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU(x) = x Phi(x) elementwise, as stage 2's ``F2.gelu``, but fused: ONE graph node instead of the
    five or so that x * 0.5 * (1 + erf(x / sqrt 2)) records (each keeping an array of x's size alive, for
    the large hidden layer of every feed-forward block), with the derivative written out:

        approximate="none":  y = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2
                             dy/dx = Phi(x) + x phi(x),  phi(x) = e^(-x^2/2) / sqrt(2 pi)  (the normal density)
        approximate="tanh":  y = x s,  s = (1 + tanh u) / 2,  u = sqrt(2/pi) (x + 0.044715 x^3)
                             dy/dx = s + x (1 - tanh^2 u) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2)

    Phi is computed in x's dtype: float32 by ``gelu_and_slope_float32`` (accurate to float32's rounding), which
    also gives the slope dy/dx while the values are in the cache; float64 by stage 2's ``erf_values`` (accurate
    to float64's). x any shape; y the same shape and dtype.
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    data = x.data
    dtype = data.dtype.type
    if approximate == "tanh":
        c = dtype(math.sqrt(2 / math.pi))
        tanh_u = np.tanh(c * (data + dtype(0.044715) * data * data * data))  # data*data*data: x**3 is slower
        cdf = tanh_u + dtype(1)
        cdf *= dtype(0.5)

        def backward(g):
            slope = tanh_u * tanh_u  # x (1 - tanh^2 u) / 2 * c (1 + 3 * 0.044715 x^2), plus s
            np.subtract(dtype(1), slope, out=slope)
            slope *= data
            slope *= dtype(0.5) * c
            slope *= dtype(3 * 0.044715) * (data * data) + dtype(1)
            slope += cdf
            slope *= g
            return (slope,)

        return Tensor._from_op(data * cdf, (x,), backward)
    if data.dtype == np.float32:
        y, slope = np.empty(data.shape, np.float32), np.empty(data.shape, np.float32)
        in_blocks(gelu_and_slope_float32, (y, slope), data)  # y = x Phi(x), slope = Phi(x) + x phi(x)
        return Tensor._from_op(y, (x,), lambda g: (g * slope,))
    cdf = F2.erf_values(data * (1 / math.sqrt(2))).astype(data.dtype)
    cdf += 1
    cdf *= 0.5

    def backward(g):
        slope = np.square(data)  # Phi(x) + x phi(x), phi(x) = e^(-x^2/2) / sqrt(2 pi)
        slope *= -0.5
        np.exp(slope, out=slope)
        slope *= data
        slope *= 1 / math.sqrt(2 * math.pi)
        slope += cdf
        slope *= g
        return (slope,)

    return Tensor._from_op(data * cdf, (x,), backward)


# ---------------------------------------------------------------------- 3.1 softmax and log-softmax
def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """y = softmax(x) along ``axis``: y_i = e^(x_i - m) / sum_j e^(x_j - m), m = max_j x_j. ONE graph node.

    Subtracting the max makes every exponent <= 0: no overflow for logits of 1e4, and the largest term is
    1, so the sum is >= 1 (no 0/0). Backward, the Jacobian-vector product (y is the output):

        dL/dx_i = sum_j g_j dy_j/dx_i = y_i (g_i - sum_j g_j y_j)

    x: any shape; y: the same shape and dtype.
    """
    # BEGIN SOLUTION 3.1: y = e / e.sum(axis) with e = exp(x - max); backward y * (g - sum(g * y))
    y = x.data - x.data.max(axis=axis, keepdims=True)
    np.exp(y, out=y)  # in place: one array for e, then for y
    y /= sum_along(y, axis)  # y.sum(axis, keepdims=True), through the BLAS (speedups.py)

    def backward(g):
        gx = g - sum_of_products(g, y, axis)  # g - sum(g * y), then times y, in place
        gx *= y
        return (gx,)

    return Tensor._from_op(y, (x,), backward)
    # END SOLUTION


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """y = log softmax(x) along ``axis``: y_i = (x_i - m) - log sum_j e^(x_j - m), m = max_j x_j. ONE node.

    Backward: dy_j/dx_i = [i == j] - softmax(x)_i, so

        dL/dx_i = g_i - softmax(x)_i * sum_j g_j

    x: any shape; y: the same shape and dtype.
    """
    # BEGIN SOLUTION 3.1: shift by the max, subtract log(sum(exp)); backward g - softmax * sum(g), softmax kept from forward
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    exp_shifted = np.exp(shifted)
    total = sum_along(exp_shifted, axis)  # >= 1: the max's own term is e^0
    y = shifted
    y -= np.log(total)  # in place: shifted is not needed any more

    def backward(g):
        # softmax = exp_shifted / total; dividing the small sum(g) instead of the whole array saves a pass
        return (g - exp_shifted * (sum_along(g, axis) / total),)

    return Tensor._from_op(y, (x,), backward)
    # END SOLUTION


def cross_entropy(logits: Tensor, targets, ignore_index: int | None = None,
                  label_smoothing: float = 0.0) -> Tensor:
    """The mean cross-entropy of softmax(logits) against integer targets: stage 2's ``cross_entropy``
    (same arguments, semantics and errors), on the fused ``log_softmax`` above.

    logits (N, C); targets (N,) classes in [0, C), or ``ignore_index`` for samples that count for nothing.
    With eps = label_smoothing, the loss of sample n is (1 - eps) (-log p[n, t_n]) + eps/C sum_c (-log p[n, c]);
    the result is the mean over the counted samples (NaN if there are none), a 0-d Tensor.
    """
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets).astype(np.intp)
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"cross_entropy: expected logits (N, C) and targets (N,), got logits {logits.shape} and targets "
            f"{targets.shape}; for a sequence, reshape logits to (B*T, C) and targets to (B*T,)"
        )
    n_classes = logits.shape[1]
    counted = np.flatnonzero(targets != ignore_index) if ignore_index is not None else np.arange(len(targets))
    picked_classes = targets[counted]
    outside = counted[(picked_classes < 0) | (picked_classes >= n_classes)]
    if len(outside):
        n = outside[0]
        raise ValueError(
            f"cross_entropy: target {targets[n]} of sample {n} is not a class: targets must lie in [0, {n_classes}) "
            f"for logits with {n_classes} classes" + (f", or equal ignore_index={ignore_index}" if ignore_index is not None else "")
        )
    log_probs = log_softmax(logits, axis=1)  # (N, C)
    loss = -_gather(log_probs, counted, picked_classes).sum()  # one log-probability per counted sample
    if label_smoothing:
        # The uniform part of q_n: eps/C on every class, i.e. eps/C times the sum of the row.
        loss = (1.0 - label_smoothing) * loss - (label_smoothing / n_classes) * log_probs.sum(axis=1)[counted].sum()
    return loss / len(counted)


def _gather(x: Tensor, rows: np.ndarray, cols: np.ndarray) -> Tensor:
    """x[rows, cols] for distinct rows (each row picked at most once): the gradient is a plain scatter,
    no ``np.add.at`` needed. x (N, C); rows, cols (K,) -> (K,)."""

    def backward(g):
        grad = np.zeros_like(x.data)
        grad[rows, cols] = g
        return (grad,)

    return Tensor._from_op(x.data[rows, cols], (x,), backward)


# ---------------------------------------------------------------------- 3.2 layer norm and RMS norm
def as_shape(normalized_shape) -> tuple[int, ...]:
    """``normalized_shape`` as a tuple of ints: PyTorch accepts an int for one axis, or a sequence."""
    if isinstance(normalized_shape, (int, np.integer)):
        return (int(normalized_shape),)
    return tuple(int(n) for n in normalized_shape)


def _normalized_size(x: Tensor, normalized_shape, name: str) -> int:
    """Check that x ends with ``normalized_shape`` (an int or a tuple); return the number of elements
    normalised together, D = prod(normalized_shape)."""
    shape = as_shape(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape or len(shape) > x.ndim:
        raise ValueError(f"{name}: normalized_shape {shape} must be the last axes of the input, "
                         f"whose shape is {x.shape}")
    return math.prod(shape)


def layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last axes ``normalized_shape`` (D elements), as torch's ``layer_norm``:

        mean = mean(x),  var = mean((x - mean)^2)   (biased),  rstd = 1 / sqrt(var + eps)
        xhat = (x - mean) * rstd,                   y = xhat * weight + bias

    ONE graph node with parents x, weight, bias (those given). Backward, with gy = g * weight and means
    over the D normalised elements:

        dx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat))
        dweight = sum of g * xhat over the leading axes,   dbias = sum of g over the leading axes

    x (..., *normalized_shape); weight, bias normalized_shape; y like x.
    """
    size = _normalized_size(x, normalized_shape, "layer_norm")
    # BEGIN SOLUTION 3.2: statistics over the last D elements of each row; backward rstd * (gy - mean(gy) - xhat * mean(gy * xhat))
    x2 = x.data.reshape(-1, size)  # (N, D): one row per normalised group
    xhat = x2 - sum_along(x2, 1) / size  # centred for now: x - mean(x)
    rstd = 1.0 / np.sqrt(sum_of_products(xhat, xhat, 1) / size + eps)  # (N, 1)
    xhat *= rstd  # in place: now (x - mean) * rstd
    if weight is not None:
        y = xhat * weight.data.reshape(-1)
        if bias is not None:
            y += bias.data.reshape(-1)
    else:
        y = xhat if bias is None else xhat + bias.data.reshape(-1)  # xhat itself is kept for backward
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(g):
        g2 = g.reshape(-1, size)
        w = weight.data.reshape(-1) if weight is not None else np.ones(size, g2.dtype)
        g_xhat = g2 * xhat  # one product serves dweight and mean(gy * xhat) = mean(g * xhat * w)
        dx = g2 * w  # gy, then dx in place
        dx -= xhat * ((g_xhat @ w)[:, None] / size)  # - xhat * mean(gy * xhat)
        dx -= (g2 @ w)[:, None] / size  # - mean(gy)
        dx *= rstd
        grads = [dx.reshape(x.shape)]
        if weight is not None:
            grads.append(sum_along(g_xhat, 0).reshape(weight.shape))  # sum over the rows of g * xhat
        if bias is not None:
            grads.append(sum_along(g2, 0).reshape(bias.shape))  # sum over the rows of g
        return tuple(grads)

    return Tensor._from_op(y.reshape(x.shape), parents, backward)
    # END SOLUTION


def rms_norm(x: Tensor, normalized_shape, weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """Root-mean-square normalisation over the last axes ``normalized_shape`` (D elements), as torch's
    ``rms_norm``: no centring, no bias.

        rstd = 1 / sqrt(mean(x^2) + eps),   xhat = x * rstd,   y = xhat * weight

    ``eps=None`` means np.finfo(x.dtype).eps (as PyTorch). ONE graph node with parents x and weight.
    Backward, with gy = g * weight:

        dx = rstd * (gy - xhat * mean(gy * xhat)),    dweight = sum of g * xhat over the leading axes

    x (..., *normalized_shape); weight normalized_shape; y like x.
    """
    size = _normalized_size(x, normalized_shape, "rms_norm")
    if eps is None:
        eps = float(np.finfo(x.dtype).eps)
    # BEGIN SOLUTION 3.2: rstd from the mean square of each row; backward rstd * (gy - xhat * mean(gy * xhat))
    x2 = x.data.reshape(-1, size)  # (N, D)
    rstd = 1.0 / np.sqrt(sum_of_products(x2, x2, 1) / size + eps)  # (N, 1)
    xhat = x2 * rstd
    y = xhat * weight.data.reshape(-1) if weight is not None else xhat
    parents = (x,) if weight is None else (x, weight)

    def backward(g):
        g2 = g.reshape(-1, size)
        gy = g2 * weight.data.reshape(-1) if weight is not None else g2
        dx = xhat * (sum_of_products(gy, xhat, 1) / -size)  # -xhat * mean(gy * xhat)
        dx += gy
        dx *= rstd
        grads = [dx.reshape(x.shape)]
        if weight is not None:
            grads.append(sum_of_products(g2, xhat, 0).reshape(weight.shape))
        return tuple(grads)

    return Tensor._from_op(y.reshape(x.shape), parents, backward)
    # END SOLUTION


# ---------------------------------------------------------------------- 3.3 positions
def sinusoidal_positions(seq_len: int, dim: int) -> Tensor:
    """The fixed position encodings of "Attention Is All You Need": a (seq_len, dim) float32 Tensor,

        PE[p, 2i] = sin(p / 10000^(2i/dim)),   PE[p, 2i+1] = cos(p / 10000^(2i/dim))

    Each pair of columns is a clock turning at its own speed, from one radian per position (i = 0) to
    one turn per 10000 * 2 pi positions. ``dim`` must be even (ValueError otherwise). No gradient.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_positions: dim must be even (sin and cos columns come in pairs), got {dim}")
    # BEGIN SOLUTION 3.3: angle[p, i] = p / 10000**(2i/dim) as an outer product; sin in the even columns, cos in the odd
    inverse_wavelength = 10000.0 ** (-np.arange(0, dim, 2) / dim)  # (dim/2,)
    angle = np.outer(np.arange(seq_len), inverse_wavelength)  # (seq_len, dim/2), in float64
    table = np.empty((seq_len, dim), dtype=np.float32)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle)
    return Tensor(table)
    # END SOLUTION


def rope_angles(positions, head_dim: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the rotary angles, each (seq, head_dim/2) float64:

        angle[p, i] = positions[p] * theta^(-2i/head_dim),   i = 0 .. head_dim/2 - 1

    ``positions``: int array-like (seq,). ``head_dim`` must be even (ValueError otherwise).
    """
    if head_dim % 2:
        raise ValueError(f"rotary positions: head_dim must be even (pairs of features are rotated), got {head_dim}")
    # BEGIN SOLUTION 3.3: an outer product of the positions and the frequencies theta**(-2i/head_dim)
    frequencies = theta ** (-np.arange(0, head_dim, 2) / head_dim)  # (head_dim/2,)
    angle = np.outer(np.asarray(positions, dtype=np.float64), frequencies)  # (seq, head_dim/2)
    return np.cos(angle), np.sin(angle)
    # END SOLUTION


def rotate_pairs(x: Tensor, cos: np.ndarray, sin: np.ndarray) -> Tensor:
    """Rotate each pair of features (x[..., 2i], x[..., 2i+1]) of position p by the angle whose cosine and
    sine are cos[p, i] and sin[p, i]:

        out[..., 2i]   = x[..., 2i] cos - x[..., 2i+1] sin
        out[..., 2i+1] = x[..., 2i] sin + x[..., 2i+1] cos

    x (..., seq, head_dim); cos, sin (seq, head_dim/2); the result has x's shape and dtype. A rotation is
    linear, its Jacobian is the rotation itself, and the transpose of a rotation is the rotation by minus the
    angle: the gradient is g rotated back (sin -> -sin). (Tensor ops on the halves x[..., 0::2] and
    x[..., 1::2], interleaved back with ``stack(..., axis=-1)``, give the same values and let autograd find
    that gradient; one fused node is faster.)
    """
    # BEGIN SOLUTION 3.3: one node; forward rotates by +angle, backward rotates g by -angle
    cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)

    def rotate(a: np.ndarray, sin: np.ndarray) -> np.ndarray:
        even, odd = a[..., 0::2], a[..., 1::2]  # (..., seq, head_dim/2) views
        out = np.empty_like(a)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    return Tensor._from_op(rotate(x.data, sin), (x,), lambda g: (rotate(g, -sin),))
    # END SOLUTION


def apply_rope(x: Tensor, positions, theta: float = 10000.0) -> Tensor:
    """Rotary position embedding (RoFormer, interleaved pairs): rotate each pair (x[..., 2i], x[..., 2i+1])
    of position p by the angle positions[p] * theta^(-2i/head_dim).

    After rotating queries and keys this way, q_m . k_n depends on the positions only through m - n: a
    rotation by m a followed by one by -n a is one by (m - n) a. x (..., seq, head_dim) with head_dim even
    (ValueError otherwise); positions int array-like (seq,). Returns x's shape and dtype; differentiable in x.
    """
    # BEGIN SOLUTION 3.3: rotate_pairs with the tables of rope_angles
    cos, sin = rope_angles(positions, x.shape[-1], theta)
    return rotate_pairs(x, cos, sin)
    # END SOLUTION


# ---------------------------------------------------------------------- 3.4 attention
def causal_mask(L: int, S: int | None = None) -> np.ndarray:
    """The bool (L, S) mask of causal attention: True (may attend) on and below the diagonal, so query i
    sees keys 0..i. Aligned top-left, as PyTorch's ``is_causal``. S defaults to L.

        L=4, S=4:  1 0 0 0
                   1 1 0 0
                   1 1 1 0
                   1 1 1 1
    """
    # BEGIN SOLUTION 3.4: np.tril of a (L, S) array of True
    return np.tri(L, L if S is None else S, dtype=bool)
    # END SOLUTION


def additive_mask(attn_mask, dtype) -> np.ndarray:
    """An attention mask as a float array to add to the scores, in ``dtype``: a bool mask (True = takes
    part) becomes 0 where True and -inf where False; a float mask is taken as it is. A Tensor mask is read as
    a constant (no gradient flows into it)."""
    # BEGIN SOLUTION 3.4: bool -> np.where(mask, 0, -inf); float -> as it is, in dtype
    mask = np.asarray(attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask)
    if mask.dtype == bool:
        return np.where(mask, np.asarray(0, dtype=dtype), np.asarray(-np.inf, dtype=dtype))
    if mask.dtype.kind != "f":
        raise TypeError(f"attention masks are bool (True = takes part) or float (added to the scores), not {mask.dtype}")
    return mask.astype(dtype, copy=False)
    # END SOLUTION


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
              scale: float | None = None, *, rng: np.random.Generator | int | None = None) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention that also returns its weights: ``(output, weights)``.

    The arguments and the output are those of ``scaled_dot_product_attention``; ``weights`` (..., L, S) are
    the attention probabilities the output was computed with (after dropout), for
    ``MultiheadAttention(need_weights=True)``.
    """
    if is_causal and attn_mask is not None:
        raise ValueError("attention: give attn_mask or is_causal=True, not both (is_causal is the causal mask)")
    # BEGIN SOLUTION 3.4: scores = (q * scale) @ k^T, add the mask, softmax over S, zero the fully masked rows, dropout, @ v
    L, E = q.shape[-2], q.shape[-1]
    S = k.shape[-2]
    scale = 1.0 / math.sqrt(E) if scale is None else scale
    # Scaling q costs L*E multiplications, scaling the scores L*S: q is usually the smaller.
    scores = (q * scale) @ k.transpose(*range(k.ndim - 2), k.ndim - 1, k.ndim - 2)  # (..., L, S)
    bias = additive_mask(causal_mask(L, S), q.dtype) if is_causal else None
    if attn_mask is not None:
        bias = additive_mask(attn_mask, q.dtype)
    fully_masked = None
    if bias is not None:
        # A row of -inf only has softmax 0/0. Let it take part in the softmax with any finite value, and
        # multiply its weights by 0 afterwards: output 0 and gradient 0, as PyTorch's SDPA.
        fully_masked = np.isneginf(bias).all(axis=-1, keepdims=True)  # (..., L, 1), on the mask: small
        if fully_masked.any():
            bias = np.where(fully_masked, np.asarray(0, dtype=bias.dtype), bias)
        else:
            fully_masked = None
        scores = scores + bias
    weights = softmax(scores, axis=-1)
    if fully_masked is not None:
        weights = weights * (~fully_masked).astype(weights.dtype)
    if dropout_p > 0.0:
        weights = F2.dropout(weights, dropout_p, training=True, rng=rng)
    return weights @ v, weights  # (..., L, S) @ (..., S, Ev) -> (..., L, Ev)
    # END SOLUTION


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask=None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None, *,
                                 rng: np.random.Generator | int | None = None) -> Tensor:
    """softmax(q k^T * scale + mask) v, PyTorch's ``scaled_dot_product_attention``:

        q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev); the leading axes broadcast.
        scores  = q @ k^T * scale                (..., L, S), scale = 1/sqrt(E) unless given
        weights = softmax(scores + mask, axis=-1)
        output  = dropout(weights) @ v

    ``attn_mask`` (broadcastable to (..., L, S)): bool, True where the query may attend to the key; or float,
    added to the scores (-inf forbids). ``is_causal=True`` uses ``causal_mask(L, S)`` (then attn_mask must be
    None). ``dropout_p`` drops attention weights (inverted dropout, drawn from np.random.default_rng(rng));
    there is no training flag, as in PyTorch: pass 0 at evaluation. A query whose every key is masked
    gets output 0 and zero gradients (PyTorch's SDPA does the same), never NaN.
    """
    return attention(q, k, v, attn_mask, dropout_p, is_causal, scale, rng=rng)[0]


# ---------------------------------------------------------------------- 3.10 attention as one node
def fused_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
                    scale: float | None = None, *, rng: np.random.Generator | int | None = None) -> Tensor:
    """``scaled_dot_product_attention`` (the same arguments, the same result, the same dropout draws from the
    same ``rng``) as ONE graph node whose parents are q, k and v, with the backward derived by hand:

        forward                                    backward (g = dO)
        S  = s q k^T + M          (..., L, S)      dV = P~^T dO                    (..., S, Ev)
        P  = softmax(S)           (..., L, S)      dP~ = dO V^T                    (..., L, S)
        P~ = P * D / (1 - p)      (..., L, S)      dP = dP~ * D / (1 - p)
        O  = P~ V                 (..., L, Ev)     dS = P * (dP - rowsum(dP * P))
                                                   dQ = s dS K,   dK = s dS^T Q

    s the scale, M the additive mask, D the dropout's keep mask (all True without dropout). A row whose every
    key is masked gets P = 0 (output 0), and then dS = 0: its gradients are 0. Kept for the backward: P
    (one (..., L, S) array) and D (bool); the composed version of exercise 3.4 keeps four or five arrays of
    that size. Each gradient is summed down to its input's shape (``unbroadcast``) where the batch axes
    broadcast. q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev), in q's dtype.
    """
    if is_causal and attn_mask is not None:
        raise ValueError("fused_attention: give attn_mask or is_causal=True, not both (is_causal is the causal mask)")
    L, E = q.shape[-2], q.shape[-1]
    S = k.shape[-2]
    scale = 1.0 / math.sqrt(E) if scale is None else scale
    bias = additive_mask(causal_mask(L, S), q.dtype) if is_causal else None
    if attn_mask is not None:
        bias = additive_mask(attn_mask, q.dtype)
    # BEGIN SOLUTION 3.10: NumPy: scale q k^T + M; probs = softmax (masked rows 0); keep = D or None; out = P~ V
    qd, kd, vd = q.data, k.data, v.data
    scores = (qd * q.dtype.type(scale)) @ transposed(kd)  # (..., L, S)
    fully_masked = None
    if bias is not None:
        fully_masked = np.isneginf(bias).all(axis=-1, keepdims=True)  # (..., L, 1): rows with no key at all
        bias = np.where(fully_masked, np.asarray(0, dtype=bias.dtype), bias) if fully_masked.any() else bias
        scores = scores + bias  # may broadcast to more batch axes than q, k and v have
    # P: softmax along the keys. Shifting a row leaves its softmax unchanged, so one shift per (L, S) matrix, its
    # max, serves every row: one reduction over L * S numbers, not L short rows (lesson, section 10). A row whose
    # own max lies far below its matrix's (its exponentials would underflow) takes its own max instead.
    probs = np.exp(scores - scores.max(axis=(-2, -1), keepdims=True))
    sums = sum_along(probs)  # probs.sum(axis=-1, keepdims=True), through the BLAS (speedups.py)
    low = sums[..., 0] < math.exp(-60)  # (..., L): rows whose exponentials sum below e^-60 (max ~60 below)
    if low.any():
        rows = scores[low]  # (n, S)
        probs[low] = np.exp(rows - rows.max(axis=-1, keepdims=True))
        sums[low] = sum_along(probs[low])
    probs /= sums
    if fully_masked is not None and fully_masked.any():
        probs *= ~fully_masked  # P = 0: output 0, and dS = P * (...) = 0
    keep = None  # D: None without dropout
    if dropout_p == 1.0:
        keep = np.zeros(probs.shape, dtype=bool)  # everything dropped, nothing drawn (as F2.dropout)
    elif dropout_p > 0.0:
        keep = np.random.default_rng(rng).random(probs.shape) >= dropout_p  # the draw of F2.dropout in 3.4
    out = dropout_scaled(probs, keep, dropout_p) @ vd  # (..., L, S) @ (..., S, Ev) -> (..., L, Ev)
    # END SOLUTION

    def backward(g):
        # BEGIN SOLUTION 3.10: dV = P~^T g; dP = (g V^T) D/(1-p); dS = P (dP - rowsum(dP P)); dQ = s dS K; dK = s dS^T Q
        grad_v = unbroadcast(np.swapaxes(dropout_scaled(probs, keep, dropout_p), -1, -2) @ g, v.shape)
        grad_p = dropout_scaled(g @ transposed(vd), keep, dropout_p)  # dP = dP~ * D / (1 - p), a new array
        grad_s = grad_p  # dS, computed in place:
        grad_s -= sum_of_products(grad_p, probs)  # dP - rowsum(dP * P)
        grad_s *= probs  # zero on fully masked rows
        grad_s *= grad_s.dtype.type(scale)  # s dS: dQ and dK both carry the scale
        grad_q = unbroadcast(grad_s @ kd, q.shape)  # (..., L, S) @ (..., S, E)
        grad_k = unbroadcast(np.swapaxes(grad_s, -1, -2) @ qd, k.shape)  # (..., S, L) @ (..., L, E)
        return grad_q, grad_k, grad_v
        # END SOLUTION

    return Tensor._from_op(out, (q, k, v), backward)


def dropout_scaled(a: np.ndarray, keep: np.ndarray | None, p: float) -> np.ndarray:
    """a * D / (1 - p) for the keep mask D = ``keep`` of a dropout of rate ``p`` (a itself when ``keep`` is
    None), in a's dtype, as stage 2's ``dropout`` scales: P~ from P in the forward pass of ``fused_attention``,
    dP from dP~ in its backward pass. p = 1 drops everything: zeros."""
    if keep is None:
        return a
    if p == 1.0:
        return np.zeros_like(a)
    return a * (keep / (1.0 - p)).astype(a.dtype)


def index_add(rows: int, index: np.ndarray, source: Tensor) -> Tensor:
    """Given: the rows of ``source`` added into a table of zeros at the rows ``index`` names (PyTorch's
    ``torch.zeros(rows, ...).index_add(0, index, source)``); rows a repeated index names add up. The scatter a
    mixture of experts needs to put each expert's outputs back in their tokens' places (exercise 3.9).

        out[index[i]] += source[i]        gradient: d source[i] = g[index[i]]     (a gather of g's rows)

    index (N,) ints in [0, rows), source (N, ...) -> (rows, ...)."""
    index = np.asarray(index)
    if index.ndim != 1 or len(index) != source.shape[0]:
        raise ValueError(f"index_add: index must be one id per row of source, {source.shape[0]} of them; "
                         f"got an index of shape {index.shape}")
    out = add_at_rows(np.zeros((rows, *source.shape[1:]), dtype=source.data.dtype), index, source.data)

    def backward(g):
        return (g[index],)

    return Tensor._from_op(out, (source,), backward)
