# The process's thread pools and the machine's load, for cgru/_engine/pool.py; the C is in
# pyx/include/cgru_pool.h.
from libc.stdint cimport uintptr_t

cdef extern from "cgru_pool.h":
    bint CGRU_POOL_PROC
    ctypedef void (*cgru_dojob)(int, void *, int) noexcept nogil
    void cgru_openblas_threads(int sync, cgru_dojob dojob, int numjobs, size_t jobdata_elsize,
                               void *jobdata, int dojob_data) noexcept nogil
    int cgru_team_thread_ids(int n, int *ids) noexcept nogil
    int cgru_runnable_tasks() noexcept nogil
    int cgru_thread_runnable(int tid) noexcept nogil

# Where the OS reports thread ids and runnable tasks (Linux)
PROC = bool(CGRU_POOL_PROC)


def openblas_callback_address():
    """The address of the C function that runs OpenBLAS's jobs on our OpenMP pool (for
    openblas_set_threads_callback_function)."""
    return <uintptr_t> &cgru_openblas_threads


def team_thread_ids(int n):
    """The kernel ids of the threads of a team of n opened by this thread, this one first
    (fewer where OpenMP gave fewer); [] where the OS has none."""
    cdef int[1024] ids
    n = max(1, min(n, 1024))
    cdef int size
    with nogil:
        size = cgru_team_thread_ids(n, ids)
    return [ids[i] for i in range(size)] if size > 0 else []


def runnable_tasks():
    """Runnable tasks on the machine, this thread included; -1 where unknown."""
    return cgru_runnable_tasks()


def thread_runnable(int tid):
    """1 if thread tid of this process is runnable, 0 if not, -1 if it is gone or unknown."""
    return cgru_thread_runnable(tid)


def others_runnable(tuple own_ids):
    """Runnable tasks on the machine that are neither this thread nor a runnable thread of
    own_ids (the workers of our OpenMP team, which spin a while after each region); -1 where
    unknown. One C pass (with free_threads around it, 9 us a call for a team of 2)."""
    cdef int total = cgru_runnable_tasks()
    cdef int tid, state
    if total < 0:
        return -1
    total -= 1
    for tid in own_ids:
        state = cgru_thread_runnable(tid)
        if state > 0:
            total -= 1
    return max(total, 0)
