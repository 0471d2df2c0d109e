"""Exponentially weighted moving averages: of a whole series (``ewma``) and running (``EWMA``).

The lectures' average, v_0 = 0, v_t = beta*v_{t-1} + (1-beta)*x_t, divided by 1 - beta^t
(bias correction), is pandas' ``ewm(alpha=1-beta, adjust=True).mean()``; both functions take
pandas' arguments as well, with pandas' rules:

    pandas Series.ewm(...).mean()          fastoptim
    com=c / span=s / halflife=h / alpha=a  the same keyword (or beta = 1 - alpha, the lectures')
    adjust=True (default)                  adjust=True (default): the bias-corrected average
    adjust=False                           adjust=False: y_0 = x_0, y_t = (1-a) y_{t-1} + a x_t
    ignore_na=False / True                 the same
    min_periods=k                          the same
    times=t, halflife=h                    the same (datetime64 or numeric times)
    (none)                                 bias_correction=False: the lectures' v_t, from 0

Missing values -- NaN, +-inf (as pandas), None and pd.NA in pandas input -- add nothing:
the average carries over them, and their steps still decay the old weight unless
ignore_na=True. Values are NaN before the first observation and while fewer than
min_periods observations have been seen.

Arithmetic: float64, also for float32 data (pandas' accuracy; the result stays float32,
rounded once), unless float32_arithmetic=True (float32 data only: faster on many series,
errors growing like float32's epsilon times 1/(1-beta)). Both forms run the compiled scan
``ewma_scan`` or its NumPy twin (``backend=``), which agree bit for bit; so do the two
forms with each other.
"""
import datetime
import numbers
import operator
import sys

import numpy as np

from fastoptim._backend import backend_name, resolve_backend
from fastoptim._checks import check_axis

__all__ = ["ewma", "EWMA"]

RATE_NAMES = ("beta", "com", "span", "halflife", "alpha")


def ewma(x, beta=None, bias_correction=True, axis=0, backend="auto", *, com=None, span=None,
         halflife=None, alpha=None, adjust=True, ignore_na=False, min_periods=0, times=None,
         float32_arithmetic=False, threads=None, out=None):
    """The exponentially weighted moving average of x along ``axis``, one value per step.

    x: array_like, a pandas Series or DataFrame; time along ``axis``, every other axis an
    independent series (a (T, K) array or DataFrame is K series of length T). A Series or
    DataFrame comes back as one, with its index and columns; anything else as a NumPy
    array of x's shape. float32 and float64 keep their dtype (pandas returns float64 for
    float32); other real numbers become float64.

    The decay: exactly one of ``beta`` (the lectures': alpha = 1 - beta), ``com``
    (alpha = 1/(1+com)), ``span`` (alpha = 2/(span+1)), ``halflife`` (alpha =
    1 - exp(-ln 2/halflife)) or ``alpha`` (0 < alpha <= 1), as pandas' ``ewm`` takes them.
    With ``times`` (datetime64, or numbers, one per step, non-decreasing), ``halflife`` is
    a duration (a timedelta, a string such as "2 days" with pandas installed, or a number
    for numeric times) and a step of length dt decays the old weight by 0.5**(dt/halflife);
    with adjust=True one of com/span/alpha/beta may be given besides, as in pandas, making
    the decay (1 - alpha)**(dt/halflife).

    adjust: True, the weighted mean of the observations so far (weights (1-alpha)^age) --
    the lectures' bias-corrected average; False, pandas' recursion from the first
    observation, y_t = (1-alpha) y_{t-1} + alpha x_t. bias_correction=False (adjust=True
    only): the lectures' uncorrected v_t, which starts from 0. ignore_na, min_periods:
    pandas'. float32_arithmetic: average float32 data in float32 (default: in float64).
    threads: at most this many threads, each taking whole series (default: all cores).
    out: an ndarray to write the average into instead of a new one (repeated averages then
    skip the new pages a fresh result costs): x's shape, the result's dtype, writable, not
    overlapping x, and F-ordered where x's values are (a DataFrame's float columns, an
    F-ordered array), C-ordered otherwise -- as ``np.empty_like(x)``, or
    ``np.empty_like(df.to_numpy())``, makes it. The result is out itself, or a
    Series/DataFrame over it.

        >>> ewma([1.0, 2.0, 3.0], beta=0.5)            # = pandas ewm(alpha=0.5).mean()
        array([1.        , 1.66666667, 2.42857143])
        >>> ewma([1.0, 2.0, 4.0, 8.0], com=2, adjust=False)
        array([1.        , 1.33333333, 2.22222222, 4.14814815])
    """
    frame = _pandas_frame(x)
    values = _frame_values(x) if frame else _as_float_array(x, "x")
    if values.ndim == 0:
        raise ValueError("x is a scalar: give a series (an array with a time axis); for one "
                         "observation at a time use EWMA(beta).update(x)")
    axis = check_axis(values.ndim, axis)
    rates = _decay_rates(dict(beta=beta, com=com, span=span, halflife=halflife, alpha=alpha),
                         adjust=adjust, times=times, length=values.shape[axis])
    kernels = resolve_backend(backend)
    # scan in the layout x has: a DataFrame's columns are usually contiguous (F order)
    transposed = values.ndim > 1 and values.flags.f_contiguous and not values.flags.c_contiguous
    series = values.T if transposed else np.ascontiguousarray(values)
    average = np.empty_like(series) if out is None else _check_out(out, values, transposed)
    kernels.ewma_scan(average, series, beta=rates.beta, alpha=rates.alpha, adjust=adjust,
                      bias_correction=bias_correction, ignore_na=ignore_na,
                      min_periods=_check_min_periods(min_periods), decay=rates.decay,
                      float32_arithmetic=float32_arithmetic, threads=threads,
                      axis=values.ndim - 1 - axis if transposed else axis)
    average = average.T if transposed else average
    if out is not None and frame is None:
        return out
    if frame == "Series":
        return type(x)(average, index=x.index, name=x.name, copy=False)
    if frame == "DataFrame":
        return type(x)(average, index=x.index, columns=x.columns, copy=False)
    return average


