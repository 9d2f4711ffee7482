"""Exercise 2.7: the data pipeline: batches, splits, standardisation, spirals and digits."""

import math

import numpy as np
import pytest

from stage2_mlp.data import DataLoader, Standardizer, load_digits, make_spirals, train_test_split
from tests.helpers import assert_close

pytestmark = [
    pytest.mark.exercise("2.7"),
    pytest.mark.under_test("DataLoader.__iter__", "DataLoader.__init__", "DataLoader.__len__"),
]


def numbered_data(n, features=3):
    """x whose row i is full of i's (so a row tells which sample it is) and y = i."""
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None], features, axis=1)
    return x, np.arange(n, dtype=np.int64)


def epoch(loader):
    """The batches of one epoch as a list, each checked to keep (x[i], y[i]) pairs together."""
    batches = list(loader)
    for k, (xb, yb) in enumerate(batches):
        assert isinstance(xb, np.ndarray) and isinstance(yb, np.ndarray), (
            f"batch {k}: expected a pair of np.ndarray, got ({type(xb).__name__}, {type(yb).__name__})"
        )
        assert len(xb) == len(yb), f"batch {k}: x_batch has {len(xb)} samples but y_batch has {len(yb)}"
        assert np.array_equal(xb[:, 0], yb), (
            f"batch {k}: x_batch and y_batch are out of step: the rows of x are samples {xb[:, 0].astype(int)} "
            f"but the labels are of samples {yb}; index x and y with the same indices"
        )
    return batches


def order_of(batches):
    return np.concatenate([yb for _, yb in batches])


# ---------------------------------------------------------------------- DataLoader
@pytest.mark.parametrize("n, batch_size, drop_last, sizes", [
    (10, 4, False, [4, 4, 2]),
    (10, 4, True, [4, 4]),
    (12, 4, False, [4, 4, 4]),
    (12, 4, True, [4, 4, 4]),
    (3, 5, False, [3]),
    (3, 5, True, []),
    (7, 1, False, [1] * 7),
], ids=lambda v: str(v))
@pytest.mark.under_test("DataLoader.__len__", "DataLoader.__iter__")
def test_batch_sizes_and_len(n, batch_size, drop_last, sizes):
    x, y = numbered_data(n)
    loader = DataLoader(x, y, batch_size=batch_size, drop_last=drop_last)
    got = [len(yb) for _, yb in epoch(loader)]
    what = f"DataLoader(N={n}, batch_size={batch_size}, drop_last={drop_last})"
    assert got == sizes, f"{what}: expected batches of sizes {sizes}, got {got}"
    assert len(loader) == len(sizes), f"{what}: len(loader) should be {len(sizes)} (the number of batches), got {len(loader)}"


def test_batches_keep_feature_shape_and_dtype():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 2, 3)).astype(np.float32)
    y = rng.integers(0, 5, size=10)
    xb, yb = next(iter(DataLoader(x, y, batch_size=4, shuffle=True)))
    assert xb.shape == (4, 2, 3) and yb.shape == (4,), (
        f"x of shape (10, 2, 3), y (10,), batch_size=4: expected batches of shapes (4, 2, 3) and (4,), "
        f"got {xb.shape} and {yb.shape}"
    )
    assert xb.dtype == np.float32 and yb.dtype == y.dtype, (
        f"batches should keep the dtypes of x and y ({x.dtype}, {y.dtype}), got {xb.dtype} and {yb.dtype}"
    )


def test_without_shuffle_the_order_is_the_data_order():
    x, y = numbered_data(10)
    got = order_of(epoch(DataLoader(x, y, batch_size=3)))
    assert np.array_equal(got, np.arange(10)), f"shuffle=False: expected samples in order 0..9, got {got}"


