"""fastoptim.ewma / EWMA and the ewma_scan kernel: pandas' ewm().mean() in every mode (NaN
runs, parameterizations, adjust, ignore_na, min_periods, times, Series and DataFrame), the
lectures' recurrence, hand-computed cases, fast vs reference bit for bit in every layout
and mode, float32 accuracy, the running form, conversions and bad input."""
import inspect
from fractions import Fraction

import numpy as np
import pytest

from conftest import DTYPES, assert_same_bits, kernels, needs_kernels
from fastoptim import EWMA, ewma, reference

pd = pytest.importorskip("pandas")

DTYPE_IDS = ["float32", "float64"]

# every pandas parameterization, and the lectures' beta (alpha = 1 - beta); alpha = 1/2 with
# adjust=False has its own pandas rule after gaps (see test_complement_rule_of_pandas)
PARAMETERIZATIONS = [dict(com=2.5), dict(span=7), dict(halflife=3.0), dict(alpha=0.3),
                     dict(alpha=0.5), dict(beta=0.9)]
PARAM_IDS = ["com", "span", "halflife", "alpha", "alpha-half", "beta"]


def as_pandas_kwargs(kwargs):
    return {"alpha": 1 - kwargs["beta"]} if "beta" in kwargs else kwargs


def walk(shape, seed, dtype=np.float64):
    """A random walk around 100: an EWMA of pure noise would hover near 0, hiding
    relative errors."""
    rng = np.random.default_rng(seed)
    return (100 + np.cumsum(rng.standard_normal(shape), axis=0)).astype(dtype)