class EWMA:
    """The running form: ``update(x)`` folds in one observation and returns the current value.

    Takes ewma's decay and options (not ``times``: each update is one step). An observation
    is a scalar or an array of any shape; the first one fixes the shape and dtype (as ewma
    converts), later ones must have that shape and are cast to that dtype; NaN and inf are
    missing values. Fed x[0], x[1], ... it gives exactly (to the bit) ewma(x, ...). The
    value is NaN until an observation (and min_periods of them) has been seen. A failed
    ``update`` changes nothing.

        >>> avg = EWMA(0.9)
        >>> print(avg.update(10.0), avg.update(20.0), avg.step)
        10.0 15.263157894736842 2
    """

    def __init__(self, beta=None, bias_correction=True, backend="auto", *, com=None, span=None,
                 halflife=None, alpha=None, adjust=True, ignore_na=False, min_periods=0,
                 float32_arithmetic=False, threads=None):
        given = dict(beta=beta, com=com, span=span, halflife=halflife, alpha=alpha)
        self._rates = _decay_rates(given, adjust=adjust, times=None, length=0)
        self.beta, self.alpha = self._rates.beta, self._rates.alpha
        self.adjust, self.bias_correction = bool(adjust), bool(bias_correction)
        self.ignore_na, self.float32_arithmetic = bool(ignore_na), bool(float32_arithmetic)
        self.min_periods = _check_min_periods(min_periods)
        self.threads = threads
        if not self.adjust and not self.bias_correction:
            raise ValueError("bias_correction=False (the lectures' average from 0) applies "
                             "with adjust=True only; adjust=False starts from the first value")
        self._kernels = resolve_backend(backend)
        self.backend = backend_name(self._kernels)
        self.reset()

    def reset(self):
        """Forget every observation (step 0, no value; the next one may have a new shape)."""
        self._state = None      # (mean, weight, count) of ewma_scan, one entry per element
        self._value = None
        self.step = 0

    @property
    def value(self):
        """The current average (a copy; a NumPy scalar for scalar observations), or None
        before the first update."""
        return None if self._value is None else self._value.copy()[()]

    def update(self, x):
        """Fold in one observation x and return the current value."""
        value = _as_float_array(x, "x")
        if self._state is None:
            if self.float32_arithmetic and value.dtype != np.float32:
                raise ValueError(f"float32_arithmetic applies to float32 data, got {value.dtype}")
            arithmetic = np.float32 if self.float32_arithmetic else np.float64
            state = (np.zeros(value.shape, arithmetic), np.zeros(value.shape, arithmetic),
                     np.zeros(value.shape, np.int64))
            dtype = value.dtype
        else:
            state = self._state     # a failed kernel call writes nothing
            dtype = self._value.dtype
            if value.shape != self._value.shape:
                raise ValueError(f"x has shape {value.shape} but this EWMA averages arrays "
                                 f"of shape {self._value.shape} (call reset() to start over)")
        series = np.asarray(value, dtype=dtype, order="C")[np.newaxis]
        average = np.empty_like(series)
        self._kernels.ewma_scan(average, series, *state, beta=self.beta, alpha=self.alpha,
                                adjust=self.adjust, bias_correction=self.bias_correction,
                                ignore_na=self.ignore_na, min_periods=self.min_periods,
                                float32_arithmetic=self.float32_arithmetic,
                                threads=self.threads)
        self._state, self._value = state, average[0]
        self.step += 1
        return self.value

    def __repr__(self):
        options = [self._rates.given]
        for name, default in (("adjust", True), ("bias_correction", True), ("ignore_na", False),
                              ("min_periods", 0), ("float32_arithmetic", False)):
            if getattr(self, name) != default or name == "bias_correction":
                options.append(f"{name}={getattr(self, name)}")
        options.append(f"step={self.step}")
        if self._value is not None:
            options.append(f"value={float(self._value):.6g}" if self._value.ndim == 0 else
                           f"shape={self._value.shape}, dtype={self._value.dtype}")
        return f"EWMA({', '.join(options)})"


