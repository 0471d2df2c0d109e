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

#endif
