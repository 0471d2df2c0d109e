/* loops/adam.h -- Adam and AdamW (torch.optim.Adam / AdamW, optax's eps_root), and the
 * EWMA state update. Written once over `real`; kernels.c instantiates it for float and
 * double. */

typedef struct {
    real *param;
    const real *grad;
    real *exp_avg, *exp_avg_sq, *max_exp_avg_sq;
    int maximize;
    real weight_decay, param_decay;
    real beta1, one_minus_beta1, beta2, one_minus_beta2;
    real step_size, rsqrt_bc2, inv_bc2, eps, eps_root;
    int l2, decoupled;
    int root;               /* eps_root != 0, decided on the double as the reference does */
} FN(adam_ctx);

/* AdamW first: p <- p*(1 - lr*wd). Then m <- b1*m + (1-b1)*g; v <- b2*v + (1-b2)*g*g;
 * amsgrad: vmax <- max(vmax, v), used in place of v; den = sqrt(v)*rsqrt_bc2 + eps, or
 * sqrt(v*inv_bc2 + eps_root) + eps with eps_root; p <- p - step_size*m / den: one
 * division per element. amsgrad and eps_root are compiled as separate variants. */
FO_INLINE void FN(adam_loop)(const FN(adam_ctx) *c, int64_t lo, int64_t hi, const int amsgrad,
                             const int root)
{
    real *restrict p = c->param, *restrict m = c->exp_avg, *restrict v = c->exp_avg_sq;
    real *restrict vmax = c->max_exp_avg_sq;
    const real *restrict grad = c->grad;
    for (int64_t i = lo; i < hi; i++) {
        real pi = c->decoupled ? p[i] * c->param_decay : p[i];
        real g = FN(effective_grad)(grad[i], pi, c->maximize, c->weight_decay, c->l2);
        real mi = c->beta1 * m[i] + c->one_minus_beta1 * g;
        real vi = c->beta2 * v[i] + c->one_minus_beta2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        if (amsgrad) {
            vi = FN(maximum)(vmax[i], vi);
            vmax[i] = vi;
        }
        real den = root ? FO_SQRT(vi * c->inv_bc2 + c->eps_root) + c->eps
                        : FO_SQRT(vi) * c->rsqrt_bc2 + c->eps;
        p[i] = pi - c->step_size * mi / den;
    }
}

FO_SIMD static void FN(adam_chunk)(const void *ctx, int64_t lo, int64_t hi)
{
    const FN(adam_ctx) c = *(const FN(adam_ctx) *)ctx;   /* a local copy: cannot alias the buffers */
    if (c.max_exp_avg_sq)
        c.root ? FN(adam_loop)(&c, lo, hi, 1, 1) : FN(adam_loop)(&c, lo, hi, 1, 0);
    else
        c.root ? FN(adam_loop)(&c, lo, hi, 0, 1) : FN(adam_loop)(&c, lo, hi, 0, 0);
}

static void FN(adam_step)(void *const *buf, int64_t n, const void *scalars, int threads)
{
    const adam_scalars *s = scalars;
    FN(adam_ctx) c = {buf[0], buf[1], buf[2], buf[3], buf[4],
                      s->g.maximize, (real)s->g.weight_decay, (real)s->param_decay,
                      (real)s->beta1, (real)s->one_minus_beta1,
                      (real)s->beta2, (real)s->one_minus_beta2,
                      (real)s->step_size, (real)s->rsqrt_bc2, (real)s->inv_bc2,
                      (real)s->eps, (real)s->eps_root,
                      s->g.weight_decay != 0, s->decoupled, s->eps_root != 0};
    fo_parallel_for(FN(adam_chunk), &c, n, threads);
}

typedef struct {
    real *average;
    const real *value;
    real beta, one_minus_beta;
} FN(ewma_ctx);

/* v <- beta*v + (1-beta)*x */
FO_SIMD static void FN(ewma_chunk)(const void *ctx, int64_t lo, int64_t hi)
{
    const FN(ewma_ctx) c = *(const FN(ewma_ctx) *)ctx;   /* a local copy: cannot alias the buffers */
    real *restrict v = c.average;
    const real *restrict x = c.value;
    for (int64_t i = lo; i < hi; i++)
        v[i] = c.beta * v[i] + c.one_minus_beta * x[i];
}

static void FN(ewma_step)(void *const *buf, int64_t n, const void *scalars, int threads)
{
    const ewma_scalars *s = scalars;
    FN(ewma_ctx) c = {buf[0], buf[1], (real)s->beta, (real)s->one_minus_beta};
    fo_parallel_for(FN(ewma_chunk), &c, n, threads);
}
