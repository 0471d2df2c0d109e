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

/* u for one element: g / max(row_root*col_root, eps1) (factored), or with v' = b2*v +
 * (1-b2)*(g*g): g / max(sqrt(v'), eps1) */
FO_INLINE real FN(af_factored_update)(const FN(adafactor_scalars) *s, real g, real row_root,
                                      real col_root)
{
    return g / FN(maximum)(row_root * col_root, s->eps1);
}

FO_INLINE real FN(af_vector_update)(const FN(adafactor_scalars) *s, real g, real v,
                                    real *v_new)
{
    *v_new = s->beta2 * v + s->one_minus_beta2 * (g * g);
    return g / FN(maximum)(FO_SQRT(*v_new), s->eps1);
}

/* Elements i0 .. i0 + m - 1 of a segment, m <= FO_REDUCE_LANES (a literal FO_REDUCE_LANES
 * for the full chunks, so that they vectorize); lane k gets element i0 + k. p*p is of the
 * param before its decay, as torch's alpha. */
FO_INLINE void FN(af_sum_chunk)(const FN(adafactor_scalars) *s, const real *param,
                                const real *grad, const real *variance, real row_root,
                                const real *col_root, int64_t i0, const int m, const int kind,
                                double *lane0, double *lane1)
{
    for (int k = 0; k < m; k++) {
        const int64_t i = i0 + k;
        real p = kind == AF_SUM_NORM ? 0 : param[i], unused, g, v;
        FN(prologue)(&s->pro, p, grad[i], &unused, &g);
        if (kind == AF_SUM_VECTOR) {
            real u = FN(af_vector_update)(s, g, variance[i], &v);
            lane0[k] += (double)p * (double)p;
            lane1[k] += (double)u * (double)u;
        } else {
            real u = FN(af_factored_update)(s, g, row_root, col_root[i]);
            lane0[k] += (double)u * (double)u;
        }
    }
}

/* The two sums of one row segment of n <= FO_REDUCE_BLOCK elements (see AF_SUM_*). */
FO_INLINE void FN(af_segment_sums)(const FN(adafactor_scalars) *s, const real *param,
                                   const real *grad, const real *variance, real row_root,
                                   const real *col_root, int64_t n, const int kind,
                                   double *sum0, double *sum1)
{
    double lane0[FO_REDUCE_LANES] = {0}, lane1[FO_REDUCE_LANES] = {0};
    int64_t i0 = 0;
    for (; i0 + FO_REDUCE_LANES <= n; i0 += FO_REDUCE_LANES)
        FN(af_sum_chunk)(s, param, grad, variance, row_root, col_root, i0, FO_REDUCE_LANES,
                         kind, lane0, lane1);
    if (i0 < n)
        FN(af_sum_chunk)(s, param, grad, variance, row_root, col_root, i0, (int)(n - i0),
                         kind, lane0, lane1);
    *sum0 = FN(combine_lanes)(lane0);
    if (sum1)
        *sum1 = FN(combine_lanes)(lane1);
}