def with_gaps(shape, seed):
    """A (T, K) walk whose columns have missing runs: 0 leading, 1 inside, 2 trailing,
    3 everywhere, 4 scattered singles and infinities, 5 a constant stretch; 6+ none."""
    x = walk(shape, seed)
    rng = np.random.default_rng(seed + 1)
    t = shape[0]
    x[: t // 5, 0] = np.nan
    x[t // 3: t // 3 + 7, 1] = np.nan
    x[-t // 4:, 2] = np.nan
    x[:, 3] = np.nan
    x[rng.random(t) < 0.2, 4] = np.nan
    x[[5, 17], 4] = [np.inf, -np.inf]
    x[t // 2: t // 2 + 20, 5] = 42.0
    return x


def both_backends(x, **options):
    """ewma on the NumPy reference and, when built, the compiled scan: the same bits."""
    slow = ewma(x, **options, backend="numpy")
    if kernels is not None:
        fast = ewma(x, **options, backend="c")
        assert type(fast) is type(slow)
        assert_same_bits(np.asarray(fast), np.asarray(slow), f"ewma {options}")
    return slow


def assert_matches_pandas(got, expected, rtol=1e-12):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), "NaN positions differ")
    both = ~np.isnan(expected)
    np.testing.assert_allclose(got[both], expected[both], rtol=rtol, atol=0)


# -- pandas, float64 -------------------------------------------------------------------------


@pytest.mark.parametrize("min_periods", [0, 1, 5])
@pytest.mark.parametrize("ignore_na", [False, True])
@pytest.mark.parametrize("adjust", [True, False])
@pytest.mark.parametrize("rate", PARAMETERIZATIONS, ids=PARAM_IDS)
def test_dataframe_equals_pandas(rate, adjust, ignore_na, min_periods):
    frame = pd.DataFrame(with_gaps((120, 7), seed=1), columns=list("abcdefg"),
                         index=pd.date_range("2021-03-01", periods=120, freq="h"))
    options = dict(adjust=adjust, ignore_na=ignore_na, min_periods=min_periods)
    expected = frame.ewm(**as_pandas_kwargs(rate), **options).mean()
    got = both_backends(frame, **rate, **options)
    assert type(got) is pd.DataFrame
    assert got.index.equals(frame.index) and got.columns.equals(frame.columns)
    assert_matches_pandas(got, expected)


@pytest.mark.parametrize("ignore_na", [False, True])
@pytest.mark.parametrize("adjust", [True, False])
@pytest.mark.parametrize("rate", PARAMETERIZATIONS, ids=PARAM_IDS)
def test_series_equals_pandas(rate, adjust, ignore_na):
    x = with_gaps((150, 7), seed=2)[:, 4]          # scattered gaps and infinities
    x[:3] = np.nan                                 # and a leading run
    series = pd.Series(x, index=np.arange(150) * 10, name="price")
    options = dict(adjust=adjust, ignore_na=ignore_na, min_periods=3)
    got = both_backends(series, **rate, **options)
    assert type(got) is pd.Series and got.name == "price" and got.index.equals(series.index)
    assert_matches_pandas(got, series.ewm(**as_pandas_kwargs(rate), **options).mean())


def test_nullable_series_with_pd_na_equals_pandas(backend):
    series = pd.Series([1.5, pd.NA, 3.0, None, 7.0, 2.0], dtype="Float64")
    got = ewma(series, alpha=0.4, backend=backend)
    assert got.dtype == np.float64
    assert_matches_pandas(got, series.ewm(alpha=0.4).mean())
    frame = pd.DataFrame({"i": pd.array([1, None, 3, 4], dtype="Int64"),
                          "b": pd.array([True, False, None, True], dtype="boolean"),
                          "f": [0.5, 1.5, 2.5, np.nan]})
    assert_matches_pandas(ewma(frame, span=3, backend=backend), frame.ewm(span=3).mean())


@pytest.mark.parametrize("ignore_na", [False, True])
@pytest.mark.parametrize("adjust", [True, False])
def test_times_equal_pandas(adjust, ignore_na):
    rng = np.random.default_rng(3)
    times = pd.DatetimeIndex(np.datetime64("2022-01-01", "s")
                             + np.cumsum(rng.integers(0, 5 * 3600, 80)).astype("m8[s]"))
    frame = pd.DataFrame(with_gaps((80, 6), seed=4))
    options = dict(halflife="6h", times=times, adjust=adjust, ignore_na=ignore_na)
    assert_matches_pandas(both_backends(frame, **options), frame.ewm(**options).mean())
    if adjust:   # pandas also lets com/span/alpha set the decay per halflife
        assert_matches_pandas(both_backends(frame, com=3, **options),
                              frame.ewm(com=3, **options).mean())


def test_numeric_times_are_durations_in_their_unit(backend):
    seconds = np.array([0.0, 1.0, 1.0, 4.0, 10.0, 10.5])
    x = np.array([3.0, np.nan, 5.0, 1.0, 2.0, 8.0])
    stamps = pd.DatetimeIndex(np.datetime64("2020-01-01") + (seconds * 1e9).astype("m8[ns]"))
    got = ewma(x, halflife=2.0, times=seconds, backend=backend)
    assert_matches_pandas(got, pd.Series(x).ewm(halflife="2s", times=stamps).mean())
    tz = stamps.tz_localize("UTC").tz_convert("Asia/Tokyo")
    assert_matches_pandas(ewma(x, halflife=pd.Timedelta("2s"), times=pd.Series(tz),
                               backend=backend), got)


def test_dataframe_axis_1_is_rows_as_series(backend):
    frame = pd.DataFrame(with_gaps((30, 8), seed=5))
    got = ewma(frame, alpha=0.2, axis=1, backend=backend)
    assert_matches_pandas(got, frame.T.ewm(alpha=0.2).mean().T)


# -- hand-computed ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_worked_example(backend, dtype):
    """x = 1, 2, 3 with beta = 1/2, by hand: v = 1/2, 5/4, 17/8; bias corrections 1/2, 3/4,
    7/8; corrected 1, 5/3, 17/7."""
    x = np.array([1, 2, 3], dtype)
    got = ewma(x, 0.5, backend=backend)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, [1, 5 / 3, 17 / 7], rtol=2 * np.finfo(dtype).eps)
    got = ewma(x, 0.5, bias_correction=False, backend=backend)
    assert got.tolist() == [0.5, 1.25, 2.125]   # exact: halves are representable


def test_adjust_false_starts_from_the_first_value(backend):
    """pandas' recursion with com=2 (alpha = 1/3): y = 1, 4/3, 20/9, 112/27 -- not the
    lectures' uncorrected average from 0 (1/3, 8/9, ...)."""
    got = ewma([1.0, 2.0, 4.0, 8.0], com=2, adjust=False, backend=backend)
    np.testing.assert_allclose(got, [1, 4 / 3, 20 / 9, 112 / 27], rtol=1e-15)
    raw = ewma([1.0, 2.0, 4.0, 8.0], com=2, bias_correction=False, backend=backend)
    np.testing.assert_allclose(raw[:2], [1 / 3, 8 / 9], rtol=1e-15)


@pytest.mark.parametrize("ignore_na,adjust,expected", [
    # [x0, NaN, x2] with alpha = 1/2: x0 weighs (1/2)^2 (absolute positions) or 1/2
    (False, True, Fraction(1 * 1, 4) + 3 * 1),   # divided below by the weights' sum
    (True, True, Fraction(1, 2) + 3),
    (False, False, Fraction(1, 4) * 1 + Fraction(3, 4) * 3),   # alpha = 1/2: pandas' rule
    (True, False, Fraction(1, 2) * 1 + Fraction(1, 2) * 3),
])
def test_a_gap_by_hand(backend, ignore_na, adjust, expected):
    weights = {(False, True): Fraction(5, 4), (True, True): Fraction(3, 2)}.get(
        (ignore_na, adjust), 1)
    got = ewma([1.0, np.nan, 3.0], alpha=0.5, adjust=adjust, ignore_na=ignore_na,
               backend=backend)
    assert got[0] == 1.0 and got[1] == 1.0        # carried over the gap
    assert got[2] == pytest.approx(float(expected / weights), rel=1e-15)


def test_complement_rule_of_pandas(backend):
    """adjust=False with alpha exactly 1/2: after a gap of k steps pandas weighs the new
    value 1 - (1/2)^(k+1) (not alpha): [1, NaN, NaN, 4] gives 1/8 + 7/8 * 4 = 3.625."""
    x = [1.0, np.nan, np.nan, 4.0]
    assert ewma(x, com=1, adjust=False, backend=backend)[3] == 3.625
    assert pd.Series(x).ewm(com=1, adjust=False).mean()[3] == 3.625
    near = ewma(x, com=1.0000001, adjust=False, backend=backend)[3]   # the usual rule
    assert near == pytest.approx((1 / 8 + 4 / 2) / (1 / 8 + 1 / 2), rel=1e-6)


def test_leading_missing_values_and_min_periods(backend):
    x = [np.nan, np.nan, 2.0, np.nan, 4.0, 6.0]
    got = ewma(x, alpha=0.5, min_periods=2, backend=backend)
    assert np.isnan(got[:4]).all() and np.isfinite(got[4:]).all()
    got = ewma(x, alpha=0.5, backend=backend)   # min_periods=0 acts as 1, as in pandas
    assert np.isnan(got[:2]).all() and got[2] == got[3] == 2.0


@pytest.mark.parametrize("adjust", [True, False])
def test_a_gap_that_decays_the_weight_to_zero(backend, adjust):
    """2000 missing steps at alpha = 1/2 underflow the old weight: the next observation is
    taken as it is, as in pandas (no 0/0)."""
    x = np.r_[5.0, np.full(2000, np.nan), 7.0, 8.0]
    got = ewma(x, alpha=0.5, adjust=adjust, backend=backend)
    assert got[1] == got[2000] == 5.0 and got[2001] == 7.0
    assert_matches_pandas(got, pd.Series(x).ewm(alpha=0.5, adjust=adjust).mean())


def test_constant_series_stays_exactly_constant(backend):
    """As in pandas: an observation equal to the average leaves it as it is."""
    for options in (dict(beta=0.9), dict(alpha=0.3, adjust=False), dict(span=5)):
        got = ewma(np.full(500, 0.1), **options, backend=backend)
        assert (got == 0.1).all()


def test_infinities_are_missing_values_as_in_pandas(backend):
    x = [1.0, np.inf, 3.0, -np.inf, 5.0]
    np.testing.assert_array_equal(ewma(x, alpha=0.5, backend=backend),
                                  ewma([1.0, np.nan, 3.0, np.nan, 5.0], alpha=0.5,
                                       backend=backend))


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.98])
def test_uncorrected_is_the_lectures_recurrence(backend, beta):
    """bias_correction=False: v_t = beta*v_{t-1} + (1-beta)*x_t from v_0 = 0, in Python
    floats; a missing value adds nothing (its step still decays v unless ignore_na)."""
    x = walk(200, seed=6)
    x[50:53] = np.nan
    for ignore_na in (False, True):
        v, expected = 0.0, []
        for xt in x:
            if not np.isnan(xt):
                v = beta * v + (1 - beta) * xt
            elif not ignore_na:
                v = beta * v
            expected.append(v)
        got = ewma(x, beta, bias_correction=False, ignore_na=ignore_na, backend=backend)
        np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_corrected_equals_the_lectures_formula(backend):
    """v_t / (1 - beta^t), the lectures' bias correction, without missing values."""
    beta, x = 0.9, walk(300, seed=7)
    v, expected = 0.0, []
    for t, xt in enumerate(x, 1):
        v = beta * v + (1 - beta) * xt
        expected.append(v / (1 - beta ** t))
    np.testing.assert_allclose(ewma(x, beta, backend=backend), expected, rtol=1e-13)


