/* loops/scan_body.h -- the loops of the EWMA scan, over data of type `real` averaged in
 * arithmetic type `acc_real`; scan.h includes this file twice, AFN(name) naming each
 * variant. The arithmetic is fastoptim.reference_ewma.ewma_scan's, operation for
 * operation (its docstring is the specification); in short, for one column:
 *
 *   state: m, the average; w, its weight, in units where a new observation weighs alpha
 *          (1 - beta^t after t observations, with adjust); n, the observations so far
 *   per step, d = beta (or the step's decay, from times):
 *     w_dec = w*d;  nu = alpha (or 1 - w_dec, pandas' adjust=False rule for alpha = 1/2)
 *     den = w_dec + nu;  r = 1/den
 *     x observed (finite):  m <- (w_dec*r)*m + b*x, b = nu*r (1 when w_dec == 0), unless
 *                           x == m;  w <- den (adjust) or 1;  n <- n + 1
 *     x missing:            m <- 1*m + 0*0;  w <- w_dec, or w with ignore_na
 *   value: m, or m*w without bias correction; NaN while n < min_periods.
 *
 * The division and the weights are off the chain that links one step's m to the next
 * (one multiply and one add), which is what bounds a lone series. Columns that agree in
 * w and n -- all of them until a row has a value missing in some columns but not all --
 * share one weight computation per row; otherwise every column carries its own. A lone
 * series whose weight has settled (an observed step left it unchanged) computes the
 * weights once for the steps that follow while values keep coming (settled_run), and so
 * does a group of series sharing a settled weight, over a tile with no value missing
 * (settled_rows). All paths compute the same values with the same operations, so they
 * give the same bits. */

typedef struct {
    acc_real beta, alpha;       /* rounded to the arithmetic type once */
    const double *decay;        /* per-step decay, or NULL for beta */
    int64_t min_periods;        /* >= 1 */
    int adjust, corrected, ignore_na, complement;
} AFN(scan_params);

FO_INLINE AFN(scan_params) AFN(params)(const ewma_scan_scalars *s)
{
    AFN(scan_params) p = {(acc_real)s->beta, (acc_real)s->alpha, s->decay,
                          s->min_periods > 1 ? s->min_periods : 1, s->adjust,
                          s->bias_correction, s->ignore_na, s->complement_weight};
    return p;
}

FO_INLINE acc_real AFN(step_decay)(const AFN(scan_params) *p, int64_t t)
{
    return p->decay ? (acc_real)p->decay[t] : p->beta;
}

/* One step's coefficients: m <- a*m + b*x, then w <- w_next. */
typedef struct {
    acc_real a, b, w_next;
} AFN(step_weights);

FO_INLINE AFN(step_weights) AFN(weights)(const AFN(scan_params) *p, acc_real d, acc_real w,
                                         int observed)
{
    const acc_real w_dec = w * d;
    const acc_real nu = p->complement ? 1 - w_dec : p->alpha;
    const acc_real den = w_dec + nu;
    const acc_real r = 1 / den;
    AFN(step_weights) s;
    s.a = observed ? w_dec * r : 1;
    s.b = observed ? (w_dec == 0 ? 1 : nu * r) : 0;   /* a first observation is taken exactly */
    s.w_next = observed ? (p->adjust ? den : 1) : (p->ignore_na ? w : w_dec);
    return s;
}

/* x_or_zero is x when observed, else 0 (a missing x must not reach the arithmetic). An
 * observation equal to the average leaves it as it is, as in pandas (a constant series
 * stays exactly constant). */
FO_INLINE acc_real AFN(update_mean)(acc_real m, AFN(step_weights) s, acc_real x_or_zero,
                                    acc_real x)
{
    const acc_real updated = s.a * m + s.b * x_or_zero;
    return x == m ? m : updated;
}

FO_INLINE real AFN(value)(const AFN(scan_params) *p, acc_real m, acc_real w, int64_t n)
{
    return n >= p->min_periods ? (real)(p->corrected ? m : m * w) : (real)NAN;
}

