/* loops/adaptive.h -- AdaGrad and RMSProp (torch.optim.Adagrad / RMSprop). Written once
 * over `real`; kernels.c instantiates it for float and double. */

typedef struct {
    real *param;
    const real *grad;
    real *state_sum;
    int maximize;
    real weight_decay, clr, eps;
    int l2;
} FN(adagrad_ctx);

/* s <- s + g*g; p <- p - clr*g / (sqrt(s) + eps) */
FO_SIMD static void FN(adagrad_chunk)(const void *ctx, int64_t lo, int64_t hi)
{
    const FN(adagrad_ctx) c = *(const FN(adagrad_ctx) *)ctx;   /* a local copy: cannot alias the buffers */
    real *restrict p = c.param, *restrict s = c.state_sum;
    const real *restrict grad = c.grad;
    for (int64_t i = lo; i < hi; i++) {
        real g = FN(effective_grad)(grad[i], p[i], c.maximize, c.weight_decay, c.l2);
        real si = s[i] + g * g;
        s[i] = si;
        p[i] = p[i] - c.clr * g / (FO_SQRT(si) + c.eps);
    }
}

static void FN(adagrad_step)(void *const *buf, int64_t n, const void *scalars, int threads)
{
    const adagrad_scalars *s = scalars;
    FN(adagrad_ctx) c = {buf[0], buf[1], buf[2], s->g.maximize,
                         (real)s->g.weight_decay, (real)s->clr, (real)s->eps,
                         s->g.weight_decay != 0};
    fo_parallel_for(FN(adagrad_chunk), &c, n, threads);
}

typedef struct {
    real *param;
    const real *grad;
    real *square_avg, *grad_avg, *momentum_buffer;
    int maximize;
    real weight_decay, alpha, one_minus_alpha, eps, lr, momentum;
    int l2;
} FN(rmsprop_ctx);

/* v <- a*v + (1-a)*g*g; centered: ga <- a*ga + (1-a)*g, den = sqrt(v - ga*ga) + eps,
 * else den = sqrt(v) + eps; momentum: b <- mu*b + g/den, p <- p - lr*b;
 * else p <- p - lr*g/den. grad_avg and momentum_buffer are NULL when unused, so the
 * four variants are compiled separately (literal flags). */
FO_INLINE void FN(rmsprop_loop)(const FN(rmsprop_ctx) *c, int64_t lo, int64_t hi,
                                const int centered, const int has_momentum)
{
    real *restrict p = c->param, *restrict v = c->square_avg;
    real *restrict ga = c->grad_avg, *restrict b = c->momentum_buffer;
    const real *restrict grad = c->grad;
    for (int64_t i = lo; i < hi; i++) {
        real g = FN(effective_grad)(grad[i], p[i], c->maximize, c->weight_decay, c->l2);
        real vi = c->alpha * v[i] + c->one_minus_alpha * (g * g);
        v[i] = vi;
        real den;
        if (centered) {
            real gai = c->alpha * ga[i] + c->one_minus_alpha * g;
            ga[i] = gai;
            den = FO_SQRT(vi - gai * gai) + c->eps;
        } else {
            den = FO_SQRT(vi) + c->eps;
        }
        if (has_momentum) {
            real bi = c->momentum * b[i] + g / den;
            b[i] = bi;
            p[i] = p[i] - c->lr * bi;
        } else {
            p[i] = p[i] - c->lr * g / den;
        }
    }
}

FO_SIMD static void FN(rmsprop_chunk)(const void *ctx, int64_t lo, int64_t hi)
{
    const FN(rmsprop_ctx) c = *(const FN(rmsprop_ctx) *)ctx;   /* a local copy: cannot alias the buffers */
    if (c.grad_avg && c.momentum_buffer)
        FN(rmsprop_loop)(&c, lo, hi, 1, 1);
    else if (c.grad_avg)
        FN(rmsprop_loop)(&c, lo, hi, 1, 0);
    else if (c.momentum_buffer)
        FN(rmsprop_loop)(&c, lo, hi, 0, 1);
    else
        FN(rmsprop_loop)(&c, lo, hi, 0, 0);
}

static void FN(rmsprop_step)(void *const *buf, int64_t n, const void *scalars, int threads)
{
    const rmsprop_scalars *s = scalars;
    FN(rmsprop_ctx) c = {buf[0], buf[1], buf[2], buf[3], buf[4],
                         s->g.maximize, (real)s->g.weight_decay, (real)s->alpha,
                         (real)s->one_minus_alpha, (real)s->eps, (real)s->lr,
                         (real)s->momentum, s->g.weight_decay != 0};
    fo_parallel_for(FN(rmsprop_chunk), &c, n, threads);
}
