"""bfloat16/float16 storage in the NumPy reference: widening, and rounding back.

The same rules as the C conversions (csrc/convert.c), element for element: widening is
exact; narrowing rounds to nearest-even, or stochastically -- away from zero with
probability equal to the discarded fraction of a unit in the last place, truncated to 16
bits, drawn from 16 random bits per element. NaN and infinity never round stochastically.

The random bits: key = m(m(m(seed) ^ step) ^ (array << 8 | role)) with m(z) the splitmix64
output for state z (the golden gamma added, then the finalizer); for element i,
h = f(lo(i) ^ lo(key)), h = f(h ^ hi(key) ^ hi(i)), bits = h >> 16, with f the 32-bit
"lowbias32" hash and lo/hi the low and high 32 bits. A magnitude rounds away from zero when
bits + (the discarded fraction as 16 bits) >= 2**16.
"""
import numpy as np

from fastoptim._checks import BFLOAT16, FLOAT16, FLOAT32

MASK64 = (1 << 64) - 1


def mix64(z):
    """splitmix64's output for state z (gamma added, then the finalizer), on Python ints
    modulo 2**64."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def rounding_key(seed, step, array, role):
    """The 64-bit key of one buffer's stochastic rounding in one step."""
    key = mix64(seed & MASK64)
    key = mix64(key ^ (step & MASK64))
    return mix64(key ^ (((array << 8) | role) & MASK64))


def _lowbias32(x):
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def random16(key, first, n):
    """The 16 random bits (as uint32) of elements first .. first + n - 1 under key."""
    index = np.arange(first, first + n, dtype=np.uint64)
    low = (index & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    high = (index >> np.uint64(32)).astype(np.uint32)
    h = _lowbias32(low ^ np.uint32(key & 0xFFFFFFFF))
    h = _lowbias32(h ^ np.uint32(key >> 32) ^ high)
    return h >> np.uint32(16)


def widen(a):
    """A float32 copy of a bfloat16/float16 array (exact)."""
    return a.astype(FLOAT32)


def _bfloat16_nearest(bits):
    with np.errstate(over="ignore"):
        rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
                   >> np.uint32(16))
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quiet = ((bits >> np.uint32(16)) & np.uint32(0x8000)) | np.uint32(0x7FC0)
    return np.where(nan, quiet, rounded).astype(np.uint16)


def _float16_nearest(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(FLOAT16).view(np.uint16)


def _float16_stochastic(x, random):
    bits = x.view(np.uint32).astype(np.uint64)
    sign = (bits >> np.uint64(16)) & np.uint64(0x8000)
    a = bits & np.uint64(0x7FFFFFFF)
    exponent = a >> np.uint64(23)
    # normal float16 range: 13 bits discarded
    kept_normal = ((exponent.astype(np.int64) - 112).clip(0).astype(np.uint64) << np.uint64(10)) \
        | ((a >> np.uint64(13)) & np.uint64(0x3FF))
    fraction_normal = (a & np.uint64(0x1FFF)) << np.uint64(3)
    # below: a float16 subnormal (or less), `shift` bits of the mantissa discarded
    mantissa = np.where(exponent > 0, (a & np.uint64(0x7FFFFF)) | np.uint64(0x800000), a)
    shift = (126 - np.maximum(exponent.astype(np.int64), 1)).clip(0, 63).astype(np.uint64)
    small = shift < 40
    kept_sub = np.where(small, mantissa >> shift, np.uint64(0))
    discarded = mantissa & ((np.uint64(1) << shift) - np.uint64(1))
    fraction_sub = np.where(
        shift >= 16, discarded >> (shift - np.uint64(16)).clip(0),
        discarded << (np.uint64(16) - np.minimum(shift, np.uint64(16))))
    fraction_sub = np.where(small, fraction_sub, np.uint64(0))
    normal = exponent >= 113
    kept = np.where(normal, kept_normal, kept_sub)
    fraction = np.where(normal, fraction_normal, fraction_sub)
    result = sign | (kept + ((fraction + random.astype(np.uint64)) >> np.uint64(16)))
    big = a >= np.uint64(0x47800000)                       # |x| >= 2^16, inf, NaN
    nan = a > np.uint64(0x7F800000)
    result = np.where(big, sign | np.uint64(0x7C00), result).astype(np.uint16)
    return np.where(nan, _float16_nearest(x), result)


def narrow(x, dtype, stochastic=False, key=0, first=0):
    """float32 values x rounded to dtype (bfloat16 or float16); returns the new array."""
    x = np.ascontiguousarray(x, dtype=FLOAT32)
    bits = x.view(np.uint32)
    if not stochastic:
        out = _bfloat16_nearest(bits) if dtype == BFLOAT16 else _float16_nearest(x)
    else:
        random = random16(key, first, x.size).reshape(x.shape)
        if dtype == BFLOAT16:
            finite = (bits & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
            with np.errstate(over="ignore"):
                carried = ((bits + random) >> np.uint32(16)).astype(np.uint16)
            out = np.where(finite, carried, _bfloat16_nearest(bits))
        else:
            out = _float16_stochastic(x, random)
    return out.view(dtype)
