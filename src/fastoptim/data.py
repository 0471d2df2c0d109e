"""Mini-batches: one epoch of a data set, in batches of rows.

batch_size = m (the number of rows) is batch gradient descent, 1 is stochastic gradient
descent, anything between is mini-batch gradient descent. ``suggest_batch_size`` applies
the lectures' rule for choosing it.
"""
import numbers

import numpy as np

__all__ = ["minibatches", "suggest_batch_size"]

BATCH_GD_MAX_ROWS = 2000                 # at most this many rows: use them all in each step
SUGGESTED_BATCH_SIZES = (512, 256, 128, 64)   # powers of two, largest first
DEFAULT_MEMORY_BUDGET = 256 * 2**20     # bytes one batch may take


def minibatches(X, Y=None, batch_size=64, shuffle=True, seed=None, drop_last=False):
    """Yield one epoch of mini-batches of the rows of X (and the matching rows of Y).

    Every row appears in exactly one batch per epoch; batches hold ``batch_size`` rows,
    except the last one, which holds the remainder (m % batch_size rows) unless
    ``drop_last`` leaves it out. Yields ``X_batch`` when Y is None, else
    ``(X_batch, Y_batch)`` with row i of one matching row i of the other.

    shuffle=False yields views of X and Y in order (no copy); shuffle=True permutes the
    rows and yields copies. ``seed``: an int for a reproducible order (the same order every
    epoch), a numpy.random.Generator to draw a new order per epoch from one stream (pass
    the same generator each epoch), or None for a fresh random order.

        rng = np.random.default_rng(0)
        for epoch in range(10):
            for xb, yb in minibatches(X, Y, batch_size=64, seed=rng):
                opt.step(gradient(params, xb, yb))

    Arguments are checked when it is called, not at the first batch.
    """
    X = _as_rows("X", X)
    m = X.shape[0]
    if Y is not None:
        Y = _as_rows("Y", Y)
        if Y.shape[0] != m:
            raise ValueError(f"X and Y must have the same number of rows, got {m} and "
                             f"{Y.shape[0]}")
    batch_size = _check_count("batch_size", batch_size)
    if m == 0:
        raise ValueError("X has no rows: there is nothing to batch")
    if drop_last and batch_size > m:
        raise ValueError(f"batch_size={batch_size} is more than the {m} rows, so "
                         "drop_last=True would give no batch at all")
    order = np.random.default_rng(seed).permutation(m) if shuffle else None
    return _batches(X, Y, batch_size, order, drop_last)


def _batches(X, Y, batch_size, order, drop_last):
    m = X.shape[0]
    stop = m - m % batch_size if drop_last else m
    for lo in range(0, stop, batch_size):
        hi = min(lo + batch_size, m)
        rows = slice(lo, hi) if order is None else order[lo:hi]
        yield X[rows] if Y is None else (X[rows], Y[rows])


def suggest_batch_size(m, sample_nbytes, memory_budget=DEFAULT_MEMORY_BUDGET):
    """A batch size for m training rows of sample_nbytes bytes each (the lectures' rule).

    The whole set (batch gradient descent) when m <= 2000 and it fits in memory_budget
    bytes; otherwise the largest of 512, 256, 128, 64 whose batch fits
    (batch_size * sample_nbytes <= memory_budget), but never more than m. Raises
    ValueError, saying why, when not even 64 rows (or m, if fewer) fit.

        >>> suggest_batch_size(1000, 3072), suggest_batch_size(50_000, 3072)
        (1000, 512)
    """
    m = _check_count("m", m)
    sample_nbytes = _check_count("sample_nbytes", sample_nbytes)
    memory_budget = _check_count("memory_budget", memory_budget)
    if m <= BATCH_GD_MAX_ROWS and m * sample_nbytes <= memory_budget:
        return m
    for size in SUGGESTED_BATCH_SIZES:
        size = min(size, m)
        if size * sample_nbytes <= memory_budget:
            return size
    smallest = min(SUGGESTED_BATCH_SIZES[-1], m)
    fits = memory_budget // sample_nbytes
    raise ValueError(f"no suggested batch fits: even {smallest} rows of {sample_nbytes} bytes "
                     f"take {smallest * sample_nbytes} bytes, more than memory_budget="
                     f"{memory_budget}; raise memory_budget, or choose batch_size yourself ("
                     + (f"at most {fits} rows fit)" if fits else "not even one row fits)"))


def _as_rows(name, a):
    a = a if isinstance(a, np.ndarray) else np.asarray(a)
    if a.ndim == 0:
        raise ValueError(f"{name} must have rows (at least one dimension), got a scalar")
    return a


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)
