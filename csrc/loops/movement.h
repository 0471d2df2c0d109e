/* loops/movement.h -- the data-movement limit of an optimizer step, for the benchmark.
 *
 * A one-pass kernel cannot beat the memory traffic it must cause: every buffer read once,
 * every updated buffer written once (Adam: param, exp_avg, exp_avg_sq read and written, grad
 * read: 7 values per element). movement_loop causes exactly that traffic with one addition
 * per value, threaded and compiled like the kernels (fo_parallel_for, target_clones), so
 * `python -m fastoptim bench` can report each kernel as a share of it, measured on the same
 * buffers in the same run. Written once over `real`; kernels.c instantiates it. */

typedef struct {
    real *updated[FO_MOVEMENT_MAX_UPDATED];   /* the first `count` are used */
    const real *read_only;
    int count;
} FN(movement_ctx);

/* u[i] <- u[i] + r[i] for each of the first `count` updated buffers u, in one pass: the
 * traffic of a kernel with count + 1 buffers, and no more arithmetic than it takes to
 * keep the compiler from removing a load or a store. */
FO_INLINE void FN(movement)(const FN(movement_ctx) *c, int64_t lo, int64_t hi, const int count)
{
    real *restrict u0 = c->updated[0], *restrict u1 = c->updated[1];
    real *restrict u2 = c->updated[2], *restrict u3 = c->updated[3];
    const real *restrict r = c->read_only;
    for (int64_t i = lo; i < hi; i++) {
        real x = r[i];
        u0[i] = u0[i] + x;
        if (count > 1)
            u1[i] = u1[i] + x;
        if (count > 2)
            u2[i] = u2[i] + x;
        if (count > 3)
            u3[i] = u3[i] + x;
    }
}

FO_SIMD static void FN(movement_chunk)(const void *ctx, int64_t lo, int64_t hi)
{
    const FN(movement_ctx) c = *(const FN(movement_ctx) *)ctx;   /* a local copy: cannot alias the buffers */
    switch (c.count) {
    case 1: FN(movement)(&c, lo, hi, 1); break;
    case 2: FN(movement)(&c, lo, hi, 2); break;
    case 3: FN(movement)(&c, lo, hi, 3); break;
    default: FN(movement)(&c, lo, hi, 4); break;
    }
}

static void FN(movement_loop)(void *const *updated, int n_updated, const void *read_only,
                              int64_t n, int threads)
{
    FN(movement_ctx) c = {{NULL, NULL, NULL, NULL}, read_only, n_updated};
    for (int j = 0; j < n_updated && j < FO_MOVEMENT_MAX_UPDATED; j++)
        c.updated[j] = updated[j];
    fo_parallel_for(FN(movement_chunk), &c, n, threads);
}
