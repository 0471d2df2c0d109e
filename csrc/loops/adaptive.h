/* loops/adaptive.h -- AdaGrad, RMSProp and Adadelta (torch.optim.Adagrad / RMSprop /
 * Adadelta), with eps outside the square root (torch) or inside it (the lectures, optax).
 * Written once over `real` and `stored`; kernels.c instantiates it for float, double and
 * bfloat16 buffers. */

typedef struct {
    FN(prologue_scalars) pro;
    real clr;               /* lr / (1 + (t - 1) * lr_decay) */
    real eps;
    real eps_in_sqrt;
} FN(adagrad_scalars);
#define ADAGRAD_SCALARS "clr eps eps_in_sqrt"

/* buf: param, grad, sum.  s <- s + g*g;  p <- p - clr*g / den,
 * den = sqrt(s) + eps, or sqrt(s + eps) with eps_in_sqrt */
FO_INLINE void FN(adagrad_body)(const FN(adagrad_scalars) *s, void *const *buf, int64_t n,
                                const int eps_in_sqrt)
{
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict sum = buf[2];
    for (int64_t i = 0; i < n; i++) {
        real p, g;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        real si = FN(load_state)(sum[i]) + g * g;
        sum[i] = FN(store_state)(si);
        real den = eps_in_sqrt ? FO_SQRT(si + s->eps) : FO_SQRT(si) + s->eps;
        param[i] = FN(store)(p - s->clr * g / den);
    }
}

FO_LOOP(adagrad)
{
    const FN(adagrad_scalars) *s = (const void *)scalars_;
    (void)sums;
    s->eps_in_sqrt != 0 ? FN(adagrad_body)(s, buf, n, 1) : FN(adagrad_body)(s, buf, n, 0);
}

typedef struct {
    FN(prologue_scalars) pro;
    real alpha, one_minus_alpha;
    real eps;
    real lr;
    real momentum;
    real eps_in_sqrt;
} FN(rmsprop_scalars);
#define RMSPROP_SCALARS "alpha one_minus_alpha eps lr momentum eps_in_sqrt"

/* buf: param, grad, square_avg, grad_avg (centered) or NULL, momentum_buffer or NULL.
 * v <- a*v + (1-a)*g*g;  centered: ga <- a*ga + (1-a)*g, d = v - ga*ga, else d = v;
 * den = sqrt(d) + eps, or sqrt(d + eps) with eps_in_sqrt;  momentum: b <- mu*b + g/den,
 * p <- p - lr*b;  else p <- p - lr*g/den. */
FO_INLINE void FN(rmsprop_body)(const FN(rmsprop_scalars) *s, void *const *buf, int64_t n,
                                const int centered, const int has_momentum,
                                const int eps_in_sqrt)
{
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict v = buf[2], *restrict ga = buf[3], *restrict b = buf[4];
    for (int64_t i = 0; i < n; i++) {
        real p, g;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        real vi = s->alpha * FN(load_state)(v[i]) + s->one_minus_alpha * (g * g);
        v[i] = FN(store_state)(vi);
        real d = vi;
        if (centered) {
            real gai = s->alpha * FN(load_state)(ga[i]) + s->one_minus_alpha * g;
            ga[i] = FN(store_state)(gai);
            d = vi - gai * gai;
        }
        real den = eps_in_sqrt ? FO_SQRT(d + s->eps) : FO_SQRT(d) + s->eps;
        if (has_momentum) {
            real bi = s->momentum * FN(load_state)(b[i]) + g / den;
            b[i] = FN(store_state)(bi);
            param[i] = FN(store)(p - s->lr * bi);
        } else {
            param[i] = FN(store)(p - s->lr * g / den);
        }
    }
}

FO_LOOP(rmsprop)
{
    const FN(rmsprop_scalars) *s = (const void *)scalars_;
    const int centered = buf[3] != NULL, momentum = buf[4] != NULL;
    (void)sums;
    if (s->eps_in_sqrt != 0) {
        if (centered)
            momentum ? FN(rmsprop_body)(s, buf, n, 1, 1, 1) : FN(rmsprop_body)(s, buf, n, 1, 0, 1);
        else
            momentum ? FN(rmsprop_body)(s, buf, n, 0, 1, 1) : FN(rmsprop_body)(s, buf, n, 0, 0, 1);
    } else {
        if (centered)
            momentum ? FN(rmsprop_body)(s, buf, n, 1, 1, 0) : FN(rmsprop_body)(s, buf, n, 1, 0, 0);
        else
            momentum ? FN(rmsprop_body)(s, buf, n, 0, 1, 0) : FN(rmsprop_body)(s, buf, n, 0, 0, 0);
    }
}

typedef struct {
    FN(prologue_scalars) pro;
    real rho, one_minus_rho;
    real eps;
    real lr;
} FN(adadelta_scalars);
#define ADADELTA_SCALARS "rho one_minus_rho eps lr"

/* buf: param, grad, square_avg, acc_delta (torch.optim.Adadelta).
 * v <- rho*v + (1-rho)*g*g;  delta = sqrt(u + eps) / sqrt(v + eps) * g;
 * u <- rho*u + (1-rho)*delta*delta;  p <- p - lr*delta */
FO_LOOP(adadelta)
{
    const FN(adadelta_scalars) *s = (const void *)scalars_;
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict v = buf[2], *restrict u = buf[3];
    (void)sums;
    for (int64_t i = 0; i < n; i++) {
        real p, g;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        real vi = s->rho * FN(load_state)(v[i]) + s->one_minus_rho * (g * g);
        v[i] = FN(store_state)(vi);
        real ui = FN(load_state)(u[i]);
        real delta = FO_SQRT(ui + s->eps) / FO_SQRT(vi + s->eps) * g;
        u[i] = FN(store_state)(s->rho * ui + s->one_minus_rho * (delta * delta));
        param[i] = FN(store)(p - s->lr * delta);
    }
}
