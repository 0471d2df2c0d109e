/* pool.c -- the thread pool every kernel call shares.
 *
 * Why not OpenMP: libgomp's team hangs in a child process after fork(), exits the process
 * when it cannot create a thread, and makes every thread wait at the end of a parallel
 * region for the slowest one -- on a busy machine a worker that the scheduler has not run
 * yet stalls the whole step for a time slice. This pool is small and avoids all three:
 *
 * - Work is a list of tasks claimed in order from an atomic counter. The calling thread
 *   claims tasks like any worker and, when none are left, waits only for tasks that were
 *   actually claimed (running). A worker that has not woken up yet claims nothing, so
 *   nobody waits for it; the caller simply does its share.
 * - A worker that claimed a task and was then preempted does hold the call up. The caller
 *   measures such waits, and after a long one runs the next calls alone for a while (see
 *   STALL_BACKOFF). Idle workers yield instead of spinning, so one that shares a core with
 *   the caller never keeps it from running.
 * - A job lives on the heap with a reference count, so a late worker that wakes after the
 *   caller has returned finds the job closed and leaves, touching no freed memory.
 * - fork(): pthread_atfork resets the pool in the child (its workers do not exist there);
 *   new ones are started on the next threaded call.
 * - Threads are started lazily, capped by the cores this process may use; if one cannot be
 *   created, the call runs with the threads it has.
 * - Workers run under the caller's floating-point mode (MXCSR: flush-to-zero, denormals-are-
 *   zero, rounding), so the thread count never changes a result.
 * - Next to torch, torch's own OpenMP team runs the tasks (fo_pool_share_openmp, called
 *   when fastoptim.torch is imported): after each parallel op torch's workers spin for a
 *   while, so a pool of our own would fight them for the cores, slowing the step that
 *   follows a backward pass and torch's ops that follow the step. Never in a child forked
 *   after that (libgomp's team does not survive fork, torch's own ops hang there too), and
 *   never with a team larger than the runtime's (so it never has to create a thread).
 * Which thread runs a task never matters for the bits: element-wise updates are
 * independent, and reductions store one partial sum per fixed block (driver.c).
 */
#define _GNU_SOURCE
#include "fastoptim.h"

#include <stdlib.h>

#if defined(__unix__) || defined(__APPLE__)
#define FO_THREADS 1
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define FO_GET_FP_MODE() _mm_getcsr()
#define FO_SET_FP_MODE(mode) _mm_setcsr(mode)
#else
#define FO_GET_FP_MODE() 0u
#define FO_SET_FP_MODE(mode) ((void)(mode))
#endif

/* elements each thread must get at least before a second thread is used */
static int64_t parallel_threshold = 1 << 16;

int64_t fo_parallel_threshold(void) { return parallel_threshold; }

/* clamped so that 2 * threshold (driver.c) cannot overflow */
void fo_set_parallel_threshold(int64_t n)
{
    parallel_threshold = n < 1 ? 1 : n > INT64_MAX / 4 ? INT64_MAX / 4 : n;
}

int fo_hardware_threads(void)
{
#if defined(FO_THREADS) && defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
#ifdef FO_THREADS
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#else
    return 1;
#endif
}

/* A positive whole number from the environment, else 0 (unset or not a count). */
static int env_count(const char *name)
{
    const char *text = getenv(name);
    if (!text || !*text)
        return 0;
    char *end;
    long n = strtol(text, &end, 10);
    while (*end == ' ')
        end++;
    return (*end == '\0' && n > 0 && n < 1 << 20) ? (int)n : 0;
}

/* The default team: FASTOPTIM_NUM_THREADS, else OMP_NUM_THREADS (torchrun sets it), else
 * every core. Read at each call, so a change shows at once. */
int fo_max_threads(void)
{
    int n = env_count("FASTOPTIM_NUM_THREADS");
    if (n <= 0)
        n = env_count("OMP_NUM_THREADS");
    int cores = fo_hardware_threads();
    return n <= 0 || n > cores ? cores : n;
}

#ifdef FO_THREADS

typedef struct {
    fo_task *task;
    void *ctx;
    int64_t ntasks;
    atomic_llong next;          /* the next task to claim */
    atomic_llong done;          /* tasks finished */
    atomic_int refs;            /* the caller and each worker that joined */
    atomic_llong off_core_ns;   /* the longest a worker holding tasks was kept off its core */
    int helpers;                /* workers that may still join */
    unsigned fp_mode;
} job_t;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;        /* workers sleep here between jobs */
    pthread_cond_t finished;    /* a caller sleeps here for running tasks */
    job_t *job;                 /* the open job, NULL when none */
    atomic_ullong generation;   /* bumped when a job is posted */
    int workers;                /* worker threads started in this process */
    int failed;                 /* pthread_create failed: start no more */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
          .finished = PTHREAD_COND_INITIALIZER};

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int forked;              /* this process was forked after fastoptim was loaded */

