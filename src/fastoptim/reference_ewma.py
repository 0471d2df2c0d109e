"""The EWMA scan in NumPy: the specification of the compiled ``ewma_scan``, bit for bit.

``fastoptim.reference.ewma_scan`` is this module's ``ewma_scan``; the compiled backend
(loops/scan.h) performs the same IEEE operations in the same order, each rounded to the
arithmetic type, and both take their arguments through ``prepare_scan`` below, so the rules
and the error messages live in one place.
"""
import math
import operator
from typing import NamedTuple, Optional

import numpy as np

from fastoptim._checks import FLOAT32, FLOAT64, check_axis, check_call, check_threads
from fastoptim._kernel_specs import Role

__all__ = ["ewma_scan", "prepare_scan", "ScanPlan"]

STATE_NAMES = ("mean", "weight", "count")


class ScanPlan(NamedTuple):
    """One scan call's arguments, checked: the array viewed as (outer, length, inner) with
    time in the middle, the arithmetic dtype, and the per-call scalars in double."""
    axis: int
    outer: int
    length: int
    inner: int
    arithmetic: np.dtype        # of the averaging (and of the mean/weight state)
    beta: float
    alpha: float
    min_periods: int
    complement_weight: bool
    decay: Optional[np.ndarray]  # float64, one per time step, or None


