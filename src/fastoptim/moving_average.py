"""Exponentially weighted moving averages: of a whole series (``ewma``) and running (``EWMA``).

    v_0 = 0,  v_t = beta*v_{t-1} + (1-beta)*x_t,  corrected value v_t / (1 - beta^t)

The average covers roughly the last 1/(1-beta) observations (beta = 0.9: ~10). Starting
from v_0 = 0 biases the first values toward 0; bias correction divides that out, and the
corrected series equals pandas ``DataFrame.ewm(alpha=1-beta, adjust=True).mean()``.

NaN policy: propagate. A NaN observation makes its value and every later value NaN, as the
recurrence says (pandas instead skips missing values); an infinity stays infinite, and
+inf then -inf gives NaN. Clean or fill the series first if that is not what you want.

Both forms run the compiled kernels (``ewma_scan``, ``ewma_step``) or their NumPy twins
(``backend=``), which agree bit for bit; so do the two forms with each other.
"""
import numbers

import numpy as np

from fastoptim import reference
from fastoptim._backend import resolve_backend

__all__ = ["ewma", "EWMA"]


def ewma(x, beta, bias_correction=True, axis=0, backend="auto"):
    """The EWMA of the series x along its time axis ``axis``, one value per observation.

    x: array_like, time along ``axis``; every other axis is an independent series (a (T, K)
    array is K series of length T, scanned together over contiguous rows). float32 and
    float64 keep their dtype; other real numbers (ints, bools, float16) become float64.
    Returns a new C-contiguous array of x's shape.

        >>> ewma([1.0, 2.0, 3.0], beta=0.5)            # = pandas ewm(alpha=0.5).mean()
        array([1.        , 1.66666667, 2.42857143])
    """
    beta = _check_beta(beta)
    bias_correction = bool(bias_correction)
    series = np.asarray(_as_float_array(x, "x"), order="C")
    if series.ndim == 0:
        raise ValueError("x is a scalar: give a series (an array with a time axis); for one "
                         "observation at a time use EWMA(beta).update(x)")
    kernels = resolve_backend(backend)
    average = np.empty_like(series)
    kernels.ewma_scan(average, series, beta=beta, bias_correction=bias_correction, axis=axis)
    return average


class EWMA:
    """The running form: ``update(x)`` folds in one observation and returns the current value.

    v <- beta*v + (1-beta)*x, from v = 0; value = v / (1 - beta^t) with bias_correction,
    t the number of updates (``step``). An observation is a scalar or an array of any
    shape; the first one fixes the shape and dtype (as ``ewma`` converts), later ones must
    have that shape and are cast to that dtype. Fed x[0], x[1], ... it gives exactly (to
    the bit) ``ewma(x, beta, bias_correction)``. A failed ``update`` changes nothing.

        >>> avg = EWMA(0.9)
        >>> print(avg.update(10.0), avg.update(20.0), avg.step)
        10.0 15.263157894736844 2
    """

    def __init__(self, beta, bias_correction=True, backend="auto"):
        self.beta = _check_beta(beta)
        self.bias_correction = bool(bias_correction)
        self._kernels = resolve_backend(backend)
        self.backend = "numpy" if self._kernels is reference else "c"
        self.reset()

    def reset(self):
        """Forget every observation (step 0, no value; the next one may have a new shape)."""
        self._average = None     # v, the uncorrected state
        self._beta_power = 1.0   # beta^step in double, a running product as in ewma_scan
        self.step = 0

    @property
    def value(self):
        """The current average (a copy; a NumPy scalar for scalar observations), or None
        before the first update."""
        if self._average is None:
            return None
        if not self.bias_correction:
            return self._average.copy()[()]
        # the Python float is rounded to the state's dtype, then one division, as in C
        with np.errstate(all="ignore"):
            return (self._average / (1.0 - self._beta_power))[()]

    def update(self, x):
        """Fold in one observation x and return the current value."""
        value = _as_float_array(x, "x")
        if self._average is None:
            average = np.zeros(value.shape, value.dtype)
        else:
            average = self._average
            if value.shape != average.shape:
                raise ValueError(f"x has shape {value.shape} but this EWMA averages arrays "
                                 f"of shape {average.shape} (call reset() to start over)")
        value = np.asarray(value, dtype=average.dtype, order="C")
        with np.errstate(all="ignore"):   # NaN/inf propagate silently with either backend
            self._kernels.ewma_step(average, value, beta=self.beta)
        self._average = average
        self._beta_power *= self.beta
        self.step += 1
        return self.value

    def __repr__(self):
        head = (f"EWMA(beta={self.beta:g}, bias_correction={self.bias_correction}, "
                f"step={self.step}")
        if self._average is None:
            return head + ")"
        if self._average.ndim == 0:
            return head + f", value={float(self.value):.6g})"
        return head + f", shape={self._average.shape}, dtype={self._average.dtype})"


def _check_beta(beta):
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a real number in [0, 1), got {type(beta).__name__}")
    beta = float(beta)
    if not 0.0 <= beta < 1.0:  # also refuses NaN
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    return beta


def _as_float_array(x, name):
    """x as an array of native float32 or float64 (no copy when it already is one)."""
    a = np.asarray(x)
    if a.dtype.kind == "f" and a.dtype.itemsize in (4, 8):
        return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))
    if a.dtype.kind in "biuf":
        return a.astype(np.float64)
    if a.dtype.kind == "c":
        raise TypeError(f"{name} is complex ({a.dtype}): average the real and imaginary "
                        "parts separately")
    raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")

