/* fastoptim.h -- the C kernel interface.
 *
 * A kernel is an element loop (csrc/loops/, written once over the type `real`, instantiated
 * in kernels.c for a few storage layouts) plus an entry in the registry `fo_kernels`. One call
 * (fo_run) steps a whole list of arrays: for each array, a fixed number of buffers (its
 * "roles": param, grad, then the state buffers), each with its own storage dtype.
 *
 * Arithmetic happens in the compute type: double for float64 params, float for everything
 * else. Buffers stored in float32/float64 are updated in place. When an array's buffers
 * are all bfloat16, or its param and gradient float32 and its state bfloat16, and stores
 * round to nearest, the loop instantiated for that layout widens and rounds in registers.
 * Otherwise bfloat16/float16 buffers are widened to float in blocks, the loop runs on the
 * block, and the written ones are rounded back once (to nearest even, or stochastically).
 * Both give the same bits; one loop serves every dtype.
 *
 * The per-step scalars (bias corrections, step sizes, 1 - beta, ...) arrive computed in
 * double by the Python layer, one struct of doubles per kernel whose field names are listed
 * in the registry; each is rounded to the compute type once. The loops then perform only
 * compute-type arithmetic, operation for operation as the NumPy reference does, so the two
 * agree bit for bit.
 */
#ifndef FASTOPTIM_H
#define FASTOPTIM_H

#include <stdint.h>

/* storage dtypes of a buffer */
enum { FO_FLOAT32 = 0, FO_FLOAT64 = 1, FO_BFLOAT16 = 2, FO_FLOAT16 = 3 };

enum {
    FO_MAX_ROLES = 8,           /* buffers per array, the optional param copy included */
    FO_MAX_SCALARS = 32,        /* doubles in a kernel's scalars struct */
    FO_MAX_SUMS = 2,            /* sums a reducing kernel returns per array */
    /* Reductions: every sum runs over blocks of FO_REDUCE_BLOCK elements (the last one
     * shorter); in a block, lane k adds the elements k, k + FO_REDUCE_LANES, ... in order,
     * in double, from 0; the lanes are combined pairwise (0+1, 2+3, ... then again); the
     * blocks are added in index order. Threads take whole blocks, so the result never
     * depends on the thread count. */
    FO_REDUCE_BLOCK = 2048,
    FO_REDUCE_LANES = 16,
};

/* Option codes some kernels take as a scalar (fastoptim/_kernel_specs.py uses the same). */
enum { FO_MOMENTUM_TORCH = 0, FO_MOMENTUM_EWMA = 1, FO_MOMENTUM_VELOCITY = 2 };
enum { FO_ADAM_DEN_TORCH = 0, FO_ADAM_DEN_EPS_ROOT = 1, FO_ADAM_DEN_EPS_HAT = 2 };
enum { FO_LANES_SQUARE = 0, FO_LANES_ABS = 1 };   /* loops/reduce.h */

/* A loop over n elements of the compute type `real` (float or double): buf[r] points at
 * role r's first element (NULL when the role is unused), stored as the loop's layout
 * says; scalars at the kernel's scalars struct of `real`. A reducing kernel (nsums > 0) is
 * called one reduction block at a time (n <= FO_REDUCE_BLOCK) and writes that block's
 * nsums totals to sums. */
typedef void fo_loop_f32(const float *scalars, void *const *buf, int64_t n, double *sums);
typedef void fo_loop_f64(const double *scalars, void *const *buf, int64_t n, double *sums);