# -- float32 ---------------------------------------------------------------------------------


@needs_kernels
def test_float32_within_1e6_of_pandas_at_beta_09999_over_a_million_points():
    """Averaged in float64 and rounded once, float32 data loses nothing to the long
    memory of beta = 0.9999; float32 arithmetic (an option) drifts further."""
    x = walk(10**6, seed=8, dtype=np.float32)
    expected = pd.Series(x.astype(np.float64)).ewm(alpha=1e-4).mean().to_numpy()
    got = ewma(x, beta=0.9999, backend="c")
    assert got.dtype == np.float32
    assert np.max(np.abs(got / expected - 1)) < 1e-6
    single = ewma(x, beta=0.9999, float32_arithmetic=True, backend="c")
    assert np.max(np.abs(single / expected - 1)) > np.max(np.abs(got / expected - 1))


@pytest.mark.parametrize("float32_arithmetic", [False, True])
def test_float32_data_keeps_its_dtype(backend, float32_arithmetic):
    x = walk((60, 3), seed=9, dtype=np.float32)
    got = ewma(x, alpha=0.1, float32_arithmetic=float32_arithmetic, backend=backend)
    assert got.dtype == np.float32
    expected = pd.DataFrame(x.astype(np.float64)).ewm(alpha=0.1).mean()
    assert_matches_pandas(got, expected, rtol=1e-5 if float32_arithmetic else 1e-7)