@pytest.mark.parametrize("drop_last", [False, True])
def test_every_sample_once_per_epoch_with_shuffle(drop_last):
    n, batch_size = 23, 5
    x, y = numbered_data(n)
    loader = DataLoader(x, y, batch_size=batch_size, shuffle=True, drop_last=drop_last, seed=3)
    for k in range(3):
        seen = order_of(epoch(loader))
        expected_count = n - n % batch_size if drop_last else n
        assert len(seen) == expected_count, f"epoch {k}: expected {expected_count} samples, got {len(seen)}"
        assert len(np.unique(seen)) == len(seen), (
            f"epoch {k}: a sample appeared twice: {np.sort(seen)}; each epoch is one permutation of the samples"
        )
    assert not np.array_equal(seen, np.arange(expected_count)), "shuffle=True: the samples came in their original order"


def test_shuffle_is_a_new_order_every_epoch():
    x, y = numbered_data(50)
    loader = DataLoader(x, y, batch_size=8, shuffle=True, seed=0)
    orders = [order_of(epoch(loader)) for _ in range(3)]
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2]), (
        "shuffle=True: two epochs came in the same order; draw a new permutation at the start of every epoch"
    )


def test_shuffle_is_determined_by_the_seed():
    x, y = numbered_data(50)
    first = DataLoader(x, y, batch_size=8, shuffle=True, seed=7)
    second = DataLoader(x, y, batch_size=8, shuffle=True, seed=7)
    other = DataLoader(x, y, batch_size=8, shuffle=True, seed=8)
    for k in range(2):
        a, b, c = order_of(epoch(first)), order_of(epoch(second)), order_of(epoch(other))
        assert np.array_equal(a, b), f"epoch {k}: two loaders with seed=7 gave different orders:\n{a}\n{b}"
        assert not np.array_equal(a, c), f"epoch {k}: seeds 7 and 8 gave the same order {a}"


def test_shuffle_uses_the_loaders_own_generator():
    x, y = numbered_data(50)
    np.random.seed(0)
    a = order_of(epoch(DataLoader(x, y, batch_size=8, shuffle=True, seed=1)))
    np.random.seed(1)
    np.random.default_rng(123).random(10)
    b = order_of(epoch(DataLoader(x, y, batch_size=8, shuffle=True, seed=1)))
    assert np.array_equal(a, b), (
        "the order changed with NumPy's global random state: shuffle with the loader's own "
        "np.random.default_rng(seed), not np.random.shuffle / np.random.permutation"
    )


def test_the_order_is_the_generators_permutation():
    # The loader's k-th epoch is the k-th permutation drawn from np.random.default_rng(seed), so a student's
    # loader and the reference give the same batches (and the same training run) for the same seed.
    x, y = numbered_data(20)
    loader = DataLoader(x, y, batch_size=6, shuffle=True, seed=5)
    rng = np.random.default_rng(5)
    for k in range(2):
        expected = rng.permutation(20)
        got = order_of(epoch(loader))
        assert np.array_equal(got, expected), (
            f"epoch {k}: expected the order np.random.default_rng(5).permutation(20) gives "
            f"(permutation number {k + 1} of that generator) {expected}, got {got}"
        )


@pytest.mark.under_test("DataLoader.__init__")
def test_mismatched_lengths_are_refused():
    x, y = numbered_data(10)
    with pytest.raises(ValueError):
        DataLoader(x, y[:9], batch_size=4)


# ---------------------------------------------------------------------- train_test_split
@pytest.mark.parametrize("n, fraction", [(100, 0.2), (1797, 0.2), (10, 0.25), (7, 0.5)])
@pytest.mark.under_test("train_test_split")
def test_split_sizes_and_disjointness(n, fraction):
    x, y = numbered_data(n)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_fraction=fraction, seed=0)
    n_test = math.ceil(fraction * n)
    what = f"train_test_split(N={n}, test_fraction={fraction})"
    assert (len(x_train), len(x_test), len(y_train), len(y_test)) == (n - n_test, n_test, n - n_test, n_test), (
        f"{what}: expected {n - n_test} train and {n_test} test samples (n_test = ceil(test_fraction * N)), "
        f"got x_train {len(x_train)}, x_test {len(x_test)}, y_train {len(y_train)}, y_test {len(y_test)}"
    )
    assert np.array_equal(x_train[:, 0], y_train) and np.array_equal(x_test[:, 0], y_test), (
        f"{what}: the pairs (x[i], y[i]) were separated; index x and y with the same indices"
    )
    together = np.concatenate([y_train, y_test])
    assert np.array_equal(np.sort(together), np.arange(n)), (
        f"{what}: every sample must land in exactly one of train and test; samples in both: "
        f"{np.intersect1d(y_train, y_test)}, in neither: {np.setdiff1d(np.arange(n), together)}"
    )