typedef struct {
    const char *name;           /* the Python function, e.g. "adam_step" */
    const char *roles;          /* buffer names in argument order; role 1 is only read */
    const char *scalars;        /* the scalars struct's fields, in order */
    int nroles, nscalars, nsums;
    int combine_max;            /* reducing: blocks combine by maximum, not by sum */
    fo_loop_f32 *loop_f32;      /* float32 buffers */
    fo_loop_f64 *loop_f64;      /* float64 buffers */
    fo_loop_f32 *loop_bf16;     /* bfloat16 buffers, rounding to nearest */
    fo_loop_f32 *loop_f32_bf16; /* float32 param and gradient, bfloat16 state, to nearest */
    fo_loop_f32 *loop_master;   /* float32 param and state, bfloat16 gradient and param copy
                                 * (buf[nroles]), to nearest; Adam's, with AVX512-BF16 only */
} fo_kernel;

extern const fo_kernel fo_kernels[];
extern const int fo_kernel_count;

/* How stores to bfloat16/float16 round. Stochastic rounding draws 16 bits per element
 * from a counter-based hash of (seed, step, array index, role, element index): the same
 * bits whatever the thread count, and the ones the NumPy reference draws. */
typedef struct {
    int stochastic;
    uint64_t seed;
    int64_t step;
} fo_rounding;

/* One kernel call over `count` arrays. data and dtype hold nroles + 1 entries per array:
 * the kernel's roles, then the optional copy of the updated param (NULL: none), written
 * in the same pass with the same rounding. */
typedef struct {
    const fo_kernel *kernel;
    int64_t count;
    void *const *data;
    const int *dtype;
    const int64_t *n;
    const double *scalars;      /* nscalars doubles, or count * nscalars when per_array */
    int per_array;
    fo_rounding rounding;
    int64_t first_index;        /* the index of array 0 in the rounding key */
    double *sums;               /* reducing kernels: count * nsums results */
    int writes;                 /* 0: a read-only pass (reductions): nothing is stored */
    int threads;
} fo_call;

/* Runs the call; 0, or -1 when memory for its task list could not be allocated (nothing
 * has been written then). */
int fo_run(const fo_call *call);

/* The norms of clipping and check_finite are reducing kernels over one read-only role "x":
 * sum_squares, sum_abs, max_abs; per array, sums[2i] is the value and sums[2i + 1] is 0
 * when every element is finite (NaN otherwise). */

/* ---- Adafactor (adafactor.c) ---- */
/* Adafactor keeps row and column factors for params of two or more dimensions, so its
 * buffers are not n elements per role and it has its own call. Per array, 6 buffers:
 * param, grad, row_var, col_var, variance (NULL where unused: row_var and col_var
 * for a factored array, variance for another), then the param copy (NULL: none); shape
 * holds 3 numbers per array: a factored array is `batch` matrices of rows x cols (its
 * leading dimensions are batch dimensions), another is 1 x 1 x n.
 *
 * writes = 0 (measure, read only): sums gets per array the sum of p*p and of u*u, and
 * factor_sums, per factored array, the sum of g*g of each row then of each column.
 * writes = 1 (apply): factor_sums as the measure call returned them; scalars per array
 * (per_array) carry the step size; params, variance, row_var and col_var are written.
 *
 * The order of the sums: the rows of the last dimension (a 1-D array is one row), each in
 * blocks of FO_REDUCE_BLOCK elements in the lane order above, the blocks added in order;
 * a row sum is that; a sum over the array adds its row sums in row order. A column sum cuts
 * the rows of each matrix into blocks of max(FO_ADAFACTOR_ROW_BLOCK, ceil(rows /
 * FO_ADAFACTOR_ROW_BLOCKS)) rows, adds each column within a block in row order (in double,
 * from 0) and the blocks in order. None of it depends on the thread count. */
enum { FO_ADAFACTOR_ROW_BLOCK = 32, FO_ADAFACTOR_ROW_BLOCKS = 16 };

typedef struct {
    int64_t count;
    void *const *data;          /* 6 per array */
    const int *dtype;           /* 6 per array */
    const int64_t *shape;       /* 3 per array: batch, rows, cols */
    const double *scalars;      /* nscalars doubles, or count * nscalars when per_array */
    int per_array;
    fo_rounding rounding;
    int64_t first_index;        /* the index of array 0 in the rounding key */
    double *sums;               /* 2 per array (measure) */
    double *factor_sums;        /* batch * (rows + cols) per factored array */
    int writes;
    int threads;
} fo_adafactor_call;