# -- fast vs reference, bit for bit ----------------------------------------------------------

# (shape, axis): one series (the scalar loop); time not last (tiles narrower and wider
# than a vector, and rows wider than a tile of 2**15 columns); time last (groups of 8
# series through a transposed tile, with remainders, and time blocks of 64 with
# remainders); 3-D.
LAYOUTS = [((1,), 0), ((130,), 0), ((70, 3), 0), ((70, 600), 0), ((12, 33000), 0),
           ((9, 70), 1), ((17, 150), 1), ((2, 1), 1), ((3, 40, 5), 1), ((4, 3, 66), 2)]
LAYOUT_IDS = [f"{s}-axis{a}" for s, a in LAYOUTS]
MODES = [dict(adjust=a, ignore_na=i, min_periods=m, bias_correction=b)
         for a in (True, False) for i in (False, True) for m in (0, 5)
         for b in ((True, False) if a else (True,))]
MODE_IDS = ["-".join(f"{k[:3]}{int(v)}" for k, v in m.items()) for m in MODES]


def gappy(shape, axis, dtype, seed):
    """Random data on `axis` with every kind of gap: whole rows missing at the start (the
    columns stay in step), then some columns missing (they part ways), NaN and inf."""
    rng = np.random.default_rng(seed)
    x = np.moveaxis(walk(np.moveaxis(np.empty(shape), axis, 0).shape, seed, dtype), 0, axis)
    moved = np.moveaxis(x, axis, 0)
    moved[rng.random(moved.shape) < 0.1] = np.nan
    moved[rng.random(moved.shape) < 0.02] = np.inf
    if len(moved) > 10:
        moved[:3] = np.nan                  # missing everywhere: rows shared while in step
        moved[6] = np.nan
    return np.ascontiguousarray(x)


def same_scan(x, axis, **options):
    fast, slow = np.full_like(x, -7.0), np.full_like(x, -7.0)
    kernels.ewma_scan(fast, x, axis=axis, **options)
    reference.ewma_scan(slow, x, axis=axis, **options)
    assert_same_bits(fast, slow, f"ewma_scan {options}")
    assert x.size == 0 or not (fast == -7.0).all()
    return fast


@needs_kernels
def test_both_backends_take_the_same_arguments():
    assert inspect.signature(kernels.ewma_scan) == inspect.signature(reference.ewma_scan)


@needs_kernels
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("shape,axis", LAYOUTS, ids=LAYOUT_IDS)
def test_fast_scan_equals_reference_bit_for_bit(shape, axis, mode):
    x = gappy(shape, axis, np.float64, seed=sum(shape))
    for alpha in (0.2, 0.5):    # 0.5: pandas' adjust=False rule after gaps
        same_scan(x, axis, beta=1 - alpha, alpha=alpha, **mode)


@needs_kernels
@pytest.mark.parametrize("float32_arithmetic", [False, True])
@pytest.mark.parametrize("shape,axis", LAYOUTS, ids=LAYOUT_IDS)
def test_fast_scan_float32_bit_for_bit(shape, axis, float32_arithmetic):
    x = gappy(shape, axis, np.float32, seed=sum(shape) + 1)
    for mode in (MODES[0], MODES[-1], dict(bias_correction=False, min_periods=5)):
        same_scan(x, axis, beta=0.9, float32_arithmetic=float32_arithmetic, **mode)


def mostly_observed(dtype, seed):
    """13 series of 3000 steps, time last (a group of 8 and one of 5), missing only: one
    step in every series (the groups' shared weight decays, then settles again), a value in
    one series (its group parts ways) and a short constant stretch (pandas' x == m rule).
    Whole time blocks are observed, so the scan's settled path runs between the gaps."""
    x = walk((3000, 13), seed, dtype).T.copy()
    x[:, 1500] = np.nan
    x[3, 2200] = np.nan
    x[10, 600:700] = x[10, 599]
    return x


@needs_kernels
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_fast_scan_of_settled_groups_bit_for_bit(mode):
    x = mostly_observed(np.float64, seed=21)
    for alpha in (0.2, 0.5):    # 0.5: pandas' adjust=False rule after gaps
        same_scan(x, 1, beta=1 - alpha, alpha=alpha, **mode)


@needs_kernels
@pytest.mark.parametrize("float32_arithmetic", [False, True])
def test_fast_scan_of_settled_float32_groups_bit_for_bit(float32_arithmetic):
    x = mostly_observed(np.float32, seed=22)
    for mode in (MODES[0], MODES[-1], dict(bias_correction=False, min_periods=5)):
        same_scan(x, 1, beta=0.9, float32_arithmetic=float32_arithmetic, **mode)


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape,axis", [((50,), 0), ((50, 9), 0), ((9, 50), 1)])
def test_fast_scan_with_per_step_decay_bit_for_bit(shape, axis, dtype):
    x = gappy(shape, axis, dtype, seed=11)
    decay = np.random.default_rng(12).random(shape[axis])
    for adjust in (True, False):
        same_scan(x, axis, beta=0.5, decay=decay, adjust=adjust)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape,axis", [((40,), 0), ((40, 20), 0), ((20, 40), 1)])