/* One column, one step: returns the value and updates the column's state. */
FO_INLINE real AFN(step)(const AFN(scan_params) *p, acc_real d, real x_stored, acc_real *m,
                         acc_real *w, int64_t *n)
{
    const acc_real x = x_stored;
    const int observed = isfinite(x);
    const AFN(step_weights) s = AFN(weights)(p, d, *w, observed);
    *m = AFN(update_mean)(*m, s, observed ? x : 0, x);
    *w = s.w_next;
    *n += observed;
    return AFN(value)(p, *m, *w, *n);
}

/* The state of `width` columns scanned together, in arrays of at least that many entries.
 * While `shared`, every column has weight shared_w and count shared_n (w and n are then
 * unused). */
typedef struct {
    acc_real *m, *w;
    int64_t *n;
    int64_t width;
    int shared;
    acc_real shared_w;
    int64_t shared_n;
} AFN(tile);

/* Columns [col, col + width) from the caller's state, or fresh (no observation yet). */
FO_INLINE void AFN(tile_load)(const FN(ewma_scan_ctx) *c, AFN(tile) *t, int64_t col,
                              int64_t width)
{
    t->width = width;
    if (c->mean == NULL) {
        for (int64_t j = 0; j < width; j++)
            t->m[j] = 0;
        t->shared = 1;
        t->shared_w = 0;
        t->shared_n = 0;
        return;
    }
    const acc_real *mean = (const acc_real *)c->mean + col;
    const acc_real *weight = (const acc_real *)c->weight + col;
    const int64_t *count = c->count + col;
    t->shared = 1;
    for (int64_t j = 0; j < width; j++) {
        t->m[j] = mean[j];
        t->w[j] = weight[j];
        t->n[j] = count[j];
        /* shared only if bit for bit the same (a -0 weight is not +0's twin) */
        t->shared &= memcmp(&t->w[j], &t->w[0], sizeof(acc_real)) == 0 && t->n[j] == t->n[0];
    }
    t->shared_w = t->w[0];
    t->shared_n = t->n[0];
}

FO_INLINE void AFN(tile_unshare)(AFN(tile) *t)
{
    for (int64_t j = 0; j < t->width; j++) {
        t->w[j] = t->shared_w;
        t->n[j] = t->shared_n;
    }
    t->shared = 0;
}

FO_INLINE void AFN(tile_store)(const FN(ewma_scan_ctx) *c, AFN(tile) *t, int64_t col)
{
    if (c->mean == NULL)
        return;
    if (t->shared)
        AFN(tile_unshare)(t);
    acc_real *mean = (acc_real *)c->mean + col;
    acc_real *weight = (acc_real *)c->weight + col;
    int64_t *count = c->count + col;
    for (int64_t j = 0; j < t->width; j++) {
        mean[j] = t->m[j];
        weight[j] = t->w[j];
        count[j] = t->n[j];
    }
}

/* A row in which every column is observed (all_observed) or none is, while shared: one
 * weight computation for the row. The value's options are tested out of the loops, which
 * then vectorize. */
FO_INLINE void AFN(shared_row)(const AFN(scan_params) *p, AFN(tile) *t,
                               const real *restrict x, real *restrict out, acc_real d,
                               const int all_observed, const int64_t width)
{
    const AFN(step_weights) s = AFN(weights)(p, d, t->shared_w, all_observed);
    t->shared_w = s.w_next;
    t->shared_n += all_observed;
    const acc_real w = s.w_next;
    acc_real *restrict m = t->m;
    if (t->shared_n < p->min_periods) {
        for (int64_t j = 0; j < width; j++) {
            const acc_real xj = x[j];
            m[j] = AFN(update_mean)(m[j], s, all_observed ? xj : 0, xj);
            out[j] = (real)NAN;
        }
    } else if (p->corrected) {
        for (int64_t j = 0; j < width; j++) {
            const acc_real xj = x[j];
            const acc_real mj = AFN(update_mean)(m[j], s, all_observed ? xj : 0, xj);
            m[j] = mj;
            out[j] = (real)mj;
        }
    } else {
        for (int64_t j = 0; j < width; j++) {
            const acc_real xj = x[j];
            const acc_real mj = AFN(update_mean)(m[j], s, all_observed ? xj : 0, xj);
            m[j] = mj;
            out[j] = (real)(mj * w);
        }
    }
}

/* `rows` time steps (the first is step t0) of the tile's `width` columns (t->width, given
 * as a constant where it is one): row i of x at x + i*x_stride, written to
 * out + i*out_stride. all_observed: the caller has seen no missing value in them. */