/* Busy machines. A worker that claimed a task and was then preempted holds the call until
 * the scheduler runs it again -- up to a time slice, many times a small step. So the
 * caller measures how long it waited for other threads after its own last task; a wait
 * longer than its own working time (and than least_stall_ns, far more than a task takes
 * on an idle machine), for a worker that was kept off its core that long, means the
 * machine is busy, and the calls of the next STALL_BACKOFF times that wait run on the
 * calling thread alone. Stalls then cost at most about 1/STALL_BACKOFF of the time; an
 * idle machine keeps every core; large calls, whose work dwarfs a time slice, keep their
 * team. A worker that was slow on its core is no sign of a busy machine: first writes to a
 * fresh result, whose pages the kernel zeroes in the faulting thread, made the threaded
 * EWMA look stalled and sent it onto one thread for half its calls. */
enum { STALL_BACKOFF = 20 };
static const int64_t least_stall_ns = 250000;
static atomic_llong alone_until_ns;     /* CLOCK_MONOTONIC */

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void job_release(job_t *job)
{
    if (atomic_fetch_sub(&job->refs, 1) == 1)
        free(job);
}

/* CPU time of the calling thread (a system call: read once per job, and per task only in
 * jobs already longer than least_stall_ns) */
static int64_t thread_cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Claim and run tasks until none are left. A worker (not the caller) notes, before it
 * reports a task done, how long it has been kept off its core: wall time minus CPU time. */
static void job_work(job_t *job, int worker)
{
    const int64_t wall_start = worker ? now_ns() : 0, cpu_start = worker ? thread_cpu_ns() : 0;
    for (;;) {
        int64_t t = atomic_fetch_add(&job->next, 1);
        if (t >= job->ntasks)
            return;
        job->task(job->ctx, t);
        int64_t wall = worker ? now_ns() - wall_start : 0;
        if (wall > least_stall_ns) {
            int64_t off = wall - (thread_cpu_ns() - cpu_start);
            int64_t most = atomic_load(&job->off_core_ns);
            while (off > most && !atomic_compare_exchange_weak(&job->off_core_ns, &most, off)) {
            }
        }
        if (atomic_fetch_add(&job->done, 1) + 1 == job->ntasks) {
            pthread_mutex_lock(&pool.lock);
            pthread_cond_broadcast(&pool.finished);
            pthread_mutex_unlock(&pool.lock);
        }
    }
}

/* Between jobs a worker stays awake this long, so that back-to-back calls (a parameter
 * list, the passes of LAMB, the next step) find it at once; then it sleeps. Awake, it
 * yields rather than spins: on a busy machine it may share a core with the caller, who
 * must not wait for the worker's idle time to run out. */
static const int64_t awake_ns = 1000000;

static void *worker_main(void *unused)
{
    (void)unused;
    unsigned long long seen = atomic_load(&pool.generation);
    for (;;) {
        int64_t sleep_at = now_ns() + awake_ns;
        while (atomic_load(&pool.generation) == seen && now_ns() < sleep_at)
            sched_yield();
        pthread_mutex_lock(&pool.lock);
        while (atomic_load(&pool.generation) == seen)
            pthread_cond_wait(&pool.wake, &pool.lock);
        seen = atomic_load(&pool.generation);
        job_t *job = pool.job;
        if (job && job->helpers > 0) {
            job->helpers--;
            atomic_fetch_add(&job->refs, 1);
        } else {
            job = NULL;
        }
        pthread_mutex_unlock(&pool.lock);
        if (job) {
            unsigned own_mode = FO_GET_FP_MODE();
            FO_SET_FP_MODE(job->fp_mode);
            job_work(job, 1);
            FO_SET_FP_MODE(own_mode);
            job_release(job);
        }
    }
    return NULL;
}

/* fork(): hold the lock across it so the child's copy is consistent, then forget the
 * workers in the child -- they were not copied. */
static void before_fork(void) { pthread_mutex_lock(&pool.lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&pool.lock); }
static void after_fork_child(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.finished, NULL);
    pool.job = NULL;
    pool.workers = 0;
    pool.failed = 0;
    forked = 1;
}