def test_scan_in_pieces_equals_the_whole(kernel_module, shape, axis, dtype):
    """The running state: pieces of the series, state carried, give the whole's bits --
    also when the columns' weights differ when a piece starts."""
    x = gappy(shape, axis, dtype, seed=13)
    whole = np.empty_like(x)
    kernel_module.ewma_scan(whole, x, beta=0.8, min_periods=3, axis=axis)
    state_shape = x.shape[:axis] + x.shape[axis + 1:]
    mean, weight = np.zeros(state_shape), np.zeros(state_shape)
    count = np.zeros(state_shape, np.int64)
    pieces = []
    for part in np.array_split(np.arange(shape[axis]), [5, 6, 23]):
        piece = np.ascontiguousarray(np.take(x, part, axis=axis))
        out = np.empty_like(piece)
        kernel_module.ewma_scan(out, piece, mean, weight, count, beta=0.8, min_periods=3,
                                axis=axis)
        pieces.append(out)
    assert_same_bits(np.concatenate(pieces, axis=axis), whole)
    assert (count == np.isfinite(x).sum(axis=axis)).all()


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape,axis", [((40, 5000), 0), ((40, 12000), 0), ((3, 20, 9001), 1),
                                        ((5000, 40), 1), ((9, 30001), 1), ((13, 20000), 1),
                                        ((101, 3000), 1)])
def test_thread_count_does_not_change_scan_bits(shape, axis, threads):
    """Time not last: rows of 12000 and 9001 float32 are wide enough for runs of columns
    per thread (cut at multiples of 16, across the outer axis too); 5000 are not. Time
    last: tasks of whole groups of 8 series, the last one narrower (9, 13, 101 series)."""
    x = gappy(shape, axis, np.float32, seed=14)
    one, many = np.empty_like(x), np.empty_like(x)
    kernels.ewma_scan(one, x, beta=0.9, axis=axis, threads=1)
    kernels.ewma_scan(many, x, beta=0.9, axis=axis, threads=threads)
    assert_same_bits(many, one)


# -- the running form ------------------------------------------------------------------------


@pytest.mark.parametrize("options", [dict(beta=0.9), dict(alpha=0.5, adjust=False),
                                     dict(span=4, ignore_na=True, min_periods=3),
                                     dict(beta=0.8, bias_correction=False),
                                     dict(com=3, float32_arithmetic=True)],
                         ids=["beta", "adjust-false", "ignore-na", "uncorrected", "f32"])
def test_running_form_equals_the_series(backend, options):
    dtype = np.float32 if options.get("float32_arithmetic") else np.float64
    x = gappy((40, 3, 2), 0, dtype, seed=15)
    expected = ewma(x, **options, backend=backend)
    running = EWMA(**options, backend=backend)
    for t in range(len(x)):
        value = running.update(x[t])
        assert running.step == t + 1
        assert_same_bits(value, expected[t], f"step {t + 1}")
        assert_same_bits(running.value, expected[t])
    scalar = EWMA(**options, backend=backend)
    for t in range(len(x)):
        value = scalar.update(x[t, 1, 0])
        assert np.ndim(value) == 0 and value.dtype == dtype
        assert_same_bits(np.asarray(value), expected[t, 1, 0])


def test_running_form_of_python_floats_and_ints(backend):
    running = EWMA(0.5, backend=backend)
    assert running.value is None and running.step == 0
    assert running.update(1) == 1.0
    assert running.update(2.0) == pytest.approx(5 / 3, rel=1e-15)
    assert running.update(np.float32(3)) == pytest.approx(17 / 7, rel=1e-15)
    assert running.value.dtype == np.float64   # fixed by the first observation (an int)
    assert np.isnan(EWMA(alpha=0.5, min_periods=2, backend=backend).update(1.0))


def test_running_value_is_a_copy(backend):
    running = EWMA(0.9, backend=backend)
    value = running.update(np.ones(4))
    value[:] = 100.0
    assert running.value.tolist() == [1.0] * 4


def test_running_repr_and_reset(backend):
    running = EWMA(0.9, backend=backend)
    assert repr(running) == "EWMA(beta=0.9, bias_correction=True, step=0)"
    running.update(2.0)
    assert repr(running) == "EWMA(beta=0.9, bias_correction=True, step=1, value=2)"
    running.update(np.zeros((2, 3), np.float32)[0, 0])   # a float32 scalar: cast to float64
    assert "step=2" in repr(running)
    running.reset()
    assert running.step == 0 and running.value is None
    running.update(np.zeros((2, 3), np.float32))          # a new shape after reset
    assert repr(running) == ("EWMA(beta=0.9, bias_correction=True, step=1, shape=(2, 3), "
                             "dtype=float32)")
    assert repr(EWMA(span=5, adjust=False, min_periods=2)) == \
        "EWMA(span=5, adjust=False, bias_correction=True, min_periods=2, step=0)"


