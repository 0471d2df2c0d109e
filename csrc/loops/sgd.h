/* loops/sgd.h -- plain SGD and momentum in its three forms (DESIGN.md). Written once
 * over `real`; kernels.c instantiates it for float and double. */

typedef struct {
    real *param;
    const real *grad;
    int maximize;
    real weight_decay, lr;
    int l2;
} FN(sgd_ctx);

FO_SIMD static void FN(sgd_chunk)(const void *ctx, int64_t lo, int64_t hi)
{
    const FN(sgd_ctx) c = *(const FN(sgd_ctx) *)ctx;   /* a local copy: cannot alias the buffers */
    real *restrict p = c.param;
    const real *restrict grad = c.grad;
    for (int64_t i = lo; i < hi; i++) {
        real g = FN(effective_grad)(grad[i], p[i], c.maximize, c.weight_decay, c.l2);
        p[i] = p[i] - c.lr * g;
    }
}

static void FN(sgd_step)(void *const *buf, int64_t n, const void *scalars, int threads)
{
    const sgd_scalars *s = scalars;
    FN(sgd_ctx) c = {buf[0], buf[1], s->g.maximize, (real)s->g.weight_decay,
                     (real)s->lr, s->g.weight_decay != 0};
    fo_parallel_for(FN(sgd_chunk), &c, n, threads);
}

typedef struct {
    real *param;
    const real *grad;
    real *buf;
    int maximize;
    real weight_decay;
    real momentum, grad_weight, step_size, momentum_sq, nesterov_grad;
    int l2, nesterov, first_step;
} FN(momentum_ctx);

/* torch.optim.SGD: b <- g on the first step, else b <- mu*b + (1-d)*g;
 * p <- p - lr*(g + mu*b) with nesterov, else p <- p - lr*b. */
FO_SIMD static void FN(momentum_torch_chunk)(const void *ctx, int64_t lo, int64_t hi)
{
    const FN(momentum_ctx) c = *(const FN(momentum_ctx) *)ctx;   /* a local copy: cannot alias the buffers */
    real *restrict p = c.param, *restrict b = c.buf;
    const real *restrict grad = c.grad;
    for (int64_t i = lo; i < hi; i++) {
        real g = FN(effective_grad)(grad[i], p[i], c.maximize, c.weight_decay, c.l2);
        real bi = c.first_step ? g : c.momentum * b[i] + c.grad_weight * g;
        b[i] = bi;
        real d = c.nesterov ? g + c.momentum * bi : bi;
        p[i] = p[i] - c.step_size * d;
    }
}

/* EWMA of gradients (Ng): v <- beta*v + (1-beta)*g; p <- p - step_size*v, where
 * step_size is lr or lr/(1-beta^t); nesterov looks one step ahead: beta*v + (1-beta)*g. */
FO_SIMD static void FN(momentum_ewma_chunk)(const void *ctx, int64_t lo, int64_t hi)
{
    const FN(momentum_ctx) c = *(const FN(momentum_ctx) *)ctx;   /* a local copy: cannot alias the buffers */
    real *restrict p = c.param, *restrict v = c.buf;
    const real *restrict grad = c.grad;
    for (int64_t i = lo; i < hi; i++) {
        real g = FN(effective_grad)(grad[i], p[i], c.maximize, c.weight_decay, c.l2);
        real vi = c.momentum * v[i] + c.grad_weight * g;
        v[i] = vi;
        real d = c.nesterov ? c.momentum * vi + c.grad_weight * g : vi;
        p[i] = p[i] - c.step_size * d;
    }
}

/* Velocity (CS231n): v <- mu*v - lr*g; p <- p + v; nesterov: p <- p + mu*mu*v - (1+mu)*lr*g. */
FO_SIMD static void FN(momentum_velocity_chunk)(const void *ctx, int64_t lo, int64_t hi)
{
    const FN(momentum_ctx) c = *(const FN(momentum_ctx) *)ctx;   /* a local copy: cannot alias the buffers */
    real *restrict p = c.param, *restrict v = c.buf;
    const real *restrict grad = c.grad;
    for (int64_t i = lo; i < hi; i++) {
        real g = FN(effective_grad)(grad[i], p[i], c.maximize, c.weight_decay, c.l2);
        real vi = c.momentum * v[i] - c.grad_weight * g;
        v[i] = vi;
        p[i] = c.nesterov ? p[i] + c.momentum_sq * vi - c.nesterov_grad * g : p[i] + vi;
    }
}

static void FN(momentum_step)(void *const *buf, int64_t n, const void *scalars, int threads)
{
    const momentum_scalars *s = scalars;
    FN(momentum_ctx) c = {buf[0], buf[1], buf[2], s->g.maximize, (real)s->g.weight_decay,
                          (real)s->momentum, (real)s->grad_weight, (real)s->step_size,
                          (real)s->momentum_sq, (real)s->nesterov_grad,
                          s->g.weight_decay != 0, s->nesterov, s->first_step};
    fo_chunk_fn *chunk = s->form == FO_MOMENTUM_EWMA       ? FN(momentum_ewma_chunk)
                         : s->form == FO_MOMENTUM_VELOCITY ? FN(momentum_velocity_chunk)
                                                           : FN(momentum_torch_chunk);
    fo_parallel_for(chunk, &c, n, threads);
}
