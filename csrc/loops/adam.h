/* loops/adam.h -- the Adam family: Adam/AdamW (torch.optim, optax's eps_root, Kingma & Ba's
 * eps_hat form), Adamax, NAdam, RAdam and LAMB. Written once over `real` and `stored`;
 * kernels.c instantiates it for float, double and bfloat16 buffers. */

/* The two moving averages Adam, NAdam, RAdam and LAMB keep (their scalars come first after
 * the prologue's): m' = b1*m + (1-b1)*g;  v' = b2*v + (1-b2)*g*g */
typedef struct {
    real beta1, one_minus_beta1, beta2, one_minus_beta2;
} FN(moment_scalars);

FO_INLINE void FN(moments)(const FN(moment_scalars) *s, real g, real m, real v, real *m_new,
                           real *v_new)
{
    *m_new = s->beta1 * m + s->one_minus_beta1 * g;
    *v_new = s->beta2 * v + s->one_minus_beta2 * (g * g);
}

typedef struct {
    FN(prologue_scalars) pro;
    FN(moment_scalars) mom;
    real step_size;         /* lr / bc1; eps_hat: lr * sqrt(bc2) / bc1 */
    real rsqrt_bc2;         /* 1 / sqrt(bc2) */
    real inv_bc2;           /* 1 / bc2 */
    real eps, eps_root;
    real denominator;       /* FO_ADAM_DEN_* */
} FN(adam_scalars);
#define ADAM_SCALARS \
    "beta1 one_minus_beta1 beta2 one_minus_beta2 step_size rsqrt_bc2 inv_bc2 eps eps_root " \
    "denominator"

/* buf: param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad) or NULL.
 * m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g*g;  amsgrad: vmax <- max(vmax, v), used for v;
 * p <- p - step_size*m / den, one division per element, with den
 *   torch:    sqrt(v)*rsqrt_bc2 + eps
 *   eps_root: sqrt(v*inv_bc2 + eps_root) + eps
 *   eps_hat:  sqrt(v) + eps  (step_size = lr*sqrt(bc2)/bc1) */
FO_INLINE void FN(adam_body)(const FN(adam_scalars) *s, void *const *buf, int64_t n,
                             const int amsgrad, const int denominator)
{
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict m = buf[2], *restrict v = buf[3], *restrict vmax = buf[4];
    for (int64_t i = 0; i < n; i++) {
        real p, g, mi, vi;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        FN(moments)(&s->mom, g, FN(load_state)(m[i]), FN(load_state)(v[i]), &mi, &vi);
        m[i] = FN(store_state)(mi);
        v[i] = FN(store_state)(vi);
        if (amsgrad) {
            vi = FN(maximum)(FN(load_state)(vmax[i]), vi);
            vmax[i] = FN(store_state)(vi);
        }
        real den = denominator == FO_ADAM_DEN_EPS_ROOT ? FO_SQRT(vi * s->inv_bc2 + s->eps_root) + s->eps
                   : denominator == FO_ADAM_DEN_EPS_HAT ? FO_SQRT(vi) + s->eps
                   : FO_SQRT(vi) * s->rsqrt_bc2 + s->eps;
        param[i] = FN(store)(p - s->step_size * mi / den);
    }
}

FO_LOOP(adam)
{
    const FN(adam_scalars) *s = (const void *)scalars_;
    (void)sums;
    const int amsgrad = buf[4] != NULL;
    if (s->denominator == FO_ADAM_DEN_EPS_ROOT)
        amsgrad ? FN(adam_body)(s, buf, n, 1, FO_ADAM_DEN_EPS_ROOT)
                : FN(adam_body)(s, buf, n, 0, FO_ADAM_DEN_EPS_ROOT);
    else if (s->denominator == FO_ADAM_DEN_EPS_HAT)
        amsgrad ? FN(adam_body)(s, buf, n, 1, FO_ADAM_DEN_EPS_HAT)
                : FN(adam_body)(s, buf, n, 0, FO_ADAM_DEN_EPS_HAT);
    else
        amsgrad ? FN(adam_body)(s, buf, n, 1, FO_ADAM_DEN_TORCH)
                : FN(adam_body)(s, buf, n, 0, FO_ADAM_DEN_TORCH);
}

typedef struct {
    FN(prologue_scalars) pro;
    real beta1, one_minus_beta1, beta2;
    real eps;
    real step_size;         /* lr / bc1 */
} FN(adamax_scalars);
#define ADAMAX_SCALARS "beta1 one_minus_beta1 beta2 eps step_size"

/* buf: param, grad, exp_avg, exp_inf (torch.optim.Adamax).
 * m <- b1*m + (1-b1)*g;  u <- max(b2*u, |g| + eps);  p <- p - step_size*m / u */
FO_LOOP(adamax)
{
    const FN(adamax_scalars) *s = (const void *)scalars_;
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict m = buf[2], *restrict u = buf[3];
    (void)sums;
    for (int64_t i = 0; i < n; i++) {
        real p, g;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        real mi = s->beta1 * FN(load_state)(m[i]) + s->one_minus_beta1 * g;
        real ui = FN(maximum)(s->beta2 * FN(load_state)(u[i]), (g < 0 ? -g : g) + s->eps);
        m[i] = FN(store_state)(mi);
        u[i] = FN(store_state)(ui);
        param[i] = FN(store)(p - s->step_size * mi / ui);
    }
}

typedef struct {
    FN(prologue_scalars) pro;
    FN(moment_scalars) mom;
    real rsqrt_bc2, eps;
    real grad_coef;         /* lr * (1 - mu_t) / (1 - prod mu) */
    real avg_coef;          /* lr * mu_{t+1} / (1 - prod mu * mu_{t+1}) */
} FN(nadam_scalars);
#define NADAM_SCALARS \
    "beta1 one_minus_beta1 beta2 one_minus_beta2 rsqrt_bc2 eps grad_coef avg_coef"