def test_failed_update_changes_nothing(backend):
    running = EWMA(0.9, backend=backend)
    for row in walk((3, 4), seed=16):
        running.update(row)
    before = running.value
    with pytest.raises(ValueError, match=r"shape \(5,\).*shape \(4,\)"):
        running.update(np.ones(5))
    with pytest.raises(TypeError, match="complex"):
        running.update(np.ones(4, np.complex64))
    assert running.step == 3
    assert_same_bits(running.value, before)
    running.update(np.ones(4))
    assert running.step == 4
    with pytest.raises(ValueError, match="float32_arithmetic applies to float32"):
        EWMA(0.9, float32_arithmetic=True, backend=backend).update(1.0)


# -- layouts, conversions --------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_axis_of_a_3d_array(backend, axis):
    x = gappy((6, 19, 10), axis % 3, np.float64, seed=17)
    got = ewma(x, 0.9, axis=axis, backend=backend)
    moved_x, moved_got = np.moveaxis(x, axis, 0), np.moveaxis(got, axis, 0)
    expected = pd.DataFrame(moved_x.reshape(len(moved_x), -1)).ewm(alpha=0.1).mean()
    assert_matches_pandas(moved_got.reshape(len(moved_got), -1), expected)


@pytest.mark.parametrize("shape,axis", [((1,), 0), ((0,), 0), ((0, 3), 0), ((5, 0), 0),
                                        ((5, 0), 1), ((1, 1, 1), 1)])
def test_degenerate_shapes(backend, shape, axis):
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) + 1.5
    got = ewma(x, 0.5, axis=axis, backend=backend)
    assert got.shape == shape
    assert_same_bits(got, x)   # one observation (or none): the average is x itself


def test_layouts_give_the_same_bits(backend):
    x = gappy((30, 8), 0, np.float64, seed=18)
    expected = ewma(x, 0.9, backend=backend)
    fortran, strided = np.asfortranarray(x), np.repeat(x, 2, axis=0)[::2]
    for other in (fortran, strided):
        assert_same_bits(ewma(other, 0.9, backend=backend), expected)
    assert ewma(fortran, 0.9, backend=backend).flags.f_contiguous   # scanned without a copy


@pytest.mark.parametrize("x,dtype", [
    (np.arange(5, dtype=np.int32), np.float64),
    (np.arange(5, dtype=np.uint8), np.float64),
    (np.array([True, False, True]), np.float64),
    (np.arange(5, dtype=np.float16), np.float64),
    ([1, 2, 3], np.float64),
    (np.arange(5, dtype=np.float32), np.float32),
    (np.arange(5, dtype=">f8"), np.float64),
])
def test_dtypes(backend, x, dtype):
    got = ewma(x, 0.5, backend=backend)
    assert got.dtype == dtype and got.dtype.isnative
    assert_matches_pandas(got, pd.Series(np.asarray(x, np.float64)).ewm(alpha=0.5).mean(),
                          rtol=1e-6)


# -- out= -----------------------------------------------------------------------------------

def fresh_and_into_out(x, **options):
    """ewma(x) into a new result and into a given out (filled with a sentinel first)."""
    fresh = ewma(x, **options)
    values = x.to_numpy() if isinstance(x, (pd.Series, pd.DataFrame)) else np.asarray(x)
    out = np.full_like(values, -7.0)      # empty_like keeps x's memory layout, as out must
    return fresh, out, ewma(x, **options, out=out)


@pytest.mark.parametrize("shape,order,axis", [((40,), "C", 0), ((40, 9), "C", 0),
                                               ((9, 40), "C", 1), ((40, 9), "F", 0)])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_out_of_an_array_is_returned_holding_the_same_bits(backend, shape, order, axis, dtype):
    x = walk(shape, 3, dtype)
    x.flat[::7] = np.nan
    x = np.asarray(x, order=order)
    fresh, out, got = fresh_and_into_out(x, alpha=0.3, axis=axis, backend=backend)
    assert got is out
    assert_same_bits(got, fresh, "out=")


@pytest.mark.parametrize("kind", ["Series", "DataFrame"])
def test_out_of_a_frame_is_shared_by_the_result(backend, kind):
    x = with_gaps((60, 7), 5)
    x = pd.Series(x[:, 4], index=np.arange(60) * 2, name="s") if kind == "Series" else \
        pd.DataFrame(x, index=np.arange(60) * 2, columns=list("abcdefg"))
    fresh, out, got = fresh_and_into_out(x, span=5, min_periods=3, backend=backend)
    assert type(got) is type(x)
    pd.testing.assert_index_equal(got.index, x.index)
    assert_same_bits(got.to_numpy(), fresh.to_numpy(), "out=")
    assert np.shares_memory(got.to_numpy(), out)
    assert_same_bits(out, fresh.to_numpy(), "out itself")