def prepare_scan(average, series, mean, weight, count, *, beta, alpha, adjust,
                 bias_correction, ignore_na, min_periods, decay, float32_arithmetic, axis,
                 threads):
    """Check a call of ewma_scan (either backend) before anything is written."""
    (average, series, _), = check_call((Role("average"), Role("series")), (average, series))
    dtype = average.dtype
    if dtype not in (FLOAT32, FLOAT64) or series.dtype != dtype:
        raise TypeError(f"average and series must both be float32 or both float64, got "
                        f"{dtype} and {series.dtype}")
    axis = check_axis(series.ndim, axis)
    check_threads(threads)
    beta = _real("beta", beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    alpha = 1.0 - beta if alpha is None else _real("alpha", alpha)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if not adjust and not bias_correction:
        raise ValueError("bias_correction=False (the lectures' average from 0) applies with "
                         "adjust=True only; adjust=False starts from the first value")
    min_periods = operator.index(min_periods)
    if min_periods < 0:
        raise ValueError(f"min_periods must be >= 0, got {min_periods}")
    if float32_arithmetic and dtype != np.float32:
        raise ValueError(f"float32_arithmetic applies to float32 data, got {dtype}")
    arithmetic = np.dtype(np.float32 if float32_arithmetic else np.float64)
    shape = series.shape[:axis] + series.shape[axis + 1:]
    _check_state(average, series, (mean, weight, count), shape, arithmetic)
    length = series.shape[axis]
    if decay is not None:
        decay = np.ascontiguousarray(decay, dtype=np.float64)
        if decay.shape != (length,):
            raise ValueError(f"decay must hold one value per time step ({length}), got "
                             f"shape {decay.shape}")
        if not np.all((decay >= 0) & (decay <= 1)):
            raise ValueError("decay values must be in [0, 1]")
    return ScanPlan(axis, math.prod(series.shape[:axis]), length,
                    math.prod(series.shape[axis + 1:]), arithmetic, beta, alpha,
                    min_periods, not adjust and alpha == 0.5, decay)


def _real(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _check_state(average, series, state, shape, arithmetic):
    given = [a is not None for a in state]
    if not any(given):
        return
    if not all(given):
        raise ValueError("mean, weight and count go together: give all three or none")
    named = list(zip(("average", "series") + STATE_NAMES, (average, series) + state))
    for i, (name, a) in enumerate(named[2:], 2):
        want = np.dtype(np.int64) if name == "count" else arithmetic
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
        if a.dtype != want:
            raise TypeError(f"{name} must have dtype {want} (the arithmetic's), got {a.dtype}")
        if a.shape != shape:
            raise ValueError(f"{name} must have the series' shape without its time axis, "
                             f"{shape}, got {a.shape}")
        if not (a.flags.c_contiguous and a.flags.aligned and a.flags.writeable):
            raise ValueError(f"{name} must be a C-contiguous, aligned, writable array")
        for other, b in named[:i]:      # each pair once; every state array is written
            if a.size and np.may_share_memory(a, b):
                raise ValueError(f"{name} shares memory with {other}: give each its own buffer")


def ewma_scan(average, series, mean=None, weight=None, count=None, *, beta, alpha=None,
              adjust=True, bias_correction=True, ignore_na=False, min_periods=1, decay=None,
              float32_arithmetic=False, axis=0, threads=None):
    """The exponentially weighted average of ``series`` along ``axis``, into ``average``.

    Each column (a position of the other axes, followed through time) is averaged alone.
    Its state: m, the average; w, m's weight, in units where a new observation weighs
    alpha (w = 1 - beta^t after t observations with adjust); n, the observations so far.
    It starts at m = w = n = 0, or from ``mean``, ``weight``, ``count`` (arrays of the
    series' shape without its time axis; given, they are read and then updated in place,
    so scanning a series in pieces gives the same bits as scanning it whole).

    Per time step, in the arithmetic type (float64, or float32 for float32 data with
    float32_arithmetic), the scalars rounded to it once and every operation rounded:

        d = beta, or decay[t] when given (a per-step decay, e.g. from irregular times)
        w_dec = w * d                    the old weight, decayed over this step
        nu = alpha, or 1 - w_dec         the new observation's weight (1 - w_dec with
                                         adjust=False and alpha = 1/2: pandas' rule there)
        den = w_dec + nu;  r = 1 / den
        x observed (finite):   a = w_dec * r;  b = 1 if w_dec == 0 else nu * r
                               w <- den with adjust, else 1;  n <- n + 1
        x missing (NaN, inf):  a = 1;  b = 0;  x taken as 0
                               w <- w with ignore_na, else w_dec
        m <- m if x == m else a * m + b * x
        value = m, or m * w without bias_correction;  NaN while n < max(min_periods, 1)

    m is pandas' ``ewm(alpha=alpha, adjust=..., ignore_na=...).mean()``: the weighted mean
    of the observations so far, a first observation taken exactly, an observation equal to
    the average leaving it unchanged. With adjust and bias_correction=False the value m * w
    is the lectures' uncorrected v_t = beta*v_{t-1} + (1-beta)*x_t from v_0 = 0 (missing
    values adding nothing). The value is rounded to the series' dtype once.

    A Python loop over time, vectorized over the columns: the oracle, not the fast path.
    """
    plan = prepare_scan(average, series, mean, weight, count, beta=beta, alpha=alpha,
                        adjust=adjust, bias_correction=bias_correction, ignore_na=ignore_na,
                        min_periods=min_periods, decay=decay,
                        float32_arithmetic=float32_arithmetic, axis=axis, threads=threads)
    ftype = plan.arithmetic.type
    x = np.moveaxis(series, plan.axis, 0)
    out = np.moveaxis(average, plan.axis, 0)    # a view: writing it writes average
    if mean is None:
        m = np.zeros(x.shape[1:], ftype)
        w = np.zeros(x.shape[1:], ftype)
        n = np.zeros(x.shape[1:], np.int64)
    else:
        m, w, n = mean.copy(), weight.copy(), count.copy()
    # Python floats meet arrays rounded to the arithmetic type (NEP 50), as C casts once
    beta, alpha = plan.beta, plan.alpha
    min_periods = max(plan.min_periods, 1)
    for t in range(plan.length):
        xt = x[t].astype(ftype)                 # exact: float32 -> float64 loses nothing
        observed = np.isfinite(xt)
        d = beta if plan.decay is None else ftype(plan.decay[t])
        w_dec = w * d
        nu = 1 - w_dec if plan.complement_weight else alpha
        den = w_dec + nu
        r = 1 / den
        a = np.where(observed, w_dec * r, ftype(1))
        b = np.where(observed, np.where(w_dec == 0, ftype(1), nu * r), ftype(0))
        updated = a * m + b * np.where(observed, xt, ftype(0))
        m = np.where(xt == m, m, updated)
        w = np.where(observed, den if adjust else ftype(1), w if ignore_na else w_dec)
        n = n + observed
        value = m if bias_correction else m * w
        out[t] = np.where(n >= min_periods, value, ftype(np.nan))
    if mean is not None:
        mean[...], weight[...], count[...] = m, w, n