/* Pass 3 over one row segment: p <- p*(1 - lr*wd) - step_size*u (and v <- v'). */
FO_INLINE void FN(af_apply)(const FN(adafactor_scalars) *s, real *param, const real *grad,
                            real *variance, real row_root, const real *col_root, int64_t n,
                            const int factored)
{
    for (int64_t i = 0; i < n; i++) {
        real p, g, u;
        FN(prologue)(&s->pro, param[i], grad[i], &p, &g);
        if (factored)
            u = FN(af_factored_update)(s, g, row_root, col_root[i]);
        else
            u = FN(af_vector_update)(s, g, variance[i], &variance[i]);
        param[i] = p - s->step_size * u;
    }
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

/* ---- pass 1 of a factored array: AF_ROW_GROUP rows side by side ---- */

/* Columns [i0, i0 + width) of m rows' segments (width a literal FO_REDUCE_LANES but at the
 * end): lane j of row k gets g*g and p*p of its element i0 + j, and the running column sums
 * `acc` get g*g of the rows in row order. */
FO_INLINE void FN(af_stats_chunk)(const FN(adafactor_scalars) *s, const real *const *param,
                                  const real *const *grad, const int m, int64_t i0,
                                  const int width, double (*lane_g)[FO_REDUCE_LANES],
                                  double (*lane_p)[FO_REDUCE_LANES], double *acc)
{
    double a[FO_REDUCE_LANES];
    for (int j = 0; j < width; j++)
        a[j] = acc[i0 + j];
#pragma GCC unroll 8     /* the rows unrolled: each row's lanes get registers of their own */
    for (int k = 0; k < m; k++)
        for (int j = 0; j < width; j++) {
            real p = param[k][i0 + j], unused, g;
            FN(prologue)(&s->pro, p, grad[k][i0 + j], &unused, &g);
            double square = (double)g * (double)g;
            lane_g[k][j] += square;
            a[j] += square;
            lane_p[k][j] += (double)p * (double)p;
        }
    for (int j = 0; j < width; j++)
        acc[i0 + j] = a[j];
}

/* One segment (n <= FO_REDUCE_BLOCK columns) of m rows: each row's sums of g*g and of p*p
 * (stored part_stride apart, one row's partials to the next's) and the column sums. */
FO_INLINE void FN(af_stats_segment)(const FN(adafactor_scalars) *s, const real *const *param,
                                    const real *const *grad, const int m, int64_t n,
                                    double *acc, double *row_part, double *param_part,
                                    int64_t part_stride)
{
    double lane_g[AF_ROW_GROUP][FO_REDUCE_LANES] = {{0}};
    double lane_p[AF_ROW_GROUP][FO_REDUCE_LANES] = {{0}};
    int64_t i0 = 0;
    for (; i0 + FO_REDUCE_LANES <= n; i0 += FO_REDUCE_LANES)
        FN(af_stats_chunk)(s, param, grad, m, i0, FO_REDUCE_LANES, lane_g, lane_p, acc);
    if (i0 < n)
        FN(af_stats_chunk)(s, param, grad, m, i0, (int)(n - i0), lane_g, lane_p, acc);
    for (int k = 0; k < m; k++) {
        row_part[k * part_stride] = FN(combine_lanes)(lane_g[k]);
        param_part[k * part_stride] = FN(combine_lanes)(lane_p[k]);
    }
}

/* Rows [r0, r1) of matrix b (at most AF_ROW_GROUP, within one row block) over the tile's
 * columns. */
FO_INLINE void FN(af_stats_rows)(const af_array *a, const FN(adafactor_scalars) *s,
                                 const af_tile *t, int64_t b, int64_t r0, int64_t r1)
{
    _Alignas(64) real scratch[2][AF_ROW_GROUP][FO_REDUCE_BLOCK];
    const int64_t cols = a->cols;
    const int m = (int)(r1 - r0);
    double *col_acc = a->col_parts + (b * a->row_blocks + r0 / a->row_block) * cols;
    if (r0 % a->row_block == 0)     /* the block's first rows: its column sums start at 0 */
        memset(col_acc + t->c0, 0, (size_t)(t->c1 - t->c0) * sizeof(double));
    for (int64_t c = t->c0; c < t->c1; c += FO_REDUCE_BLOCK) {
        const int64_t n = t->c1 - c < FO_REDUCE_BLOCK ? t->c1 - c : FO_REDUCE_BLOCK;
        const real *p[AF_ROW_GROUP], *g[AF_ROW_GROUP];
        for (int k = 0; k < m; k++) {
            const int64_t first = (b * a->rows + r0 + k) * cols + c;
            p[k] = FN(af_load)(a, AF_PARAM, first, n, scratch[0][k]);
            g[k] = FN(af_load)(a, AF_GRAD, first, n, scratch[1][k]);
        }
        const int64_t part = (b * a->rows + r0) * a->segments + c / FO_REDUCE_BLOCK;
        if (m == AF_ROW_GROUP)      /* a literal: the group's lanes stay in registers */
            FN(af_stats_segment)(s, p, g, AF_ROW_GROUP, n, col_acc + c, &a->row_parts[part],
                                 &a->param_parts[part], a->segments);
        else
            FN(af_stats_segment)(s, p, g, m, n, col_acc + c, &a->row_parts[part],
                                 &a->param_parts[part], a->segments);
    }
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
        if (pass == AF_STATS && a->factored) {
            for (int64_t r = t->r0, next; r < t->r1; r = next) {
                next = r + AF_ROW_GROUP;    /* a group never crosses a row block */
                if (next > (r / a->row_block + 1) * a->row_block)
                    next = (r / a->row_block + 1) * a->row_block;
                FN(af_stats_rows)(a, s, t, b, r, next < t->r1 ? next : t->r1);
            }
            continue;
        }
        const real *row_root = NULL, *col_root = NULL;
        if (a->factored) {      /* the layout of adafactor_factors */
            row_root = (const real *)a->factors + a->batch * per_matrix + b * rows;
            col_root = (const real *)a->factors + a->batch * (per_matrix + rows) + b * cols;
        }
        for (int64_t r = t->r0; r < t->r1; r++) {
            const int64_t row = b * rows + r;
            const real root = a->factored ? row_root[r] : 0;
            for (int64_t c = t->c0; c < t->c1; c += FO_REDUCE_BLOCK) {
                const int64_t n = t->c1 - c < FO_REDUCE_BLOCK ? t->c1 - c : FO_REDUCE_BLOCK;
                const int64_t first = row * cols + c;
                const int64_t part = row * a->segments + c / FO_REDUCE_BLOCK;
                const real *roots = a->factored ? col_root + c : NULL;
                const real *g = FN(af_load)(a, AF_GRAD, first, n, scratch[1]);
                real *v = a->factored ? NULL : FN(af_load)(a, AF_VARIANCE, first, n, scratch[2]);
                if (pass == AF_NORM) {
                    FN(af_segment_sums)(s, NULL, g, NULL, root, roots, n, AF_SUM_NORM,
                                        &a->update_parts[part], NULL);
                    continue;
                }
                real *p = FN(af_load)(a, AF_PARAM, first, n, scratch[0]);
                if (pass == AF_STATS) {
                    FN(af_segment_sums)(s, p, g, v, 0, NULL, n, AF_SUM_VECTOR,
                                        &a->param_parts[part], &a->update_parts[part]);
                    continue;
                }
                if (a->factored)
                    FN(af_apply)(s, p, g, NULL, root, roots, n, 1);
                else
                    FN(af_apply)(s, p, g, v, 0, NULL, n, 0);
                FN(af_store)(job, a, AF_PARAM, first, n, p);
                if (!a->factored)
                    FN(af_store)(job, a, AF_VARIANCE, first, n, v);
                if (a->data[AF_COPY])
                    FN(af_store)(job, a, AF_COPY, first, n, p);
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
