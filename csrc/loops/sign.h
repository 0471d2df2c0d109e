/* loops/sign.h -- optimizers that step by the sign of something: Lion (Chen et al. 2023)
 * and Rprop (torch.optim.Rprop). Written once over `real` and `stored`; kernels.c
 * instantiates it for float, double and bfloat16 buffers. */

typedef struct {
    FN(prologue_scalars) pro;
    real beta1, one_minus_beta1, beta2, one_minus_beta2;
    real lr;
} FN(lion_scalars);
#define LION_SCALARS "beta1 one_minus_beta1 beta2 one_minus_beta2 lr"

/* buf: param, grad, exp_avg.  c = b1*m + (1-b1)*g;  p <- p - lr*sign(c);
 * m <- b2*m + (1-b2)*g  (decoupled weight decay p <- p*(1 - lr*wd) in the prologue) */
FO_LOOP(lion)
{
    const FN(lion_scalars) *s = (const void *)scalars_;
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict m = buf[2];
    (void)sums;
    for (int64_t i = 0; i < n; i++) {
        real p, g;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        real mi = FN(load_state)(m[i]);
        real c = s->beta1 * mi + s->one_minus_beta1 * g;
        param[i] = FN(store)(p - s->lr * FN(sign)(c));
        m[i] = FN(store_state)(s->beta2 * mi + s->one_minus_beta2 * g);
    }
}

typedef struct {
    FN(prologue_scalars) pro;
    real eta_minus, eta_plus;
    real step_size_min, step_size_max;
} FN(rprop_scalars);
#define RPROP_SCALARS "eta_minus eta_plus step_size_min step_size_max"

/* buf: param, grad, prev, step_size (torch.optim.Rprop).
 * f = eta_plus if g*prev > 0, eta_minus if < 0, 1 if == 0 (NaN stays NaN);
 * s <- clamp(s*f, min, max);  g' = 0 where f == eta_minus, else g;
 * p <- p - sign(g')*s;  prev <- g' */
FO_LOOP(rprop)
{
    const FN(rprop_scalars) *s = (const void *)scalars_;
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict prev = buf[2], *restrict step = buf[3];
    (void)sums;
    for (int64_t i = 0; i < n; i++) {
        real p, g;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        real product = g * FN(load_state)(prev[i]);
        real factor = product > 0 ? s->eta_plus : product < 0 ? s->eta_minus
                      : product == 0 ? (real)1 : product;
        real si = FN(load_state)(step[i]) * factor;
        si = si < s->step_size_min ? s->step_size_min : si > s->step_size_max ? s->step_size_max : si;
        real gi = factor == s->eta_minus ? (real)0 : g;
        step[i] = FN(store_state)(si);
        prev[i] = FN(store_state)(gi);
        param[i] = FN(store)(p - FN(sign)(gi) * si);
    }
}
