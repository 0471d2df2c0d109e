/* loops/common.h -- what every loop file shares; included once per instantiation by
 * kernels.c, after `real` (the compute type: float or double), `uint_real` (the unsigned
 * integer of its size), `stored` and `stored_state` (how the param and gradient, and the
 * state buffers, hold an element: real itself, or fo_bfloat16, with
 * FO_PARAMS_BFLOAT16 / FO_STATE_BFLOAT16 defined) and FN(name) (name_f32, ...) are
 * defined. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef FO_LOOPS_COMMON_ONCE
#define FO_LOOPS_COMMON_ONCE

#include "../bfloat16.h"
#include "../simd.h"

#define FO_SQRT(x) _Generic((x), float: sqrtf, double: sqrt)(x)

/* A kernel's loop and its scalars struct, named alike: FO_LOOP(adam) is adam_loop_f32 (and
 * _f64, ...) taking adam_scalars_f32 (_f64, ...). */
#define FO_LOOP(name) \
    FO_SIMD static void FN(name##_loop)(const real *scalars_, void *const *buf, int64_t n, \
                                        double *sums)

#endif /* FO_LOOPS_COMMON_ONCE */

/* Loops read every buffer element once and write it once, keeping values in `real` in
 * between: the param and gradient through FN(load) and FN(store), the state buffers through
 * FN(load_state) and FN(store_state). For bfloat16 they widen and round to nearest even in
 * registers, exactly as the driver's block conversions do; otherwise they do nothing. */
#ifdef FO_PARAMS_BFLOAT16
FO_INLINE real FN(load)(stored x) { return bfloat16_widen(x.bits); }
FO_INLINE stored FN(store)(real x) { return (stored){bfloat16_nearest(x)}; }
#else
FO_INLINE real FN(load)(stored x) { return x; }
FO_INLINE stored FN(store)(real x) { return x; }
#endif
#ifdef FO_STATE_BFLOAT16
FO_INLINE real FN(load_state)(stored_state x) { return bfloat16_widen(x.bits); }
FO_INLINE stored_state FN(store_state)(real x)
{
    return (stored_state){bfloat16_nearest(x)};
}
#else
FO_INLINE real FN(load_state)(stored_state x) { return x; }
FO_INLINE stored_state FN(store_state)(real x) { return x; }
#endif

/* The first fields of every optimizer's scalars struct: what every optimizer does to its
 * gradient and parameter before its own update (fo_prologue below). */
typedef struct {
    real maximize;          /* 1: g <- -g */
    real grad_factor;       /* g <- g * grad_factor first (clipping, 1 / loss scale); 1: none */
    real weight_decay;      /* L2: g <- g + wd * p; 0: none */
    real param_decay;       /* decoupled: p <- p * (1 - lr * wd) first; 1: none */
} FN(prologue_scalars);

/* The parameter and gradient as an optimizer's update sees them: decoupled decay shrinks p,
 * the gradient is scaled, negated by maximize, and gets L2 decay wd * p (torch.optim's
 * order). Each step is skipped when its scalar is the identity, decided on the rounded
 * value as the reference decides it. The caller's grad buffer is never written. The
 * negation is an integer XOR of the sign bit -- exactly NumPy's -grad, NaN included --
 * because a floating-point negation would let the compiler fold p - lr*(-g) into p + lr*g,
 * which keeps a NaN's sign where NumPy flips it. */
FO_INLINE void FN(prologue)(const FN(prologue_scalars) *s, real param, real grad, real *p,
                            real *g)
{
    real pi = s->param_decay != 1 ? param * s->param_decay : param;
    real gi = s->grad_factor != 1 ? grad * s->grad_factor : grad;
    uint_real bits;
    memcpy(&bits, &gi, sizeof bits);
    bits ^= (uint_real)(s->maximize != 0) << (8 * sizeof(real) - 1);
    memcpy(&gi, &bits, sizeof gi);
    *p = pi;
    *g = s->weight_decay != 0 ? gi + s->weight_decay * pi : gi;
}

/* NumPy's maximum(a, b): NaN in either propagates; otherwise the larger, and b on a tie
 * (so maximum(-0, +0) is +0 and maximum(+0, -0) is -0, as NumPy gives on x86-64). */
FO_INLINE real FN(maximum)(real a, real b)
{
    return (a > b || a != a) ? a : b;
}

/* NumPy's sign: -1, 0 (keeping -0 and +0 as they are) or 1; NaN stays NaN. */
FO_INLINE real FN(sign)(real x)
{
    return x > 0 ? (real)1 : x < 0 ? (real)-1 : x;
}

/* The lanes of a reduction block combined pairwise: (0+1), (2+3), ... then again. */
FO_INLINE double FN(combine_lanes)(double *lane)
{
    for (int width = FO_REDUCE_LANES / 2; width >= 1; width /= 2)
        for (int k = 0; k < width; k++)
            lane[k] = lane[2 * k] + lane[2 * k + 1];
    return lane[0];
}

/* The sum of x[i]^2 over one reduction block (n <= FO_REDUCE_BLOCK), in double, in the
 * fixed lane order of fastoptim.h. */
FO_INLINE double FN(block_sum_squares)(const real *x, int64_t n)
{
    double lane[FO_REDUCE_LANES] = {0};
    int64_t i = 0;
    for (; i + FO_REDUCE_LANES <= n; i += FO_REDUCE_LANES)
        for (int k = 0; k < FO_REDUCE_LANES; k++)
            lane[k] += (double)x[i + k] * (double)x[i + k];
    for (int k = 0; i + k < n; k++)
        lane[k] += (double)x[i + k] * (double)x[i + k];
    return FN(combine_lanes)(lane);
}