/* buf: param, grad, exp_avg, exp_avg_sq (torch.optim.NAdam).
 * m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g*g;  den = sqrt(v)*rsqrt_bc2 + eps;
 * p <- p - (grad_coef*g + avg_coef*m) / den */
FO_LOOP(nadam)
{
    const FN(nadam_scalars) *s = (const void *)scalars_;
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict m = buf[2], *restrict v = buf[3];
    (void)sums;
    for (int64_t i = 0; i < n; i++) {
        real p, g, mi, vi;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        FN(moments)(&s->mom, g, FN(load_state)(m[i]), FN(load_state)(v[i]), &mi, &vi);
        m[i] = FN(store_state)(mi);
        v[i] = FN(store_state)(vi);
        real den = FO_SQRT(vi) * s->rsqrt_bc2 + s->eps;
        param[i] = FN(store)(p - (s->grad_coef * g + s->avg_coef * mi) / den);
    }
}

typedef struct {
    FN(prologue_scalars) pro;
    FN(moment_scalars) mom;
    real step_size;         /* rectified: lr * r_t * sqrt(bc2) / bc1; else lr / bc1 */
    real eps;
    real rectified;         /* rho_t > 5 */
} FN(radam_scalars);
#define RADAM_SCALARS "beta1 one_minus_beta1 beta2 one_minus_beta2 step_size eps rectified"

/* buf: param, grad, exp_avg, exp_avg_sq (torch.optim.RAdam).
 * m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g*g;
 * rectified: p <- p - step_size*m / (sqrt(v) + eps);  else p <- p - step_size*m */
FO_INLINE void FN(radam_body)(const FN(radam_scalars) *s, void *const *buf, int64_t n,
                              const int rectified)
{
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict m = buf[2], *restrict v = buf[3];
    for (int64_t i = 0; i < n; i++) {
        real p, g, mi, vi;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        FN(moments)(&s->mom, g, FN(load_state)(m[i]), FN(load_state)(v[i]), &mi, &vi);
        m[i] = FN(store_state)(mi);
        v[i] = FN(store_state)(vi);
        param[i] = FN(store)(rectified ? p - s->step_size * mi / (FO_SQRT(vi) + s->eps)
                                       : p - s->step_size * mi);
    }
}

FO_LOOP(radam)
{
    const FN(radam_scalars) *s = (const void *)scalars_;
    (void)sums;
    s->rectified != 0 ? FN(radam_body)(s, buf, n, 1) : FN(radam_body)(s, buf, n, 0);
}

typedef struct {
    FN(prologue_scalars) pro;
    FN(moment_scalars) mom;
    real inv_bc1;           /* 1 / bc1, or 1 without bias correction */
    real rsqrt_bc2;         /* 1 / sqrt(bc2), or 1 */
    real eps;
    real decay;             /* LAMB's own weight decay: u gets decay * p */
    real apply;             /* 0: only the two sums; 1: write m, v and p */
    real step_size;         /* lr * trust ratio (per array; used when apply) */
} FN(lamb_scalars);
#define LAMB_SCALARS \
    "beta1 one_minus_beta1 beta2 one_minus_beta2 inv_bc1 rsqrt_bc2 eps decay apply " \
    "step_size"

/* buf: param, grad, exp_avg, exp_avg_sq (You et al. 2019). Called one reduction block at a
 * time. m' = b1*m + (1-b1)*g;  v' = b2*v + (1-b2)*g*g;
 * u = m'*inv_bc1 / (sqrt(v')*rsqrt_bc2 + eps) + decay*p.
 * First call (apply = 0): writes nothing; sums = (sum of u*u, sum of p*p) for the trust
 * ratio |p| / |u|. Second call (apply = 1): the same u again, then m <- m', v <- v',
 * p <- p - step_size*u. Nothing is written before the ratio is known, so an interrupted
 * step leaves every buffer as it was. */
FO_INLINE void FN(lamb_body)(const FN(lamb_scalars) *s, void *const *buf, int64_t n,
                             double *sums, const int apply)
{
    stored *restrict param = buf[0];
    const stored *restrict grad = buf[1];
    stored_state *restrict m = buf[2], *restrict v = buf[3];
    real u[FO_REDUCE_BLOCK], pd[FO_REDUCE_BLOCK];
    for (int64_t i = 0; i < n; i++) {
        real p, g, mi, vi;
        FN(prologue)(&s->pro, FN(load)(param[i]), FN(load)(grad[i]), &p, &g);
        FN(moments)(&s->mom, g, FN(load_state)(m[i]), FN(load_state)(v[i]), &mi, &vi);
        real ui = mi * s->inv_bc1 / (FO_SQRT(vi) * s->rsqrt_bc2 + s->eps) + s->decay * p;
        if (apply) {
            m[i] = FN(store_state)(mi);
            v[i] = FN(store_state)(vi);
            param[i] = FN(store)(p - s->step_size * ui);
        } else {
            u[i] = ui;
            pd[i] = p;
        }
    }
    if (!apply) {
        sums[0] = FN(block_sum_squares)(u, n);
        sums[1] = FN(block_sum_squares)(pd, n);
    }
}

FO_LOOP(lamb)
{
    const FN(lamb_scalars) *s = (const void *)scalars_;
    s->apply != 0 ? FN(lamb_body)(s, buf, n, sums, 1) : FN(lamb_body)(s, buf, n, sums, 0);
}
