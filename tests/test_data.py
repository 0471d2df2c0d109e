"""fastoptim.data: mini-batches cover each row once per epoch, aligned, reproducibly; and the
lectures' batch-size rule."""
import numpy as np
import pytest

from fastoptim.data import minibatches, suggest_batch_size


def dataset(m, features=3):
    """Row i of X holds i (and i + 0.5, ...) so a batch tells which rows it holds; Y[i] = i."""
    X = np.arange(m, dtype=np.float64)[:, None] + np.arange(features) / 2
    Y = np.arange(m)
    return X, Y


def rows_of(batch):
    return batch[:, 0].astype(np.int64)


# -- coverage and alignment ----------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("m,batch_size", [(1, 1), (7, 1), (7, 3), (64, 64), (100, 64),
                                          (1000, 7), (1000, 1000), (10, 25)])
def test_each_row_once_per_epoch_and_aligned(m, batch_size, shuffle):
    X, Y = dataset(m)
    batches = list(minibatches(X, Y, batch_size=batch_size, shuffle=shuffle, seed=0))
    sizes = [len(xb) for xb, _ in batches]
    full, rest = divmod(m, batch_size)
    assert sizes == [batch_size] * full + ([rest] if rest else [])
    for xb, yb in batches:
        assert len(xb) == len(yb)
        np.testing.assert_array_equal(rows_of(xb), yb)        # X and Y rows match
        np.testing.assert_array_equal(xb, X[yb])               # whole rows, unchanged
    seen = np.concatenate([yb for _, yb in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(m))  # every row exactly once
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(m))       # in order


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("m,batch_size", [(100, 64), (1000, 7), (64, 64), (65, 64)])
def test_drop_last_gives_only_full_batches(m, batch_size, shuffle):
    X, Y = dataset(m)
    batches = list(minibatches(X, Y, batch_size=batch_size, shuffle=shuffle, seed=1,
                               drop_last=True))
    assert len(batches) == m // batch_size
    assert all(len(xb) == len(yb) == batch_size for xb, yb in batches)
    seen = np.concatenate([yb for _, yb in batches])
    assert len(np.unique(seen)) == len(seen) == m // batch_size * batch_size


def test_batch_gd_and_sgd_extremes():
    X, Y = dataset(50)
    (whole,) = list(minibatches(X, batch_size=50, shuffle=False))
    np.testing.assert_array_equal(whole, X)                      # batch gradient descent
    singles = list(minibatches(X, Y, batch_size=1, seed=3))      # stochastic gradient descent
    assert len(singles) == 50 and all(len(xb) == 1 for xb, _ in singles)


def test_without_y_yields_arrays():
    X, _ = dataset(10)
    batches = list(minibatches(X, batch_size=4, shuffle=False))
    assert all(isinstance(b, np.ndarray) for b in batches)
    assert [len(b) for b in batches] == [4, 4, 2]


