/* loops/adafactor.h -- Adafactor (Shazeer & Stern 2018, as torch.optim.Adafactor): the
 * arithmetic of its passes over a row segment and of its per-matrix factors. Written once
 * over `real`; kernels.c instantiates it for float and double, and adafactor.c drives it
 * (adafactor.h describes the passes and the work memory). */
#include "../adafactor.h"

typedef struct {
    FN(prologue_scalars) pro;   /* weight_decay (L2) is always 0: torch's decay is decoupled */
    real beta2;                 /* 1 - t^beta2_decay */
    real one_minus_beta2;       /* t^beta2_decay */
    real eps1;                  /* the floor of the mean row variance and of the denominator */
    real machine_eps1;          /* 1: eps1 is the machine epsilon of the param's dtype */
    real step_size;             /* apply: alpha / max(1, RMS(u)/d), per array */
} FN(adafactor_scalars);
#define ADAFACTOR_SCALARS "beta2 one_minus_beta2 eps1 machine_eps1 step_size"

/* Pass 1 over one row segment of a factored array: the sum of g*g (row_part), g*g added to
 * each column's accumulator, and the sum of p*p (of the param before its decay). */
FO_INLINE void FN(adafactor_stats)(const FN(adafactor_scalars) *s, const real *param,
                                   const real *grad, int64_t n, double *col_acc,
                                   double *row_part, double *param_part)
{
    real g[FO_REDUCE_BLOCK];
    for (int64_t i = 0; i < n; i++) {
        real unused;
        FN(prologue)(&s->pro, param[i], grad[i], &unused, &g[i]);
    }
    for (int64_t i = 0; i < n; i++)
        col_acc[i] += (double)g[i] * (double)g[i];
    *row_part = FN(block_sum_squares)(g, n);
    *param_part = FN(block_sum_squares)(param, n);
}

/* The update of one row segment, u = g / den:
 *   factored: den = max(row_root * col_root[i], eps1)
 *   else:     v' = b2*v + (1-b2)*(g*g), den = max(sqrt(v'), eps1)
 * apply = 0: returns the sum of u*u; apply = 1: p <- p*(1 - lr*wd) - step_size*u, v <- v'. */
FO_INLINE double FN(adafactor_body)(const FN(adafactor_scalars) *s, real *param,
                                    const real *grad, real *variance, real row_root,
                                    const real *col_root, int64_t n, const int factored,
                                    const int apply)
{
    real u[FO_REDUCE_BLOCK];
    for (int64_t i = 0; i < n; i++) {
        real p, g, den;
        FN(prologue)(&s->pro, param[i], grad[i], &p, &g);
        if (factored) {
            den = FN(maximum)(row_root * col_root[i], s->eps1);
        } else {
            real v = s->beta2 * variance[i] + s->one_minus_beta2 * (g * g);
            if (apply)
                variance[i] = v;
            den = FN(maximum)(FO_SQRT(v), s->eps1);
        }
        real ui = g / den;
        if (apply)
            param[i] = p - s->step_size * ui;
        else
            u[i] = ui;
    }
    return apply ? 0.0 : FN(block_sum_squares)(u, n);
}

/* ---- reading and writing a buffer's segment in the compute type ---- */

/* Elements [first, first + n) of a role: the array itself when it is stored in the compute
 * type, else widened into scratch (only float arithmetic has 16-bit buffers). */
FO_INLINE real *FN(af_load)(const af_array *a, int role, int64_t first, int64_t n,
                            real *scratch)
{
    if (a->dtype[role] == FO_FLOAT32 || a->dtype[role] == FO_FLOAT64)
        return (real *)a->data[role] + first;
    fo_widen((const uint16_t *)a->data[role] + first, a->dtype[role], (float *)(void *)scratch,
             n);
    return scratch;
}

/* After an update of such a segment: a 16-bit buffer gets `values` rounded back (one stored
 * in the compute type was updated in place). */
FO_INLINE void FN(af_store)(const af_job *job, const af_array *a, int role, int64_t first,
                            int64_t n, const real *values)
{
    if (a->dtype[role] == FO_FLOAT32 || a->dtype[role] == FO_FLOAT64)
        return;
    fo_narrow((const float *)(const void *)values, (uint16_t *)a->data[role] + first,
              a->dtype[role], n, &job->call->rounding, a->key[role], first);
}