FO_INLINE void AFN(tile_rows)(const AFN(scan_params) *p, AFN(tile) *t, const real *x,
                              int64_t x_stride, real *out, int64_t out_stride, int64_t t0,
                              int64_t rows, const int64_t width, int all_observed)
{
    for (int64_t i = 0; i < rows; i++, x += x_stride, out += out_stride) {
        const acc_real d = AFN(step_decay)(p, t0 + i);
        if (t->shared) {
            int64_t observed = all_observed ? width : 0;
            for (int64_t j = 0; j < width && !all_observed; j++)
                observed += isfinite(x[j]);
            if (observed == width) {
                AFN(shared_row)(p, t, x, out, d, 1, width);
                continue;
            }
            if (observed == 0) {
                AFN(shared_row)(p, t, x, out, d, 0, width);
                continue;
            }
            AFN(tile_unshare)(t);
        }
        acc_real *restrict m = t->m, *restrict w = t->w;
        int64_t *restrict n = t->n;
        const real *restrict xr = x;
        real *restrict o = out;
        for (int64_t j = 0; j < width; j++)
            o[j] = AFN(step)(p, d, xr[j], &m[j], &w[j], &n[j]);
    }
}

/* Time not the last axis: columns [first, last) in tiles of adjacent columns, as wide as
 * the rows (up to FO_SCAN_TILE): one pass over memory in order, which the prefetchers
 * follow (narrower tiles cut each row into pieces, read in separate passes). The state
 * lives on the heap, or, if that fails, in FO_SCAN_STACK_TILE columns on the stack. */
FO_INLINE void AFN(scan_tiles)(const FN(ewma_scan_ctx) *c, const AFN(scan_params) *p,
                               int64_t first, int64_t last)
{
    const int64_t length = c->length, inner = c->inner;
    int64_t capacity = inner < last - first ? inner : last - first;
    if (capacity > FO_SCAN_TILE)
        capacity = FO_SCAN_TILE;
    int64_t *heap = malloc(capacity * (sizeof(int64_t) + 2 * sizeof(acc_real)));
    acc_real stack_m[FO_SCAN_STACK_TILE], stack_w[FO_SCAN_STACK_TILE];
    int64_t stack_n[FO_SCAN_STACK_TILE];
    AFN(tile) t = {stack_m, stack_w, stack_n};
    if (heap != NULL) {
        t.n = heap;
        t.m = (acc_real *)(heap + capacity);
        t.w = t.m + capacity;
    } else if (capacity > FO_SCAN_STACK_TILE) {
        capacity = FO_SCAN_STACK_TILE;
    }
    for (int64_t col = first; col < last;) {
        const int64_t outer = col / inner, j = col % inner;
        int64_t width = inner - j;
        if (width > last - col)
            width = last - col;
        if (width > capacity)
            width = capacity;
        const int64_t offset = outer * length * inner + j;
        AFN(tile_load)(c, &t, col, width);
        AFN(tile_rows)(p, &t, c->series + offset, inner, c->average + offset, inner, 0, length,
                       width, 0);
        AFN(tile_store)(c, &t, col);
        col += width;
    }
    free(heap);
}

/* Steps [t, length) of one series while its values keep coming, once its weight w has
 * settled (an observed step left it unchanged): every such step then computes the same
 * weights, so they are computed once and the loop is the chain m <- a*m + b*x alone, with
 * the same operations and bits as AFN(step). Returns the first step not taken (a missing
 * value, or length). Needs a constant decay and min_periods reached. */
FO_INLINE int64_t AFN(settled_run)(const AFN(scan_params) *p, const real *restrict x,
                                   real *restrict out, int64_t t, int64_t length,
                                   acc_real *m_, acc_real w, int64_t *n, const int corrected)
{
    const AFN(step_weights) s = AFN(weights)(p, p->beta, w, 1);
    acc_real m = *m_;
    const int64_t first = t;
    for (; t < length; t++) {
        const acc_real xt = x[t];
        if (!isfinite(xt))
            break;
        m = AFN(update_mean)(m, s, xt, xt);
        out[t] = (real)(corrected ? m : m * w);
    }
    *m_ = m;
    *n += t - first;
    return t;
}

