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
#include <stdlib.h>

/* FO_SCAN_TILE: the most adjacent columns scanned together when time is not the last
 * axis (whole rows where they are narrower: their state, 24 bytes a column at most, stays
 * in L2); FO_SCAN_STACK_TILE if no memory can be had for that. When time is the last
 * axis (inner == 1: each series contiguous, as in a DataFrame's columns), FO_SCAN_GROUP
 * series are copied FO_SCAN_BLOCK time steps at a time into a small transposed tile, so
 * the same vectorized row loop runs over them (more series at once: more streams than
 * the prefetchers follow). Short visits to each series, as in movement.c: with 16 steps
 * (two cache lines of doubles) the tile copies alone ran 1.7x faster than with 64 on
 * one thread, the whole scan 1.5x (4 or 8 steps: slower again). */
enum { FO_SCAN_TILE = 1 << 15, FO_SCAN_STACK_TILE = 512, FO_SCAN_GROUP = 8,
       FO_SCAN_BLOCK = 16, /* below, FN(scan_in_parallel): */ FO_SCAN_RUN_BYTES = 16384,
       FO_SCAN_TASK = 1 << 16 };

/* The transposes of those tiles shuffle whole vectors with GCC's vector extensions, on
 * x86-64 CPUs with AVX2 (checked when the scan starts); elsewhere they copy value by
 * value. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#  define FO_SCAN_VECTOR_SQUARES 1
#else
#  define FO_SCAN_VECTOR_SQUARES 0
#endif

#if FO_SCAN_VECTOR_SQUARES
typedef double fo_row_f64 __attribute__((vector_size(32)));
typedef int64_t fo_lanes_f64 __attribute__((vector_size(32)));
typedef float fo_row_f32 __attribute__((vector_size(32)));
typedef int32_t fo_lanes_f32 __attribute__((vector_size(32)));

/* to[c*to_stride + r] = from[r*from_stride + c] for a square of 4 doubles a side: whole
 * rows in, pairs of rows interleaved, pairs of pairs joined, whole rows out. */
FO_INLINE void fo_transpose_square_f64(double *restrict to, int64_t to_stride,
                                       const double *restrict from, int64_t from_stride)
{
    fo_row_f64 r0, r1, r2, r3;
    memcpy(&r0, from, 32);
    memcpy(&r1, from + from_stride, 32);
    memcpy(&r2, from + 2 * from_stride, 32);
    memcpy(&r3, from + 3 * from_stride, 32);
    const fo_lanes_f64 even = {0, 4, 2, 6}, odd = {1, 5, 3, 7};
    const fo_lanes_f64 low = {0, 1, 4, 5}, high = {2, 3, 6, 7};
    const fo_row_f64 s0 = __builtin_shuffle(r0, r1, even), s1 = __builtin_shuffle(r0, r1, odd);
    const fo_row_f64 s2 = __builtin_shuffle(r2, r3, even), s3 = __builtin_shuffle(r2, r3, odd);
    r0 = __builtin_shuffle(s0, s2, low);
    r1 = __builtin_shuffle(s1, s3, low);
    r2 = __builtin_shuffle(s0, s2, high);
    r3 = __builtin_shuffle(s1, s3, high);
    memcpy(to, &r0, 32);
    memcpy(to + to_stride, &r1, 32);
    memcpy(to + 2 * to_stride, &r2, 32);
    memcpy(to + 3 * to_stride, &r3, 32);
}