/* the array's scalars rounded to the compute type, eps1 resolved */
FO_INLINE void FN(af_scalars)(const af_array *a, real *out)
{
    for (int j = 0; j < (int)(sizeof(FN(adafactor_scalars)) / sizeof(real)); j++)
        out[j] = (real)a->scalars[j];
    FN(adafactor_scalars) *s = (void *)out;
    if (s->machine_eps1 != 0)
        s->eps1 = (real)af_machine_epsilon(a->dtype[AF_PARAM]);
}

/* ---- a tile of one pass ---- */

FO_SIMD void FN(adafactor_tile)(const af_job *job, const af_tile *t)
{
    const af_array *a = &job->arrays[t->array];
    const int pass = job->pass;
    if (pass == AF_NORM && !a->factored)
        return;         /* its u*u was summed in pass 1 */
    real scalars[FO_MAX_SCALARS];
    FN(af_scalars)(a, scalars);
    const FN(adafactor_scalars) *s = (const void *)scalars;
    const int64_t rows = a->rows, cols = a->cols, per_matrix = rows + cols;
    _Alignas(64) real scratch[3][FO_REDUCE_BLOCK];
    for (int64_t b = t->b0; b < t->b1; b++) {
        const real *row_root = NULL, *col_root = NULL;
        if (a->factored) {      /* the layout of adafactor_factors */
            row_root = (const real *)a->factors + a->batch * per_matrix + b * rows;
            col_root = (const real *)a->factors + a->batch * (per_matrix + rows) + b * cols;
        }
        for (int64_t r = t->r0; r < t->r1; r++) {
            const int64_t row = b * rows + r;
            double *col_acc = NULL;
            if (pass == AF_STATS && a->factored) {
                col_acc = a->col_parts + (b * a->row_blocks + r / a->row_block) * cols;
                if (r % a->row_block == 0)  /* the block's first row: its columns start at 0 */
                    memset(col_acc + t->c0, 0, (size_t)(t->c1 - t->c0) * sizeof(double));
            }
            for (int64_t c = t->c0; c < t->c1; c += FO_REDUCE_BLOCK) {
                const int64_t n = t->c1 - c < FO_REDUCE_BLOCK ? t->c1 - c : FO_REDUCE_BLOCK;
                const int64_t first = row * cols + c;
                const int64_t part = row * a->segments + c / FO_REDUCE_BLOCK;
                real *p = FN(af_load)(a, AF_PARAM, first, n, scratch[0]);
                const real *g = FN(af_load)(a, AF_GRAD, first, n, scratch[1]);
                real *v = a->factored ? NULL : FN(af_load)(a, AF_VARIANCE, first, n, scratch[2]);
                const real root = a->factored ? row_root[r] : 0;
                const real *roots = a->factored ? col_root + c : NULL;
                if (pass == AF_STATS && a->factored) {
                    FN(adafactor_stats)(s, p, g, n, col_acc + c, &a->row_parts[part],
                                        &a->param_parts[part]);
                } else if (pass == AF_STATS) {
                    a->param_parts[part] = FN(block_sum_squares)(p, n);
                    a->update_parts[part] = FN(adafactor_body)(s, p, g, v, 0, NULL, n, 0, 0);
                } else if (pass == AF_NORM) {
                    a->update_parts[part] = FN(adafactor_body)(s, p, g, NULL, root, roots, n,
                                                               1, 0);
                } else {
                    if (a->factored)
                        FN(adafactor_body)(s, p, g, NULL, root, roots, n, 1, 1);
                    else
                        FN(adafactor_body)(s, p, g, v, 0, NULL, n, 0, 1);
                    FN(af_store)(job, a, AF_PARAM, first, n, p);
                    if (!a->factored)
                        FN(af_store)(job, a, AF_VARIANCE, first, n, v);
                    if (a->data[AF_COPY])
                        FN(af_store)(job, a, AF_COPY, first, n, p);
                }
            }
        }
    }
}