def test_multidimensional_rows_and_lists():
    X = np.arange(10 * 2 * 4).reshape(10, 2, 4)
    Y = [[i, -i] for i in range(10)]
    for xb, yb in minibatches(X, Y, batch_size=3, seed=0):
        assert xb.shape[1:] == (2, 4) and yb.shape[1:] == (2,)
        np.testing.assert_array_equal(xb[:, 0, 0] // 8, yb[:, 0])


# -- copies, views, reproducibility --------------------------------------------------------


def test_no_shuffle_yields_views_and_shuffle_yields_copies():
    X, Y = dataset(20)
    for xb, yb in minibatches(X, Y, batch_size=8, shuffle=False):
        assert np.shares_memory(xb, X) and np.shares_memory(yb, Y)
    for xb, yb in minibatches(X, Y, batch_size=8, shuffle=True, seed=0):
        assert not np.shares_memory(xb, X) and not np.shares_memory(yb, Y)
        xb[:] = -1   # writing a copy leaves the data set alone
    np.testing.assert_array_equal(X, dataset(20)[0])


def order(seed, m=1000, batch_size=64):
    X, Y = dataset(m)
    return np.concatenate([yb for _, yb in minibatches(X, Y, batch_size=batch_size,
                                                       seed=seed)])


def test_seed_makes_the_order_reproducible():
    np.testing.assert_array_equal(order(42), order(42))
    assert not np.array_equal(order(42), order(43))
    assert not np.array_equal(order(42), np.arange(1000))       # it does shuffle
    assert not np.array_equal(order(None), order(None))


def test_a_generator_gives_a_new_order_each_epoch_reproducibly():
    rng = np.random.default_rng(7)
    first, second = order(rng), order(rng)
    assert not np.array_equal(first, second)
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(order(rng), first)
    np.testing.assert_array_equal(order(rng), second)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(Y=np.arange(9)), ValueError, "same number of rows, got 10 and 9"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=-5), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=2.0), TypeError, "batch_size must be an int"),
    (dict(batch_size=True), TypeError, "batch_size must be an int"),
    (dict(batch_size=11, drop_last=True), ValueError, "no batch at all"),
    (dict(Y=np.float64(3)), ValueError, "Y must have rows"),
])
def test_refuses_bad_arguments_when_called(kwargs, error, match):
    X, _ = dataset(10)
    with pytest.raises(error, match=match):
        minibatches(X, **kwargs)   # raised at the call, before any batch is asked for


def test_refuses_scalars_and_empty_sets():
    with pytest.raises(ValueError, match="X must have rows"):
        minibatches(np.float64(1.0))
    with pytest.raises(ValueError, match="no rows"):
        minibatches(np.empty((0, 3)))


# -- suggest_batch_size ----------------------------------------------------------------------


@pytest.mark.parametrize("m", [1, 500, 2000])
def test_small_sets_use_batch_gradient_descent(m):
    assert suggest_batch_size(m, sample_nbytes=4 * 784) == m


@pytest.mark.parametrize("m", [2001, 60_000, 10**9])
def test_large_sets_use_512_when_it_fits(m):
    assert suggest_batch_size(m, sample_nbytes=4 * 784) == 512


@pytest.mark.parametrize("budget", [64_000, 100_000, 127_999, 128_000, 256_000, 300_000,
                                    511_999, 512_000, 10**9])
def test_largest_power_of_two_that_fits(budget):
    fitting = [size for size in (64, 128, 256, 512) if size * 1000 <= budget]
    assert suggest_batch_size(10**5, sample_nbytes=1000, memory_budget=budget) == max(fitting)


def test_small_set_that_does_not_fit_falls_back_to_a_power_of_two():
    assert suggest_batch_size(1500, sample_nbytes=1000, memory_budget=1_499_999) == 512
    assert suggest_batch_size(1500, sample_nbytes=1000, memory_budget=1_500_000) == 1500
    assert suggest_batch_size(100, sample_nbytes=1000, memory_budget=99_999) == 64


def test_says_why_when_nothing_fits():
    with pytest.raises(ValueError, match=r"64 rows of 1000 bytes take 64000 bytes.*"
                                         r"memory_budget=63999.*at most 63 rows"):
        suggest_batch_size(10**5, sample_nbytes=1000, memory_budget=63_999)
    with pytest.raises(ValueError, match="not even one row"):
        suggest_batch_size(10**5, sample_nbytes=1000, memory_budget=999)


@pytest.mark.parametrize("args,error,match", [
    ((0, 100), ValueError, "m must be >= 1"),
    ((10, 0), ValueError, "sample_nbytes must be >= 1"),
    ((10, 100, 0), ValueError, "memory_budget must be >= 1"),
    ((10.0, 100), TypeError, "m must be an int"),
    ((10, "100"), TypeError, "sample_nbytes must be an int"),
])
def test_suggest_refuses_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        suggest_batch_size(*args)