def test_out_refusals_name_out_and_leave_it_as_it_was(backend):
    x = walk((30, 4), 6)
    df = pd.DataFrame(x)                   # F-ordered values
    good = np.full_like(x, -7.0)
    cases = [
        (x, [0.0] * 120, TypeError, "out must be a numpy.ndarray"),
        (x, np.full((30, 5), -7.0), ValueError, r"x's shape \(30, 4\)"),
        (x, np.full((30, 4), -7.0, np.float32), ValueError, "dtype float64"),
        (x, np.full((30, 4), -7.0, order="F"), ValueError, "C-contiguous"),
        (df, np.full((30, 4), -7.0, order="C"), ValueError, "F-contiguous"),
        (x, np.full((30, 8), -7.0)[:, ::2], ValueError, "C-contiguous"),
        (x, x, ValueError, "out overlaps x"),
    ]
    read_only = good.copy()
    read_only.flags.writeable = False
    cases.append((x, read_only, ValueError, "out is read-only"))
    for data, out, error, match in cases:
        before = np.array(out, copy=True)
        with pytest.raises(error, match=match):
            ewma(data, 0.9, out=out, backend=backend)
        assert_same_bits(np.asarray(out), before, f"out after refusing {match}")
    shifted = np.full(31, -7.0)             # overlapping by all but one element
    series = shifted[1:]
    series[:] = walk((30,), 7)
    with pytest.raises(ValueError, match="out overlaps x"):
        ewma(series, 0.9, out=shifted[:30], backend=backend)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("x,error", [
    (np.ones(3, np.complex128), "complex"),
    (np.array([1.0, "a"], dtype=object), "real numbers"),
    (["a", "b"], "real numbers"),
    (np.array(["2020-01-01"], dtype="datetime64[D]"), "real numbers"),
    (pd.DataFrame({"a": [1.0], "b": ["x"]}), r"non-numeric data \('b'"),
])
def test_refuses_non_real_input(backend, x, error):
    with pytest.raises(TypeError, match=error):
        ewma(x, 0.5, backend=backend)
    if not isinstance(x, pd.DataFrame):
        with pytest.raises(TypeError, match=error):
            EWMA(0.5, backend=backend).update(x)


@pytest.mark.parametrize("name,value,rule", [
    ("beta", 1.0, r"in \[0, 1\)"), ("beta", -0.1, r"in \[0, 1\)"),
    ("beta", float("nan"), r"in \[0, 1\)"), ("com", -1, ">= 0"), ("span", 0.5, ">= 1"),
    ("halflife", 0, "> 0"), ("alpha", 0, r"in \(0, 1\]"), ("alpha", 1.5, r"in \(0, 1\]"),
])
def test_refuses_a_decay_out_of_range(name, value, rule):
    with pytest.raises(ValueError, match=f"{name} must be {rule}"):
        ewma([1.0, 2.0], **{name: value})
    with pytest.raises(ValueError, match=name):
        EWMA(**{name: value})


@pytest.mark.parametrize("beta", ["0.9", True, 0.9j])
def test_refuses_a_decay_that_is_not_a_real_number(beta):
    with pytest.raises(TypeError, match="beta must be a real number"):
        ewma([1.0, 2.0], beta)


@pytest.mark.parametrize("given", [{}, dict(beta=0.9, alpha=0.1), dict(com=1, span=3)])
def test_exactly_one_decay(given):
    with pytest.raises(ValueError, match="exactly one of beta, com, span, halflife, alpha"):
        ewma([1.0, 2.0], **given)
    with pytest.raises(ValueError, match="exactly one"):
        EWMA(**given)


def test_refuses_conflicting_options(backend):
    with pytest.raises(ValueError, match="bias_correction=False .* adjust=True only"):
        ewma([1.0, 2.0], 0.9, bias_correction=False, adjust=False, backend=backend)
    with pytest.raises(ValueError, match="bias_correction=False"):
        EWMA(0.9, bias_correction=False, adjust=False)
    with pytest.raises(ValueError, match="float32_arithmetic applies to float32 data"):
        ewma([1.0, 2.0], 0.9, float32_arithmetic=True, backend=backend)
    with pytest.raises(ValueError, match="min_periods must be >= 0"):
        ewma([1.0, 2.0], 0.9, min_periods=-1, backend=backend)


@pytest.mark.parametrize("options,error,match", [
    (dict(alpha=0.5), ValueError, "times needs halflife"),
    (dict(halflife="1D", span=3, adjust=False), ValueError, "only with adjust=True"),
    (dict(halflife="1D", span=3, com=2), ValueError, "at most one"),
    (dict(halflife=2.0), TypeError, "halflife must be a duration"),
])
def test_refuses_bad_times_arguments(options, error, match):
    times = pd.date_range("2020-01-01", periods=3)
    with pytest.raises(error, match=match):
        ewma([1.0, 2.0, 3.0], times=times, **options)


