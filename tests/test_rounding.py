"""The rounding rules of bfloat16/float16 stores (docs/design.md, "Low precision rounds
once") and the exact widening of loads: the C conversion (fastoptim.kernels.narrow)
against the NumPy one (fastoptim._rounding.narrow) on every class of float32 bit pattern;
nearest-even against ml_dtypes' and NumPy's own casts; stochastic rounding against a
float64 model of the rule and a generator written here from its description alone, and its
statistics: always one of the two neighbours, unbiased, reproducible, keyed by seed, step,
array and role, and the same on any number of threads."""
import numpy as np
import pytest

from conftest import assert_same_bits, kernels, needs_kernels
from fastoptim import _rounding, reference

ml_dtypes = pytest.importorskip("ml_dtypes")

BFLOAT16, FLOAT16 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)
LOW = (BFLOAT16, FLOAT16)
IDS = ("bfloat16", "float16")
# per dtype: stored mantissa bits, the exponent of the smallest normal
FORMAT = {BFLOAT16: (7, -126), FLOAT16: (10, -14)}
MASK32, MASK64 = 2**32 - 1, 2**64 - 1


def from_bits(*patterns):
    return np.array(patterns, np.uint64).astype(np.uint32).view(np.float32)


# -- the float32 inputs --------------------------------------------------------------------------

# the low 16 bits that decide a rounding: bfloat16 keeps the upper 16 bits (its tie is 0x8000),
# float16 drops the low 13 bits of the mantissa (its tie is 0x1000, with the kept bit 13
# even or odd: 0x1000 / 0x3000)
LOW_HALVES = (0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x3000, 0x3001, 0x7FFF,
              0x8000, 0x8001, 0x9000, 0xE000, 0xF000, 0xFFFF)

EDGES = np.concatenate([
    np.array([0.0, -0.0, 1.0, -1.0, 1 / 3, -1 / 3], np.float32),
    from_bits(1, 0x80000001, 0x007FFFFF, 0x00800000, 0x00800001,     # float32 subnormals, min normal
              0x00008000, 0x00018000, 0x0000FFFF, 0x00010000,       # bfloat16 subnormal ties
              0x7F7F7FFF, 0x7F7F8000, 0x7F7F8001, 0x7F7FFFFF,       # bfloat16 max, overflow
              0xFF7F8000, 0xFF7FFFFF, 0x7F800000, 0xFF800000),      # +-inf
    # NaNs: quiet, signalling, negative, payloads only in the bits bfloat16 drops
    from_bits(0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7F810000,
              0x7F80FFFF, 0xFFBFFFFF),
    # float16: subnormals (2**-24 and its neighbours, the tie at 2**-25), the smallest
    # normal, the largest finite and the overflow boundary 65520 (a tie: rounds to inf)
    np.float32([2**-24, 2**-25, np.nextafter(np.float32(2**-25), 1), 3 * 2**-25, 2**-26,
                2**-40, 2**-41, 1e-30, 6.1e-5, 2**-14, np.nextafter(np.float32(2**-14), 0),
                65504, 65505, 65519, np.nextafter(np.float32(65520), 0), 65520, 65521,
                65535.9, 65536, 70000, 1e10, -65520, -65504]),
])


def bit_pattern_classes(random_count=300_000, seed=0):
    """float32 inputs covering every sign and exponent, every upper half (all 2**16 of them)
    with each deciding lower half, a random sample of all bit patterns, and the edges."""
    upper = np.arange(2**16, dtype=np.uint32) << np.uint32(16)
    structured = (upper[:, None] | np.array(LOW_HALVES, np.uint32)[None, :]).ravel()
    rng = np.random.default_rng(seed)
    sample = rng.integers(0, 2**32, random_count, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([structured.view(np.float32), sample.view(np.float32), EDGES])


X = bit_pattern_classes()


# -- the generator and the rule, written from their description ----------------------------------

def splitmix64(state):
    """The output of splitmix64 for a state: add the golden gamma, then the finalizer."""
    z = (state + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def rounding_key(seed, step, array, role):
    return splitmix64(splitmix64(splitmix64(seed) ^ step) ^ (array * 256 + role))


def lowbias32(x):
    """Chris Wellons' lowbias32 hash on uint64 arrays holding 32-bit values."""
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x7FEB352D)) & np.uint64(MASK32)
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x846CA68B)) & np.uint64(MASK32)
    return x ^ (x >> np.uint64(16))


