/* The only door to OpenMP. With no OpenMP in the compiler, the same names exist and
   describe a single thread, so every kernel builds and runs serially unchanged. */

#ifndef CGRU_OPENMP_H
#define CGRU_OPENMP_H

#ifdef _OPENMP
#include <omp.h>
#define CGRU_OPENMP 1
/* An orphaned barrier binds to the innermost enclosing parallel region. */
static inline void cgru_barrier(void) {
    #pragma omp barrier
}

/* A barrier for the kernel's teams that waits briefly, then sleeps.
   libgomp's barriers and its end-of-region join spin (GOMP_SPINCOUNT, 300000 PAUSEs by
   default: 10 ms on the AMD EPYC Zen 2 development VM, measured from the CPU time its workers
   burn after a region) before they sleep. When a teammate has no core (another process's
   busy loop, a BLAS pool still spinning after NumPy's last product), the thread that spins
   keeps its own core from it: 2 threads on 2 cores with one busy, GRU 256 -> 256, T = 1,
   N = 64 took 8-20 ms a call against 0.8 ms on one thread (OMP_WAIT_POLICY=passive: 1.1 ms).
   This one spins CGRU_TEAM_SPINS times (about 60 us there; a teammate that has a core is
   seldom later than that), then sleeps a microsecond at a time, so the core goes idle and
   the scheduler can hand it to the teammate that waits. Sense-reversing: a thread reads the
   phase before it arrives; the last to arrive resets the count and opens the next phase. The
   release/acquire pair orders every thread's writes before the barrier with every read after
   it, as `omp barrier` does. Every thread of the team must meet every barrier. */
#define CGRU_TEAM_SPINS 2000
#ifdef _WIN32
#include <windows.h>
static inline void cgru_nap(void) { Sleep(0); }
#else
#include <time.h>
static inline void cgru_nap(void) {
    struct timespec pause_ns = {0, 1000};
    nanosleep(&pause_ns, NULL);
}
#endif

typedef struct {
    int arrived;
    int phase;
} cgru_team_barrier;

static inline void cgru_team_barrier_init(cgru_team_barrier *b) {
    b->arrived = 0;
    b->phase = 0;
}

static inline void cgru_team_wait(cgru_team_barrier *b) {
    int size = omp_get_num_threads();
    int phase, spins = 0;
    if (size <= 1)
        return;
    phase = __atomic_load_n(&b->phase, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL) == size) {
        __atomic_store_n(&b->arrived, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->phase, phase + 1, __ATOMIC_RELEASE);
        return;
    }
    while (__atomic_load_n(&b->phase, __ATOMIC_ACQUIRE) == phase) {
        if (spins < CGRU_TEAM_SPINS) {
            spins++;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            cgru_nap();
        }
    }
}
#else
#define CGRU_OPENMP 0
typedef struct {
    int arrived;
    int phase;
} cgru_team_barrier;
static inline void cgru_team_barrier_init(cgru_team_barrier *b) { b->arrived = b->phase = 0; }
static inline void cgru_team_wait(cgru_team_barrier *b) { (void) b; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
static inline void cgru_barrier(void) {}
#endif

#endif  /* CGRU_OPENMP_H */
