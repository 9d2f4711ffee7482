"""Data: the road from a dataset to the mini-batches a training loop eats.

    make_spirals / load_digits        a dataset: features x (N, D) float32, labels y (N,) int64
    train_test_split                  hold out a test set the model never trains on
    Standardizer                      per-feature mean 0 and std 1, with statistics from the train set only
    DataLoader                        (x_batch, y_batch) pairs, in a fresh seeded order every epoch

Everything here is plain NumPy: arrays go in, arrays come out. Tensors are made by the training loop,
one batch at a time. Every random choice comes from a ``np.random.Generator`` built from a seed, so the
same seed gives the same batches, the same split and the same spirals on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np


class DataLoader:
    """Iterate over ``(x_batch, y_batch)`` mini-batches of the arrays ``x`` (N, ...) and ``y`` (N, ...).

    One pass of ``for xb, yb in loader`` is one epoch: every sample appears exactly once. With
    ``shuffle=True`` each epoch starts by drawing a new order ``self.rng.permutation(N)`` from the loader's
    own generator ``self.rng = np.random.default_rng(seed)``: the k-th epoch's order depends only on
    ``seed`` and k, never on other code that draws random numbers. With ``shuffle=False`` the order is
    0, 1, ..., N-1.

    Batches have ``batch_size`` samples, except the last one, which holds the remaining
    ``N % batch_size`` samples; ``drop_last=True`` leaves that short batch out instead.
    ``len(loader)`` is the number of batches in an epoch: ``ceil(N / batch_size)``, or
    ``floor(N / batch_size)`` with ``drop_last``.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0):
        # TODO 2.7: ValueError for x and y of different lengths or a batch_size below 1; keep the settings and the loader's own generator np.random.default_rng(seed)
        raise NotImplementedError("Exercise 2.7 (Data: batches, splits, standardisation, spirals, digits) is not done yet")

    def __len__(self) -> int:
        """The number of batches in one epoch."""
        # TODO 2.7: the number of batches one epoch yields, with and without drop_last
        raise NotImplementedError("Exercise 2.7 (Data: batches, splits, standardisation, spirals, digits) is not done yet")

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the batches of one epoch: ``x_batch`` (B, ...) and ``y_batch`` (B, ...), B <= batch_size."""
        # TODO 2.7: one order for the whole epoch (one self.rng.permutation(N) draw when shuffling), then batches of consecutive pieces of it, by index arrays
        raise NotImplementedError("Exercise 2.7 (Data: batches, splits, standardisation, spirals, digits) is not done yet")


def train_test_split(x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle the samples and split them into ``x_train, x_test, y_train, y_test`` (scikit-learn's order).

    The shuffled order is ``np.random.default_rng(seed).permutation(N)``: its first
    ``n_test = ceil(test_fraction * N)`` indices (scikit-learn's rounding) are the test set, the other
    ``N - n_test`` the train set, both in that order. Each sample lands in exactly one of the two, and
    pairs (x[i], y[i]) stay together. The same seed gives the same split.
    """
    # TODO 2.7: validate the arguments; one np.random.default_rng(seed).permutation(N) draw decides the split, as the docstring says
    raise NotImplementedError("Exercise 2.7 (Data: batches, splits, standardisation, spirals, digits) is not done yet")


class Standardizer:
    """Rescale each feature (column) to mean 0 and standard deviation 1: ``(x - mean) / std``.

    ``fit`` computes ``mean`` and ``std`` (D,) on the training set; ``transform`` applies those same numbers
    to any set. Fitting on the test set too would let its statistics leak into training and make the test
    score optimistic. ``std`` is the population standard deviation (``ddof=0``, as scikit-learn's
    StandardScaler). A feature that is constant on the training set (std < ``eps``; the corner pixels of
    digits) carries no information: its std is taken as 1, so it becomes ``x - mean`` instead of 0/0.
    """

    def __init__(self, eps: float = 1e-8):
        self.eps = eps
        self.mean: np.ndarray | None = None  # (D,) float64
        self.std: np.ndarray | None = None  # (D,) float64

    def fit(self, x: np.ndarray) -> Standardizer:
        """Learn ``mean`` and ``std`` per feature from ``x`` (N, D); returns ``self``."""
        # TODO 2.7: per-feature statistics, computed in float64, with a std of 1 for (nearly) constant features
        raise NotImplementedError("Exercise 2.7 (Data: batches, splits, standardisation, spirals, digits) is not done yet")

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` with the fitted statistics; a floating ``x`` keeps its dtype."""
        # TODO 2.7: apply the fitted statistics (an error before fit); a floating x keeps its dtype
        raise NotImplementedError("Exercise 2.7 (Data: batches, splits, standardisation, spirals, digits) is not done yet")

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        """``fit(x)`` then ``transform(x)``: for the training set."""
        return self.fit(x).transform(x)


def make_spirals(n_per_class: int = 100, n_classes: int = 3, noise: float = 0.2,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved spiral arms in the plane, one per class: a small task no straight line can split.

    Point i of arm k (i = 0 .. n-1, n = ``n_per_class``) lies at radius and angle

        r = (i + 1) / n                                   from near the centre (1/n) out to the rim (1)
        t = 4 r + 2 pi k / K + noise * z,   z ~ N(0, 1)   4 radians of turn, arms evenly rotated
        (x1, x2) = (r sin t, r cos t)

    (the spirals of Stanford's CS231n notes, with K = ``n_classes`` arms; there r starts at 0, which puts
    one point of every class on the origin, where no model can tell them apart). Returns ``x`` (K*n, 2) float32 and
    ``y`` (K*n,) int64, ordered by class: ``n_per_class`` samples of class 0, then class 1, ...
    The angle noise comes from ``np.random.default_rng(seed)``; with ``noise=0`` the seed does not matter.
    """
    # TODO 2.7: all arms at once as (K, n) grids (no loop over points); the noise is one rng.standard_normal((K, n)) draw; arm after arm in the result
    raise NotImplementedError("Exercise 2.7 (Data: batches, splits, standardisation, spirals, digits) is not done yet")


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits that ship with scikit-learn (no download): 1797 images, classes 0-9.

    Returns ``x`` (1797, 64) float32, each pixel's ink level 0..16 divided by 16 into [0, 1], and
    ``y`` (1797,) int64 labels.
    """
    # TODO 2.7: scikit-learn's bundled digits (sklearn.datasets.load_digits), scaled to [0, 1], in the documented dtypes
    raise NotImplementedError("Exercise 2.7 (Data: batches, splits, standardisation, spirals, digits) is not done yet")
