"""Speed-ups for the fused functions of ``functional.py`` (given): each helper computes what a one-line NumPy
expression computes, named in its docstring, and is faster on the arrays a Transformer makes. Read
``functional.py`` first; come here to see why a line there calls a helper instead of the plain expression.

Two reasons make the plain expression slow, and each helper answers one:

  * A sum along a short last axis (a row of 64 attention scores, 128 features): ``a.sum(axis=-1)`` runs a
    small loop per row, while a matrix-vector product with a vector of ones runs the same additions in the
    BLAS, several times faster. ``sum_along`` and ``sum_of_products`` (for sums of products) do that.
  * ``np.add.at`` (the backward of an embedding lookup) adds one index at a time; ``add_at_rows`` sorts the
    indices and adds each distinct row once.
  * A formula of many elementwise steps (GELU's normal CDF, about thirty) makes one NumPy pass over the whole
    array per step; for the hidden layer of a feed-forward block (megabytes) every pass goes out to main
    memory. ``in_blocks`` runs all the steps on one cache-sized block before moving to the next.

Shapes: ``a`` and ``b`` of one shape; the helpers keep the dtype.
"""

from __future__ import annotations

import math
import string

import numpy as np


# ---------------------------------------------------------------------- sums along one axis
def sum_along(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """a.sum(axis=axis, keepdims=True). For a C-contiguous array summed over its last axis (rows) or its
    first (columns), one matrix-vector product with ones: a @ 1 or 1 @ a, through the BLAS."""
    axis = axis % a.ndim
    if a.flags.c_contiguous and a.size and a.dtype.kind == "f":
        n = a.shape[axis]
        if axis == a.ndim - 1:
            sums = a.reshape(-1, n) @ np.ones(n, a.dtype)  # (rows,): one dot product per row
            return sums.reshape(*a.shape[:-1], 1)
        if axis == 0:
            sums = np.ones(n, a.dtype) @ a.reshape(n, -1)  # (columns,)
            return sums.reshape(1, *a.shape[1:])
    return a.sum(axis=axis, keepdims=True)


def sum_of_products(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """(a * b).sum(axis=axis, keepdims=True) for arrays of the same shape, without the temporary array a * b:
    ``np.einsum`` multiplies and adds in one pass over the memory."""
    letters = string.ascii_letters[: a.ndim]
    axis = axis % a.ndim
    kept = letters[:axis] + letters[axis + 1:]
    return np.expand_dims(np.einsum(f"{letters},{letters}->{kept}", a, b), axis)


def add_at_rows(table: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """np.add.at(table, ids, rows): table[ids[i]] += rows[i] for every i, the rows of a repeated id adding up;
    ids (N,) ints, rows (N, ...) -> table, changed in place and returned. ``np.add.at`` handles one index at a
    time; this sorts the ids, sums each run of equal ids at once (``np.add.reduceat``) and adds one row per
    distinct id: several times faster for the token ids of a batch."""
    if ids.size == 0:
        return table
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_ids[1:] != sorted_ids[:-1]]))  # first of each run
    table[sorted_ids[starts]] += np.add.reduceat(rows[order], starts, axis=0)
    return table


# ---------------------------------------------------------------------- long elementwise formulas
# Elements per block of ``in_blocks``: 65 536 float32 take 256 KB, so a block and the few temporaries of a
# formula stay in the CPU's L2 cache from one pass to the next.
BLOCK = 1 << 16


def in_blocks(function, out: np.ndarray, *inputs: np.ndarray) -> np.ndarray:
    """``function(*inputs, out=out)``, computed on consecutive blocks of BLOCK elements of the flattened arrays
    (``inputs`` have out's shape; ``out`` is C-contiguous); returns ``out``.

    Block by block, every step of the formula runs on data in the cache, and its temporaries are small
    arrays that the allocator hands out again at once, instead of fresh megabytes per step. A loop over a few
    dozen blocks, not over elements: still vectorised.
    """
    flat_out = out.reshape(-1)
    flat_inputs = [np.ascontiguousarray(a).reshape(-1) for a in inputs]
    for start in range(0, flat_out.size, BLOCK):
        part = slice(start, start + BLOCK)
        function(*(a[part] for a in flat_inputs), out=flat_out[part])
    return out


# The erfc fit of Numerical Recipes (Press et al., "Numerical Recipes", section 6.2, the Chebyshev fit they
# call erfcc): for z >= 0, erfc(z) ~ t e^(-z^2 + P(t)), t = 1 / (1 + z/2), with P the degree-9 polynomial
# below (coefficients lowest power first), fractional error below 1.2e-7 for every z >= 0.
_ERFC_FIT = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
             -0.82215223, 0.17087277)


def normal_cdf_float32(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Phi(x) = erfc(-x / sqrt 2) / 2, the standard normal CDF, of a float32 array, in float32 throughout;
    written into ``out`` (x's shape, float32) if given, and returned. (NumPy has no erf.)

    One fit for every x: with z = |x| / sqrt 2, Phi(-|x|) = erfc(z) / 2 (the fit above, evaluated by Horner's
    rule), and Phi(|x|) = 1 - Phi(-|x|). Unlike 1 + erf(x / sqrt 2), which cancels for x << 0, the left tail
    keeps its relative precision. About thirty cheap passes over the array, each in place: several times
    faster than stage 2's ``erf_values``, which evaluates three ranges in float64.

    Accuracy against the exact Phi: absolute error below 3e-7 everywhere; relative error below 1e-6 for
    |x| < 3, growing to about 1e-5 at x = -12, where the float32 rounding of the exponent -z^2 dominates.
    """
    f32 = np.float32
    z = np.abs(x)
    t = z * f32(0.5 / math.sqrt(2))
    t += f32(1)
    np.reciprocal(t, out=t)  # t = 1 / (1 + z/2) with z = |x| / sqrt 2, in (0, 1]
    tail = np.multiply(t, f32(_ERFC_FIT[-1]), out=out)
    for c in _ERFC_FIT[-2:0:-1]:  # Horner's rule, in place: tail = (tail + c) t
        tail += f32(c)
        tail *= t
    tail += f32(_ERFC_FIT[0] + math.log(0.5))  # the factor 1/2 of Phi = erfc / 2, moved into the exponent
    np.square(z, out=z)
    z *= f32(0.5)  # z^2 = x^2 / 2
    tail -= z  # -z^2 + P(t) + log(1/2)
    np.exp(tail, out=tail)
    tail *= t  # Phi(-|x|) = erfc(z) / 2
    # Phi(x) = tail where x <= 0 and 1 - tail where x > 0. Arithmetic rather than np.where: a branch per
    # element on the sign of random data is about ten times slower than these passes.
    flip = np.multiply(tail, f32(-2), out=z)
    flip += f32(1)  # 1 - 2 tail
    flip *= x > 0
    tail += flip
    return tail


def gelu_slope_times_g(x: np.ndarray, cdf: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    """out = g * (Phi(x) + x phi(x)), the backward of the exact GELU, with phi(x) = e^(-x^2/2) / sqrt(2 pi)."""
    dtype = x.dtype.type
    np.square(x, out=out)
    out *= dtype(-0.5)
    np.exp(out, out=out)
    out *= x
    out *= dtype(1 / math.sqrt(2 * math.pi))
    out += cdf
    out *= g
