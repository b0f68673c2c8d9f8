/* The process's thread pools, and what else runs on the machine, for cgru/_engine/pool.py.

   cgru_openblas_threads: a caller-managed threading backend for OpenBLAS (0.3.27 and later:
   openblas_set_threads_callback_function). OpenBLAS's own server threads spin for 2^28 TSC
   ticks after every threaded call (0.12 s at 2.25 GHz, measured: a NumPy 2000x256 @ 256x74
   product leaves its worker burning a core for 130 ms), and an OpenMP team that needs that
   core waits a scheduler time slice for it (T = 1, N = 64, 2 threads: 0.6 ms back to back,
   4.4 ms right after the product). Given this callback, OpenBLAS runs its jobs on this
   library's OpenMP pool: one pool in the process, whose workers are the ones already awake.
   OpenBLAS's jobs wait on each other (a threaded GEMM's threads share packed panels), so all
   of them must run at once: on a team of exactly numjobs threads, or, where OpenMP gives a
   smaller team (inside a parallel region, a thread limit), on pthreads started for the call.
   Jobs use OpenBLAS's per-job buffers (by job index), so calls are serialized, as OpenBLAS's
   own level-3 lock serializes its threaded GEMMs.

   cgru_team_thread_ids, cgru_runnable_tasks, cgru_thread_runnable: the kernel's ids of the
   threads of an OpenMP team of this thread, the machine's runnable tasks (/proc/loadavg) and
   whether one of our threads is runnable (/proc/self/task/TID/stat), for the load-adaptive
   thread count. -1 where the OS does not say (not Linux). */

#ifndef CGRU_POOL_H
#define CGRU_POOL_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "cgru_openmp.h"

#if defined(__linux__)
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#define CGRU_POOL_PROC 1
#else
#define CGRU_POOL_PROC 0
#endif

typedef void (*cgru_dojob)(int thread_num, void *jobdata, int dojob_data);

#if CGRU_POOL_PROC
typedef struct {
    cgru_dojob dojob;
    int index;
    void *jobdata;
    int dojob_data;
} cgru_job;

static void *cgru_run_job(void *arg) {
    cgru_job *job = (cgru_job *) arg;
    job->dojob(job->index, job->jobdata, job->dojob_data);
    return NULL;
}

static pthread_mutex_t cgru_openblas_lock = PTHREAD_MUTEX_INITIALIZER;
#endif

static void cgru_openblas_threads(int sync, cgru_dojob dojob, int numjobs, size_t jobdata_elsize,
                                  void *jobdata, int dojob_data) {
    int i, ran = 0;
    (void) sync;        /* OpenBLAS always asks for a synchronous run */
    if (numjobs <= 1) {
        for (i = 0; i < numjobs; i++)
            dojob(i, jobdata, dojob_data);
        return;
    }
#if CGRU_POOL_PROC
    pthread_mutex_lock(&cgru_openblas_lock);
#ifdef _OPENMP
    if (!omp_in_parallel()) {
        #pragma omp parallel num_threads(numjobs)
        {
            /* every thread sees the same team size: all run their job, or none does */
            if (omp_get_num_threads() == numjobs) {
                int job = omp_get_thread_num();
                dojob(job, (char *) jobdata + (size_t) job * jobdata_elsize, dojob_data);
                if (job == 0)
                    ran = 1;
            }
        }
    }
#endif
    if (!ran) {
        /* a team of numjobs threads could not be had: one pthread per job after the first */
        pthread_t *threads = (pthread_t *) malloc((size_t) numjobs * sizeof(pthread_t));
        cgru_job *jobs = (cgru_job *) malloc((size_t) numjobs * sizeof(cgru_job));
        int started = 0;
        for (i = 0; i < numjobs; i++) {
            jobs[i].dojob = dojob;
            jobs[i].index = i;
            jobs[i].jobdata = (char *) jobdata + (size_t) i * jobdata_elsize;
            jobs[i].dojob_data = dojob_data;
        }
        if (threads != NULL && jobs != NULL) {
            for (i = 1; i < numjobs; i++) {
                if (pthread_create(&threads[i], NULL, cgru_run_job, &jobs[i]) != 0)
                    break;
                started = i;
            }
        }
        if (started == numjobs - 1) {
            cgru_run_job(&jobs[0]);
            for (i = 1; i < numjobs; i++)
                pthread_join(threads[i], NULL);
        } else {
            /* out of threads: nothing sensible is left; abort loudly rather than hang */
            fprintf(stderr, "cgru: could not start %d threads for OpenBLAS\n", numjobs);
            abort();
        }
        free(threads);
        free(jobs);
    }
    pthread_mutex_unlock(&cgru_openblas_lock);
#else
    (void) ran;
    for (i = 0; i < numjobs; i++)   /* not reached: the engine shares the pool on Linux only */
        dojob(i, (char *) jobdata + (size_t) i * jobdata_elsize, dojob_data);
#endif
}

/* The kernel ids of the threads of a team of n opened by this thread (ids[0] is this one);
   returns the team's size, or -1 where the OS has no thread ids. */
static int cgru_team_thread_ids(int n, int *ids) {
#if CGRU_POOL_PROC
    int size = 1;
    ids[0] = (int) syscall(SYS_gettid);
#ifdef _OPENMP
    #pragma omp parallel num_threads(n)
    {
        int t = omp_get_thread_num();
        if (t < n)
            ids[t] = (int) syscall(SYS_gettid);
        if (t == 0)
            size = omp_get_num_threads();
    }
#endif
    return size;
#else
    (void) n; (void) ids;
    return -1;
#endif
}

#if CGRU_POOL_PROC
static int cgru_read_small(const char *path, char *buf, int size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got;
    if (fd < 0)
        return -1;
    got = read(fd, buf, (size_t) size - 1);
    close(fd);
    if (got <= 0)
        return -1;
    buf[got] = 0;
    return (int) got;
}
#endif

/* Runnable tasks on the machine now, this thread included (the 4th field of /proc/loadavg,
   "running/total"); -1 where unknown. */
static int cgru_runnable_tasks(void) {
#if CGRU_POOL_PROC
    char buf[128];
    const char *p = buf;
    int field;
    if (cgru_read_small("/proc/loadavg", buf, (int) sizeof buf) < 0)
        return -1;
    for (field = 0; field < 3; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return -1;
        p++;
    }
    return atoi(p);
#else
    return -1;
#endif
}

/* 1 if thread `tid` of this process is runnable (state R), 0 if not, -1 if it is gone. */
static int cgru_thread_runnable(int tid) {
#if CGRU_POOL_PROC
    char path[64], buf[512];
    const char *p;
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    if (cgru_read_small(path, buf, (int) sizeof buf) < 0)
        return -1;
    p = strrchr(buf, ')');     /* the name, in parentheses, may hold spaces */
    if (p == NULL || p[1] == 0 || p[2] == 0)
        return -1;
    return p[2] == 'R';
#else
    (void) tid;
    return -1;
#endif
}

#endif  /* CGRU_POOL_H */
