/* parallel.c -- splitting one kernel call across OpenMP threads.
 *
 * Element-wise updates are independent, so the split never changes a result: any number
 * of threads gives the same bits. Small buffers run on the calling thread, because
 * waking a second thread costs more than it saves below a size measured by the
 * benchmark (python -m fastoptim bench). */
#include "fastoptim.h"

#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FO_X86 1
#endif

/* elements each thread must get at least before a second thread is used */
static int64_t parallel_threshold = 1 << 16;

int64_t fo_parallel_threshold(void) { return parallel_threshold; }

/* clamped so that 2 * threshold, used below, cannot overflow */
void fo_set_parallel_threshold(int64_t n)
{
    parallel_threshold = n < 1 ? 1 : n > INT64_MAX / 4 ? INT64_MAX / 4 : n;
}

int fo_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* The default team: FASTOPTIM_NUM_THREADS when set to a positive count, else OpenMP's
 * default (all cores, or OMP_NUM_THREADS). Read at each call, so a change shows at once. */
int fo_max_threads(void)
{
    const char *env = getenv("FASTOPTIM_NUM_THREADS");
    int n = env ? atoi(env) : 0;
    if (n > 0)
        return n;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void fo_parallel_for(fo_chunk_fn *chunk, const void *ctx, int64_t n, int threads)
{
    int64_t team = threads > 0 ? threads : fo_max_threads();
    int64_t most = n / parallel_threshold;
    if (team > most)
        team = most;
    if (team <= 1) {
        chunk(ctx, 0, n);
        return;
    }
#ifdef _OPENMP
    #pragma omp parallel num_threads((int)team)
    {
        int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        /* contiguous blocks whose bounds are multiples of 64 elements: whole cache lines */
        int64_t per = ((n + nt - 1) / nt + 63) / 64 * 64;
        int64_t lo = per * t, hi = lo + per < n ? lo + per : n;
        if (lo < hi)
            chunk(ctx, lo, hi);
    }
#else
    chunk(ctx, 0, n);
#endif
}

/* The variant the target_clones resolver picks, in its order of preference. */
const char *fo_simd_target(void)
{
#ifdef FO_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return "avx512f";
    if (__builtin_cpu_supports("avx2"))
        return "avx2";
    return "default (x86-64)";
#else
    return "default (generic)";
#endif
}

void fo_run_many(fo_kernel *const kernel[2], void *const *buffers, int roles, const int64_t *n,
                 const int *dtype, int64_t count, const void *scalars, int threads)
{
    /* Arrays big enough to be split run one after another, each across the team. */
    int64_t small_total = 0;
    for (int64_t i = 0; i < count; i++) {
        if (n[i] >= 2 * parallel_threshold)
            kernel[dtype[i]](buffers + i * roles, n[i], scalars, threads);
        else
            small_total += n[i];
    }
    /* The others are shared out whole among the threads, when they add up to enough:
     * thread t takes the arrays that start in the t-th equal share of their elements, so
     * each thread keeps the same arrays (and their cache lines) from one step to the next. */
    int64_t team = threads > 0 ? threads : fo_max_threads();
    if (team > small_total / parallel_threshold)
        team = small_total / parallel_threshold;
    if (team <= 1) {
        for (int64_t i = 0; i < count; i++)
            if (n[i] < 2 * parallel_threshold)
                kernel[dtype[i]](buffers + i * roles, n[i], scalars, 1);
        return;
    }
#ifdef _OPENMP
    #pragma omp parallel num_threads((int)team)
    {
        int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t lo = small_total * t / nt, hi = small_total * (t + 1) / nt, seen = 0;
        for (int64_t i = 0; i < count; i++) {
            if (n[i] >= 2 * parallel_threshold)
                continue;
            if (seen >= lo && seen < hi)
                kernel[dtype[i]](buffers + i * roles, n[i], scalars, 1);
            seen += n[i];
        }
    }
#else
    for (int64_t i = 0; i < count; i++)
        if (n[i] < 2 * parallel_threshold)
            kernel[dtype[i]](buffers + i * roles, n[i], scalars, 1);
#endif
}