static void register_atfork(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

/* Start workers (with the lock held) until there are `wanted`, or creation fails. */
static void start_workers(int wanted)
{
    while (pool.workers < wanted && !pool.failed) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&thread, &attr, worker_main, NULL) != 0)
            pool.failed = 1;
        else
            pool.workers++;
        pthread_attr_destroy(&attr);
    }
}

void fo_pool_init(void)
{
    pthread_once(&atfork_once, register_atfork);
}

/* ---- running on torch's OpenMP team ---- */

typedef void gomp_parallel_fn(void (*member)(void *), void *data, unsigned threads,
                              unsigned flags);
typedef int omp_max_threads_fn(void);
static _Atomic(gomp_parallel_fn *) gomp_parallel;      /* NULL: not sharing */
static _Atomic(omp_max_threads_fn *) omp_max_threads;

/* Run threaded calls on the globally loaded OpenMP runtime's team (torch loads its libgomp
 * so); 0 if there is none. */
int fo_pool_share_openmp(void)
{
    omp_max_threads_fn *max_threads = (omp_max_threads_fn *)dlsym(RTLD_DEFAULT,
                                                                 "omp_get_max_threads");
    gomp_parallel_fn *parallel = (gomp_parallel_fn *)dlsym(RTLD_DEFAULT, "GOMP_parallel");
    if (!parallel || !max_threads || forked)
        return 0;
    atomic_store(&omp_max_threads, max_threads);
    atomic_store(&gomp_parallel, parallel);
    return 1;
}

int fo_pool_shares_openmp(void)
{
    return !forked && atomic_load(&gomp_parallel) != NULL;
}

typedef struct {
    job_t *job;
    pthread_t caller;
    int64_t started, worked;    /* the caller's start and own working time */
} openmp_job;

static void openmp_member(void *data)
{
    openmp_job *o = data;
    unsigned own_mode = FO_GET_FP_MODE();
    FO_SET_FP_MODE(o->job->fp_mode);
    const int caller = pthread_equal(pthread_self(), o->caller);
    job_work(o->job, !caller);
    FO_SET_FP_MODE(own_mode);
    if (caller)
        o->worked = now_ns() - o->started;
}

/* The call on the OpenMP team, which joins at its end (so the job lives on the stack);
 * a long wait for the team counts as a stall, as in fo_pool_run. */
static void run_on_openmp(gomp_parallel_fn *parallel, fo_task *task, void *ctx,
                          int64_t ntasks, int team, int64_t started)
{
    job_t job = {.task = task, .ctx = ctx, .ntasks = ntasks, .fp_mode = FO_GET_FP_MODE()};
    atomic_init(&job.next, 0);
    atomic_init(&job.done, 0);
    atomic_init(&job.refs, 1);
    atomic_init(&job.off_core_ns, 0);
    openmp_job o = {&job, pthread_self(), started, 0};
    parallel(openmp_member, &o, (unsigned)team, 0);
    int64_t ended = now_ns(), waited = ended - started - o.worked;
    if (waited > least_stall_ns && waited > o.worked &&
        atomic_load(&job.off_core_ns) > least_stall_ns)
        atomic_store(&alone_until_ns, ended + STALL_BACKOFF * waited);
}

