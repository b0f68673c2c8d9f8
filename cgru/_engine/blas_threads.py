"""Keep the BLAS behind scipy.linalg.cython_blas single-threaded while cgru's OpenMP threads
call it: each of our threads runs its own slice of every product, and a multi-threaded BLAS
inside them would oversubscribe the cores (OpenBLAS's 2-thread GEMV is slower than 1 thread
at H <= 256 on the development machine).

SciPy's wheels bundle OpenBLAS; we find it next to the scipy package and call its
set/get_num_threads through ctypes. The limit is taken on entry of the first concurrent cgru
call and the previous value restored when the last one leaves. Where the BLAS is not an
OpenBLAS we can find (a conda MKL build, say), threadpoolctl is used if it is installed;
otherwise nothing is done.
"""
import contextlib
import ctypes
import glob
import importlib
import os
import threading

_SYMBOLS = [  # (get, set) pairs, by OpenBLAS build flavour
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
]


def _candidate_libraries(package="scipy"):
    root = os.path.dirname(importlib.import_module(package).__file__)
    patterns = [os.path.join(root + ".libs", "*openblas*"),       # Linux and Windows wheels
                os.path.join(root, ".dylibs", "*openblas*"),      # macOS wheels
                os.path.join(root, "..", f"{package}_openblas32", "lib", "*openblas*")]
    for pattern in patterns:
        yield from sorted(glob.glob(pattern))


class _OpenBLAS:
    def __init__(self, path, get, set_):
        self.path = path
        self._get = get
        self._set = set_
        try:
            self._config = getattr(ctypes.CDLL(path), "scipy_openblas_get_config")
            self._config.restype = ctypes.c_char_p
        except (AttributeError, OSError):
            self._config = None

    def get(self):
        return self._get()

    def set(self, n):
        self._set(n)

    def describe(self):
        config = self._config().decode() if self._config is not None else "OpenBLAS"
        return f"{config} ({os.path.basename(self.path)})"


def find_openblas(package="scipy"):
    """The OpenBLAS bundled with `package` (scipy: the one cgru calls), or None."""
    for path in _candidate_libraries(package):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _SYMBOLS:
            get = getattr(lib, get_name, None)
            set_ = getattr(lib, set_name, None)
            if get is not None and set_ is not None:
                get.restype = ctypes.c_int
                set_.argtypes = [ctypes.c_int]
                return _OpenBLAS(path, get, set_)
    return None


_lock = threading.Lock()
_blas = None
_searched = False
_active_calls = 0
_saved_threads = None


def blas_controller():
    """The OpenBLAS behind scipy.linalg.cython_blas (get()/set(n) of its thread count; found
    once), or None where it cannot be found."""
    global _blas, _searched
    if not _searched:
        _blas = find_openblas()
        _searched = True
    return _blas


def describe_blas():
    """A one-line description of the BLAS that cgru's kernels call."""
    blas = blas_controller()
    if blas is not None:
        return blas.describe()
    try:
        from threadpoolctl import threadpool_info
        infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if infos:
            return f"{infos[0]['internal_api']} {infos[0].get('version')} ({infos[0]['filepath']})"
    except ImportError:
        pass
    return "scipy.linalg.cython_blas (library not identified)"


@contextlib.contextmanager
def blas_single_threaded():
    """Hold the BLAS at one thread for the duration of the block (re-entrant, thread-safe)."""
    global _active_calls, _saved_threads
    blas = blas_controller()
    if blas is None:
        with _threadpoolctl_limit():
            yield
        return
    with _lock:
        if _active_calls == 0:
            _saved_threads = blas.get()
            if _saved_threads != 1:
                blas.set(1)
        _active_calls += 1
    try:
        yield
    finally:
        with _lock:
            _active_calls -= 1
            if _active_calls == 0 and _saved_threads != 1:
                blas.set(_saved_threads)


@contextlib.contextmanager
def _threadpoolctl_limit():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# -- NumPy's BLAS, for cgru's own small products between GRU calls -----------------------------

_numpy_lock = threading.Lock()
_numpy_blas = None
_numpy_searched = False
_numpy_active = 0
_numpy_saved = None


def _numpy_openblas():
    global _numpy_blas, _numpy_searched
    if not _numpy_searched:
        try:
            _numpy_blas = find_openblas("numpy")
        except ImportError:     # pragma: no cover - NumPy is always there
            _numpy_blas = None
        _numpy_searched = True
    return _numpy_blas


@contextlib.contextmanager
def numpy_blas_single_threaded():
    """Hold NumPy's OpenBLAS at one thread for the block (re-entrant, thread-safe), for the
    small products cgru itself runs between GRU calls: the estimators' linear heads.

    A threaded OpenBLAS call leaves its workers spinning for about 0.1 s, and the next GRU
    call's OpenMP team then waits for a core (GRUClassifier.predict, 1500 sequences of 30
    steps, hidden 128, 2 threads: 109 ms with the head's 1500x128 @ 128x3 product threaded,
    47 ms without, 88 ms at one thread). Outside the block NumPy keeps its own setting; where
    NumPy's BLAS is not an OpenBLAS cgru can find, nothing is done."""
    global _numpy_active, _numpy_saved
    blas = _numpy_openblas()
    if blas is None:
        yield
        return
    with _numpy_lock:
        if _numpy_active == 0:
            _numpy_saved = blas.get()
            if _numpy_saved != 1:
                blas.set(1)
        _numpy_active += 1
    try:
        yield
    finally:
        with _numpy_lock:
            _numpy_active -= 1
            if _numpy_active == 0 and _numpy_saved != 1:
                blas.set(_numpy_saved)
