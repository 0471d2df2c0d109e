/* loops/reduce.h -- norms of gradients (clipping, check_finite), in the fixed order of
 * fastoptim.h: per reduction block, FO_REDUCE_LANES interleaved lanes in double, combined
 * pairwise. Written once over `real` and `stored`; kernels.c instantiates it for float,
 * double and bfloat16 buffers. buf: x (read only). sums: this block's value, and 0 when
 * every element is finite (NaN otherwise). */

/* One pass over a reduction block: the lane sums of f(x) (f a literal: x*x or |x|),
 * combined pairwise, and the finiteness flag. Whole groups of FO_REDUCE_LANES first (the
 * loop the compiler vectorizes: one vector accumulator per few lanes), then the tail.
 * A float's square or |x| is finite in double and 2048 of them cannot overflow, so for
 * float the value itself is finite exactly when every x is, and value*0 is the flag; a
 * double's square can overflow, so double keeps lanes of x*0 (NaN exactly for inf, NaN). */
FO_INLINE void FN(block_lanes)(const stored *x, int64_t n, const int f, double *value,
                               double *zero)
{
    const int zero_lanes = sizeof(real) > sizeof(float);
    double lane[FO_REDUCE_LANES] = {0}, lane0[FO_REDUCE_LANES] = {0};
    int64_t i = 0;
    for (; i + FO_REDUCE_LANES <= n; i += FO_REDUCE_LANES) {
        for (int k = 0; k < FO_REDUCE_LANES; k++) {
            double xk = (double)FN(load)(x[i + k]);
            lane[k] += f == FO_LANES_SQUARE ? xk * xk : fabs(xk);
            if (zero_lanes)
                lane0[k] += xk * 0.0;
        }
    }
    for (int k = 0; i + k < n; k++) {
        double xk = (double)FN(load)(x[i + k]);
        lane[k] += f == FO_LANES_SQUARE ? xk * xk : fabs(xk);
        if (zero_lanes)
            lane0[k] += xk * 0.0;
    }
    *value = FN(combine_lanes)(lane);
    *zero = zero_lanes ? FN(combine_lanes)(lane0) : *value * 0.0;
}

FO_LOOP(sum_squares)
{
    (void)scalars_;
    FN(block_lanes)(buf[0], n, FO_LANES_SQUARE, &sums[0], &sums[1]);
}

FO_LOOP(sum_abs)
{
    (void)scalars_;
    FN(block_lanes)(buf[0], n, FO_LANES_ABS, &sums[0], &sums[1]);
}

/* the largest |x|, NaN when any x is NaN (the order does not matter for a maximum); it is
 * finite exactly when every x is, so most*0 is the flag */
FO_LOOP(max_abs)
{
    const stored *restrict x = buf[0];
    (void)scalars_;
    double most = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = fabs((double)FN(load)(x[i]));
        most = (a > most || a != a) ? a : most;
    }
    sums[0] = most;
    sums[1] = most * 0.0;
}
