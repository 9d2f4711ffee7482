"""Speed-ups for the fused functions of ``functional.py`` (given): each helper computes what a one-line NumPy
expression computes, named in its docstring, and is faster on the arrays a Transformer makes. Read
``functional.py`` first; come here to see why a line there calls a helper instead of the plain expression.

Four reasons make the plain expression slow, and each helper answers one:

  * A sum along a short last axis (a row of 64 attention scores, 128 features): ``a.sum(axis=-1)`` runs a
    small loop per row, while a matrix-vector product with a vector of ones runs the same additions in the
    BLAS, several times faster. ``sum_along`` and ``sum_of_products`` (for sums of products) do that.
  * A product of stacks of small matrices with a transposed operand (attention's q @ k^T) runs at about half
    the BLAS's speed; ``transposed`` lays the operand out row by row first.
  * ``np.add.at`` (the backward of an embedding lookup) adds one index at a time; ``add_at_rows`` sorts the
    indices and adds each distinct row once.
  * A formula of many elementwise steps (the exact GELU and its slope, about thirty) makes one NumPy pass over
    the whole array per step; for the hidden layer of a feed-forward block (megabytes) every pass goes out to main
    memory. ``in_blocks`` runs all the steps on one cache-sized block before moving to the next.

Shapes: ``a`` and ``b`` of one shape; the helpers keep the dtype.
"""

from __future__ import annotations

import math

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
    ``np.vecdot`` multiplies and adds in one pass over the memory (for real numbers, as here: it conjugates a)."""
    return np.expand_dims(np.vecdot(a, b, axis=axis), axis)


def transposed(a: np.ndarray) -> np.ndarray:
    """np.swapaxes(a, -1, -2), the last two axes swapped, as a C-contiguous copy. In a product of stacks of
    small matrices (attention's q @ k^T: one 64 x 32 by 32 x 64 product per batch row and head) the BLAS is
    about half as fast on a transposed view as on the same matrices laid out row by row; the copy costs a
    fraction of that."""
    return np.ascontiguousarray(np.swapaxes(a, -1, -2))


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
# Elements per block of ``in_blocks``: 131 072 float32 take 512 KB, so a block and the few temporaries of a
# formula stay in the CPU's caches from one pass to the next, while the blocks are few enough that NumPy's
# cost per call (a microsecond or so, thirty calls per block) stays small. Of 32 K to 256 K elements, this
# block was the fastest for the GELU of the benchmark's GPT.
BLOCK = 1 << 17


def in_blocks(function, out, *inputs: np.ndarray):
    """``function(*inputs, out=out)``, computed on consecutive blocks of BLOCK elements of the flattened arrays
    (``inputs`` have the shape of ``out``, an array or a tuple of arrays, each C-contiguous); returns ``out``.

    Block by block, every step of the formula runs on data in the cache, and its temporaries are small
    arrays that the allocator hands out again at once, instead of fresh megabytes per step. A loop over a few
    dozen blocks, not over elements: still vectorised.
    """
    flat_outs = [a.reshape(-1) for a in (out if isinstance(out, tuple) else (out,))]
    flat_inputs = [np.ascontiguousarray(a).reshape(-1) for a in inputs]
    for start in range(0, flat_outs[0].size, BLOCK):
        part = slice(start, start + BLOCK)
        parts = tuple(a[part] for a in flat_outs)
        function(*(a[part] for a in flat_inputs), out=parts if isinstance(out, tuple) else parts[0])
    return out


# Phi(-|x|) = phi(x) M(|x|), with phi the normal density and M Mills' ratio (the normal tail over the
# density: sqrt(pi/2) at 0, falling like 1/z), a smooth function. With t = 1 / (1 + p|x|), p = 0.305, a
# polynomial of degree 7 gives M = t (a0 + a1 t + ... + a7 t^7) to a relative error below 1e-7 for |x| <= 14,
# beyond which phi(x) underflows float32. (Degree 8 would gain nothing: the float32 rounding of the exponent
# -x^2/2 is the larger error already, and two more passes over the array would cost 6% of the time.)
# Coefficients lowest power first; our fit: least squares against M(z) = sqrt(pi/2) erfcx(z / sqrt 2) on 6 000
# Chebyshev points of t, reweighted towards the points of the largest relative error until it levels out
# (Lawson's method), p the best of a scan.
_MILLS_P = 0.305
_MILLS_FIT = (0.30490559, 0.306978834, 0.259237359, 0.303357388, -0.0951957305, 0.46552533, -0.383486029,
              0.0919915124)


def gelu_and_slope_float32(x: np.ndarray, out: tuple[np.ndarray, np.ndarray]) -> None:
    """The exact GELU of a float32 array and its derivative, in float32 throughout (NumPy has no erf):

        out[0] = x Phi(x),    out[1] = Phi(x) + x phi(x),    phi(x) = e^(-x^2/2) / sqrt(2 pi),

    Phi the standard normal CDF. One formula for every x: the tail Phi(-|x|) = phi(x) M(|x|) (the fit above,
    M by Horner's rule), and Phi(|x|) = 1 - Phi(-|x|). Unlike 1 + erf(x / sqrt 2), which cancels for
    x << 0, the left tail keeps its relative precision. phi serves the tail and the slope: one exponential.
    About thirty cheap passes over the array, each in place (run it through ``in_blocks``).

    Accuracy against the exact values: absolute error below 5e-7; relative error below 1e-6 for |x| < 3,
    growing to about 1e-5 at x = -14, where the float32 rounding of the exponent -x^2/2 dominates.
    """
    f32 = np.float32
    value, slope = out
    t = np.abs(x)
    t += f32(1 / _MILLS_P)
    np.divide(f32(1 / _MILLS_P), t, out=t)  # t = 1 / (1 + p|x|), in (0, 1]; faster than np.reciprocal
    tail = np.multiply(t, f32(_MILLS_FIT[-1]), out=slope)
    for a in _MILLS_FIT[-2::-1]:  # Horner's rule, in place: tail = (tail + a) t
        tail += f32(a)
        tail *= t  # ends as M(|x|)
    # phi(x) = 2^(-x^2 log2(e) / 2 - log2 sqrt(2 pi)): np.exp2 is NumPy's faster exponential in float32
    phi = np.square(x)
    phi *= f32(-0.5 * math.log2(math.e))
    phi -= f32(math.log2(math.sqrt(2 * math.pi)))
    np.exp2(phi, out=phi)
    tail *= phi  # Phi(-|x|)
    # Phi(x) = tail where x <= 0 and 1 - tail where x > 0. Arithmetic rather than np.where: a branch per
    # element on the sign of random data is about ten times slower than these passes.
    flip = np.multiply(tail, f32(-2), out=t)
    flip += f32(1)  # 1 - 2 tail
    flip *= x > 0
    cdf = np.add(tail, flip, out=slope)
    np.multiply(x, cdf, out=value)  # GELU(x) = x Phi(x)
    phi *= x
    slope += phi  # Phi(x) + x phi(x)
