"""Sharing the machine with the rest of a pipeline; two opt-ins, both off by default.

share_blas_threads(): NumPy's and SciPy's OpenBLAS run their threads on cgru's OpenMP pool.
    OpenBLAS's own workers spin for 2^28 TSC ticks (0.12 s at 2.25 GHz) after every threaded
    call; a cgru call in that window finds a core taken and its OpenMP team waits a scheduler
    time slice for it (2 cores, GRU 256 -> 256, T = 1, N = 64, 2 threads: 0.6 ms back to back,
    4.4 ms right after a NumPy 2000x256 @ 256x74 product). With one pool, the threads that are
    awake are the ones the next call needs. NumPy keeps its thread count; what changes is who
    runs its threads (see README.md, "Inside NumPy pipelines", for what it costs NumPy).

set_load_adaptive(True): a call uses no more threads than there are cores free of other
    runnable tasks (another process's busy loop, a BLAS pool still spinning), read from
    /proc/loadavg before each multi-threaded call (9 us, measured). Off by default: a
    call's float32 results can differ in their last bits between thread counts (they are
    exact for each count), so with it results would depend on the machine's load.
"""
import ctypes
import functools
import os
import threading

from .blas_threads import _candidate_libraries
from .isa import kernel
from .threads import usable_cores
from .. import _pool

_CALLBACK_SYMBOLS = ["scipy_openblas_set_threads_callback_function64_",
                     "scipy_openblas_set_threads_callback_function",
                     "openblas_set_threads_callback_function64_",
                     "openblas_set_threads_callback_function"]

_lock = threading.Lock()
_shared = {}            # path -> the setter, for the libraries whose threads run on our pool


def _openblas_setters():
    """(path, setter) for every OpenBLAS with a pthreads server that this process has loaded
    (NumPy's and SciPy's wheels, and any threadpoolctl sees) and that takes a threads callback
    (OpenBLAS 0.3.27 and later)."""
    paths = []
    for package in ("numpy", "scipy"):
        try:
            paths.extend(_candidate_libraries(package))
        except ImportError:
            pass
    try:
        from threadpoolctl import threadpool_info
        paths.extend(i["filepath"] for i in threadpool_info()
                     if i.get("internal_api") == "openblas"
                     and i.get("threading_layer") == "pthreads")
    except ImportError:
        pass
    found = {}
    for path in paths:
        real = os.path.realpath(path)
        if real in found:
            continue
        try:
            lib = ctypes.CDLL(real)
        except OSError:
            continue
        for name in _CALLBACK_SYMBOLS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_void_p]
                setter.restype = None
                found[real] = setter
                break
    return found


def share_blas_threads(enabled=True):
    """Run the threads of NumPy's and SciPy's OpenBLAS on cgru's OpenMP pool (enabled=True),
    or give them back their own (False). Process-wide; returns the libraries now shared.

    Call it at start-up, before other Python threads use NumPy: OpenBLAS reads the setting at
    each threaded call. Raises RuntimeError where it cannot be done: a serial build of cgru,
    an OS other than Linux, or no OpenBLAS 0.3.27+ with its own threads in the process.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    with _lock:
        if not enabled:
            for setter in _shared.values():
                setter(None)
            _shared.clear()
            return []
        if not kernel.OPENMP_ENABLED:
            raise RuntimeError("share_blas_threads: cgru was built without OpenMP, it has no "
                               "thread pool to share")
        if not _pool.PROC:
            raise RuntimeError("share_blas_threads: only supported on Linux")
        setters = _openblas_setters()
        if not setters:
            raise RuntimeError("share_blas_threads: no OpenBLAS 0.3.27 or later with its own "
                               "(pthreads) threads was found in this process")
        address = _pool.openblas_callback_address()
        for path, setter in setters.items():
            setter(address)
            _shared[path] = setter
        return sorted(_shared)


def shared_blas_libraries():
    """The OpenBLAS libraries whose threads run on cgru's pool (share_blas_threads)."""
    return sorted(_shared)


# -- the load-adaptive thread count --------------------------------------------------------------

_adaptive = False
_local = threading.local()


def set_load_adaptive(enabled):
    """Let each multi-threaded call use no more threads than there are cores free of other
    runnable tasks (True), or always the set count (False, the default). Process-wide."""
    global _adaptive
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    _adaptive = enabled


def load_adaptive():
    """Whether the thread count adapts to the machine's load (set_load_adaptive)."""
    return _adaptive


def _own_workers(n):
    """The kernel ids of the n - 1 workers of this Python thread's OpenMP team (libgomp keeps
    a team's threads for its master thread; collected once, again if the team grows)."""
    ids = getattr(_local, "ids", ())
    if len(ids) < n:
        ids = tuple(_pool.team_thread_ids(n))
        _local.ids = ids
    return ids[1:n]


@functools.lru_cache(maxsize=1)
def _machine_cores():
    return os.cpu_count()       # 5 us a call: read once


def free_threads(n):
    """n, or fewer: the cores free of runnable tasks other than this thread and its own
    OpenMP workers (which spin a while after each parallel region), at least 1. n itself
    where the OS does not say, or where this process may use only some of the machine's
    cores (/proc/loadavg counts the whole machine's tasks)."""
    cores = usable_cores()
    if not _pool.PROC or cores != _machine_cores():
        return n
    others = _pool.others_runnable(_own_workers(n))
    if others < 0:
        return n
    return max(1, min(n, cores - others))
