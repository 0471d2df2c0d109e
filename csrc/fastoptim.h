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

/* The EWMA scan (loops/scan.h; fastoptim.reference_ewma.ewma_scan is its specification). */
typedef struct {
    double beta;            /* decay of the average's weight per step, when decay is NULL */
    double alpha;           /* weight of a new observation (pandas' alpha; 1 - beta) */
    const double *decay;    /* per-step decay, one per time step (from times), or NULL */
    int64_t min_periods;    /* values before this many observations are NaN (0 acts as 1) */
    int adjust;             /* 1: weights accumulate (pandas adjust=True); 0: reset to 1 */
    int bias_correction;    /* 0: the value is mean * weight, the lectures' uncorrected v_t */
    int ignore_na;          /* 1: a missing value does not decay the weight */
    int complement_weight;  /* adjust=0, alpha = 1/2: a new value weighs 1 - the old weight */
    int float32_arithmetic; /* float32 data: average in float32 rather than float64 */
} ewma_scan_scalars;

/* Every optimizer kernel has one signature: its buffers in a fixed order (below), the
 * element count, its scalars struct, and the number of threads to use at most (<= 0 means
 * the default). Optional state buffers are NULL when unused.
 *   sgd_step:      param, grad                                  (sgd_scalars)
 *   momentum_step: param, grad, momentum_buffer                 (momentum_scalars)
 *   adagrad_step:  param, grad, state_sum                       (adagrad_scalars)
 *   rmsprop_step:  param, grad, square_avg, grad_avg?, momentum_buffer?   (rmsprop_scalars)
 *   adam_step:     param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq?      (adam_scalars)
 *   ewma_step:     average, value                               (ewma_scalars)
 */
typedef void fo_kernel(void *const *buffers, int64_t n, const void *scalars, int threads);

/* Indexed by FO_FLOAT32 / FO_FLOAT64. */
extern fo_kernel *const sgd_step[2];
extern fo_kernel *const momentum_step[2];
extern fo_kernel *const adagrad_step[2];
extern fo_kernel *const rmsprop_step[2];
extern fo_kernel *const adam_step[2];
extern fo_kernel *const ewma_step[2];

/* ewma_scan: the EWMA along the time axis of a series viewed as (outer, length, inner).
 * mean, weight (in the arithmetic type) and count hold one state per column (outer *
 * inner entries), read first and written back; all NULL: a fresh start, nothing kept. */
typedef void ewma_scan_kernel(void *average, const void *series, void *mean, void *weight,
                              int64_t *count, int64_t outer, int64_t length, int64_t inner,
                              const ewma_scan_scalars *s, int threads);
extern ewma_scan_kernel *const ewma_scan[2];

/* Threading (parallel.c). */
typedef void fo_chunk_fn(const void *ctx, int64_t lo, int64_t hi);
void fo_parallel_for(fo_chunk_fn *chunk, const void *ctx, int64_t n, int threads);
/* One kernel over `count` arrays (an optimizer's whole parameter list) in one call:
 * buffers holds `roles` pointers per array, n and dtype one entry per array. */
void fo_run_many(fo_kernel *const kernel[2], void *const *buffers, int roles, const int64_t *n,
                 const int *dtype, int64_t count, const void *scalars, int threads);
int fo_max_threads(void);   /* the default: FASTOPTIM_NUM_THREADS, else all cores (OpenMP) */
int fo_has_openmp(void);
int64_t fo_parallel_threshold(void);
void fo_set_parallel_threshold(int64_t n);
const char *fo_simd_target(void);   /* which target_clones variant the CPU selects */

/* The data-movement limit (loops/movement.h), for the benchmark: u[i] <- u[i] + read_only[i]
 * for each of the n_updated (1 to FO_MOVEMENT_MAX_UPDATED) buffers u, in one pass. */
enum { FO_MOVEMENT_MAX_UPDATED = 4 };
typedef void movement_kernel(void *const *updated, int n_updated, const void *read_only,
                             int64_t n, int threads);
extern movement_kernel *const movement_loop[2];   /* indexed by FO_FLOAT32 / FO_FLOAT64 */

#endif
