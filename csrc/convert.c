/* convert.c -- bfloat16/float16 storage: widening to float, and rounding back.
 *
 * Widening is exact. Narrowing rounds once, to nearest-even (bfloat16 as ml_dtypes does,
 * float16 as IEEE and NumPy do), or stochastically: away from zero with probability equal
 * to the discarded fraction of a unit in the last place, truncated to 16 bits, using 16
 * random bits per element. For bfloat16 (16 discarded bits) and normal float16 values
 * (13) that probability is exact, so the rounding is unbiased; for float16 subnormals the
 * fraction is truncated to 16 bits. NaN and infinity never round stochastically.
 *
 * The random bits come from a counter-based hash: a 64-bit key per (seed, step, array,
 * role) from three rounds of splitmix64, then two rounds of the 32-bit "lowbias32" hash
 * per element index. Nothing depends on the thread or the order of evaluation, and the
 * NumPy reference (fastoptim/_rounding.py) computes the same bits.
 */
#include "fastoptim.h"

#include <string.h>

#include "bfloat16.h"
#include "simd.h"

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t fo_rounding_key(const fo_rounding *r, int64_t array, int role)
{
    uint64_t k = mix64(r->seed);
    k = mix64(k ^ (uint64_t)r->step);
    return mix64(k ^ (((uint64_t)array << 8) | (uint64_t)role));
}

static inline uint32_t lowbias32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* 16 random bits for element i under key */
static inline uint32_t random16(uint64_t key, int64_t i)
{
    uint32_t h = lowbias32((uint32_t)i ^ (uint32_t)key);
    h = lowbias32(h ^ (uint32_t)(key >> 32) ^ (uint32_t)((uint64_t)i >> 32));
    return h >> 16;
}

/* ---- bfloat16 (the nearest rounding and widening: bfloat16.h) ---- */

static inline uint16_t bfloat16_stochastic(float x, uint32_t random)
{
    const uint32_t b = float_bits(x);
    if ((b & 0x7f800000U) == 0x7f800000U)           /* inf and NaN */
        return bfloat16_nearest(x);
    return (uint16_t)((b + random) >> 16);          /* carries with probability low16 / 2^16 */
}

/* ---- float16 ---- */

#ifdef __FLT16_MAX__
static inline uint16_t float16_nearest(float x)
{
    _Float16 h = (_Float16)x;
    uint16_t b;
    memcpy(&b, &h, sizeof b);
    return b;
}

static inline float float16_widen(uint16_t b)
{
    _Float16 h;
    memcpy(&h, &b, sizeof h);
    return (float)h;
}
#else
#error "fastoptim needs a compiler with _Float16 (GCC >= 12 or clang >= 15)"
#endif

/* Written without branches, in 32-bit integers, so that a loop of it vectorizes: every
 * case is computed and the right one selected. */
static inline uint16_t float16_stochastic(float x, uint32_t random)
{
    const uint32_t b = float_bits(x);
    const uint32_t sign = (b >> 16) & 0x8000U, a = b & 0x7fffffffU, exponent = a >> 23;
    /* a normal float16 (exponent >= 113): 13 bits discarded */
    const uint32_t normal_kept = ((exponent - 112) << 10) | ((a >> 13) & 0x3ffU);
    const uint32_t normal_fraction = (a & 0x1fffU) << 3;
    /* a float16 subnormal, or below: the 24-bit mantissa shifted right by 14 bits or more;
     * fraction16 is the top 16 bits of what the shift discards. This is computed for every
     * x, so the shift is clamped to [14, 47] (126 - exponent wraps for large exponents):
     * every shift count below stays under 32, and from 40 on both parts are 0 anyway. */
    const uint32_t mantissa = exponent ? (a & 0x7fffffU) | 0x800000U : a;
    const uint32_t unclamped = 126 - (exponent ? exponent : 1);
    const uint32_t shift = unclamped < 14 ? 14 : unclamped > 47 ? 47 : unclamped;
    const uint32_t small_kept = mantissa >> (shift < 31 ? shift : 31);
    const uint32_t small_fraction = shift <= 32 ? (mantissa << (32 - shift)) >> 16
                                                : mantissa >> (shift - 16);
    const uint32_t kept = exponent >= 113 ? normal_kept : small_kept;
    const uint32_t fraction16 = exponent >= 113 ? normal_fraction : small_fraction;
    const uint32_t rounded = sign | (kept + ((fraction16 + random) >> 16));
    /* |x| >= 2^16 and inf become inf; a NaN stays one, quiet, with the top of its payload
     * (what the nearest conversion gives) */
    const uint32_t large = a > 0x7f800000U ? sign | 0x7e00U | ((a >> 13) & 0x3ffU)
                                           : sign | 0x7c00U;
    return (uint16_t)(a >= 0x47800000U ? large : rounded);
}

