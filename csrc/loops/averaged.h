/* loops/averaged.h -- optimizers that keep an average of iterates: ASGD (torch.optim.ASGD)
 * and Schedule-Free AdamW (Defazio et al. 2024, the `schedulefree` reference code); the
 * interpolation Schedule-Free's train()/eval() switch uses; and the EWMA state update.
 * Written once over `real` and `stored`; kernels.c instantiates it for float, double and
 * bfloat16 buffers. */

typedef struct {
    FN(prologue_scalars) pro;
    real eta;               /* the step size this step (state "eta") */
    real shrink;            /* 1 - lambd * eta */
    real mu;                /* the averaging weight this step (state "mu") */
} FN(asgd_scalars);
#define ASGD_SCALARS "eta shrink mu"

/* buf: param, grad, ax.  p <- p*(1 - lambd*eta);  p <- p - eta*g;
 * ax <- ax + (p - ax)*mu, or ax <- p when mu == 1 */
FO_INLINE void FN(asgd_body)(const FN(asgd_scalars) *s, void *const *buf, int64_t n,
                             const int copy)
{
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict ax = buf[2];
    for (int64_t i = 0; i < n; i++) {
        real p, g;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        p = p * s->shrink;
        p = p - s->eta * g;
        param[i] = FN(store)(p);
        real ai = FN(load_state)(ax[i]);
        ax[i] = FN(store_state)(copy ? p : ai + (p - ai) * s->mu);
    }
}

FO_LOOP(asgd)
{
    const FN(asgd_scalars) *s = (const void *)scalars_;
    (void)sums;
    s->mu == 1 ? FN(asgd_body)(s, buf, n, 1) : FN(asgd_body)(s, buf, n, 0);
}

typedef struct {
    FN(prologue_scalars) pro;
    real beta2, one_minus_beta2;
    real inv_bc2;           /* 1 / (1 - beta2^t) */
    real eps;
    real decay;             /* weight decay, evaluated at y */
    real ckp1;              /* weight of z in the new average: c_{t+1} */
    real y_step;            /* lr * (beta1 * (1 - ckp1) - 1) */
    real lr;
} FN(schedulefree_adamw_scalars);
#define SCHEDULEFREE_ADAMW_SCALARS "beta2 one_minus_beta2 inv_bc2 eps decay ckp1 y_step lr"

/* buf: param (y, the point gradients are taken at), grad, z, exp_avg_sq.
 * v <- b2*v + (1-b2)*g*g;  d = g / (sqrt(v*inv_bc2) + eps), + decay*y when decay;
 * y <- y + ckp1*(z - y);  y <- y + y_step*d;  z <- z - lr*d */
FO_LOOP(schedulefree_adamw)
{
    const FN(schedulefree_adamw_scalars) *s = (const void *)scalars_;
    stored *restrict y = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict z = buf[2], *restrict v = buf[3];
    (void)sums;
    for (int64_t i = 0; i < n; i++) {
        real p, g;
        FN(prologue)(&s->pro, FN(load)(y[i]), FN(load)(grad[i]), &p, &g);
        real vi = s->beta2 * FN(load_state)(v[i]) + s->one_minus_beta2 * (g * g);
        v[i] = FN(store_state)(vi);
        real d = g / (FO_SQRT(vi * s->inv_bc2) + s->eps);
        if (s->decay != 0)
            d = d + s->decay * p;
        real zi = FN(load_state)(z[i]);
        p = p + s->ckp1 * (zi - p);
        y[i] = FN(store)(p + s->y_step * d);
        z[i] = FN(store_state)(zi - s->lr * d);
    }
}

typedef struct {
    real weight;
} FN(interpolate_scalars);
#define INTERPOLATE_SCALARS "weight"

/* buf: param, target.  p <- p + weight*(target - p) */
FO_LOOP(interpolate)
{
    const FN(interpolate_scalars) *s = (const void *)scalars_;
    stored *restrict param = buf[0];
    const stored *restrict target = buf[1];
    (void)sums;
    for (int64_t i = 0; i < n; i++) {
        real p = FN(load)(param[i]);
        param[i] = FN(store)(p + s->weight * (FN(load)(target[i]) - p));
    }
}

typedef struct {
    real beta, one_minus_beta;
} FN(ewma_scalars);
#define EWMA_SCALARS "beta one_minus_beta"

/* buf: average, value.  v <- beta*v + (1-beta)*x */
FO_LOOP(ewma)
{
    const FN(ewma_scalars) *s = (const void *)scalars_;
    stored *restrict v = buf[0];
    const stored *restrict x = buf[1];
    (void)sums;
    for (int64_t i = 0; i < n; i++)
        v[i] = FN(store)(s->beta * FN(load)(v[i]) + s->one_minus_beta * FN(load)(x[i]));
}
