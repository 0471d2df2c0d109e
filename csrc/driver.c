/* driver.c -- one kernel call over a list of arrays (fo_run).
 *
 * The work is cut into tasks for the pool: a large array into pieces (whole reduction
 * blocks), consecutive small arrays grouped until a task is worth a thread. Within a task,
 * a piece runs its loop straight on the arrays when the loop was compiled for their
 * layout: every buffer in the compute type, or (stores rounding to nearest) every buffer
 * bfloat16, or float32 params with bfloat16 state, or (Adam, with AVX512-BF16) float32
 * params and state with a bfloat16 gradient and copy; those loops convert in registers.
 * Otherwise it runs in blocks: bfloat16/float16 buffers are widened into stack buffers,
 * the loop runs on the block, and the written ones (and the param copy) are rounded back.
 * Reducing kernels run one reduction block at a time and store one partial per block,
 * added up in block order at the end -- whatever thread ran which block.
 */
#include "fastoptim.h"

#include <stdlib.h>
#include <string.h>

enum { CONVERT_BLOCK = 512 };   /* elements per widened block: all roles stay in L1 */

typedef struct {
    int64_t first, last;        /* arrays [first, last) */
    int64_t lo, hi;             /* element range, when the task is a piece of one array */
} task_span;

typedef struct {
    const fo_call *call;
    const task_span *tasks;
    const int64_t *block_offset;    /* reducing: the first block of each array */
    double *partials;               /* reducing: nsums per block */
} run_ctx;

static int64_t blocks_of(int64_t n) { return (n + FO_REDUCE_BLOCK - 1) / FO_REDUCE_BLOCK; }

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Elements [lo, hi) of array a in float64: every buffer is double. */
static void span_f64(const run_ctx *r, int64_t a, int64_t lo, int64_t hi)
{
    const fo_call *c = r->call;
    const fo_kernel *k = c->kernel;
    const int roles = k->nroles + 1;
    void *const *data = c->data + a * roles;
    const double *s = c->scalars + (c->per_array ? a * k->nscalars : 0);
    void *buf[FO_MAX_ROLES];
    int64_t step = k->nsums ? FO_REDUCE_BLOCK : hi - lo;
    for (int64_t b = lo; b < hi; b += step) {
        for (int j = 0; j < k->nroles; j++)
            buf[j] = data[j] ? (double *)data[j] + b : NULL;
        double *sums = k->nsums ? r->partials + (r->block_offset[a] + b / FO_REDUCE_BLOCK) * k->nsums
                                : NULL;
        k->loop_f64(s, buf, min64(step, hi - b), sums);
    }
}

/* The loop that runs on array a's buffers as they are stored, with no block conversions:
 * float32 buffers, and when stores round to nearest, bfloat16 ones or a float32 param and
 * gradient with bfloat16 state, or (Adam, where the CPU rounds bfloat16 itself) a float32
 * param and state with a bfloat16 gradient and param copy. NULL for any other mix. */
static fo_loop_f32 *loop_as_stored(const fo_call *c, void *const *data, const int *dtype)
{
    const fo_kernel *k = c->kernel;
    int params = -1, state = -1;    /* the dtype of roles 0-1, of roles 2..; -2: mixed */
    for (int j = 0; j < k->nroles; j++) {
        int *kind = j < 2 ? &params : &state;
        if (data[j])
            *kind = *kind == -1 || *kind == dtype[j] ? dtype[j] : -2;
    }
    if (state == -1)
        state = params;             /* a kernel without state buffers */
    if (data[k->nroles])            /* a param copy */
        return k->loop_master && !c->rounding.stochastic && fo_bfloat16_instruction()
                       && dtype[0] == FO_FLOAT32 && dtype[1] == FO_BFLOAT16
                       && state == FO_FLOAT32 && dtype[k->nroles] == FO_BFLOAT16
                   ? k->loop_master : NULL;
    if (params == FO_FLOAT32 && state == FO_FLOAT32)
        return k->loop_f32;
    if (c->writes && c->rounding.stochastic)
        return NULL;
    if (params == FO_BFLOAT16 && state == FO_BFLOAT16)
        return k->loop_bf16;
    if (params == FO_FLOAT32 && state == FO_BFLOAT16)
        return k->loop_f32_bf16;
    return NULL;
}

static size_t itemsize(int dtype) { return dtype == FO_FLOAT64 ? 8 : dtype == FO_FLOAT32 ? 4 : 2; }

/* Elements [lo, hi) of array a computed in float: on the buffers as stored when a loop
 * exists for their layout, otherwise float32 buffers in place and bfloat16/float16 ones
 * through the block buffers. */
