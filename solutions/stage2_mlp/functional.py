"""Functions of Tensors that models are made of: activations, dropout and losses.

Each is written with stage 1's Tensor operations, so autograd differentiates it: no backward here,
except in the two given primitives at the top (``erf`` and ``softplus``), whose stable forms need a
gradient written out. The layers of ``nn.py`` (``nn.ReLU``, ``nn.Dropout``, ...) call these.

Shapes: activations and dropout work elementwise on any shape. The losses return a 0-d Tensor, the
mean over the batch, as PyTorch's default ``reduction="mean"``.
"""

from __future__ import annotations

import math

import numpy as np

from stage1_autograd.tensor import Tensor


# ---------------------------------------------------------------------- given primitives
def erf(x: Tensor) -> Tensor:
    """The error function, erf(x) = 2/sqrt(pi) * integral from 0 to x of e^(-t^2) dt, elementwise.

    d erf(x)/dx = 2/sqrt(pi) * e^(-x^2). NumPy has no erf, so its values come from ``erf_values``;
    float32 inputs are evaluated in float64 and rounded back.
    """
    value = erf_values(x.data).astype(x.dtype)
    return Tensor._from_op(value, (x,), lambda g: (g * (2 / math.sqrt(math.pi)) * np.exp(-(x.data**2)),))


# W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969), the
# coefficients of netlib's specfun/calerf, written highest power first for np.polyval. In float64
# they agree with the exact erf to about 1e-16 relative (the tests of 2.3 rely on far less: 1e-7).
_ERF_NUM = [1.85777706184603153e-1, 3.16112374387056560e0, 1.13864154151050156e2, 3.77485237685302021e2,
            3.20937758913846947e3]
_ERF_DEN = [1.0, 2.36012909523441209e1, 2.44024637934444173e2, 1.28261652607737228e3, 2.84423683343917062e3]
_ERFC_NUM = [2.15311535474403846e-8, 5.64188496988670089e-1, 8.88314979438837594e0, 6.61191906371416295e1,
             2.98635138197400131e2, 8.81952221241769090e2, 1.71204761263407058e3, 2.05107837782607147e3,
             1.23033935479799725e3]
_ERFC_DEN = [1.0, 1.57449261107098347e1, 1.17693950891312499e2, 5.37181101862009858e2, 1.62138957456669019e3,
             3.29079923573345963e3, 4.36261909014324716e3, 3.43936767414372164e3, 1.23033935480374942e3]
_ERFC_TAIL_NUM = [1.63153871373020978e-2, 3.05326634961232344e-1, 3.60344899949804439e-1,
                  1.25781726111229246e-1, 1.60837851487422766e-2, 6.58749161529837803e-4]
_ERFC_TAIL_DEN = [1.0, 2.56852019228982242e0, 1.87295284992346047e0, 5.27905102951428412e-1,
                  6.05183413124413191e-2, 2.33520497626869185e-3]


def erf_values(x: np.ndarray) -> np.ndarray:
    """erf of every element of ``x``, in float64, by Cody's three rational approximations:

        |x| <= 0.46875:     erf(x)  = x R1(x^2)
        0.46875 < |x| <= 4: erfc(|x|) = e^(-x^2) R2(|x|)
        |x| > 4:            erfc(|x|) = e^(-x^2) / |x| * (1/sqrt(pi) + R3(1/x^2) / x^2)

    with erf(x) = sign(x) (1 - erfc(|x|)) in the outer two ranges. Each range is evaluated on the whole
    array (no loop over elements) and ``np.where`` picks the right one per element; the third uses
    max(|x|, 4) so that x = 0 does not divide by zero where its result is discarded anyway.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(x)
    # For huge |x| the ranges that np.where then discards overflow (inf / inf): silence only that.
    with np.errstate(over="ignore", invalid="ignore"):
        y2 = y * y
        near_zero = x * np.polyval(_ERF_NUM, y2) / np.polyval(_ERF_DEN, y2)
        erfc_middle = np.exp(-y2) * np.polyval(_ERFC_NUM, y) / np.polyval(_ERFC_DEN, y)
        far = np.maximum(y, 4.0)
        inv_far2 = 1.0 / (far * far)
        tail = inv_far2 * np.polyval(_ERFC_TAIL_NUM, inv_far2) / np.polyval(_ERFC_TAIL_DEN, inv_far2)
        erfc_tail = np.exp(-y2) / far * (1 / math.sqrt(math.pi) - tail)
    erfc_abs = np.where(y <= 4.0, erfc_middle, erfc_tail)
    return np.where(y <= 0.46875, near_zero, np.sign(x) * (1.0 - erfc_abs))


def softplus(x: Tensor) -> Tensor:
    """softplus(x) = log(1 + e^x), a smooth ReLU, elementwise; d softplus(x)/dx = sigmoid(x).

    ``np.logaddexp(0, x)`` computes it without overflow for any x. Fused rather than built from Tensor
    ops: the stable composition relu(x) + log(1 + e^-|x|) has a kink in both terms at x = 0, where
    autograd would give gradient 0 instead of sigmoid(0) = 1/2.
    """
    sigmoid_x = 0.5 * (np.tanh(0.5 * x.data) + 1)  # 1/(1+e^-x) without overflow
    return Tensor._from_op(np.logaddexp(0, x.data), (x,), lambda g: (g * sigmoid_x,))


# ---------------------------------------------------------------------- 2.3 activations
def relu(x: Tensor) -> Tensor:
    """max(x, 0) elementwise."""
    # BEGIN SOLUTION 2.3: stage 1 has it
    return x.relu()
    # END SOLUTION


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + e^-x) elementwise."""
    # BEGIN SOLUTION 2.3: stage 1 has it
    return x.sigmoid()
    # END SOLUTION