@pytest.mark.parametrize("times,match", [
    (np.array([0.0, 2.0, 1.0]), "non-decreasing"),
    (np.array([0.0, 1.0]), r"one time per step \(3\)"),
    (np.array([0.0, np.nan, 1.0]), "finite"),
    (np.array(["2020-01-01", "NaT", "2020-01-02"], dtype="M8[s]"), "NaT"),
])
def test_refuses_bad_times(times, match):
    halflife = np.timedelta64(1, "h") if times.dtype.kind == "M" else 1.0
    with pytest.raises(ValueError, match=match):
        ewma([1.0, 2.0, 3.0], halflife=halflife, times=times)


def test_a_duration_halflife_needs_times():
    with pytest.raises(ValueError, match="halflife can be a duration only with times"):
        ewma([1.0, 2.0], halflife="1D")


def test_refuses_bad_axis_and_scalars(backend):
    x = np.ones((3, 4))
    for axis in (2, -3):
        with pytest.raises(ValueError, match=f"axis {axis} is out of range"):
            ewma(x, 0.5, axis=axis, backend=backend)
    with pytest.raises(ValueError, match="scalar"):
        ewma(3.0, 0.5, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        ewma(x, 0.5, backend="fortran")


def test_scan_kernel_refuses_bad_buffers_before_writing(kernel_module):
    x = np.ones((4, 3))
    out = np.full_like(x, -1.0)
    state = (np.zeros(3), np.zeros(3), np.zeros(3, np.int64))
    bad_calls = [
        (ValueError, "shape", dict(series=np.ones((3, 4)))),
        (TypeError, "dtype", dict(series=x.astype(np.float32))),
        (ValueError, "shares memory", dict(series=out)),
        (ValueError, "C-contiguous", dict(series=np.asfortranarray(np.ones((4, 3))))),
        (ValueError, "axis 2", dict(axis=2)),
        (ValueError, r"beta must be in \[0, 1\]", dict(beta=1.5)),
        (ValueError, r"alpha must be in \(0, 1\]", dict(alpha=0.0)),
        (ValueError, "decay must hold one value per time step", dict(decay=np.ones(3))),
        (ValueError, r"decay values must be in \[0, 1\]", dict(decay=np.full(4, 2.0))),
        (ValueError, "all three or none", dict(state=state[:2] + (None,))),
        (ValueError, r"without its time axis, \(3,\)", dict(state=(np.zeros(4),) + state[1:])),
        (TypeError, "weight must have dtype float64", dict(state=(state[0], np.zeros(3, np.float32), state[2]))),
        (TypeError, "count must have dtype int64", dict(state=state[:2] + (np.zeros(3),))),
        (ValueError, "mean shares memory with average", dict(state=(out[0],) + state[1:])),
    ]
    for error, match, change in bad_calls:
        call = dict(series=x, beta=0.5, axis=0, state=(None, None, None)) | change
        with pytest.raises(error, match=match):
            kernel_module.ewma_scan(out, call.pop("series"), *call.pop("state"), **call)
    with pytest.raises(ValueError, match="no axis"):
        kernel_module.ewma_scan(np.zeros(()), np.ones(()), beta=0.5)
    assert (out == -1.0).all() and not any(a.any() for a in state)


def settling_series(length, dtype, seed):
    """One long series whose weight settles (stops changing) between sparse gaps: NaN runs
    and an inf after the weight has settled, and a long clean stretch."""
    x = walk((length,), seed, dtype)
    for start, run in ((150, 1), (400, 7), (900, 1), (1700, 30)):
        x[start:start + run] = np.nan
    x[1200] = np.inf
    return x


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mode", MODES + [dict(min_periods=300)], ids=MODE_IDS + ["min300"])
def test_a_settled_single_series_scans_bit_for_bit(mode, dtype):
    """Once a lone series' weight stops changing, the scan computes the weights once and runs
    the chain alone: the bits stay the reference's, across gaps that unsettle it, in every
    mode, in pieces as whole."""
    x = settling_series(3000, dtype, seed=21)
    for alpha in (0.2, 0.5):
        options = dict(beta=1 - alpha, alpha=alpha, **mode)
        arithmetic = [False, True] if dtype == np.float32 else [False]
        for float32_arithmetic in arithmetic:
            whole = same_scan(x, 0, float32_arithmetic=float32_arithmetic, **options)
            mean, weight, count = np.zeros(()), np.zeros(()), np.zeros((), np.int64)
            if float32_arithmetic:
                mean, weight = np.zeros((), np.float32), np.zeros((), np.float32)
            pieces = []
            for part in np.array_split(x, [100, 1000, 1001, 2500]):
                out = np.empty_like(part)
                kernels.ewma_scan(out, part, mean, weight, count,
                                  float32_arithmetic=float32_arithmetic, **options)
                pieces.append(out)
            assert_same_bits(np.concatenate(pieces), whole, f"pieces {options}")