/* One series alone: its state stays in registers. */
FO_INLINE void AFN(scan_one)(const FN(ewma_scan_ctx) *c, const AFN(scan_params) *p,
                             int64_t col)
{
    acc_real m = 0, w = 0;
    int64_t n = 0;
    if (c->mean != NULL) {
        m = ((const acc_real *)c->mean)[col];
        w = ((const acc_real *)c->weight)[col];
        n = c->count[col];
    }
    const real *restrict x = c->series + col * c->length;
    real *restrict out = c->average + col * c->length;
    for (int64_t t = 0; t < c->length; t++) {
        const acc_real w_before = w;
        out[t] = AFN(step)(p, AFN(step_decay)(p, t), x[t], &m, &w, &n);
        /* settled: without missing values w stops changing within a few hundred steps */
        if (w == w_before && !p->decay && n >= p->min_periods && isfinite((acc_real)x[t]))
            t = (p->corrected ? AFN(settled_run)(p, x, out, t + 1, c->length, &m, w, &n, 1)
                              : AFN(settled_run)(p, x, out, t + 1, c->length, &m, w, &n, 0)) - 1;
    }
    if (c->mean != NULL) {
        ((acc_real *)c->mean)[col] = m;
        ((acc_real *)c->weight)[col] = w;
        c->count[col] = n;
    }
}

/* The copies between `group` series (each contiguous, `length` apart) and the transposed
 * tile (step i of series k at tile[i*group + k]) are transposes of matrices whose rows are
 * contiguous: to[c*to_stride + r] = from[r*from_stride + c]. They go in squares of 32
 * bytes a side (4 doubles, 8 floats): with AVX2 (c->vector_squares) each square is loaded
 * as whole rows, shuffled in registers and stored as whole rows (scan.h), so memory sees
 * vectors; otherwise value by value. */
enum { AFN(square) = 32 / sizeof(real) };

FO_INLINE void AFN(transpose_square)(real *restrict to, int64_t to_stride,
                                     const real *restrict from, int64_t from_stride,
                                     const int vector)
{
#if FO_SCAN_VECTOR_SQUARES
    if (vector) {
        _Generic((real)0, float: fo_transpose_square_f32, double: fo_transpose_square_f64)(
            to, to_stride, from, from_stride);
        return;
    }
#endif
    (void)vector;
    for (int64_t r = 0; r < AFN(square); r++)
        for (int64_t c = 0; c < AFN(square); c++)
            to[c * to_stride + r] = from[r * from_stride + c];
}