def random_bits(key, n, first=0):
    """16 random bits per element index i: h = f(lo(i) ^ lo(key)), h = f(h ^ hi(key) ^ hi(i)),
    bits = h >> 16."""
    i = np.arange(first, first + n, dtype=np.uint64)
    low, high = i & np.uint64(MASK32), i >> np.uint64(32)
    h = lowbias32(low ^ np.uint64(key & MASK32))
    h = lowbias32(h ^ np.uint64(key >> 32) ^ high)
    return h >> np.uint64(16)


def units_in_last_place(x, dtype):
    """|x| in units of dtype's last place at x (float64: exact for float32 x), and that unit."""
    mantissa_bits, min_exponent = FORMAT[dtype]
    with np.errstate(invalid="ignore"):         # inf and NaN: not used
        magnitude = np.abs(x.astype(np.float64))
        _, e = np.frexp(magnitude)                      # magnitude = f * 2**e, f in [0.5, 1)
    unit = np.ldexp(1.0, np.maximum(e - 1, min_exponent) - mantissa_bits)
    return magnitude / unit, unit


def stochastic_model(x, dtype, bits):
    """Stochastic rounding as the design states it, in float64: the magnitude goes to the
    neighbour below, plus one unit when bits + (the discarded fraction of a unit, truncated to
    16 bits) reaches 2**16; NaN and inf round to nearest."""
    units, unit = units_in_last_place(x, dtype)
    with np.errstate(over="ignore", invalid="ignore"):     # inf and NaN: nearest below
        below = np.floor(units)
        fraction16 = np.floor((units - below) * 2**16)
        up = bits.astype(np.float64) + fraction16 >= 2**16
        rounded = np.copysign((below + up) * unit, x).astype(dtype)   # exact, or inf
        nearest = x.astype(dtype)
    return np.where(np.isfinite(x), rounded, nearest)


def c_narrow(x, dtype, **keyed):
    out = np.empty(x.shape, dtype)
    kernels.narrow(np.ascontiguousarray(x), out, **keyed)
    return out


def numpy_narrow(x, dtype, stochastic=False, seed=0, step=1, array=0, role=0):
    key = _rounding.rounding_key(seed, step, array, role) if stochastic else 0
    return _rounding.narrow(x, dtype, stochastic, key)


# -- C and NumPy agree; nearest is the casts' --------------------------------------------------

@needs_kernels
@pytest.mark.parametrize("stochastic", [False, True], ids=["nearest", "stochastic"])
@pytest.mark.parametrize("dtype", LOW, ids=IDS)
def test_c_and_numpy_conversions_agree_on_every_bit_pattern_class(dtype, stochastic):
    keyed = dict(stochastic=stochastic, seed=12345, step=7, array=3, role=2)
    assert_same_bits(c_narrow(X, dtype, **keyed), numpy_narrow(X, dtype, **keyed),
                     f"{dtype} stochastic={stochastic}")


@needs_kernels
@pytest.mark.parametrize("dtype", LOW, ids=IDS)
def test_c_stochastic_stores_of_nan_and_inf_are_the_nearest_ones_to_the_bit(dtype):
    """NaN (every payload class), inf and, for float16, magnitudes of 2**16 and more never
    round stochastically: the stochastic C store gives exactly the bits of the nearest one
    (not only "a NaN")."""
    limit = np.float32(2.0**16 if dtype == FLOAT16 else np.inf)
    with np.errstate(invalid="ignore"):
        x = X[~np.isfinite(X) | (np.abs(X) >= limit)]
    assert np.isnan(x).sum() > 1000
    nearest = c_narrow(x, dtype).view(np.uint16)
    for seed in (1, 2, 3):
        stochastic = c_narrow(x, dtype, stochastic=True, seed=seed).view(np.uint16)
        assert (stochastic == nearest).all(), dtype


