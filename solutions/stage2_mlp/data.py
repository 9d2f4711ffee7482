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
        # BEGIN SOLUTION 2.7: ValueError for x and y of different lengths or a batch_size below 1; keep the settings and the loader's own generator np.random.default_rng(seed)
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y):
            raise ValueError(f"x and y must hold the same number of samples, got {len(x)} and {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        # The loader's own generator: its sequence of permutations is not disturbed by anyone else.
        self.rng = np.random.default_rng(seed)
        # END SOLUTION

    def __len__(self) -> int:
        """The number of batches in one epoch."""
        # BEGIN SOLUTION 2.7: the number of batches one epoch yields, with and without drop_last
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        # END SOLUTION

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the batches of one epoch: ``x_batch`` (B, ...) and ``y_batch`` (B, ...), B <= batch_size."""
        # BEGIN SOLUTION 2.7: one order for the whole epoch (one self.rng.permutation(N) draw when shuffling), then batches of consecutive pieces of it, by index arrays
        n = len(self.x)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]
        # END SOLUTION


def train_test_split(x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle the samples and split them into ``x_train, x_test, y_train, y_test`` (scikit-learn's order).

    The shuffled order is ``np.random.default_rng(seed).permutation(N)``: its first
    ``n_test = ceil(test_fraction * N)`` indices (scikit-learn's rounding) are the test set, the other
    ``N - n_test`` the train set, both in that order. Each sample lands in exactly one of the two, and
    pairs (x[i], y[i]) stay together. The same seed gives the same split.
    """
    # BEGIN SOLUTION 2.7: validate the arguments; one np.random.default_rng(seed).permutation(N) draw decides the split, as the docstring says
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must hold the same number of samples, got {len(x)} and {len(y)}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = math.ceil(test_fraction * len(x))
    test, train = order[:n_test], order[n_test:]
    return x[train], x[test], y[train], y[test]
    # END SOLUTION


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
        # BEGIN SOLUTION 2.7: per-feature statistics, computed in float64, with a std of 1 for (nearly) constant features
        x = np.asarray(x, dtype=np.float64)  # float32 sums of thousands of values lose digits
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        self.std = np.where(std < self.eps, 1.0, std)
        return self
        # END SOLUTION

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` with the fitted statistics; a floating ``x`` keeps its dtype."""
        # BEGIN SOLUTION 2.7: apply the fitted statistics (an error before fit); a floating x keeps its dtype
        if self.mean is None:
            raise ValueError("Standardizer.transform() called before fit(): fit it on the training set first")
        x = np.asarray(x)
        dtype = x.dtype if x.dtype.kind == "f" else np.float32
        return ((x - self.mean) / self.std).astype(dtype)
        # END SOLUTION

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
    # BEGIN SOLUTION 2.7: all arms at once as (K, n) grids (no loop over points); the noise is one rng.standard_normal((K, n)) draw; arm after arm in the result
    rng = np.random.default_rng(seed)
    r = np.broadcast_to(np.arange(1, n_per_class + 1) / n_per_class, (n_classes, n_per_class))  # (K, n)
    k = np.arange(n_classes)[:, None]  # (K, 1)
    t = 4.0 * r + 2.0 * np.pi * k / n_classes + noise * rng.standard_normal((n_classes, n_per_class))
    x = np.stack([r * np.sin(t), r * np.cos(t)], axis=-1).reshape(-1, 2)  # (K*n, 2), arm after arm
    y = np.repeat(np.arange(n_classes), n_per_class)  # (K*n,)
    return x.astype(np.float32), y.astype(np.int64)
    # END SOLUTION


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits that ship with scikit-learn (no download): 1797 images, classes 0-9.

    Returns ``x`` (1797, 64) float32, each pixel's ink level 0..16 divided by 16 into [0, 1], and
    ``y`` (1797,) int64 labels.
    """
    # BEGIN SOLUTION 2.7: scikit-learn's bundled digits (sklearn.datasets.load_digits), scaled to [0, 1], in the documented dtypes
    # Imported here, not at the top: scikit-learn takes a second to import and only this function needs it.
    from sklearn.datasets import load_digits as sklearn_load_digits

    images, labels = sklearn_load_digits(return_X_y=True)  # (1797, 64) float64 in 0..16, (1797,) int
    return (images / 16.0).astype(np.float32), labels.astype(np.int64)
    # END SOLUTION
