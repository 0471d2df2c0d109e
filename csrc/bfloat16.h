/* bfloat16.h -- a bfloat16 is the upper half of a float32. Widening is exact; rounding is
 * to nearest-even as ml_dtypes does it, a NaN becoming the quiet NaN of its sign. Shared by
 * the block conversions (convert.c) and the loops that read and write bfloat16 directly
 * (loops/common.h), so both round alike. Written as selects, so loops of them vectorize. */
#ifndef FO_BFLOAT16_H
#define FO_BFLOAT16_H

#include <stdint.h>
#include <string.h>

/* A bfloat16 as the loops hold it: a type of its own, so that a buffer element read or
 * written without its conversion (a bfloat16's bits taken as a number) does not compile. */
typedef struct {
    uint16_t bits;
} fo_bfloat16;

static inline uint32_t float_bits(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static inline float bfloat16_widen(uint16_t h)
{
    uint32_t b = (uint32_t)h << 16;
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* A NaN is replaced before the rounding (by a quiet NaN, which rounds to itself) rather
 * than its result after it: a vector loop then rounds and packs each vector once. */
static inline uint16_t bfloat16_nearest(float x)
{
    uint32_t b = float_bits(x);
    if (x != x)             /* NaN: the quiet NaN of its sign, whose bits round to themselves */
        b = (b & 0x80000000U) | 0x7fc00000U;
    return (uint16_t)((b + 0x7fffU + ((b >> 16) & 1U)) >> 16);
}

/* ---- AVX512-BF16 ----
 * Its instruction rounds to nearest-even as bfloat16_nearest does for every float but two
 * kinds: it reads a float32 subnormal as zero, and it keeps a NaN's payload (where ml_dtypes
 * and bfloat16_nearest give the quiet NaN of its sign). So a group holding either is rounded
 * by bfloat16_nearest instead, and the bits never depend on the CPU. Call only where
 * fo_bfloat16_instruction() (convert.c: the CPU has it, FASTOPTIM_GENERIC_BF16 is not 1). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FO_BFLOAT16_INSTRUCTION 1
#include <immintrin.h>

/* the extensions by name, not "arch=x86-64-v4", which GCC before 11 does not know */
#define FO_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512dq,avx512bf16")))

/* 32 floats (lo: the first 16) rounded into h[0..31]. Thirty-two at a time: one instruction
 * and one store; in sixteens an Adam step took 20 % longer. */
FO_TARGET_AVX512_BF16 static inline void bfloat16_nearest_x32(__m512 lo, __m512 hi, uint16_t *h)
{
    const int nan_or_subnormal = 0x01 | 0x20 | 0x80;   /* fpclass: qNaN, denormal, sNaN */
    if (_mm512_fpclass_ps_mask(lo, nan_or_subnormal) | _mm512_fpclass_ps_mask(hi, nan_or_subnormal)) {
        float x[32];
        _mm512_storeu_ps(x, lo);
        _mm512_storeu_ps(x + 16, hi);
        for (int k = 0; k < 32; k++)
            h[k] = bfloat16_nearest(x[k]);
        return;
    }
    _mm512_storeu_si512(h, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}
#endif

#endif
