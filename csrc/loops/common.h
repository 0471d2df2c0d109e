/* loops/common.h -- what every loop file shares; included once per dtype by kernels.c,
 * after `real` (float or double), `uint_real` (the unsigned integer of its size) and
 * FN(name) (name_f32 / name_f64) are defined. */
#include <math.h>
#include <string.h>

#ifndef FO_LOOPS_COMMON_ONCE
#define FO_LOOPS_COMMON_ONCE

/* Runtime SIMD dispatch: GCC/clang compile a chunk function once per target and pick one
 * when the library loads (an ifunc), so one build runs on any x86-64 and still uses
 * AVX-512 where the CPU has it. Elsewhere the plain loop is compiled once. */
#if defined(__x86_64__) && defined(__linux__) && defined(__has_attribute)
#  if __has_attribute(target_clones)
#    define FO_SIMD __attribute__((target_clones("avx512f", "avx2", "default")))
#  endif
#endif
#ifndef FO_SIMD
#  define FO_SIMD
#endif

/* Loops that take a few constant options are written once as an always-inline function
 * and called with literal flags, so each variant compiles without tests in its loop. */
#define FO_INLINE static inline __attribute__((always_inline))

#define FO_SQRT(x) _Generic((x), float: sqrtf, double: sqrt)(x)

#endif /* FO_LOOPS_COMMON_ONCE */

/* The gradient as every optimizer sees it: maximize negates it, then L2 weight decay
 * adds wd * p. The caller's grad buffer is never written. The negation is an integer XOR
 * of the sign bit -- exactly NumPy's -grad, NaN included -- because a floating-point
 * negation would let the compiler fold p - lr*(-g) into p + lr*g, which keeps a NaN's sign
 * where NumPy flips it. */
FO_INLINE real FN(effective_grad)(real grad, real param, int maximize, real weight_decay,
                                  int l2)
{
    uint_real bits;
    memcpy(&bits, &grad, sizeof bits);
    bits ^= (uint_real)(maximize != 0) << (8 * sizeof(real) - 1);
    real g;
    memcpy(&g, &bits, sizeof g);
    return l2 ? g + weight_decay * param : g;
}

/* NumPy's maximum(a, b): NaN in either propagates; otherwise the larger, and b on a tie
 * (so maximum(-0, +0) is +0 and maximum(+0, -0) is -0, as NumPy gives on x86-64). */
FO_INLINE real FN(maximum)(real a, real b)
{
    return (a > b || a != a) ? a : b;
}
