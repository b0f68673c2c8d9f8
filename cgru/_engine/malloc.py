"""keep_freed_memory(): glibc's malloc told to keep freed memory for reuse; an opt-in, off by
default, because the setting is the whole process's.

A training step frees megabytes of temporaries (the backward's workspace, the tape's
mid-size arrays, the optimizer's), and glibc gives the top of its heap back to the system
when more than its trim threshold is free there; the next step faults the same pages in
again. The thresholds adapt to the largest block freed so far, so how much comes back
depends on the process's history: S3's training step with Adam took 640-1120 minor faults a
step, and 16.9 ms against 15.8 with them gone, at one thread on a 2-core Zen 2 VM
(benchmarks/RESULTS.md).

cgru's own results of 1 MB or more already live on recycled memory (recycle.py); taking the
step's smaller temporaries there too removed the faults but kept blocks that the optimizer's
temporaries could not reuse (S3's peak memory of a step 7.9 -> 12.7 MB). glibc itself reuses
freed memory for any size, so the fix is its settings: blocks of up to 32 MB from the heap
(never a fresh mapping per array) and the top of the heap returned only beyond 128 MB.
"""
import ctypes
import platform
import threading

# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

KEEP_MMAP_THRESHOLD = 32 << 20      # glibc's own largest adaptive value on 64-bit systems
KEEP_TRIM_THRESHOLD = 128 << 20
GLIBC_DEFAULT_THRESHOLD = 128 << 10  # the static default of both

_lock = threading.Lock()


def _mallopt():
    """glibc's mallopt, or None where the process's C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory(enabled=True):
    """Keep freed memory in the process for reuse (enabled=True), or set glibc's static
    defaults back (False). Process-wide; returns whether memory is now kept.

    Enabled, glibc serves blocks of up to 32 MB from its heap and returns the top of the heap
    to the system only when more than 128 MB of it is free, as
    ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=134217728`` would at start-up:
    a training loop stops faulting its temporaries in at every step, at the cost of up to
    128 MB of freed memory staying with the process. Disabled, both thresholds go back to
    128 KB; glibc's adaptation of them to the blocks freed does not come back.

    Raises RuntimeError where the C library is not glibc (macOS, Windows, musl): their
    allocators have other settings, or none.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    mallopt = _mallopt()
    if mallopt is None:
        raise RuntimeError("keep_freed_memory: only glibc's malloc (Linux) has these settings")
    mmap_threshold = KEEP_MMAP_THRESHOLD if enabled else GLIBC_DEFAULT_THRESHOLD
    trim_threshold = KEEP_TRIM_THRESHOLD if enabled else GLIBC_DEFAULT_THRESHOLD
    with _lock:
        if not (mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and mallopt(_M_TRIM_THRESHOLD, trim_threshold)):
            raise RuntimeError("keep_freed_memory: glibc refused the setting")
    return enabled
