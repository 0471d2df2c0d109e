"""fastoptim.ewma / EWMA and the ewma_scan kernel: the recurrence by hand, pandas, a plain
loop, every layout, fast vs reference bit for bit, the running form, NaN and bad input."""
from fractions import Fraction

import numpy as np
import pytest

from conftest import DTYPES, assert_same_bits, kernels, needs_kernels
from fastoptim import EWMA, ewma, reference

BETAS = (0.5, 0.9, 0.98)
DTYPE_IDS = ["float32", "float64"]


def series(shape, dtype, seed=0):
    """A random walk (an EWMA of pure noise would hover near 0, hiding relative errors)."""
    rng = np.random.default_rng(seed)
    return (10 + np.cumsum(rng.standard_normal(shape), axis=0)).astype(dtype)


def plain_loop(x, beta, bias_correction):
    """The recurrence in Python floats (double), one column at a time, time on axis 0."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    out = np.empty_like(x)
    for k in range(x.shape[1]):
        v = 0.0
        for t in range(x.shape[0]):
            v = beta * v + (1 - beta) * float(x[t, k])
            out[t, k] = v / (1 - beta ** (t + 1)) if bias_correction else v
    return out


def tolerance(dtype, scale=100.0):
    """A few units in the last place of the dtype, relative to values of size `scale`
    (the series below stay under it): an EWMA can pass near 0 where rtol alone fails."""
    eps = float(np.finfo(dtype).eps)
    return dict(rtol=16 * eps, atol=16 * eps * scale)


# -- the formula ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_worked_example(backend, dtype):
    """x = 1, 2, 3 with beta = 1/2, by hand: v = 1/2, 5/4, 17/8; bias corrections 1/2, 3/4,
    7/8; corrected 1, 5/3, 17/7."""
    x = np.array([1, 2, 3], dtype)
    corrected = [Fraction(1), Fraction(5, 3), Fraction(17, 7)]
    plain = [Fraction(1, 2), Fraction(5, 4), Fraction(17, 8)]
    got = ewma(x, 0.5, backend=backend)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, [float(f) for f in corrected], **tolerance(dtype))
    got = ewma(x, 0.5, bias_correction=False, backend=backend)
    assert got.tolist() == [float(f) for f in plain]   # exact: halves are representable


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_corrected_equals_pandas_adjusted_mean(backend, dtype, beta):
    pd = pytest.importorskip("pandas")
    x = series((300, 4), dtype, seed=int(beta * 100))
    expected = pd.DataFrame(x.astype(np.float64)).ewm(alpha=1 - beta, adjust=True).mean()
    got = ewma(x, beta, backend=backend)
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(got, expected.to_numpy(), **tolerance(dtype))
    got_1d = ewma(x[:, 2], beta, backend=backend)
    np.testing.assert_allclose(got_1d, expected[2].to_numpy(), **tolerance(dtype))


@pytest.mark.parametrize("bias_correction", [False, True])
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_equals_plain_loop(backend, dtype, beta, bias_correction):
    x = series((200, 3), dtype, seed=1)
    got = ewma(x, beta, bias_correction=bias_correction, backend=backend)
    np.testing.assert_allclose(got, plain_loop(x, beta, bias_correction), **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_uncorrected_is_the_recurrence_in_dtype_arithmetic(backend, dtype):
    """Without the correction the result is exactly v <- b*v + (1-b)*x with both scalars
    rounded to the dtype once: a scalar loop in that dtype gives the same bits."""
    beta = 0.9
    x = series(100, dtype, seed=2)
    b, one_minus_b = dtype(beta), dtype(1 - beta)
    v, expected = dtype(0), []
    for xt in x:
        v = b * v + one_minus_b * xt
        expected.append(v)
    got = ewma(x, beta, bias_correction=False, backend=backend)
    assert_same_bits(got, np.array(expected, dtype), "uncorrected ewma")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_beta_zero_is_the_series_itself(backend, dtype):
    x = series(50, dtype, seed=3)
    assert_same_bits(ewma(x, 0.0, backend=backend), x)
    assert_same_bits(ewma(x, 0.0, bias_correction=False, backend=backend), x)


def test_constant_series_is_constant_when_corrected(backend):
    got = ewma(np.full(40, 3.0), 0.9, backend=backend)
    np.testing.assert_allclose(got, 3.0, rtol=1e-14)
    assert ewma(np.full(40, 3.0), 0.9, bias_correction=False, backend=backend)[0] == \
        pytest.approx(0.3)   # the start-up bias toward 0 that the correction removes


# -- layouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_axis_of_a_3d_array(backend, dtype, axis):
    """Each column along `axis` is the EWMA of that column alone: the same bits as scanning
    it as a 1-D series, and (loosely) the plain loop."""
    x = series((6, 19, 10), dtype, seed=4)
    got = ewma(x, 0.9, axis=axis, backend=backend)
    assert got.shape == x.shape and got.dtype == dtype
    moved_x, moved_got = np.moveaxis(x, axis, 0), np.moveaxis(got, axis, 0)
    for index in np.ndindex(*moved_x.shape[1:]):
        column = np.ascontiguousarray(moved_x[(slice(None),) + index])
        alone = ewma(column, 0.9, backend=backend)
        assert_same_bits(moved_got[(slice(None),) + index], alone, f"column {index}")
    np.testing.assert_allclose(moved_got.reshape(len(moved_got), -1),
                               plain_loop(moved_x, 0.9, True), **tolerance(dtype))


@pytest.mark.parametrize("shape,axis", [((1,), 0), ((0,), 0), ((0, 3), 0), ((5, 0), 0),
                                        ((5, 0), 1), ((1, 1, 1), 1)])
def test_degenerate_shapes(backend, shape, axis):
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) + 1.5
    got = ewma(x, 0.5, axis=axis, backend=backend)
    assert got.shape == shape
    assert_same_bits(got, x)   # one observation (or none): the corrected value is x itself


def test_non_contiguous_input(backend):
    x = series((30, 8), np.float64, seed=5)
    fortran, strided = np.asfortranarray(x), series((60, 8), np.float64, seed=5)[::2]
    assert_same_bits(ewma(fortran, 0.9, backend=backend), ewma(x, 0.9, backend=backend))
    assert_same_bits(ewma(strided, 0.9, backend=backend),
                     ewma(strided.copy(), 0.9, backend=backend))


# -- fast vs reference ---------------------------------------------------------------------

# (shape, axis): 1-D sizes from a single element to SIMD tails; (T, K) tiles narrower and
# wider than a vector and than a tile (1024); time last (inner == 1) with fewer and more
# series than the 8 interleaved lanes; the three axes of a 3-D array.
SCAN_CASES = [((n,), 0) for n in (1, 7, 31, 1000)]
SCAN_CASES += [((31, k), 0) for k in (1, 3, 7, 31, 1000, 2100)]
SCAN_CASES += [((k, 31), -1) for k in (1, 7, 8, 9, 31)]
SCAN_CASES += [((7, 31, 9), axis) for axis in (0, 1, 2)]


@needs_kernels
@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.98])
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape,axis", SCAN_CASES, ids=[f"{s}-axis{a}" for s, a in SCAN_CASES])
def test_fast_scan_equals_reference_bit_for_bit(shape, axis, dtype, bias_correction, beta):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(dtype)
    fast, slow = np.full_like(x, -7.0), np.full_like(x, -7.0)
    kernels.ewma_scan(fast, x, beta=beta, bias_correction=bias_correction, axis=axis)
    reference.ewma_scan(slow, x, beta=beta, bias_correction=bias_correction, axis=axis)
    assert_same_bits(fast, slow, "ewma_scan")
    assert x.size == 0 or not np.array_equal(fast, np.full_like(x, -7.0))


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fast_scan_special_values_bit_for_bit(dtype):
    x = series((64, 12), dtype, seed=6)
    x[3, 0], x[10, 1], x[20, 2], x[21, 2] = np.nan, np.inf, np.inf, -np.inf
    x[5, 3], x[0, 4] = -0.0, np.finfo(dtype).max
    x[7, 5] = np.finfo(dtype).smallest_subnormal
    for axis in (0, 1):
        fast, slow = np.empty_like(x), np.empty_like(x)
        kernels.ewma_scan(fast, x, beta=0.9, axis=axis)
        reference.ewma_scan(slow, x, beta=0.9, axis=axis)
        assert_same_bits(fast, slow, f"ewma_scan axis={axis}")


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape,axis", [((40, 5000), 0), ((5000, 40), 1), ((9, 30001), 1)])
def test_thread_count_does_not_change_scan_bits(shape, axis, threads):
    x = series(shape, np.float32, seed=7)
    one, many = np.empty_like(x), np.empty_like(x)
    kernels.ewma_scan(one, x, beta=0.9, axis=axis, threads=1)
    kernels.ewma_scan(many, x, beta=0.9, axis=axis, threads=threads)
    assert_same_bits(many, one)
    slow = np.empty_like(x)
    reference.ewma_scan(slow, x, beta=0.9, axis=axis)
    assert_same_bits(one, slow)


# -- the running form ----------------------------------------------------------------------


@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_running_form_equals_the_series(backend, dtype, bias_correction):
    x = series((50, 3, 2), dtype, seed=8)
    expected = ewma(x, 0.9, bias_correction=bias_correction, backend=backend)
    running = EWMA(0.9, bias_correction=bias_correction, backend=backend)
    for t in range(len(x)):
        value = running.update(x[t])
        assert running.step == t + 1
        assert_same_bits(value, expected[t], f"step {t + 1}")
        assert_same_bits(running.value, expected[t])
    scalar = EWMA(0.9, bias_correction=bias_correction, backend=backend)
    for t in range(len(x)):
        value = scalar.update(x[t, 1, 0])
        assert np.ndim(value) == 0 and value.dtype == dtype
    assert_same_bits(np.asarray(value), expected[-1, 1, 0])


def test_running_form_of_python_floats_and_ints(backend):
    running = EWMA(0.5, backend=backend)
    assert running.value is None and running.step == 0
    assert running.update(1) == 1.0
    assert running.update(2.0) == pytest.approx(5 / 3, rel=1e-15)
    assert running.update(np.float32(3)) == pytest.approx(17 / 7, rel=1e-15)
    assert running.value.dtype == np.float64   # fixed by the first observation (an int)


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


# -- NaN policy: propagate -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_nan_propagates_to_every_later_value(backend, dtype):
    x = series((30, 2), dtype, seed=9)
    x[12, 0] = np.nan
    got = ewma(x, 0.9, backend=backend)
    assert np.isnan(got[12:, 0]).all()
    assert_same_bits(got[:12, 0], ewma(x[:12, 0], 0.9, backend=backend))
    assert np.isfinite(got[:, 1]).all()   # the other column is untouched
    running = EWMA(0.9, backend=backend)
    values = [running.update(row) for row in x]
    assert not np.isnan(values[11]).any()
    assert all(np.isnan(v[0]) and not np.isnan(v[1]) for v in values[12:])


def test_infinities_follow_ieee(backend):
    got = ewma([1.0, np.inf, 1.0, -np.inf, 1.0], 0.5, backend=backend)
    assert np.isfinite(got[0]) and got[1] == np.inf and got[2] == np.inf
    assert np.isnan(got[3:]).all()   # inf - inf


# -- input conversion and errors -----------------------------------------------------------


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
    np.testing.assert_allclose(got, plain_loop(np.asarray(x, np.float64), 0.5, True)[:, 0],
                               rtol=1e-6)


@pytest.mark.parametrize("x,error", [
    (np.ones(3, np.complex128), "complex"),
    (np.array([1.0, "a"], dtype=object), "real numbers"),
    (["a", "b"], "real numbers"),
    (np.array(["2020-01-01"], dtype="datetime64[D]"), "real numbers"),
])
def test_refuses_non_real_input(backend, x, error):
    with pytest.raises(TypeError, match=error):
        ewma(x, 0.5, backend=backend)
    with pytest.raises(TypeError, match=error):
        EWMA(0.5, backend=backend).update(x)


@pytest.mark.parametrize("beta", [1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_refuses_beta_outside_unit_interval(beta):
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        ewma([1.0, 2.0], beta)
    with pytest.raises(ValueError, match="beta"):
        EWMA(beta)


@pytest.mark.parametrize("beta", ["0.9", None, True, 0.9j])
def test_refuses_beta_that_is_not_a_real_number(beta):
    with pytest.raises(TypeError, match="beta"):
        ewma([1.0, 2.0], beta)


def test_refuses_bad_axis_and_scalars(backend):
    x = np.ones((3, 4))
    for axis in (2, -3):
        with pytest.raises(ValueError, match=f"axis {axis} is out of range"):
            ewma(x, 0.5, axis=axis, backend=backend)
    with pytest.raises(ValueError, match="scalar"):
        ewma(3.0, 0.5, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        ewma(x, 0.5, backend="fortran")


def test_failed_update_changes_nothing(backend):
    running = EWMA(0.9, backend=backend)
    for row in series((3, 4), np.float64, seed=10):
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


def test_scan_kernel_refuses_bad_buffers_before_writing(kernel_module):
    x = np.ones((4, 3))
    out = np.full_like(x, -1.0)
    with pytest.raises(ValueError, match="shape"):
        kernel_module.ewma_scan(out, np.ones((3, 4)), beta=0.5)
    with pytest.raises(TypeError, match="dtype"):
        kernel_module.ewma_scan(out, x.astype(np.float32), beta=0.5)
    with pytest.raises(ValueError, match="shares memory"):
        kernel_module.ewma_scan(out, out, beta=0.5)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernel_module.ewma_scan(out, np.asfortranarray(np.ones((4, 3))), beta=0.5)
    with pytest.raises(ValueError, match="axis 2"):
        kernel_module.ewma_scan(out, x, beta=0.5, axis=2)
    with pytest.raises(ValueError, match="no axis"):
        kernel_module.ewma_scan(np.zeros(()), np.ones(()), beta=0.5)
    assert (out == -1.0).all()
