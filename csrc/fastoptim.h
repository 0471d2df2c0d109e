/* fastoptim.h -- the C kernel interface.
 *
 * Every kernel updates contiguous buffers in place, in one pass over memory. The
 * buffers arrive as void pointers plus a dtype index (FO_FLOAT32 / FO_FLOAT64), so one
 * declaration serves both dtypes; the loops themselves are written once over the type
 * `real` (csrc/loops/ (one file per family)) and instantiated twice in csrc/kernels.c.
 *
 * Hyperparameters arrive as doubles, already combined by the caller into the per-step
 * scalars of DESIGN.md (bias corrections, step sizes, 1 - beta, ...). A kernel rounds each
 * scalar to the array dtype once and then performs only dtype arithmetic, operation for
 * operation as the NumPy reference does, so the two agree bit for bit.
 */
#ifndef FASTOPTIM_H
#define FASTOPTIM_H

#include <stdint.h>

enum { FO_FLOAT32 = 0, FO_FLOAT64 = 1 };

/* Shared by all gradient kernels: g <- -grad when maximize, then g <- g + weight_decay * p
 * when weight_decay != 0 (torch.optim's L2 order). */
typedef struct {
    int maximize;
    double weight_decay;    /* L2 coefficient; 0 means "skip", not "add 0 * p" */
} fo_grad_scalars;

typedef struct {
    fo_grad_scalars g;
    double lr;
} sgd_scalars;

enum { FO_MOMENTUM_TORCH = 0, FO_MOMENTUM_EWMA = 1, FO_MOMENTUM_VELOCITY = 2 };

typedef struct {
    fo_grad_scalars g;
    int form;               /* FO_MOMENTUM_* */
    int nesterov;
    int first_step;         /* torch form: b <- g on the first step */
    double momentum;        /* mu, or beta for the ewma form */
    double grad_weight;     /* torch: 1 - dampening; ewma: 1 - beta; velocity: lr */
    double step_size;       /* torch: lr; ewma: lr or lr / (1 - beta^t); velocity: unused */
    double momentum_sq;     /* velocity + nesterov: mu * mu */
    double nesterov_grad;   /* velocity + nesterov: (1 + mu) * lr */
} momentum_scalars;

typedef struct {
    fo_grad_scalars g;
    double clr;             /* lr / (1 + (t - 1) * lr_decay) */
    double eps;
} adagrad_scalars;

typedef struct {
    fo_grad_scalars g;
    double alpha, one_minus_alpha;
    double eps;
    double lr;
    double momentum;
} rmsprop_scalars;

typedef struct {
    fo_grad_scalars g;      /* weight_decay here is L2 only; AdamW uses param_decay */
    double param_decay;     /* AdamW: 1 - lr * wd applied to p first; 1 means none */
    int decoupled;
    double beta1, one_minus_beta1;
    double beta2, one_minus_beta2;
    double step_size;       /* lr / (1 - beta1^t) */
    double rsqrt_bc2;       /* 1 / sqrt(1 - beta2^t), used when eps_root == 0 */
    double inv_bc2;         /* 1 / (1 - beta2^t), used when eps_root > 0 */
    double eps, eps_root;
} adam_scalars;

typedef struct {
    double beta, one_minus_beta;
} ewma_scalars;

/* Each kernel: buffers, element count, scalars, and the number of threads to use at most
 * (<= 0 means the default). Optional state buffers may be NULL where noted. */
typedef void sgd_kernel(void *param, const void *grad, int64_t n,
                        const sgd_scalars *s, int threads);
typedef void momentum_kernel(void *param, const void *grad, void *momentum_buffer,
                             int64_t n, const momentum_scalars *s, int threads);
typedef void adagrad_kernel(void *param, const void *grad, void *state_sum, int64_t n,
                            const adagrad_scalars *s, int threads);
/* grad_avg: NULL unless centered; momentum_buffer: NULL unless momentum > 0. */
typedef void rmsprop_kernel(void *param, const void *grad, void *square_avg, void *grad_avg,
                            void *momentum_buffer, int64_t n, const rmsprop_scalars *s,
                            int threads);
/* max_exp_avg_sq: NULL unless amsgrad. */
typedef void adam_kernel(void *param, const void *grad, void *exp_avg, void *exp_avg_sq,
                         void *max_exp_avg_sq, int64_t n, const adam_scalars *s, int threads);
typedef void ewma_kernel(void *average, const void *value, int64_t n, const ewma_scalars *s,
                         int threads);

/* Indexed by FO_FLOAT32 / FO_FLOAT64. */
extern sgd_kernel *const sgd_step[2];
extern momentum_kernel *const momentum_step[2];
extern adagrad_kernel *const adagrad_step[2];
extern rmsprop_kernel *const rmsprop_step[2];
extern adam_kernel *const adam_step[2];
extern ewma_kernel *const ewma_step[2];

/* Threading (parallel.c). */
typedef void fo_chunk_fn(const void *ctx, int64_t lo, int64_t hi);
void fo_parallel_for(fo_chunk_fn *chunk, const void *ctx, int64_t n, int threads);
int fo_max_threads(void);        /* threads the default uses (all cores, or OMP setting) */
int fo_has_openmp(void);
int64_t fo_parallel_threshold(void);
void fo_set_parallel_threshold(int64_t n);
const char *fo_simd_target(void);   /* which target_clones variant the CPU selects */

#endif
