/* adafactor.h -- what Adafactor's driver (adafactor.c) and its loops (loops/adafactor.h,
 * instantiated for float and double in kernels.c) share: one array of a call as the loops
 * see it, and a tile of work.
 *
 * A step is three passes over tiles. Pass 1 (stats) sums, per row segment of at most
 * FO_REDUCE_BLOCK elements, g*g and p*p, and accumulates g*g per column within each row
 * block. Between the passes, per matrix, the factors: the new row and column variances,
 * and the roots the update divides by. Pass 2 (norm) sums u*u per row segment. Pass 3
 * (apply) writes. Every partial has a fixed place (a row segment, a row block's column),
 * so which thread computes it never matters. A 1-D array has no factors: its pass 1 sums
 * p*p and u*u at once, and pass 2 skips it. */
#ifndef FO_ADAFACTOR_H
#define FO_ADAFACTOR_H

#include "fastoptim.h"

enum { AF_PARAM, AF_GRAD, AF_ROW_VAR, AF_COL_VAR, AF_VARIANCE, AF_COPY, AF_ROLES };
enum { AF_STATS, AF_NORM, AF_APPLY };      /* the passes */
/* Pass 1 of a factored array reads AF_ROW_GROUP rows side by side, so that their column sums
 * stay in registers across the rows (the same additions in the same order as one row at a
 * time) */
enum { AF_ROW_GROUP = 4 };
/* What the other read-only loops sum over a row segment, in the lane order: */
enum {
    AF_SUM_VECTOR,      /* pass 1, not factored: p*p, u*u */
    AF_SUM_NORM,        /* pass 2, factored: u*u (param unused) */
};

typedef struct {
    void *data[AF_ROLES];
    int dtype[AF_ROLES];
    uint64_t key[AF_ROLES];             /* stochastic rounding keys */
    const double *scalars;              /* this array's (the step size differs) */
    int factored;                       /* row_var and col_var, not variance */
    int64_t batch, rows, cols;          /* factored: matrices; else 1 x 1 x n */
    int64_t row_block;                  /* rows per column-sum block */
    int64_t row_blocks, segments;       /* blocks per matrix; row segments per row */
    /* work memory: partials per (row, segment) -- a row is one of all batch * rows -- and
     * per (matrix, row block, column) */
    double *row_parts;                  /* factored: g*g */
    double *param_parts;                /* p*p */
    double *update_parts;               /* u*u */
    double *col_parts;                  /* factored: g*g */
    double *row_sums, *col_sums;        /* factored: the call's factor_sums */
    /* factored: the new row variances, new column variances, and the roots of the
     * denominator (sqrt of the row variance; sqrt of the column variance over the
     * clamped mean row variance), in the compute type: rows, cols, rows, cols per matrix */
    void *factors;
} af_array;

/* matrices [b0, b1) x rows [r0, r1) x columns [c0, c1) of one array; rows in whole row
 * blocks, columns in whole reduction blocks (but the last) */
typedef struct {
    int64_t array, b0, b1, r0, r1, c0, c1;
} af_tile;

typedef struct {
    const fo_adafactor_call *call;
    af_array *arrays;
    int pass;
} af_job;

/* torch's eps=(None, ...): the machine epsilon of the param's dtype */
static inline double af_machine_epsilon(int dtype)
{
    return dtype == FO_FLOAT64 ? 0x1p-52 : dtype == FO_BFLOAT16 ? 0x1p-7
           : dtype == FO_FLOAT16 ? 0x1p-10 : 0x1p-23;
}

void adafactor_tile_f32(const af_job *job, const af_tile *tile);
void adafactor_tile_f64(const af_job *job, const af_tile *tile);
/* the factors of matrix b of an array; measure: first the row and column sums from the
 * partials; apply: the new variances are also stored in row_var and col_var */
void adafactor_factors_f32(const af_job *job, const af_array *a, int64_t b);
void adafactor_factors_f64(const af_job *job, const af_array *a, int64_t b);

#endif