@pytest.mark.under_test("train_test_split")
def test_split_shuffles_and_is_determined_by_the_seed():
    x, y = numbered_data(100)
    _, _, train_a, test_a = train_test_split(x, y, seed=0)
    _, _, train_b, test_b = train_test_split(x, y, seed=0)
    _, _, _, test_c = train_test_split(x, y, seed=1)
    assert np.array_equal(test_a, test_b) and np.array_equal(train_a, train_b), "the same seed gave two different splits"
    assert not np.array_equal(test_a, test_c), "seeds 0 and 1 gave the same split"
    assert not np.array_equal(test_a, np.arange(80, 100)) and not np.array_equal(test_a, np.arange(20)), (
        f"the test set is a block of consecutive samples {test_a}: shuffle before splitting "
        "(datasets are often sorted by class)"
    )


@pytest.mark.under_test("train_test_split")
def test_split_is_the_generators_permutation():
    # As for the loader: the same seed gives the student's code and the reference the same split.
    x, y = numbered_data(10)
    _, _, y_train, y_test = train_test_split(x, y, test_fraction=0.3, seed=4)
    order = np.random.default_rng(4).permutation(10)
    assert np.array_equal(y_test, order[:3]) and np.array_equal(y_train, order[3:]), (
        f"train_test_split(N=10, test_fraction=0.3, seed=4): with order = np.random.default_rng(4).permutation(10) "
        f"= {order}, expected test samples {order[:3]} and train samples {order[3:]}, got {y_test} and {y_train}"
    )


# ---------------------------------------------------------------------- Standardizer
@pytest.mark.under_test("Standardizer.fit", "Standardizer.transform")
def test_standardizer_matches_scikit_learn_and_handles_constant_features():
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((50, 4)) * [1.0, 10.0, 0.1, 1.0] + [0.0, 5.0, -3.0, 0.0]).astype(np.float32)
    x[:, 3] = 2.5  # a constant feature: std 0
    got = Standardizer().fit(x).transform(x)
    expected = StandardScaler().fit(x.astype(np.float64)).transform(x.astype(np.float64))
    assert got.dtype == np.float32, f"transform of float32 data should stay float32, got {got.dtype}"
    assert np.isfinite(got).all(), (
        "transform gave inf or nan: the constant feature (column 3) has std 0; use std 1 where std < eps"
    )
    assert_close(got, expected, "Standardizer().fit(x).transform(x) (compared with sklearn's StandardScaler)",
                 atol=1e-5, rtol=1e-5)
    assert_close(got.mean(axis=0), np.zeros(4), "the mean of each standardised feature", atol=1e-5)


