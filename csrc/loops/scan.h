/* loops/scan.h -- the EWMA of a series along its time axis (fastoptim.ewma): pandas'
 * ewm().mean() with its missing-value rules, and the lectures' uncorrected average.
 * kernels.c includes this file once per storage dtype `real`; the loops themselves are in
 * scan_body.h, written over an arithmetic type `acc_real` and included twice below: in
 * `real` itself and in double (float32 data averaged in float64, the default).
 *
 * The arrays are viewed as (outer, length, inner), time the middle axis. A column is one
 * (outer, inner) position followed through time; columns are independent, so threads
 * split them and any split gives the same bits. Every column carries a state (scan_body.h
 * says which), optionally read from and written back to the caller's arrays, so a long
 * series can be scanned in pieces, or one observation at a time, with the same bits. */

#ifndef FO_SCAN_ONCE
#define FO_SCAN_ONCE
/* FO_SCAN_TILE: adjacent columns scanned together when time is not the last axis (their
 * state fits in L1 beside the data). When it is (inner == 1: each series contiguous, as
 * in a DataFrame's columns), FO_SCAN_GROUP series are copied FO_SCAN_BLOCK time steps at
 * a time into a small transposed tile, so the same vectorized row loop runs over them. */
enum { FO_SCAN_TILE = 512, FO_SCAN_GROUP = 8, FO_SCAN_BLOCK = 64 };
#endif

typedef struct {
    real *average;
    const real *series;
    void *mean, *weight;        /* the caller's state in the arithmetic type, or NULL */
    int64_t *count;
    int64_t length, inner;
    const ewma_scan_scalars *s;
} FN(ewma_scan_ctx);

#define acc_real real
#define AFN(name) FN(name##_same)
#include "scan_body.h"
#undef acc_real
#undef AFN

#define acc_real double
#define AFN(name) FN(name##_double)
#include "scan_body.h"
#undef acc_real
#undef AFN

static void FN(ewma_scan)(void *average, const void *series, void *mean, void *weight,
                          int64_t *count, int64_t outer, int64_t length, int64_t inner,
                          const ewma_scan_scalars *s, int threads)
{
    int64_t n = outer * length * inner;
    if (n == 0)
        return;
    FN(ewma_scan_ctx) c = {average, series, mean, weight, count, length, inner, s};
    /* for double data both variants are the same code; only float data has a choice */
    if (sizeof(real) == sizeof(float) && s->float32_arithmetic)
        fo_parallel_for(FN(ewma_scan_chunk_same), &c, n, threads);
    else
        fo_parallel_for(FN(ewma_scan_chunk_double), &c, n, threads);
}
