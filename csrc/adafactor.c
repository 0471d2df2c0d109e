/* adafactor.c -- Adafactor's call (fo_adafactor): its work memory, its tiles, its passes.
 *
 * The generic driver's roles all have n elements; Adafactor's row and column factors do
 * not, so it has its own call, built from the same pieces: the loops of loops/adafactor.h
 * (instantiated for float and double in kernels.c), the pool, the 16-bit conversions.
 * adafactor.h describes the passes. A measure call (writes = 0) runs pass 1, the factors
 * and pass 2, and adds up the partials; an apply call (writes = 1) recomputes the factors
 * from the row and column sums the measure call returned -- the same operations, so the
 * same bits -- and runs pass 3. The tiles depend on the thread count, the results do not:
 * every partial has a fixed place, and partials are added in a fixed order.
 */
#include "adafactor.h"

#include <stdlib.h>
#include <string.h>

enum { FACTOR_TASK = 1 << 16 };     /* row and column values per task of the factor step */

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static size_t aligned(size_t bytes) { return (bytes + 63) / 64 * 64; }

static int64_t elements(const af_array *a) { return a->batch * a->rows * a->cols; }

/* Tiles of about `target` elements (whole matrices, whole row blocks, or one row block cut
 * into column blocks of whole reduction blocks); returns their number and, when tiles is
 * not NULL, fills it. */
static int64_t plan_tiles(const af_array *arrays, int64_t count, int64_t target,
                          af_tile *tiles)
{
    int64_t k = 0;
    for (int64_t i = 0; i < count; i++) {
        const af_array *a = &arrays[i];
        const int64_t rows = a->rows, cols = a->cols, matrix = rows * cols;
        if (elements(a) == 0)
            continue;
        if (matrix <= target) {
            const int64_t per_tile = target / matrix;
            for (int64_t b = 0; b < a->batch; b += per_tile, k++)
                if (tiles)
                    tiles[k] = (af_tile){i, b, min64(b + per_tile, a->batch), 0, rows, 0, cols};
            continue;
        }
        const int64_t block = a->row_block * cols;
        const int64_t height = block <= target ? a->row_block * (target / block) : a->row_block;
        const int64_t width = block <= target ? cols
            : ceil_div(max64(1, target / a->row_block), FO_REDUCE_BLOCK) * FO_REDUCE_BLOCK;
        for (int64_t b = 0; b < a->batch; b++)
            for (int64_t r = 0; r < rows; r += height)
                for (int64_t c = 0; c < cols; c += width, k++)
                    if (tiles)
                        tiles[k] = (af_tile){i, b, b + 1, r, min64(r + height, rows), c,
                                             min64(c + width, cols)};
    }
    return k;
}

/* The factor step's tasks: runs of matrices of one factored array. */
static int64_t plan_factors(const af_array *arrays, int64_t count, af_tile *tasks)
{
    int64_t k = 0;
    for (int64_t i = 0; i < count; i++) {
        const af_array *a = &arrays[i];
        if (!a->factored || elements(a) == 0)
            continue;
        const int64_t per_task = max64(1, FACTOR_TASK / (a->rows + a->cols));
        for (int64_t b = 0; b < a->batch; b += per_task, k++)
            if (tasks)
                tasks[k] = (af_tile){i, b, min64(b + per_task, a->batch), 0, 0, 0, 0};
    }
    return k;
}

typedef struct {
    af_job job;
    const af_tile *tasks;
} af_run;

static int is_double(const af_array *a) { return a->dtype[AF_PARAM] == FO_FLOAT64; }

static void tile_task(void *ctx, int64_t t)
{
    const af_run *run = ctx;
    const af_tile *tile = &run->tasks[t];
    if (is_double(&run->job.arrays[tile->array]))
        adafactor_tile_f64(&run->job, tile);
    else
        adafactor_tile_f32(&run->job, tile);
}

static void factor_task(void *ctx, int64_t t)
{
    const af_run *run = ctx;
    const af_tile *task = &run->tasks[t];
    const af_array *a = &run->job.arrays[task->array];
    for (int64_t b = task->b0; b < task->b1; b++) {
        if (is_double(a))
            adafactor_factors_f64(&run->job, a, b);
        else
            adafactor_factors_f32(&run->job, a, b);
    }
}

/* the sum over an array: each row's partials in order, the row sums in row order */
static double array_sum(const af_array *a, const double *parts)
{
    double total = 0;
    for (int64_t row = 0; row < a->batch * a->rows; row++) {
        double sum = 0;
        for (int64_t k = 0; k < a->segments; k++)
            sum += parts[row * a->segments + k];
        total += sum;
    }
    return total;
}