def tanh(x: Tensor) -> Tensor:
    """tanh(x) elementwise."""
    # BEGIN SOLUTION 2.3: stage 1 has it
    return x.tanh()
    # END SOLUTION


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU(x) = x * Phi(x) elementwise, Phi the standard normal CDF: each input is let through in
    proportion to how likely a standard normal is to be below it.

      * ``approximate="none"``: Phi(x) = (1 + erf(x / sqrt(2))) / 2, exactly (use ``erf`` above);
      * ``approximate="tanh"``: Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2, GPT-2's form.
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    # BEGIN SOLUTION 2.3: 0.5 * x * (1 + erf(x / sqrt(2))); for "tanh", tanh(sqrt(2/pi) (x + 0.044715 x^3)) for erf
    if approximate == "tanh":
        return 0.5 * x * (1 + (math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)).tanh())
    return 0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))
    # END SOLUTION


def silu(x: Tensor) -> Tensor:
    """SiLU(x) = x * sigmoid(x) elementwise (also called swish)."""
    # BEGIN SOLUTION 2.3: x times its sigmoid
    return x * x.sigmoid()
    # END SOLUTION


def mish(x: Tensor) -> Tensor:
    """Mish(x) = x * tanh(softplus(x)) elementwise (use ``softplus`` above: it does not overflow)."""
    # BEGIN SOLUTION 2.3: x times tanh of softplus(x)
    return x * softplus(x).tanh()
    # END SOLUTION