/* ---- the factors of one matrix ---- */

/* out[i] = b2*old[i] + (1-b2)*(real)(sum[i] / count) for n values of a factor (role) from
 * index first: its new variance from the sums of g*g over `count` elements */
FO_INLINE void FN(af_average)(const FN(adafactor_scalars) *s, const af_array *a, int role,
                              int64_t first, int64_t n, const double *sum, int64_t count,
                              real *out)
{
    real scratch[FO_REDUCE_BLOCK];
    for (int64_t k0 = 0; k0 < n; k0 += FO_REDUCE_BLOCK) {
        const int64_t len = n - k0 < FO_REDUCE_BLOCK ? n - k0 : FO_REDUCE_BLOCK;
        const real *old = FN(af_load)(a, role, first + k0, len, scratch);
        for (int64_t i = 0; i < len; i++)
            out[k0 + i] = s->beta2 * old[i]
                          + s->one_minus_beta2 * (real)(sum[k0 + i] / (double)count);
    }
}

/* In the compute type, sums in double:
 *   row_new[r] = b2*row_var[r] + (1-b2)*(real)(row_sum[r] / cols)
 *   mean = max((real)((sum of row_new in row order) / rows), eps1)
 *   col_new[c] = b2*col_var[c] + (1-b2)*(real)(col_sum[c] / rows)
 *   row_root[r] = sqrt(row_new[r]);  col_root[c] = sqrt(col_new[c] / mean)
 * so that row_root*col_root is sqrt of torch's estimate row_var @ col_var / mean. */
void FN(adafactor_factors)(const af_job *job, const af_array *a, int64_t b)
{
    real scalars[FO_MAX_SCALARS];
    FN(af_scalars)(a, scalars);
    const FN(adafactor_scalars) *s = (const void *)scalars;
    const int64_t rows = a->rows, cols = a->cols, per_matrix = rows + cols;
    const int apply = job->pass == AF_APPLY;
    double *row_sum = a->row_sums + b * rows, *col_sum = a->col_sums + b * cols;
    real *row_new = (real *)a->factors + b * per_matrix;
    real *col_new = row_new + rows;
    real *row_root = (real *)a->factors + a->batch * per_matrix + b * rows;
    real *col_root = (real *)a->factors + a->batch * (per_matrix + rows) + b * cols;
    if (!apply) {       /* the partials of pass 1, added in their fixed order */
        for (int64_t r = 0; r < rows; r++) {
            double sum = 0;
            for (int64_t k = 0; k < a->segments; k++)
                sum += a->row_parts[(b * rows + r) * a->segments + k];
            row_sum[r] = sum;
        }
        for (int64_t c = 0; c < cols; c++)
            col_sum[c] = 0;
        for (int64_t k = 0; k < a->row_blocks; k++)
            for (int64_t c = 0; c < cols; c++)
                col_sum[c] += a->col_parts[(b * a->row_blocks + k) * cols + c];
    }
    FN(af_average)(s, a, AF_ROW_VAR, b * rows, rows, row_sum, cols, row_new);
    FN(af_average)(s, a, AF_COL_VAR, b * cols, cols, col_sum, rows, col_new);
    double total = 0;
    for (int64_t r = 0; r < rows; r++) {
        total += (double)row_new[r];
        row_root[r] = FO_SQRT(row_new[r]);
    }
    const real mean_row = FN(maximum)((real)(total / (double)rows), s->eps1);
    for (int64_t c = 0; c < cols; c++)
        col_root[c] = FO_SQRT(col_new[c] / mean_row);
    if (!apply)
        return;
    /* the new state */
    for (int role = AF_ROW_VAR; role <= AF_COL_VAR; role++) {
        const int64_t count = role == AF_ROW_VAR ? rows : cols;
        const real *values = role == AF_ROW_VAR ? row_new : col_new;
        if (a->dtype[role] == FO_FLOAT32 || a->dtype[role] == FO_FLOAT64)
            memcpy((real *)a->data[role] + b * count, values, (size_t)count * sizeof(real));
        else
            FN(af_store)(job, a, role, b * count, count, values);
    }
}