/* Describe every array of the call. */
static void describe(const fo_adafactor_call *c, af_array *arrays)
{
    const int nscalars = fo_adafactor_kernel.nscalars;
    double *factor_sums = c->factor_sums;
    for (int64_t i = 0; i < c->count; i++) {
        af_array *a = &arrays[i];
        for (int role = 0; role < AF_ROLES; role++) {
            a->data[role] = c->data[i * AF_ROLES + role];
            a->dtype[role] = c->dtype[i * AF_ROLES + role];
            a->key[role] = fo_rounding_key(&c->rounding, c->first_index + i, role);
        }
        a->scalars = c->scalars + (c->per_array ? i * nscalars : 0);
        a->factored = a->data[AF_ROW_VAR] != NULL;
        a->batch = c->shape[3 * i];
        a->rows = c->shape[3 * i + 1];
        a->cols = c->shape[3 * i + 2];
        if (a->factored) {
            a->row_sums = factor_sums;
            a->col_sums = factor_sums + a->batch * a->rows;
            factor_sums += a->batch * (a->rows + a->cols);
        }
        a->row_block = a->factored ? max64(FO_ADAFACTOR_ROW_BLOCK,
                                           ceil_div(a->rows, FO_ADAFACTOR_ROW_BLOCKS)) : 1;
        a->row_blocks = ceil_div(a->rows, a->row_block);
        a->segments = ceil_div(a->cols, FO_REDUCE_BLOCK);
    }
}

/* The work memory of the arrays (adafactor.h): returns its bytes and, when work is not
 * NULL, points the arrays into it. An empty array needs none. */
static size_t place_work(af_array *arrays, int64_t count, char *work)
{
    size_t bytes = 0;
    for (int64_t i = 0; i < count; i++) {
        af_array *a = &arrays[i];
        if (elements(a) == 0)
            continue;
        const size_t parts = (size_t)(a->batch * a->rows * a->segments) * sizeof(double);
        const size_t real_size = is_double(a) ? sizeof(double) : sizeof(float);
        const size_t sizes[5] = {
            parts, parts, a->factored ? parts : 0,
            a->factored ? (size_t)(a->batch * a->row_blocks * a->cols) * sizeof(double) : 0,
            a->factored ? (size_t)(2 * a->batch * (a->rows + a->cols)) * real_size : 0};
        void **regions[5] = {(void **)&a->param_parts, (void **)&a->update_parts,
                             (void **)&a->row_parts, (void **)&a->col_parts, &a->factors};
        for (int k = 0; k < 5; k++) {
            if (work && sizes[k])
                *regions[k] = work + bytes;
            bytes += aligned(sizes[k]);
        }
    }
    return bytes;
}

int fo_adafactor(const fo_adafactor_call *c)
{
    af_array *arrays = calloc((size_t)(c->count > 0 ? c->count : 1), sizeof *arrays);
    if (!arrays)
        return -1;
    describe(c, arrays);
    const size_t bytes = place_work(arrays, c->count, NULL);
    int64_t total = 0;
    int any_factored = 0;
    for (int64_t i = 0; i < c->count; i++) {
        total += elements(&arrays[i]);
        any_factored |= arrays[i].factored && elements(&arrays[i]) > 0;
    }
    const int team = fo_team(total, c->threads);
    const int64_t target = team > 1 ? fo_piece_size(total, team) : INT64_MAX / 4;
    const int64_t ntiles = plan_tiles(arrays, c->count, target, NULL);
    const int64_t nfactors = plan_factors(arrays, c->count, NULL);
    char *work = malloc(bytes > 0 ? bytes : 1);
    af_tile *tiles = malloc((size_t)(ntiles > 0 ? ntiles : 1) * sizeof *tiles);
    af_tile *factors = malloc((size_t)(nfactors > 0 ? nfactors : 1) * sizeof *factors);
    if (!work || !tiles || !factors) {
        free(work);
        free(tiles);
        free(factors);
        free(arrays);
        return -1;
    }
    place_work(arrays, c->count, work);
    plan_tiles(arrays, c->count, target, tiles);
    plan_factors(arrays, c->count, factors);

    af_run by_tile = {{c, arrays, AF_STATS}, tiles};
    af_run by_matrix = {{c, arrays, AF_STATS}, factors};
    if (!c->writes) {
        for (int64_t i = 0; i < c->count; i++) {
            const af_array *a = &arrays[i];
            if (a->factored && elements(a) == 0)    /* an empty matrix: its sums are 0 */
                memset(a->row_sums, 0, (size_t)(a->batch * (a->rows + a->cols)) * sizeof(double));
        }
        fo_pool_run(tile_task, &by_tile, ntiles, team);
        fo_pool_run(factor_task, &by_matrix, nfactors, team);
        if (any_factored) {
            by_tile.job.pass = AF_NORM;
            fo_pool_run(tile_task, &by_tile, ntiles, team);
        }
        for (int64_t i = 0; i < c->count; i++) {
            const af_array *a = &arrays[i];
            const int empty = elements(a) == 0;
            c->sums[2 * i] = empty ? 0.0 : array_sum(a, a->param_parts);
            c->sums[2 * i + 1] = empty ? 0.0 : array_sum(a, a->update_parts);
        }
    } else {    /* the new row and column variances are stored by the factor step */
        by_tile.job.pass = by_matrix.job.pass = AF_APPLY;
        fo_pool_run(factor_task, &by_matrix, nfactors, team);
        fo_pool_run(tile_task, &by_tile, ntiles, team);
    }
    free(work);
    free(tiles);
    free(factors);
    free(arrays);
    return 0;
}
