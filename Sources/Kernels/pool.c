// The kernels' thread pool: persistent workers that spin briefly between jobs, so that the next product of a step
// starts on every core within a microsecond instead of waiting for a sleeping thread to be woken (GCD's
// `concurrentPerform` and a condition variable cost tens of microseconds per hand-off; a DPO step makes thousands).
// Workers that find no job for `SPIN_NANOSECONDS` sleep on a condition variable and are woken by the next job.
//
// One job runs at a time. A call made while a job runs (from another thread, or nested inside a job's body) runs its
// indices on the calling thread, so the pool can never deadlock and a caller never waits for another caller.

#include "Kernels.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/// How long an idle worker polls for the next job before it goes to sleep: long enough to bridge the serial work
/// between two products of a step, short enough that an idle process gives its cores back at once.
#define SPIN_NANOSECONDS 200000
/// Workers beyond this are never started (a guard against absurd thread counts).
#define MAX_WORKERS 255
#define PARTICIPANTS_MASK 0xffu

typedef struct {
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    /// Held by the thread whose job runs; a call that cannot take it runs serially.
    pthread_mutex_t job_lock;
    size_t workers;

    /// Publishes a job (written under `mutex`): a sequence number above the low 8 bits, which say how many workers
    /// take part (workers `0 ..< participants`; the others let the job pass). A worker runs each job once.
    _Atomic uint64_t generation;
    /// Workers asleep on `wake` (under `mutex`).
    size_t sleepers;

    // The job of the current generation; written before `generation` is published.
    void *context;
    void (*body)(void *, size_t);
    size_t count;
    _Atomic size_t next;
    /// Participants that have not yet finished the current job.
    _Atomic size_t pending;
} pool_t;

static pool_t pool = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .job_lock = PTHREAD_MUTEX_INITIALIZER,
};

/// Set on the pool's workers and on a caller while its job runs: a nested call runs serially.
static _Thread_local int inside_job;

static uint64_t now_nanoseconds(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (uint64_t)time.tv_sec * 1000000000u + (uint64_t)time.tv_nsec;
}

static void run_indices(void) {
    size_t index;
    while ((index = atomic_fetch_add_explicit(&pool.next, 1, memory_order_relaxed)) < pool.count) {
        pool.body(pool.context, index);
    }
}

static uint64_t sequence_of(uint64_t generation) { return generation >> 8; }

/// A worker's argument: its index in the low 8 bits, above them the sequence number of the last job published
/// before it was started (it takes part only in later ones; it may start running after the next is published).
static void *worker_main(void *argument) {
    size_t id = (size_t)((uintptr_t)argument & PARTICIPANTS_MASK);
    uint64_t seen = (uint64_t)(uintptr_t)argument >> 8;
    inside_job = 1;
    for (;;) {
        uint64_t generation = atomic_load_explicit(&pool.generation, memory_order_acquire);
        if (sequence_of(generation) == seen) {
            uint64_t deadline = now_nanoseconds() + SPIN_NANOSECONDS;
            unsigned polls = 0;
            while (sequence_of(generation = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen) {
                cpu_relax();
                if (++polls % 64 == 0 && now_nanoseconds() > deadline) {
                    pthread_mutex_lock(&pool.mutex);
                    pool.sleepers += 1;
                    while (sequence_of(generation = atomic_load_explicit(&pool.generation, memory_order_acquire))
                           == seen) {
                        pthread_cond_wait(&pool.wake, &pool.mutex);
                    }
                    pool.sleepers -= 1;
                    pthread_mutex_unlock(&pool.mutex);
                    break;
                }
            }
        }
        seen = sequence_of(generation);
        // The caller waits for every participant before it writes the next job, so the job's fields are stable
        // for a participant; the others never read them.
        if (id < (generation & PARTICIPANTS_MASK)) {
            run_indices();
            atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release);
        }
    }
    return NULL;
}

/// Starts workers until there are `wanted` (called with `job_lock` held). Returns how many run.
static size_t ensure_workers(size_t wanted) {
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    while (pool.workers < wanted) {
        pthread_t thread;
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        uint64_t sequence = sequence_of(atomic_load_explicit(&pool.generation, memory_order_relaxed));
        void *argument = (void *)(uintptr_t)((sequence << 8) | pool.workers);
        int failed = pthread_create(&thread, &attributes, worker_main, argument);
        pthread_attr_destroy(&attributes);
        if (failed) break;  // Run with the workers we have.
        pool.workers += 1;
    }
    return pool.workers;
}

void kernels_pool_run(size_t threads, size_t count, void *body_context, void (*body)(void *body_context, size_t index)) {
    if (count == 0) return;
    if (threads <= 1 || count == 1 || inside_job || pthread_mutex_trylock(&pool.job_lock) != 0) {
        for (size_t index = 0; index < count; index++) body(body_context, index);
        return;
    }
    size_t workers = ensure_workers(threads - 1);
    if (workers > threads - 1) workers = threads - 1;
    if (workers > count - 1) workers = count - 1;
    if (workers == 0) {
        pthread_mutex_unlock(&pool.job_lock);
        for (size_t index = 0; index < count; index++) body(body_context, index);
        return;
    }
    pool.context = body_context;
    pool.body = body;
    pool.count = count;
    atomic_store_explicit(&pool.next, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.pending, workers, memory_order_relaxed);
    pthread_mutex_lock(&pool.mutex);
    uint64_t sequence = sequence_of(atomic_load_explicit(&pool.generation, memory_order_relaxed)) + 1;
    atomic_store_explicit(&pool.generation, (sequence << 8) | workers, memory_order_release);
    if (pool.sleepers > 0) pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mutex);

    inside_job = 1;
    run_indices();
    inside_job = 0;
    // Every participant runs the job (possibly finding no index left) before the next job's fields are written.
    while (atomic_load_explicit(&pool.pending, memory_order_acquire) != 0) cpu_relax();
    pthread_mutex_unlock(&pool.job_lock);
}

void kernels_pool_for(void *loop_context, size_t count, void *body_context,
                      void (*body)(void *body_context, size_t index)) {
    kernels_pool_run(loop_context ? *(const size_t *)loop_context : 1, count, body_context, body);
}
