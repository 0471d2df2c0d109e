/* loops/reduce.h -- norms of gradients (clipping, check_finite), in the fixed order of
 * fastoptim.h: per reduction block, FO_REDUCE_LANES interleaved lanes in double, combined
 * pairwise. Written once over `real`; kernels.c instantiates it for float and double.
 * buf: x (read only). sums: this block's value, and 0 when every element is finite (NaN
 * otherwise: x*0 is NaN exactly for inf and NaN). */

/* the lane sum of f(x), f a literal: x*x, |x| or x*0 */
FO_INLINE double FN(block_lanes)(const real *x, int64_t n, const int f)
{
    double lane[FO_REDUCE_LANES] = {0};
    for (int64_t i = 0; i < n; i += FO_REDUCE_LANES) {
        for (int k = 0; k < FO_REDUCE_LANES && i + k < n; k++) {
            double xk = (double)x[i + k];
            lane[k] += f == FO_LANES_SQUARE ? xk * xk : f == FO_LANES_ABS ? fabs(xk) : xk * 0.0;
        }
    }
    return FN(combine_lanes)(lane);
}

FO_LOOP(sum_squares)
{
    (void)scalars_;
    sums[0] = FN(block_lanes)(buf[0], n, FO_LANES_SQUARE);
    sums[1] = FN(block_lanes)(buf[0], n, FO_LANES_ZERO);
}

FO_LOOP(sum_abs)
{
    (void)scalars_;
    sums[0] = FN(block_lanes)(buf[0], n, FO_LANES_ABS);
    sums[1] = FN(block_lanes)(buf[0], n, FO_LANES_ZERO);
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
    sums[0] = most;
    sums[1] = FN(block_lanes)(x, n, FO_LANES_ZERO);
}