@needs_kernels
@pytest.mark.parametrize("dtype", LOW, ids=IDS)
def test_c_widening_is_exact_for_every_bit_pattern(dtype):
    """All 2**16 values (and a tail shorter than a vector) widened by C as NumPy/ml_dtypes
    cast them: exact, subnormals included; a NaN stays a NaN of its sign (a signalling NaN
    may come back quiet, as the CPU's conversion makes it)."""
    bits = np.concatenate([np.arange(2**16), np.arange(0x3C00, 0x3C00 + 13)]).astype(np.uint16)
    x = bits.view(dtype)
    got = np.empty(x.size, np.float32)
    kernels.widen(x, got)
    expected = x.astype(np.float32)
    nan = np.isnan(expected)
    assert_same_bits(got[~nan], expected[~nan], f"{dtype} widened")
    assert np.isnan(got[nan]).all()
    assert (np.signbit(got[nan]) == np.signbit(expected[nan])).all()


@needs_kernels
def test_c_conversions_refuse_a_read_only_out_and_leave_it_alone():
    x32, x16 = np.ones(8, np.float32), np.ones(8, np.float16)
    for convert, x, out in ((kernels.narrow, x32, np.zeros(8, np.float16)),
                            (kernels.widen, x16, np.zeros(8, np.float32))):
        out.flags.writeable = False
        with pytest.raises(ValueError, match="out is read-only"):
            convert(x, out)
        assert not out.any()


