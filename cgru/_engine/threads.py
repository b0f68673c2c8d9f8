"""How many OpenMP threads cgru uses, and keeping BLAS single-threaded while they run.

The count is resolved here, once per call, never in compiled code:
    * default: OMP_NUM_THREADS when set, else the cores this process may run on (CPU affinity);
    * `set_num_threads(n)` sets it for the whole process, `use_threads(n)` for a `with` block in
      the current Python thread only (so concurrent callers do not fight over it).
A positive n means n threads; a negative n counts back from the usable cores (-1: all of them,
-2: all but one); 0 is an error. The kernel further clamps the count to the work available.
"""
import contextlib
import functools
import numbers
import os
import sys
import threading

_process_threads = None  # set by set_num_threads; None means the default
_local = threading.local()


@functools.lru_cache(maxsize=1)
def usable_cores():
    """Cores this process may run on: its CPU affinity where the OS reports one (read once)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _default_threads():
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return usable_cores()


def resolve_threads(n):
    """n as a thread count: n > 0 as is, n < 0 counted back from the usable cores (-1: all);
    0 is a ValueError, a non-int a TypeError. The one rule of set_num_threads, use_threads
    and `cgru run --threads`."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"number of threads must be an int, got {type(n).__name__}")
    n = int(n)
    if n == 0:
        raise ValueError("number of threads must be positive, or negative to count back "
                         "from the usable cores; got 0")
    if n < 0:
        n = max(1, usable_cores() + 1 + n)
    return n


def get_num_threads():
    """The number of threads the next cgru call in this Python thread will use (at most)."""
    local = getattr(_local, "threads", None)
    if local is not None:
        return local
    if _process_threads is not None:
        return _process_threads
    return _default_threads()


def set_num_threads(n):
    """Set the number of threads for the whole process; None restores the default.

    n > 0: that many threads; n < 0: usable cores + 1 + n (-1 means all); 0: ValueError.
    """
    global _process_threads
    _process_threads = None if n is None else resolve_threads(n)


@contextlib.contextmanager
def use_threads(n):
    """Context manager: use n threads for cgru calls made by this Python thread in the block.

    >>> with cgru.use_threads(1):
    ...     output, h_n = gru(x)
    """
    resolved = resolve_threads(n)
    previous = getattr(_local, "threads", None)
    _local.threads = resolved
    try:
        yield resolved
    finally:
        _local.threads = previous


def dask_worker_threads():
    """1 in a task of a dask.distributed worker that runs several tasks at once (its threads
    share its cores), else None (cgru's default: a single-threaded worker's task has the
    worker's cores to itself). Looks only if distributed is already imported."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        worker = distributed.get_worker()
    except (ValueError, AttributeError):
        return None
    nthreads = getattr(getattr(worker, "state", None), "nthreads", None) or worker.nthreads
    return 1 if nthreads > 1 else None


def worker_threads_context():
    """use_threads(1) inside a multi-threaded dask.distributed worker's task, else nothing."""
    n = dask_worker_threads()
    return use_threads(n) if n is not None else contextlib.nullcontext()