# -- the decay -------------------------------------------------------------------------------

class _Rates:
    """beta (decay per step) and alpha (a new observation's weight) in double, as pandas
    derives them; decay: one factor per step from ``times``, or None; given: for repr."""

    def __init__(self, beta, alpha, decay, given):
        self.beta, self.alpha, self.decay, self.given = beta, alpha, decay, given


def _decay_rates(given, *, adjust, times, length):
    named = {name: value for name, value in given.items() if value is not None}
    if times is None:
        if len(named) != 1:
            raise ValueError("give exactly one of beta, com, span, halflife, alpha "
                             f"(got {', '.join(named) or 'none'})")
        (name, value), = named.items()
        if name == "halflife" and _is_duration(value):
            raise ValueError("halflife can be a duration only with times; without times "
                             "it counts steps (a number)")
        beta, alpha = _beta_alpha(name, value)
        return _Rates(beta, alpha, None, f"{name}={value:g}")
    halflife = named.pop("halflife", None)
    if halflife is None:
        raise ValueError("times needs halflife: the duration over which a weight halves")
    if len(named) > 1 or (named and not adjust):
        raise ValueError("with times, at most one of beta, com, span, alpha may be given "
                         "besides halflife, and only with adjust=True (as in pandas)")
    beta, alpha = _beta_alpha(*named.popitem()) if named else (0.5, 0.5)
    steps = _time_steps(times, halflife, length)
    decay = np.empty(length)
    decay[1:] = beta ** steps       # decay[0] meets a weight of 0 (no observation yet)
    decay[:1] = 1.0
    return _Rates(beta, alpha, decay, f"halflife={halflife}")