@pytest.mark.under_test("Standardizer.fit", "Standardizer.transform")
def test_standardizer_uses_the_training_statistics_only():
    rng = np.random.default_rng(1)
    train = (rng.standard_normal((40, 3)) * 2 + 1).astype(np.float32)
    test = (rng.standard_normal((10, 3)) * 5 - 4).astype(np.float32)  # other mean and spread
    scaler = Standardizer().fit(train)
    got = scaler.transform(test)
    expected = (test.astype(np.float64) - train.mean(axis=0, dtype=np.float64)) / train.std(axis=0, dtype=np.float64)
    assert_close(got, expected, "transform(test) after fit(train): (test - train mean) / train std",
                 atol=1e-5, rtol=1e-5)
    assert_close(scaler.fit_transform(train), (train - train.mean(0)) / train.std(0),
                 "fit_transform(train)", atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------- spirals
@pytest.mark.parametrize("n_per_class, n_classes", [(100, 3), (50, 2), (10, 5)])
@pytest.mark.under_test("make_spirals")
def test_spirals_shapes_dtypes_and_balance(n_per_class, n_classes):
    x, y = make_spirals(n_per_class=n_per_class, n_classes=n_classes, noise=0.2, seed=0)
    n = n_per_class * n_classes
    what = f"make_spirals(n_per_class={n_per_class}, n_classes={n_classes})"
    assert x.shape == (n, 2) and y.shape == (n,), f"{what}: expected x (N, 2), y (N,) with N={n}, got {x.shape} and {y.shape}"
    assert x.dtype == np.float32 and y.dtype == np.int64, f"{what}: expected float32 x and int64 y, got {x.dtype}, {y.dtype}"
    counts = np.bincount(y, minlength=n_classes)
    assert counts.tolist() == [n_per_class] * n_classes, f"{what}: expected {n_per_class} samples of each class, got counts {counts}"
    radius = np.linalg.norm(x, axis=1)
    assert radius.max() <= 1 + 1e-6, f"{what}: points lie within radius 1 (the noise turns the angle only); got radius {radius.max():.3f}"


@pytest.mark.under_test("make_spirals")
def test_spirals_follow_the_formula_without_noise():
    x, y = make_spirals(n_per_class=5, n_classes=2, noise=0.0, seed=0)
    r = np.arange(1, 6) / 5
    expected = np.concatenate([np.stack([r * np.sin(4 * r + np.pi * k), r * np.cos(4 * r + np.pi * k)], axis=1)
                               for k in range(2)])
    assert_close(x, expected, "make_spirals(5, 2, noise=0): the points (r sin t, r cos t), r = (i + 1) / n, t = 4 r + 2 pi k / K",
                 atol=1e-6, rtol=1e-6)
    assert np.array_equal(y, [0] * 5 + [1] * 5), f"labels should be ordered by class, got {y}"


@pytest.mark.under_test("make_spirals")
def test_spirals_noise_is_seeded():
    a, _ = make_spirals(30, 3, noise=0.2, seed=0)
    b, _ = make_spirals(30, 3, noise=0.2, seed=0)
    c, _ = make_spirals(30, 3, noise=0.2, seed=1)
    assert np.array_equal(a, b), "the same seed gave two different spirals"
    assert not np.allclose(a, c), "seeds 0 and 1 gave the same spirals: draw the noise from np.random.default_rng(seed)"


@pytest.mark.under_test("make_spirals")
def test_spirals_are_not_linearly_separable_but_are_learnable():
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    x, y = make_spirals(100, 3, noise=0.1, seed=0)
    linear = LogisticRegression().fit(x, y).score(x, y)
    neighbours = KNeighborsClassifier(n_neighbors=3).fit(x, y).score(x, y)
    assert linear < 0.75, f"a linear classifier fits the spirals too well ({linear:.2f}): the arms should wind around each other"
    assert neighbours > 0.95, f"3-nearest-neighbours fits only {neighbours:.2f} of the spirals: each arm should be a thin curve"


# ---------------------------------------------------------------------- digits
@pytest.mark.under_test("load_digits")
def test_digits():
    from sklearn.datasets import load_digits as sklearn_load_digits

    x, y = load_digits()
    assert x.shape == (1797, 64) and y.shape == (1797,), f"expected x (1797, 64) and y (1797,), got {x.shape} and {y.shape}"
    assert x.dtype == np.float32 and y.dtype == np.int64, f"expected float32 x and int64 y, got {x.dtype} and {y.dtype}"
    assert x.min() == 0.0 and x.max() == 1.0, f"pixels should be scaled from 0..16 to [0, 1], got range [{x.min()}, {x.max()}]"
    assert sorted(np.unique(y).tolist()) == list(range(10)), f"expected the labels 0..9, got {np.unique(y)}"
    images, labels = sklearn_load_digits(return_X_y=True)
    assert_close(x, images / 16, "load_digits() x (sklearn's pixels / 16)", atol=1e-7, rtol=1e-6)
    assert np.array_equal(y, labels), "load_digits() y should be sklearn's labels, in sklearn's order"