void fo_pool_run(fo_task *task, void *ctx, int64_t ntasks, int threads)
{
    int team = threads > 0 ? threads : fo_max_threads();
    int cores = fo_hardware_threads();
    if (team > cores)
        team = cores;
    if (team > ntasks)
        team = (int)ntasks;
    int64_t now = now_ns();
    if (team > 1 && now < atomic_load(&alone_until_ns))
        team = 1;                       /* a recent stall: see STALL_BACKOFF */
    gomp_parallel_fn *parallel = team > 1 && !forked ? atomic_load(&gomp_parallel) : NULL;
    if (parallel && team <= atomic_load(&omp_max_threads)()) {
        run_on_openmp(parallel, task, ctx, ntasks, team, now);
        return;
    }
    job_t *job = team > 1 ? malloc(sizeof *job) : NULL;
    if (!job) {     /* one thread, or no memory for the job: run everything here */
        for (int64_t t = 0; t < ntasks; t++)
            task(ctx, t);
        return;
    }
    job->task = task;
    job->ctx = ctx;
    job->ntasks = ntasks;
    atomic_init(&job->next, 0);
    atomic_init(&job->done, 0);
    atomic_init(&job->refs, 1);
    atomic_init(&job->off_core_ns, 0);
    job->fp_mode = FO_GET_FP_MODE();

    pthread_mutex_lock(&pool.lock);
    int posted = pool.job == NULL;      /* another caller's job is open: go alone */
    int helpers = 0;
    if (posted) {
        start_workers(team - 1);
        helpers = job->helpers = team - 1 < pool.workers ? team - 1 : pool.workers;
        pool.job = job;
        atomic_fetch_add(&pool.generation, 1);
    }
    pthread_mutex_unlock(&pool.lock);
    if (posted)     /* after unlocking: a woken worker does not block on the lock at once */
        pthread_cond_broadcast(&pool.wake);

    int64_t started = now_ns();
    job_work(job, 0);

    if (posted) {
        int64_t worked = now_ns() - started;
        pthread_mutex_lock(&pool.lock);
        pool.job = NULL;                /* late workers find nothing to join */
        int joined = helpers - job->helpers;
        pthread_mutex_unlock(&pool.lock);
        /* wait for tasks other threads are running; yielding first lets a preempted worker
         * have this core back, then sleep */
        for (int i = 0; i < 64 && atomic_load(&job->done) < ntasks; i++)
            sched_yield();
        if (atomic_load(&job->done) < ntasks) {
            pthread_mutex_lock(&pool.lock);
            while (atomic_load(&job->done) < ntasks)
                pthread_cond_wait(&pool.finished, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        int64_t ended = now_ns(), waited = ended - started - worked;
        if (joined > 0 && waited > least_stall_ns && waited > worked &&
            atomic_load(&job->off_core_ns) > least_stall_ns)
            atomic_store(&alone_until_ns, ended + STALL_BACKOFF * waited);
    }
    job_release(job);
}

int fo_pool_workers(void)
{
    pthread_mutex_lock(&pool.lock);
    int n = pool.workers;
    pthread_mutex_unlock(&pool.lock);
    return n;
}

#else   /* no threads on this platform: everything on the calling thread */

void fo_pool_run(fo_task *task, void *ctx, int64_t ntasks, int threads)
{
    (void)threads;
    for (int64_t t = 0; t < ntasks; t++)
        task(ctx, t);
}

int fo_pool_workers(void) { return 0; }
void fo_pool_init(void) {}
int fo_pool_share_openmp(void) { return 0; }
int fo_pool_shares_openmp(void) { return 0; }

#endif

/* ---- the element-range form ---- */

typedef struct {
    fo_chunk_fn *chunk;
    const void *ctx;
    int64_t n, piece;
} range_job;

static void range_task(void *ctx, int64_t t)
{
    const range_job *r = ctx;
    int64_t lo = t * r->piece, hi = lo + r->piece < r->n ? lo + r->piece : r->n;
    r->chunk(r->ctx, lo, hi);
}

/* How a range of n elements is cut for `team` threads: pieces of at least a quarter of the
 * parallel threshold, about four per thread (so a late thread's share is taken by the
 * others), in whole reduction blocks. */
int64_t fo_piece_size(int64_t n, int team)
{
    int64_t piece = n / ((int64_t)team * 4);
    int64_t least = parallel_threshold / 4;
    if (piece < least)
        piece = least;
    if (piece < 1)
        piece = 1;
    return (piece + FO_REDUCE_BLOCK - 1) / FO_REDUCE_BLOCK * FO_REDUCE_BLOCK;
}

/* The team for a call over n elements: `threads` (0: the default team), at most one thread
 * per parallel_threshold elements, at least one. */
int fo_team(int64_t n, int threads)
{
    int64_t team = threads > 0 ? threads : fo_max_threads();
    if (team > n / parallel_threshold)
        team = n / parallel_threshold;
    return team < 1 ? 1 : (int)team;
}

void fo_parallel_for(fo_chunk_fn *chunk, const void *ctx, int64_t n, int threads)
{
    int team = fo_team(n, threads);
    if (team == 1) {
        if (n > 0)
            chunk(ctx, 0, n);
        return;
    }
    range_job r = {chunk, ctx, n, fo_piece_size(n, team)};
    fo_pool_run(range_task, &r, (n + r.piece - 1) / r.piece, team);
}

/* The variant the target_clones resolver picks (loops/common.h), in its order of
 * preference. */
const char *fo_simd_target(void)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        return "x86-64-v4 (AVX-512)";
    if (__builtin_cpu_supports("x86-64-v3"))
        return "x86-64-v3 (AVX2)";
    return "x86-64 (SSE2)";
#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return "avx512f";
    if (__builtin_cpu_supports("avx2"))
        return "avx2";
    return "x86-64 (SSE2)";
#else
    return "generic";
#endif
}