/* Runs the call; 0, or -1 when its work memory could not be allocated (nothing has been
 * written then). */
int fo_adafactor(const fo_adafactor_call *call);

/* Its names (roles, scalars) for the check against the Python spec; no loops: fo_run
 * never runs it. */
extern const fo_kernel fo_adafactor_kernel;

/* ---- conversions (convert.c), exported for the tests of the rounding rules ---- */
void fo_narrow(const float *x, void *out, int dtype, int64_t n, const fo_rounding *r,
               uint64_t key, int64_t first);
void fo_widen(const void *x, int dtype, float *out, int64_t n);
uint64_t fo_rounding_key(const fo_rounding *r, int64_t array, int role);

/* ---- the thread pool (pool.c) ---- */
/* Runs task(ctx, t) for t in [0, ntasks) on up to `threads` threads, the calling one
 * included, and returns when all are done. Tasks are claimed in order from a shared
 * counter: a thread that is not running never holds up the others, and the caller takes
 * whatever is left. Workers compute under the caller's floating-point mode. */
typedef void fo_task(void *ctx, int64_t t);
void fo_pool_run(fo_task *task, void *ctx, int64_t ntasks, int threads);

/* The element-range form: chunk(ctx, lo, hi) over [0, n) in pieces whose bounds are
 * multiples of FO_REDUCE_BLOCK (whole cache lines and whole reduction blocks); one piece
 * on the calling thread when n is below the parallel threshold. */
typedef void fo_chunk_fn(const void *ctx, int64_t lo, int64_t hi);
void fo_parallel_for(fo_chunk_fn *chunk, const void *ctx, int64_t n, int threads);
int fo_team(int64_t n, int threads);            /* threads a call over n elements uses */
int64_t fo_piece_size(int64_t n, int team);     /* the piece fo_parallel_for would cut */

int fo_max_threads(void);       /* the default team: FASTOPTIM_NUM_THREADS, else all cores */
int fo_hardware_threads(void);  /* the cores this process may run on */
int fo_pool_workers(void);      /* worker threads alive now */
void fo_pool_init(void);        /* at load: a child forked later knows it */
int fo_pool_share_openmp(void); /* run threaded calls on torch's OpenMP team */
int fo_pool_shares_openmp(void); /* ... and whether they do */
int64_t fo_parallel_threshold(void);
void fo_set_parallel_threshold(int64_t n);
const char *fo_simd_target(void);   /* which target_clones variant the CPU selects */
int fo_bfloat16_instruction(void);   /* bfloat16 rounded with AVX512-BF16 (convert.c) */

/* ---- the EWMA of a series along its time axis (loops/scan.h; the NumPy specification is
 * fastoptim/reference_ewma.py) ---- */
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

/* The series viewed as (outer, length, inner), time the middle axis; float or double.
 * mean, weight (in the arithmetic type) and count hold one state per column (outer *
 * inner entries), read first and written back; all NULL: a fresh start, nothing kept. */
typedef void ewma_scan_kernel(void *average, const void *series, void *mean, void *weight,
                              int64_t *count, int64_t outer, int64_t length, int64_t inner,
                              const ewma_scan_scalars *s, int threads);
extern ewma_scan_kernel *const ewma_scan[2];    /* indexed by FO_FLOAT32 / FO_FLOAT64 */

/* ---- the data-movement limit (movement.c), for the benchmark ---- */
/* u[i] <- u[i] + read_only[i] (as integers) for each of the `count` updated buffers u,
 * whose elements are size[j] bytes (2, 4 or 8), in one pass: a step's memory traffic. */
void fo_movement(void *const *updated, const int *size, int count, const void *read_only,
                 int read_size, int64_t n, int threads);

#endif
