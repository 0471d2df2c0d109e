/* movement.c -- the data-movement limit of an optimizer step, for the benchmark.
 *
 * A one-pass kernel cannot beat the memory traffic it must cause: every buffer read once,
 * every updated buffer written once (Adam in float32: param, exp_avg, exp_avg_sq read and
 * written, grad read: 28 bytes per element). fo_movement causes exactly that traffic for
 * buffers of any element size (2, 4 or 8 bytes), with one integer addition per value,
 * threaded and compiled like the kernels, so `python -m fastoptim bench` can report each
 * kernel as a share of it, measured on the same buffers in the same run. The buffers are
 * walked together in blocks that stay in L1, so each is streamed once. With no updated
 * buffer it only reads: the limit of a reduction (a norm reads the gradient once).
 */
#include "fastoptim.h"
#include "simd.h"

enum { MOVEMENT_BLOCK = 128 };   /* short bursts per buffer: longer ones defeat the prefetchers */

typedef struct {
    void *const *updated;
    const int *size;            /* bytes per element of each updated buffer */
    int count;
    const void *read_only;
    int read_size;
} movement_ctx;

/* the read-only pass (no updated buffer) ORs what it reads into this, so the reads stay */
static volatile uint64_t read_sink;

/* every updated u: u[i] <- u[i] + r[i], as integers of u's size */
FO_SIMD static void movement_block(const movement_ctx *c, int64_t lo, int64_t n)
{
    uint64_t r[MOVEMENT_BLOCK];
    const char *from = (const char *)c->read_only + lo * c->read_size;
    for (int64_t i = 0; i < n; i++) {
        r[i] = c->read_size == 2 ? ((const uint16_t *)from)[i]
               : c->read_size == 4 ? ((const uint32_t *)from)[i] : ((const uint64_t *)from)[i];
    }
    if (c->count == 0) {
        uint64_t any = 0;
        for (int64_t i = 0; i < n; i++)
            any |= r[i];
        if (any == 0x5a5a5a5a5a5a5a5aULL)   /* practically never: a store the compiler keeps */
            read_sink = any;
        return;
    }
    for (int j = 0; j < c->count; j++) {
        if (c->size[j] == 2) {
            uint16_t *restrict u = (uint16_t *)c->updated[j] + lo;
            for (int64_t i = 0; i < n; i++)
                u[i] = (uint16_t)(u[i] + r[i]);
        } else if (c->size[j] == 4) {
            uint32_t *restrict u = (uint32_t *)c->updated[j] + lo;
            for (int64_t i = 0; i < n; i++)
                u[i] = (uint32_t)(u[i] + r[i]);
        } else {
            uint64_t *restrict u = (uint64_t *)c->updated[j] + lo;
            for (int64_t i = 0; i < n; i++)
                u[i] = u[i] + r[i];
        }
    }
}

static void movement_chunk(const void *ctx, int64_t lo, int64_t hi)
{
    for (int64_t b = lo; b < hi; b += MOVEMENT_BLOCK)
        movement_block(ctx, b, hi - b < MOVEMENT_BLOCK ? hi - b : MOVEMENT_BLOCK);
}

void fo_movement(void *const *updated, const int *size, int count, const void *read_only,
                 int read_size, int64_t n, int threads)
{
    movement_ctx c = {updated, size, count, read_only, read_size};
    fo_parallel_for(movement_chunk, &c, n, threads);
}