/* The same for a square of 8 floats a side, in three rounds. */
FO_INLINE void fo_transpose_square_f32(float *restrict to, int64_t to_stride,
                                       const float *restrict from, int64_t from_stride)
{
    fo_row_f32 r[8], t[8], u[8];
    for (int k = 0; k < 8; k++)
        memcpy(&r[k], from + k * from_stride, 32);
    const fo_lanes_f32 pairs_low = {0, 8, 1, 9, 4, 12, 5, 13};
    const fo_lanes_f32 pairs_high = {2, 10, 3, 11, 6, 14, 7, 15};
    const fo_lanes_f32 quads_low = {0, 1, 8, 9, 4, 5, 12, 13};
    const fo_lanes_f32 quads_high = {2, 3, 10, 11, 6, 7, 14, 15};
    const fo_lanes_f32 halves_low = {0, 1, 2, 3, 8, 9, 10, 11};
    const fo_lanes_f32 halves_high = {4, 5, 6, 7, 12, 13, 14, 15};
    for (int k = 0; k < 8; k += 2) {
        t[k] = __builtin_shuffle(r[k], r[k + 1], pairs_low);
        t[k + 1] = __builtin_shuffle(r[k], r[k + 1], pairs_high);
    }
    for (int k = 0; k < 8; k += 4) {
        u[k] = __builtin_shuffle(t[k], t[k + 2], quads_low);
        u[k + 1] = __builtin_shuffle(t[k], t[k + 2], quads_high);
        u[k + 2] = __builtin_shuffle(t[k + 1], t[k + 3], quads_low);
        u[k + 3] = __builtin_shuffle(t[k + 1], t[k + 3], quads_high);
    }
    for (int k = 0; k < 4; k++) {
        r[k] = __builtin_shuffle(u[k], u[k + 4], halves_low);
        r[k + 4] = __builtin_shuffle(u[k], u[k + 4], halves_high);
    }
    for (int k = 0; k < 8; k++)
        memcpy(to + k * to_stride, &r[k], 32);
}
#endif
#endif

typedef struct {
    real *average;
    const real *series;
    void *mean, *weight;        /* the caller's state in the arithmetic type, or NULL */
    int64_t *count;
    int64_t length, inner;
    const ewma_scan_scalars *s;
    int vector_squares;         /* transposes shuffle whole vectors (scan_body.h) */
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

/* The threads take runs of adjacent columns, `per_task` columns a task. */
typedef struct {
    fo_chunk_fn *chunk;
    const FN(ewma_scan_ctx) *c;
    int64_t columns, per_task;
} FN(column_runs);

static void FN(column_run)(void *ctx, int64_t t)
{
    const FN(column_runs) *r = ctx;
    const int64_t first = t * r->per_task;
    const int64_t last = first + r->per_task < r->columns ? first + r->per_task : r->columns;
    r->chunk(r->c, first * r->c->length, last * r->c->length);
}

/* Time the last axis: tasks of whole groups of FO_SCAN_GROUP series, at least FO_SCAN_TASK
 * elements each, claimed by the threads as they come free; only the last task scans a
 * narrower group (pieces cut anywhere left a narrower, slower group at the end of each).
 * Time not the last axis: one run per thread, split at multiples of 16 columns
 * (scan_body.h), and only where each thread's part of a row is at least FO_SCAN_RUN_BYTES.
 * Every thread reads its part of each row, then skips the others': parts of a few KB
 * restart the hardware prefetchers at every row (they stop at page ends), which made 2
 * threads 2-4x slower than 1 on rows of 100 to 1000 doubles. */
static void FN(scan_in_parallel)(fo_chunk_fn *chunk, const FN(ewma_scan_ctx) *c, int64_t n,
                                 int64_t columns, int threads)
{
    int64_t team = fo_team(n, threads);
    if (c->inner > 1 && team > c->inner * (int64_t)sizeof(real) / FO_SCAN_RUN_BYTES)
        team = c->inner * (int64_t)sizeof(real) / FO_SCAN_RUN_BYTES;
    if (team <= 1) {
        chunk(c, 0, n);
        return;
    }
    const int64_t group = FO_SCAN_GROUP * c->length;
    const int64_t per_task = c->inner == 1 ? (FO_SCAN_TASK + group - 1) / group * FO_SCAN_GROUP
                                           : (columns + team - 1) / team;
    FN(column_runs) r = {chunk, c, columns, per_task};
    fo_pool_run(FN(column_run), &r, (columns + per_task - 1) / per_task, (int)team);
}

static void FN(ewma_scan)(void *average, const void *series, void *mean, void *weight,
                          int64_t *count, int64_t outer, int64_t length, int64_t inner,
                          const ewma_scan_scalars *s, int threads)
{
    int64_t n = outer * length * inner;
    if (n == 0)
        return;
    FN(ewma_scan_ctx) c = {average, series, mean, weight, count, length, inner, s, 0};
#if FO_SCAN_VECTOR_SQUARES
    c.vector_squares = __builtin_cpu_supports("avx2");
#endif
    /* for double data both variants are the same code; only float data has a choice */
    if (sizeof(real) == sizeof(float) && s->float32_arithmetic)
        FN(scan_in_parallel)(FN(ewma_scan_chunk_same), &c, n, outer * inner, threads);
    else
        FN(scan_in_parallel)(FN(ewma_scan_chunk_double), &c, n, outer * inner, threads);
}
