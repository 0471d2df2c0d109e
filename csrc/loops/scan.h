/* loops/scan.h -- the EWMA of a series along its time axis (fastoptim.ewma). Written once
 * over `real`; kernels.c instantiates it for float and double.
 *
 * The arrays are viewed as (outer, length, inner), time the middle axis. A column is one
 * (outer, inner) position followed through time; columns are independent, so threads split
 * them and any split gives the same bits. The recurrence is serial in time, so speed comes
 * from running many columns side by side: adjacent columns in tiles (the inner loop runs
 * over contiguous memory and vectorizes), or, when time is the last axis (inner == 1),
 * FO_SCAN_LANES series interleaved so their dependency chains overlap; a lone series keeps
 * its state in a register.
 *
 * Bias correction divides by bc_t = 1 - beta^t (rounded to `real` once per t) rather than
 * multiplying by 1/bc_t: one rounding instead of two, and off the recurrence's dependency
 * chain. Measured here: free in tiles (memory-bound) and for a lone series (latency-bound);
 * interleaved series run at about half their uncorrected speed, as those divisions stay
 * scalar -- still ~10x pandas. */

#ifndef FO_SCAN_ONCE
#define FO_SCAN_ONCE
/* FO_SCAN_TILE: columns whose state fits in L1 beside the streams; FO_SCAN_LANES: series
 * interleaved to hide the latency of one multiply-add chain (mul + add, ~8 cycles). */
enum { FO_SCAN_TILE = 1024, FO_SCAN_LANES = 8 };
#endif

typedef struct {
    real *average;
    const real *series;
    int64_t length, inner;
    real beta, one_minus_beta;
    double beta_double;     /* beta^t is a running product in double, as the reference keeps it */
    int bias_correction;
} FN(ewma_scan_ctx);

/* w <= FO_SCAN_TILE adjacent columns from out/x, through all time steps (row stride inner):
 * v <- beta*v + (1-beta)*x from v = 0; out <- v, or v / (1 - beta^t) when corrected. */
FO_INLINE void FN(ewma_scan_tile)(const FN(ewma_scan_ctx) *c, real *restrict out,
                                  const real *restrict x, int64_t w, const int corrected)
{
    real v[FO_SCAN_TILE];
    for (int64_t j = 0; j < w; j++)
        v[j] = 0;
    double power = 1.0;
    for (int64_t t = 0; t < c->length; t++, out += c->inner, x += c->inner) {
        power *= c->beta_double;
        const real bias_correction = (real)(1.0 - power);
        for (int64_t j = 0; j < w; j++) {
            real vj = c->beta * v[j] + c->one_minus_beta * x[j];
            v[j] = vj;
            out[j] = corrected ? vj / bias_correction : vj;
        }
    }
}

/* FO_SCAN_LANES whole series stored one after another (inner == 1), scanned together. */
FO_INLINE void FN(ewma_scan_lanes)(const FN(ewma_scan_ctx) *c, real *restrict out,
                                   const real *restrict x, const int corrected)
{
    real v[FO_SCAN_LANES] = {0};
    const int64_t n = c->length;
    double power = 1.0;
    for (int64_t t = 0; t < n; t++) {
        power *= c->beta_double;
        const real bias_correction = (real)(1.0 - power);
        for (int k = 0; k < FO_SCAN_LANES; k++) {
            real vk = c->beta * v[k] + c->one_minus_beta * x[k * n + t];
            v[k] = vk;
            out[k * n + t] = corrected ? vk / bias_correction : vk;
        }
    }
}

/* One series alone (inner == 1): its state stays in a register. */
FO_INLINE void FN(ewma_scan_one)(const FN(ewma_scan_ctx) *c, real *restrict out,
                                 const real *restrict x, const int corrected)
{
    real v = 0;
    double power = 1.0;
    for (int64_t t = 0; t < c->length; t++) {
        power *= c->beta_double;
        const real bias_correction = (real)(1.0 - power);
        v = c->beta * v + c->one_minus_beta * x[t];
        out[t] = corrected ? v / bias_correction : v;
    }
}

/* Columns [first, last), in (outer, inner) order. */
FO_INLINE void FN(ewma_scan_columns)(const FN(ewma_scan_ctx) *c, int64_t first, int64_t last,
                                     const int corrected)
{
    const int64_t n = c->length, inner = c->inner;
    int64_t col = first;
    if (inner == 1) {
        for (; col + FO_SCAN_LANES <= last; col += FO_SCAN_LANES)
            FN(ewma_scan_lanes)(c, c->average + col * n, c->series + col * n, corrected);
        for (; col < last; col++)
            FN(ewma_scan_one)(c, c->average + col * n, c->series + col * n, corrected);
        return;
    }
    while (col < last) {
        int64_t outer = col / inner, j = col % inner;
        int64_t w = inner - j;
        if (w > last - col)
            w = last - col;
        if (w > FO_SCAN_TILE)
            w = FO_SCAN_TILE;
        int64_t offset = outer * n * inner + j;
        FN(ewma_scan_tile)(c, c->average + offset, c->series + offset, w, corrected);
        col += w;
    }
}

/* [lo, hi) counts elements, column-major: the chunk takes the columns that start in it
 * (column k starts at k * length), so the parallel threshold stays in elements. */
FO_SIMD static void FN(ewma_scan_chunk)(const void *ctx, int64_t lo, int64_t hi)
{
    const FN(ewma_scan_ctx) c = *(const FN(ewma_scan_ctx) *)ctx;   /* a local copy: cannot alias the buffers */
    int64_t first = (lo + c.length - 1) / c.length, last = (hi + c.length - 1) / c.length;
    if (c.bias_correction)
        FN(ewma_scan_columns)(&c, first, last, 1);
    else
        FN(ewma_scan_columns)(&c, first, last, 0);
}

static void FN(ewma_scan)(void *average, const void *series, int64_t outer, int64_t length,
                          int64_t inner, const ewma_scan_scalars *s, int threads)
{
    int64_t n = outer * length * inner;
    if (n == 0)
        return;
    FN(ewma_scan_ctx) c = {average, series, length, inner, (real)s->beta,
                           (real)s->one_minus_beta, s->beta, s->bias_correction};
    fo_parallel_for(FN(ewma_scan_chunk), &c, n, threads);
}