def _beta_alpha(name, value):
    """(beta, alpha) in double. pandas turns every parameterization into com and then
    alpha = 1/(1+com); the lectures' beta gives alpha = 1 - beta (beta itself kept)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    bounds = {"beta": (0.0 <= value < 1.0, "in [0, 1)"), "com": (value >= 0.0, ">= 0"),
              "span": (value >= 1.0, ">= 1"), "halflife": (value > 0.0, "> 0"),
              "alpha": (0.0 < value <= 1.0, "in (0, 1]")}
    ok, rule = bounds[name]
    if not ok:   # also refuses NaN
        raise ValueError(f"{name} must be {rule}, got {value}")
    if name == "beta":
        return value, 1.0 - value
    if name == "com":
        com = value
    elif name == "span":
        com = (value - 1) / 2
    elif name == "halflife":
        com = 1 / (1 - float(np.exp(np.log(0.5) / value))) - 1
    else:
        com = (1 - value) / value
    alpha = 1.0 / (1.0 + com)
    return 1.0 - alpha, alpha


def _is_duration(value):
    return isinstance(value, (str, datetime.timedelta, np.timedelta64))   # pd.Timedelta too


def _time_steps(times, halflife, length):
    """The time between consecutive steps in halflives (float64, length - 1 of them)."""
    t = _times_array(times)
    if t.shape != (length,):
        raise ValueError(f"times must hold one time per step ({length}), got shape {t.shape}")
    if t.dtype.kind == "M":
        if np.isnat(t).any():
            raise ValueError("times holds NaT")
        if not _is_duration(halflife):
            raise TypeError("with datetime64 times, halflife must be a duration (a timedelta, "
                            f"numpy.timedelta64 or a string), got {type(halflife).__name__}")
        unit = np.datetime_data(t.dtype)[0]
        scale = _as_timedelta64(halflife) / np.timedelta64(1, unit)
        steps = np.diff(t.view(np.int64)).astype(np.float64)   # exact: integer differences
    elif t.dtype.kind in "iuf":
        if _is_duration(halflife) or isinstance(halflife, bool) or \
                not isinstance(halflife, numbers.Real):
            raise TypeError("with numeric times, halflife must be a number in their unit, got "
                            f"{type(halflife).__name__}")
        t = t.astype(np.float64)
        if not np.isfinite(t).all():
            raise ValueError("times must be finite")
        scale = float(halflife)
        steps = np.diff(t)
    else:
        raise TypeError(f"times must be datetime64 or numbers, got dtype {t.dtype}")
    if not scale > 0:
        raise ValueError(f"halflife must be > 0, got {halflife}")
    if (steps < 0).any():
        raise ValueError("times must be non-decreasing")
    return steps / scale


def _times_array(times):
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(times, (pd.Series, pd.Index)) or \
            np.asarray(times).dtype == object:
        if pd is None:
            raise TypeError("times must be datetime64 or numbers")
        index = pd.DatetimeIndex(times)
        return (index.tz_convert(None) if index.tz is not None else index).to_numpy()
    return np.asarray(times)


def _as_timedelta64(value):
    if isinstance(value, str):
        pd = sys.modules.get("pandas")
        if pd is None:
            raise TypeError(f"halflife {value!r} is a string: give a datetime.timedelta or "
                            "numpy.timedelta64 (strings need pandas)")
        value = pd.Timedelta(value)
    return np.timedelta64(value)


def _check_min_periods(min_periods):
    if min_periods is None:
        return 0
    min_periods = operator.index(min_periods)
    if min_periods < 0:
        raise ValueError(f"min_periods must be >= 0, got {min_periods}")
    return min_periods


# -- input and output ------------------------------------------------------------------------

def _pandas_frame(x):
    """"Series", "DataFrame", or None for anything else (pandas stays optional)."""
    pd = sys.modules.get("pandas")
    if pd is not None:
        for kind in ("Series", "DataFrame"):
            if isinstance(x, getattr(pd, kind)):
                return kind
    return None


def _frame_values(x):
    """A Series' or DataFrame's values as a float array, missing values (None, pd.NA) as
    NaN; numpy-backed numeric columns of one kind without a copy."""
    values = x.to_numpy()
    if values.dtype.kind in "biuf":
        return _as_float_array(values, "x")
    # nullable (extension) dtypes, columns of different kinds (bool and float), or worse
    names, dtypes = ([x.name], [x.dtype]) if x.ndim == 1 else (x.columns, x.dtypes)
    for name, dtype in zip(names, dtypes):
        if dtype.kind not in "biuf":
            raise TypeError(f"x holds non-numeric data ({name!r}: dtype {dtype})")
    return x.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_out(out, values, transposed):
    """ewma's out, checked against x's values before anything is written; returned as the
    scan sees it (transposed like the series when they are)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != values.shape or out.dtype != values.dtype:
        raise ValueError(f"out must have x's shape {values.shape} and the result's dtype "
                         f"{values.dtype}, got shape {out.shape}, dtype {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    order = "F" if transposed else "C"
    if not (out.flags.f_contiguous if transposed else out.flags.c_contiguous):
        raise ValueError(f"out must be {order}-contiguous here, as x's values are: e.g. "
                         f"numpy.empty({values.shape}, {values.dtype}, order={order!r})")
    if np.may_share_memory(out, values):
        raise ValueError("out overlaps x: give it memory of its own")
    return out.T if transposed else out


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

