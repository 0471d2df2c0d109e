/* loops/reduce.h -- norms of gradients (clipping, check_finite), in the fixed order of
 * fastoptim.h: per reduction block, FO_REDUCE_LANES interleaved lanes in double, combined
 * pairwise. Written once over `real`; kernels.c instantiates it for float and double.
 * buf: x (read only). sums: this block's value, and 0 when every element is finite (NaN
 * otherwise: x*0 is NaN exactly for inf and NaN). */

/* One pass over a reduction block: the lane sums of f(x) (f a literal: x*x or |x|) and of
 * x*0, combined pairwise. Whole groups of FO_REDUCE_LANES first (the loop the compiler
 * vectorizes: one vector accumulator per few lanes), then the tail. */
FO_INLINE void FN(block_lanes)(const real *x, int64_t n, const int f, double *value,
                               double *zero)
{
    double lane[FO_REDUCE_LANES] = {0}, lane0[FO_REDUCE_LANES] = {0};
    int64_t i = 0;
    for (; i + FO_REDUCE_LANES <= n; i += FO_REDUCE_LANES) {
        for (int k = 0; k < FO_REDUCE_LANES; k++) {
            double xk = (double)x[i + k];
            lane[k] += f == FO_LANES_SQUARE ? xk * xk : fabs(xk);
            lane0[k] += xk * 0.0;
        }
    }
    for (int k = 0; i + k < n; k++) {
        double xk = (double)x[i + k];
        lane[k] += f == FO_LANES_SQUARE ? xk * xk : fabs(xk);
        lane0[k] += xk * 0.0;
    }
    *value = FN(combine_lanes)(lane);
    *zero = FN(combine_lanes)(lane0);
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

/* the largest |x|, NaN when any x is NaN (the order does not matter for a maximum) */
FO_LOOP(max_abs)
{
    const real *restrict x = buf[0];
    (void)scalars_;
    double most = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = fabs((double)x[i]);
        most = (a > most || a != a) ? a : most;
    }
    double abs_sum;
    FN(block_lanes)(x, n, FO_LANES_ABS, &abs_sum, &sums[1]);   /* for its x*0 lanes */
    sums[0] = most;
}