/* to[c*to_stride + r] = from[r*from_stride + c] for r < rows, c < cols. */
FO_INLINE void AFN(transpose)(real *restrict to, int64_t to_stride, const real *restrict from,
                              int64_t from_stride, int64_t rows, int64_t cols,
                              const int vector)
{
    int64_t r = 0;
    for (; r + AFN(square) <= rows; r += AFN(square)) {
        int64_t c = 0;
        for (; c + AFN(square) <= cols; c += AFN(square))
            AFN(transpose_square)(to + c * to_stride + r, to_stride,
                                  from + r * from_stride + c, from_stride, vector);
        for (; c < cols; c++)
            for (int64_t rr = r; rr < r + AFN(square); rr++)
                to[c * to_stride + rr] = from[rr * from_stride + c];
    }
    for (; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            to[c * to_stride + r] = from[r * from_stride + c];
}

/* `rows` rows of a tile, every value observed, if the tile has settled: its columns share
 * their weight, an observed row leaves that weight as it is (so every row computes the
 * same weights) and the values are past min_periods. Then the weights are computed once
 * and the rows are the chain m <- a*m + b*x alone, the means in a local array the compiler
 * keeps in registers (in the tile, each row's multiply would wait for the store of the row
 * before): the same operations and bits as AFN(shared_row). Returns 0, having done
 * nothing, when the tile has not settled. */
FO_INLINE int AFN(settled_rows)(const AFN(scan_params) *p, AFN(tile) *t,
                                const real *restrict x, real *restrict out, int64_t rows,
                                const int64_t width)
{
    if (!t->shared || p->decay || t->shared_n < p->min_periods)
        return 0;
    const AFN(step_weights) s = AFN(weights)(p, p->beta, t->shared_w, 1);
    if (memcmp(&s.w_next, &t->shared_w, sizeof s.w_next) != 0)
        return 0;
    acc_real m[FO_SCAN_GROUP];
    for (int64_t j = 0; j < width; j++)
        m[j] = t->m[j];
    for (int64_t i = 0; i < rows; i++, x += width, out += width)
#pragma GCC unroll 1
        for (int64_t j = 0; j < width; j++) {
            const acc_real xj = x[j];
            m[j] = AFN(update_mean)(m[j], s, xj, xj);
            out[j] = (real)(p->corrected ? m[j] : m[j] * s.w_next);
        }
    for (int64_t j = 0; j < width; j++)
        t->m[j] = m[j];
    t->shared_n += rows;
    return 1;
}

/* `group` whole series (inner == 1) from column col on, through a transposed tile
 * FO_SCAN_BLOCK steps at a time, so the row loops run across them. */
FO_INLINE void AFN(scan_group)(const FN(ewma_scan_ctx) *c, const AFN(scan_params) *p,
                               int64_t col, const int64_t group)
{
    const int64_t length = c->length;
    acc_real m[FO_SCAN_GROUP], w[FO_SCAN_GROUP];
    int64_t n[FO_SCAN_GROUP];
    AFN(tile) t = {m, w, n};
    real in[FO_SCAN_BLOCK * FO_SCAN_GROUP], out[FO_SCAN_BLOCK * FO_SCAN_GROUP];
    AFN(tile_load)(c, &t, col, group);
    for (int64_t t0 = 0; t0 < length; t0 += FO_SCAN_BLOCK) {
        const int64_t rows = length - t0 < FO_SCAN_BLOCK ? length - t0 : FO_SCAN_BLOCK;
        AFN(transpose)(in, group, c->series + col * length + t0, length, group, rows,
                       c->vector_squares);
        int64_t observed = 0;    /* one count for the block, not one per row */
        for (int64_t i = 0; i < rows * group; i++)
            observed += isfinite(in[i]);
        const int all_observed = observed == rows * group;
        if (!(all_observed && AFN(settled_rows)(p, &t, in, out, rows, group)))
            AFN(tile_rows)(p, &t, in, group, out, group, t0, rows, group, all_observed);
        AFN(transpose)(c->average + col * length + t0, length, out, group, rows, group,
                       c->vector_squares);
    }
    AFN(tile_store)(c, &t, col);
}

/* Time the last axis (inner == 1): series [first, last), each contiguous. */
FO_INLINE void AFN(scan_series)(const FN(ewma_scan_ctx) *c, const AFN(scan_params) *p,
                                int64_t first, int64_t last)
{
    int64_t col = first;
    for (; col + FO_SCAN_GROUP <= last; col += FO_SCAN_GROUP)
        AFN(scan_group)(c, p, col, FO_SCAN_GROUP);     /* a constant width: unrolled loops */
    if (last - col > 1)
        AFN(scan_group)(c, p, col, last - col);
    else if (last - col == 1)
        AFN(scan_one)(c, p, col);
}

/* Where a run of columns may end when time is not the last axis: at a multiple of 16
 * columns within its row (or the row's end), so that two threads never write the same
 * cache line of a row -- on narrow rows that false sharing made 2 threads 5x slower than 1. */
FO_INLINE int64_t AFN(column_boundary)(int64_t col, int64_t inner)
{
    const int64_t row = col / inner, j = (col % inner + 15) / 16 * 16;
    return j >= inner ? (row + 1) * inner : row * inner + j;
}

/* [lo, hi) counts elements, column-major: the chunk takes the columns that start in it
 * (column k starts at k * length), so the parallel threshold stays in elements. */
FO_SIMD static void AFN(ewma_scan_chunk)(const void *ctx, int64_t lo, int64_t hi)
{
    const FN(ewma_scan_ctx) c = *(const FN(ewma_scan_ctx) *)ctx;   /* a local copy: cannot alias the buffers */
    const AFN(scan_params) p = AFN(params)(c.s);
    const int64_t first = (lo + c.length - 1) / c.length, last = (hi + c.length - 1) / c.length;
    if (c.inner == 1)
        AFN(scan_series)(&c, &p, first, last);
    else
        AFN(scan_tiles)(&c, &p, AFN(column_boundary)(first, c.inner),
                        AFN(column_boundary)(last, c.inner));
}
