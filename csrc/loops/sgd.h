/* loops/sgd.h -- plain SGD and momentum in its three forms. Written once over `real` and
 * `stored`; kernels.c instantiates it for float, double and bfloat16 buffers.
 * buf: param, grad[, momentum_buffer]. */

typedef struct {
    FN(prologue_scalars) pro;
    real lr;
} FN(sgd_scalars);
#define SGD_SCALARS "lr"

/* p <- p - lr*g */
FO_LOOP(sgd)
{
    const FN(sgd_scalars) *s = (const void *)scalars_;
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    (void)sums;
    for (int64_t i = 0; i < n; i++) {
        real p, g;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        param[i] = FN(store)(p - s->lr * g);
    }
}

typedef struct {
    FN(prologue_scalars) pro;
    real form;              /* FO_MOMENTUM_* */
    real nesterov;
    real first_step;        /* torch form: b <- g on the first step */
    real momentum;          /* mu, or beta for the ewma form */
    real grad_weight;       /* torch: 1 - dampening; ewma: 1 - beta; velocity: lr */
    real step_size;         /* torch: lr; ewma: lr or lr / (1 - beta^t); velocity: 1 + mu */
} FN(momentum_scalars);
#define MOMENTUM_SCALARS "form nesterov first_step momentum grad_weight step_size"

/* One loop for the three forms (`form`, `nesterov` and `first_step` are literals):
 *   torch:    b <- g at t=1, else b <- mu*b + (1-d)*g;  p <- p - lr*(g + mu*b if nesterov else b)
 *   ewma:     v <- beta*v + (1-beta)*g;  p <- p - s*d, d = v, or with nesterov the look-ahead
 *             beta*v + (1-beta)*g;  s = lr or lr/(1-beta^t)
 *   velocity: v0 = v;  v <- mu*v0 - lr*g;  p <- p + v, or with nesterov (CS231n, the corrected
 *             Deep Learning from Scratch) p <- p - mu*v0 + (1+mu)*v */
FO_INLINE void FN(momentum_body)(const FN(momentum_scalars) *s, void *const *buf, int64_t n,
                                 const int form, const int nesterov, const int first_step)
{
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict b = buf[2];
    const real mu = s->momentum, w = s->grad_weight, step = s->step_size;
    for (int64_t i = 0; i < n; i++) {
        real p, g;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        if (form == FO_MOMENTUM_TORCH) {
            real bi = first_step ? g : mu * FN(load_state)(b[i]) + w * g;
            b[i] = FN(store_state)(bi);
            param[i] = FN(store)(p - step * (nesterov ? g + mu * bi : bi));
        } else if (form == FO_MOMENTUM_EWMA) {
            real vi = mu * FN(load_state)(b[i]) + w * g;
            b[i] = FN(store_state)(vi);
            param[i] = FN(store)(p - step * (nesterov ? mu * vi + w * g : vi));
        } else {
            real v0 = FN(load_state)(b[i]);
            real vi = mu * v0 - w * g;
            b[i] = FN(store_state)(vi);
            param[i] = FN(store)(nesterov ? p - mu * v0 + step * vi : p + vi);
        }
    }
}

FO_LOOP(momentum)
{
    const FN(momentum_scalars) *s = (const void *)scalars_;
    const int nesterov = s->nesterov != 0;
    (void)sums;
    if (s->form == FO_MOMENTUM_EWMA)
        nesterov ? FN(momentum_body)(s, buf, n, FO_MOMENTUM_EWMA, 1, 0)
                 : FN(momentum_body)(s, buf, n, FO_MOMENTUM_EWMA, 0, 0);
    else if (s->form == FO_MOMENTUM_VELOCITY)
        nesterov ? FN(momentum_body)(s, buf, n, FO_MOMENTUM_VELOCITY, 1, 0)
                 : FN(momentum_body)(s, buf, n, FO_MOMENTUM_VELOCITY, 0, 0);
    else if (s->first_step != 0)
        nesterov ? FN(momentum_body)(s, buf, n, FO_MOMENTUM_TORCH, 1, 1)
                 : FN(momentum_body)(s, buf, n, FO_MOMENTUM_TORCH, 0, 1);
    else
        nesterov ? FN(momentum_body)(s, buf, n, FO_MOMENTUM_TORCH, 1, 0)
                 : FN(momentum_body)(s, buf, n, FO_MOMENTUM_TORCH, 0, 0);
}