def dropout(x: Tensor, p: float = 0.5, training: bool = True,
            rng: np.random.Generator | int | None = None) -> Tensor:
    """Inverted dropout: in training, zero each element independently with probability ``p`` and
    multiply the survivors by 1/(1-p), so the expected value of every element is unchanged and
    nothing needs rescaling at evaluation time. Not training (or p = 0): ``x`` unchanged. p = 1: zeros.

    The mask is drawn from ``np.random.default_rng(rng)``: pass a Generator to continue its sequence
    (``nn.Dropout`` passes its own), an int seed, or None for fresh randomness. The gradient flows
    through the kept elements only, scaled by the same 1/(1-p). The result has ``x``'s dtype.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p={p} is not a probability between 0 and 1")
    # BEGIN SOLUTION 2.3: x itself unless training; keep where one rng.random(x.shape) draw is >= p; scale by a constant mask in x's dtype
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0  # everything dropped; 1/(1-p) would divide by zero
    keep = np.random.default_rng(rng).random(x.shape) >= p  # True with probability 1 - p
    return x * (keep / (1.0 - p)).astype(x.dtype)  # a constant: the gradient is g * keep / (1-p)
    # END SOLUTION


# ---------------------------------------------------------------------- 2.4 losses
def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """log(softmax(x)) along ``axis``: x - log(sum_j e^(x_j)), computed as

        m = max_j x_j,   log_softmax(x) = (x - m) - log(sum_j e^(x_j - m))

    which is the same value (m cancels) but cannot overflow: every exponent is <= 0. Treat m as a
    constant: the result does not depend on it, so neither does its gradient.
    """
    # BEGIN SOLUTION 2.4: the shifted formula above, with m taken from x.data (a constant, so autograd ignores it)
    shifted = x - x.data.max(axis=axis, keepdims=True)  # an ndarray: a constant for autograd
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()
    # END SOLUTION


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """e^(x_i) / sum_j e^(x_j) along ``axis``, with the max subtracted first as in ``log_softmax``."""
    # BEGIN SOLUTION 2.4: exponentiate after subtracting the max (a constant), then normalise along axis
    e = (x - x.data.max(axis=axis, keepdims=True)).exp()
    return e / e.sum(axis=axis, keepdims=True)
    # END SOLUTION


def cross_entropy(logits: Tensor, targets, ignore_index: int | None = None,
                  label_smoothing: float = 0.0) -> Tensor:
    """The mean cross-entropy between the predicted distributions softmax(logits) and the targets.

    logits (N, C); targets (N,) integer classes in [0, C) (an array, a list or a Tensor). For each
    sample n the target distribution q_n puts 1 - eps on class targets[n] and spreads eps = label_smoothing
    evenly over all C classes; the loss of sample n is -sum_c q_n[c] log softmax(logits_n)[c], which is
    -log p[n, targets[n]] when eps = 0. Samples whose target equals ``ignore_index`` count for nothing;
    the result is the mean over the other samples (NaN if there are none), as in PyTorch.

    Any other target outside [0, C) is a ``ValueError`` that names it (NumPy would otherwise read a -1 as
    the last class). C may be a vocabulary of 50 000 tokens and N = B*T thousands of positions, so pick
    the target log-probabilities by integer indexing: no dense (N, C) array of targets.
    """
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets).astype(np.intp)
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"cross_entropy: expected logits (N, C) and targets (N,), got logits {logits.shape} and targets "
            f"{targets.shape}; for a sequence, reshape logits to (B*T, C) and targets to (B*T,)"
        )
    # BEGIN SOLUTION 2.4: reject bad targets; gather the counted samples' target log-probabilities, add the smoothing term, average
    n_classes = logits.shape[1]
    counted = np.flatnonzero(targets != ignore_index) if ignore_index is not None else np.arange(len(targets))
    outside = counted[(targets[counted] < 0) | (targets[counted] >= n_classes)]
    if len(outside):
        n = outside[0]
        raise ValueError(
            f"cross_entropy: target {targets[n]} of sample {n} is not a class: targets must lie in [0, {n_classes}) "
            f"for logits with {n_classes} classes" + (f", or equal ignore_index={ignore_index}" if ignore_index is not None else "")
        )
    log_probs = log_softmax(logits, axis=1)  # (N, C)
    loss = -log_probs[counted, targets[counted]].sum()  # a gather: one entry per counted sample
    if label_smoothing:
        # The uniform part of q_n: eps/C on every class, i.e. eps/C times the sum of the row.
        loss = (1.0 - label_smoothing) * loss - (label_smoothing / n_classes) * log_probs.sum(axis=1)[counted].sum()
    return loss / len(counted)
    # END SOLUTION


def _matching_target(prediction: Tensor, target, loss: str):
    """``target`` as a Tensor or as an array of ``prediction``'s dtype, after checking that the shapes are
    equal: a silently broadcast (N, 1) against (N,) is a classic bug, so it is an error here."""
    target_shape = target.shape if isinstance(target, Tensor) else np.shape(target)
    if prediction.shape != target_shape:
        raise ValueError(f"{loss}: the prediction has shape {prediction.shape} but the target has shape {target_shape}")
    return target if isinstance(target, Tensor) else np.asarray(target, dtype=prediction.dtype)


def mse_loss(pred: Tensor, target) -> Tensor:
    """The mean squared error, mean((pred - target)^2), over all elements. Shapes must match (a
    silently broadcast (N, 1) against (N,) is a classic bug, so it is an error here)."""
    target = _matching_target(pred, target, "mse_loss")
    # BEGIN SOLUTION 2.4: the mean of the squared differences
    return ((pred - target) ** 2).mean()
    # END SOLUTION


def binary_cross_entropy_with_logits(logits: Tensor, targets) -> Tensor:
    """The mean binary cross-entropy of probabilities sigmoid(logits) against targets in [0, 1]:

        -[y log s(x) + (1 - y) log(1 - s(x))] = softplus(x) - x y,   s = sigmoid

    (using log s(x) = -softplus(-x) and softplus(x) - softplus(-x) = x). The right-hand side is stable
    for any logit, where log(sigmoid(x)) would give log(0) = -inf for x = -1000. logits and targets
    have the same shape.
    """
    targets = _matching_target(logits, targets, "binary_cross_entropy_with_logits")
    # BEGIN SOLUTION 2.4: mean of softplus(x) - x * y (use softplus above)
    return (softplus(logits) - logits * targets).mean()
    # END SOLUTION