@pytest.mark.parametrize("narrow", ["c", "numpy"])
@pytest.mark.parametrize("dtype", LOW, ids=IDS)
def test_nearest_even_is_the_cast_of_ml_dtypes_and_numpy(dtype, narrow):
    if narrow == "c" and kernels is None:
        pytest.skip("fastoptim._kernels is not built")
    ours = c_narrow(X, dtype) if narrow == "c" else numpy_narrow(X, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = X.astype(dtype)
    assert_same_bits(ours, cast, f"{dtype} nearest")      # NaN matches NaN
    # and the edges say what they should: the overflow boundaries, a NaN stays a NaN
    nan = np.isnan(X)
    assert np.isnan(ours[nan].astype(np.float32)).all()
    if dtype == FLOAT16:
        edges = np.float32([65504, 65519, 65520, 2**-25, 3 * 2**-25])
        expected = np.float32([65504, 65504, np.inf, 0, 2**-23])
        assert_same_bits(c_narrow(edges, dtype) if narrow == "c" else numpy_narrow(edges, dtype),
                         expected.astype(dtype))


# -- stochastic rounding -----------------------------------------------------------------------

def test_the_reference_generator_is_the_documented_one():
    """fastoptim._rounding's key and bits equal the ones written here from the description."""
    for seed, step, array, role in [(0, 1, 0, 0), (2**64 - 1, 2**62 - 1, 5, 7),
                                    (12345, 7, 3, 2), (1, 2, 300, 255)]:
        key = rounding_key(seed, step, array, role)
        assert _rounding.rounding_key(seed, step, array, role) == key
        for first in (0, 2**32 - 3):      # element indices whose high half is not 0
            assert (_rounding.random16(key, first, 1000).astype(np.uint64)
                    == random_bits(key, 1000, first)).all()


@pytest.mark.parametrize("narrow", ["c", "numpy"])
@pytest.mark.parametrize("dtype", LOW, ids=IDS)
def test_stochastic_rounding_is_the_documented_rule(dtype, narrow):
    if narrow == "c" and kernels is None:
        pytest.skip("fastoptim._kernels is not built")
    keyed = dict(seed=99, step=3, array=1, role=4)
    ours = (c_narrow(X, dtype, stochastic=True, **keyed) if narrow == "c"
            else numpy_narrow(X, dtype, stochastic=True, **keyed))
    bits = random_bits(rounding_key(99, 3, 1, 4), X.size)
    assert_same_bits(ours, stochastic_model(X, dtype, bits), f"{dtype} stochastic")


@needs_kernels
@pytest.mark.parametrize("dtype", LOW, ids=IDS)
def test_stochastic_rounding_gives_one_of_the_two_neighbours(dtype):
    """Within one unit of x (the unit of x's binade: the only representable values that
    close are the neighbours below and above), with x's sign, x itself when x is
    representable; inf only above the largest finite value."""
    finite = X[np.isfinite(X)]
    units, unit = units_in_last_place(finite, dtype)
    x = finite.astype(np.float64)
    largest = float(np.array(0x7BFF if dtype == FLOAT16 else 0x7F7F, np.uint16).view(dtype))
    exact = (units == np.floor(units)) & (np.abs(x) <= largest)     # representable
    for seed in range(4):
        r = c_narrow(finite, dtype, stochastic=True, seed=seed).astype(np.float64)
        overflow = np.isinf(r)
        assert (np.abs(r - x)[~overflow] < unit[~overflow]).all()
        assert (np.signbit(r) == np.signbit(x)).all()
        assert (r[exact] == x[exact]).all()
        assert (np.abs(x[overflow]) > largest).all()


def values_between_neighbours(dtype, count, seed):
    """``count`` float32 values strictly between two neighbours of dtype, in its normal range,
    with fractions of a unit spread over (0, 1)."""
    rng = np.random.default_rng(seed)
    lowest_normal = 2.0 ** FORMAT[dtype][1]
    x = (rng.choice([-1, 1], count) * lowest_normal
         * 2.0 ** rng.uniform(0, 20, count)).astype(np.float32)
    units, _ = units_in_last_place(x, dtype)
    return x[units != np.floor(units)]


@needs_kernels
@pytest.mark.parametrize("dtype", LOW, ids=IDS)
def test_stochastic_rounding_is_unbiased(dtype):
    """The mean of many stochastic roundings of x converges to x.

    A value x between neighbours lo and hi = lo + u rounds to lo + u*B with B a Bernoulli
    draw of probability p = (x - lo)/u (exactly: bfloat16 drops 16 bits and normal float16
    values 13, so the fraction is not truncated). The mean of N independent draws has
    expectation x and standard deviation u*sqrt(p(1-p)/N) <= u/(2 sqrt N). Each of K values
    is repeated R times in an array (each element draws its own bits) and rounded under S
    seeds, N = R*S draws; every value's mean must lie within 6 standard deviations of x
    (a false alarm somewhere among K values: below K * 2e-9), and the mean error over all
    values, in units, within 6 of its standard deviation sqrt(sum p(1-p)/N)/K (~1e-4 units:
    a fraction truncated to 8 bits, a bias up to 2**-8 units, would fail it).
    """
    K, R, S = 256, 4096, 16
    x = values_between_neighbours(dtype, K, seed=1)
    units, unit = units_in_last_place(x, dtype)
    p = units - np.floor(units)
    total = np.zeros(x.size)
    repeated = np.repeat(x, R)
    for seed in range(S):
        r = c_narrow(repeated, dtype, stochastic=True, seed=seed, step=seed + 1)
        total += r.astype(np.float64).reshape(x.size, R).sum(axis=1)
    n = R * S
    error = total / n - x.astype(np.float64)                 # in the values' own terms
    sigma = unit * np.sqrt(p * (1 - p) / n)
    assert (np.abs(error) <= 6 * sigma).all(), np.max(np.abs(error) / sigma)
    mean_error_units = np.mean(error / unit)
    mean_sigma_units = np.sqrt(np.sum(p * (1 - p) / n)) / x.size
    assert abs(mean_error_units) <= 6 * mean_sigma_units


@needs_kernels
def test_float16_subnormals_round_with_the_fraction_truncated_to_16_bits():
    """Below 2**-14 float16 drops more than 16 bits: the probability of rounding up is the
    fraction truncated to 16 bits (biased downwards by less than 2**-16 of a unit), and a
    value under 2**-16 of the smallest subnormal always rounds to 0."""
    x = np.float32([2**-24 * 0.3, 2**-24 * 1.75, 2**-20 * 1.0001, 2**-41, 2**-40 * 1.5])
    R, S = 8192, 8
    repeated = np.repeat(x, R)
    up = np.zeros(x.size)
    units, unit = units_in_last_place(x, FLOAT16)
    for seed in range(S):
        r = c_narrow(repeated, FLOAT16, stochastic=True, seed=seed).astype(np.float64)
        up += (r.reshape(x.size, R) > np.floor(units)[:, None] * unit[:, None]).sum(axis=1)
    p16 = np.floor((units - np.floor(units)) * 2**16) / 2**16
    n = R * S
    assert (np.abs(up / n - p16) <= 6 * np.sqrt(p16 * (1 - p16) / n) + 1e-12).all()
    assert up[3] == 0       # 2**-41 is 2**-17 of the smallest subnormal


@needs_kernels
@pytest.mark.parametrize("dtype", LOW, ids=IDS)
def test_stochastic_rounding_is_reproducible_and_keyed(dtype):
    """The same (seed, step, array, role) gives the same bits; changing any one of them draws
    other bits: about half of the values that lie halfway round the other way."""
    x = values_between_neighbours(dtype, 20_000, seed=2)
    base = dict(stochastic=True, seed=5, step=9, array=2, role=3)
    first = c_narrow(x, dtype, **base)
    assert_same_bits(c_narrow(x, dtype, **base), first)
    for change in [dict(seed=6), dict(seed=5 + 2**32), dict(step=10), dict(step=9 + 2**32),
                   dict(array=3), dict(array=2 + 2**40), dict(role=4)]:
        other = c_narrow(x, dtype, **{**base, **change})
        differ = np.mean(first.view(np.uint16) != other.view(np.uint16))
        assert 0.1 < differ < 0.5, (change, differ)


# -- through a kernel ------------------------------------------------------------------------------

@needs_kernels
@pytest.mark.parametrize("dtype", LOW, ids=IDS)
def test_stochastic_stores_do_not_depend_on_the_thread_count(dtype):
    """A large array split across 1, 2 or 3 threads draws each element's bits from its index
    in the array, so the stores are the same -- and the reference's."""
    n = 3 * 65536 + 101
    rng = np.random.default_rng(4)
    param = rng.standard_normal(n).astype(dtype)
    grad = rng.standard_normal(n).astype(np.float32)
    master = param.astype(np.float32)
    results = []
    for module, threads in [(reference, None), (kernels, 1), (kernels, 2), (kernels, 3)]:
        p, copy, m = param.copy(), np.zeros(n, dtype), master.copy()
        module.sgd_step(p, grad, lr=1e-3, step=4, rounding="stochastic", seed=11,
                        threads=threads)
        module.sgd_step(m, grad, lr=1e-3, step=4, rounding="stochastic", seed=11,
                        param_copy=copy, threads=threads)
        results.append((p, copy))
    for p, copy in results[1:]:
        assert_same_bits(p, results[0][0], "param")
        assert_same_bits(copy, results[0][1], "param copy")
    assert (results[0][0] != param).mean() > 0.05        # the step moved many elements


@needs_kernels
def test_each_role_and_array_of_a_kernel_draws_its_own_bits():
    """ASGD with mu = 1 stores the same float32 value into the param and into ax: with
    stochastic rounding the two stores use different bits (role), and so do two identical
    arrays stepped in one call (array index)."""
    rng = np.random.default_rng(5)
    n = 5000
    param = rng.standard_normal(n).astype(BFLOAT16)
    grad = rng.standard_normal(n).astype(np.float32)
    params = [param.copy(), param.copy()]
    axes = [np.zeros(n, BFLOAT16), np.zeros(n, BFLOAT16)]
    for module in (kernels, reference):
        ps, ax = [p.copy() for p in params], [a.copy() for a in axes]
        module.asgd_step(ps, [grad, grad], ax, eta=0.01, mu=1.0, lambd=0.0, step=1,
                         rounding="stochastic", seed=3)
        assert 0.1 < np.mean(ps[0].view(np.uint16) != ax[0].view(np.uint16)) < 0.6
        assert 0.1 < np.mean(ps[0].view(np.uint16) != ps[1].view(np.uint16)) < 0.6
        # with nearest-even, the same value is stored the same way everywhere
        ps, ax = [p.copy() for p in params], [a.copy() for a in axes]
        module.asgd_step(ps, [grad, grad], ax, eta=0.01, mu=1.0, lambd=0.0, step=1)
        assert_same_bits(ps[0], ax[0])
        assert_same_bits(ps[0], ps[1])