/* ---- x86's conversion instructions ----
 * float16 eight at a time with F16C: GCC 12 turns a loop of _Float16 conversions into one
 * instruction per element, so these use the vector instructions themselves (the same
 * conversions: exact widening, and round-to-nearest-even with NaN kept quiet). bfloat16
 * rounding 32 at a time with AVX512-BF16 (bfloat16.h says how the bits stay the same).
 * Each converts the longest prefix it can (none where the CPU lacks the instructions,
 * checked when the library loads) and returns its length; the loops below take the rest. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#  include <immintrin.h>

static int has_f16c, has_avx512_bf16;

__attribute__((constructor)) static void detect_conversions(void)
{
    __builtin_cpu_init();
    has_f16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
    const char *generic = getenv("FASTOPTIM_GENERIC_BF16");   /* for tests and A/B runs */
    has_avx512_bf16 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
                      && __builtin_cpu_supports("avx512bf16")
                      && !(generic && strcmp(generic, "1") == 0);
}

int fo_bfloat16_instruction(void) { return has_avx512_bf16; }

FO_TARGET_AVX512_BF16 static int64_t bfloat16_narrow_vector(const float *x, uint16_t *h,
                                                             int64_t n)
{
    if (!has_avx512_bf16)
        return 0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        bfloat16_nearest_x32(_mm512_loadu_ps(x + i), _mm512_loadu_ps(x + i + 16), h + i);
    return i;
}

__attribute__((target("avx,f16c"))) static int64_t float16_widen_vector(const uint16_t *h,
                                                                       float *out, int64_t n)
{
    if (!has_f16c)
        return 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    return i;
}

__attribute__((target("avx,f16c"))) static int64_t float16_narrow_vector(const float *x,
                                                                        uint16_t *h, int64_t n)
{
    if (!has_f16c)
        return 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(h + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}
#else   /* no such instructions: the loops below convert everything */
int fo_bfloat16_instruction(void) { return 0; }

static int64_t bfloat16_narrow_vector(const float *x, uint16_t *h, int64_t n)
{
    (void)x, (void)h, (void)n;
    return 0;
}

static int64_t float16_widen_vector(const uint16_t *h, float *out, int64_t n)
{
    (void)h, (void)out, (void)n;
    return 0;
}

static int64_t float16_narrow_vector(const float *x, uint16_t *h, int64_t n)
{
    (void)x, (void)h, (void)n;
    return 0;
}
#endif

/* ---- the block conversions the driver calls ---- */

FO_SIMD void fo_widen(const void *x, int dtype, float *out, int64_t n)
{
    const uint16_t *h = x;
    if (dtype == FO_BFLOAT16) {
        for (int64_t i = 0; i < n; i++)
            out[i] = bfloat16_widen(h[i]);
    } else {
        for (int64_t i = float16_widen_vector(h, out, n); i < n; i++)
            out[i] = float16_widen(h[i]);
    }
}

/* x[0..n) rounded into out[0..n), which holds elements first.. of its array (the index
 * the random bits are drawn for). */
FO_SIMD void fo_narrow(const float *x, void *out, int dtype, int64_t n, const fo_rounding *r,
                       uint64_t key, int64_t first)
{
    uint16_t *h = out;
    if (dtype == FO_BFLOAT16) {
        if (r->stochastic)
            for (int64_t i = 0; i < n; i++)
                h[i] = bfloat16_stochastic(x[i], random16(key, first + i));
        else
            for (int64_t i = bfloat16_narrow_vector(x, h, n); i < n; i++)
                h[i] = bfloat16_nearest(x[i]);
    } else {
        if (r->stochastic)
            for (int64_t i = 0; i < n; i++)
                h[i] = float16_stochastic(x[i], random16(key, first + i));
        else
            for (int64_t i = float16_narrow_vector(x, h, n); i < n; i++)
                h[i] = float16_nearest(x[i]);
    }
}