static void span_f32(const run_ctx *r, int64_t a, int64_t lo, int64_t hi)
{
    const fo_call *c = r->call;
    const fo_kernel *k = c->kernel;
    const int roles = k->nroles + 1;
    void *const *data = c->data + a * roles;
    const int *dtype = c->dtype + a * roles;
    float s[FO_MAX_SCALARS];
    const double *sd = c->scalars + (c->per_array ? a * k->nscalars : 0);
    for (int j = 0; j < k->nscalars; j++)
        s[j] = (float)sd[j];

    fo_loop_f32 *as_stored = loop_as_stored(c, data, dtype);
    int64_t step = k->nsums ? FO_REDUCE_BLOCK : as_stored ? hi - lo : CONVERT_BLOCK;

    uint64_t key[FO_MAX_ROLES];
    if (!as_stored && c->rounding.stochastic)
        for (int j = 0; j < roles; j++)
            key[j] = fo_rounding_key(&c->rounding, c->first_index + a, j);

    /* rows padded by a cache line: rows 8 KiB apart would alias in the 4 KiB store-to-load check */
    _Alignas(64) float block[FO_MAX_ROLES][FO_REDUCE_BLOCK + 16];
    void *buf[FO_MAX_ROLES];
    for (int64_t b = lo; b < hi; b += step) {
        int64_t len = min64(step, hi - b);
        double *sums = k->nsums ? r->partials + (r->block_offset[a] + b / FO_REDUCE_BLOCK) * k->nsums
                                : NULL;
        if (as_stored) {
            for (int j = 0; j <= k->nroles; j++)    /* and the param copy, if any */
                buf[j] = data[j] ? (char *)data[j] + b * itemsize(dtype[j]) : NULL;
            as_stored(s, buf, len, sums);
            continue;
        }
        for (int j = 0; j < k->nroles; j++) {
            if (!data[j]) {
                buf[j] = NULL;
            } else if (dtype[j] == FO_FLOAT32) {
                buf[j] = (float *)data[j] + b;
            } else {
                fo_widen((const uint16_t *)data[j] + b, dtype[j], block[j], len);
                buf[j] = block[j];
            }
        }
        k->loop_f32(s, buf, len, sums);
        if (!c->writes)
            continue;
        for (int j = 0; j < k->nroles; j++)
            if (j != 1 && data[j] && dtype[j] != FO_FLOAT32)
                fo_narrow(block[j], (uint16_t *)data[j] + b, dtype[j], len, &c->rounding,
                          key[j], b);
        if (data[k->nroles])
            fo_narrow(buf[0], (uint16_t *)data[k->nroles] + b, dtype[k->nroles], len,
                      &c->rounding, key[k->nroles], b);
    }
}

static void run_task(void *ctx, int64_t t)
{
    const run_ctx *r = ctx;
    const task_span *task = &r->tasks[t];
    const fo_call *c = r->call;
    const int roles = c->kernel->nroles + 1;
    for (int64_t a = task->first; a < task->last; a++) {
        int64_t lo = task->last - task->first == 1 ? task->lo : 0;
        int64_t hi = task->last - task->first == 1 ? task->hi : c->n[a];
        if (c->dtype[a * roles] == FO_FLOAT64)
            span_f64(r, a, lo, hi);
        else
            span_f32(r, a, lo, hi);
    }
}

/* Cut the call into tasks: returns their number, or -1 without memory. A task is a piece
 * of one large array, or a run of consecutive small arrays. */
static int64_t plan_tasks(const fo_call *c, int64_t piece, task_span **out)
{
    int64_t most = 0;
    for (int64_t a = 0; a < c->count; a++)
        most += c->n[a] / piece + 1;
    task_span *tasks = malloc((size_t)(most > 0 ? most : 1) * sizeof *tasks);
    if (!tasks)
        return -1;
    int64_t count = 0, a = 0;
    while (a < c->count) {
        if (c->n[a] >= 2 * piece) {             /* split */
            for (int64_t lo = 0; lo < c->n[a]; lo += piece)
                tasks[count++] = (task_span){a, a + 1, lo, min64(lo + piece, c->n[a])};
            a++;
        } else {                                /* group */
            int64_t first = a, total = 0;
            while (a < c->count && c->n[a] < 2 * piece && total < piece)
                total += c->n[a++];
            tasks[count++] = (task_span){first, a, 0, c->n[first]};
        }
    }
    *out = tasks;
    return count;
}

int fo_run(const fo_call *c)
{
    const fo_kernel *k = c->kernel;
    int64_t total = 0;
    for (int64_t a = 0; a < c->count; a++)
        total += c->n[a];
    const int team = fo_team(total, c->threads);

    run_ctx r = {c, NULL, NULL, NULL};
    int64_t *block_offset = NULL;
    if (k->nsums) {     /* one partial per block, so the sums never depend on threads */
        block_offset = malloc((size_t)(c->count + 1) * sizeof *block_offset);
        if (!block_offset)
            return -1;
        block_offset[0] = 0;
        for (int64_t a = 0; a < c->count; a++)
            block_offset[a + 1] = block_offset[a] + blocks_of(c->n[a]);
        r.partials = calloc((size_t)(block_offset[c->count] > 0 ? block_offset[c->count] : 1),
                            (size_t)k->nsums * sizeof(double));
        if (!r.partials) {
            free(block_offset);
            return -1;
        }
        r.block_offset = block_offset;
    }

    task_span one = {0, c->count, 0, c->count == 1 ? c->n[0] : 0};
    task_span *tasks = &one;
    int64_t ntasks = 1;
    if (team > 1) {
        ntasks = plan_tasks(c, fo_piece_size(total, team), &tasks);
        if (ntasks < 0) {
            free(r.partials);
            free(block_offset);
            return -1;
        }
    }
    r.tasks = tasks;
    fo_pool_run(run_task, &r, ntasks, team);
    if (tasks != &one)
        free(tasks);

    if (k->nsums) {     /* per array, the blocks in index order */
        for (int64_t a = 0; a < c->count; a++) {
            for (int j = 0; j < k->nsums; j++) {
                double acc = 0;
                for (int64_t b = block_offset[a]; b < block_offset[a + 1]; b++) {
                    double x = r.partials[b * k->nsums + j];
                    acc = k->combine_max ? ((x > acc || x != x) ? x : acc) : acc + x;
                }
                c->sums[a * k->nsums + j] = acc;
            }
        }
        free(r.partials);
        free(block_offset);
    }
    return 0;
}
