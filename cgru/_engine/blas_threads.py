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


_blas = None
_searched = False


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


class _HeldAtOne:
    """Holds one OpenBLAS at one thread while any block using the hold runs (re-entrant,
    thread-safe): the count is read on entry of the first block and restored when the last
    one leaves. find() gives the library's controller, or None (then `fallback()` is the
    block's context)."""

    def __init__(self, find, fallback):
        self._find = find
        self._fallback = fallback
        self._lock = threading.Lock()
        self._active = 0
        self._saved = None

    @contextlib.contextmanager
    def __call__(self):
        blas = self._find()
        if blas is None:
            with self._fallback():
                yield
            return
        with self._lock:
            if self._active == 0:
                self._saved = blas.get()
                if self._saved != 1:
                    blas.set(1)
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0 and self._saved != 1:
                    blas.set(self._saved)


@contextlib.contextmanager
def _threadpoolctl_limit():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# -- the holds -----------------------------------------------------------------------------------

_numpy_blas = []


def _numpy_openblas():
    if not _numpy_blas:
        _numpy_blas.append(find_openblas("numpy"))
    return _numpy_blas[0]


blas_single_threaded = _HeldAtOne(blas_controller, _threadpoolctl_limit)
blas_single_threaded.__doc__ = """Hold the BLAS behind scipy.linalg.cython_blas at one thread
for the duration of the block (re-entrant, thread-safe): `with blas_single_threaded(): ...`."""

numpy_blas_single_threaded = _HeldAtOne(_numpy_openblas, contextlib.nullcontext)
numpy_blas_single_threaded.__doc__ = """Hold NumPy's OpenBLAS at one thread for the block
(re-entrant, thread-safe), for the small products cgru itself runs between GRU calls: the
estimators' linear heads.

A threaded OpenBLAS call leaves its workers spinning for about 0.1 s, and the next GRU call's
OpenMP team then waits for a core (GRUClassifier.predict, 1500 sequences of 30 steps, hidden
128, 2 threads: 109 ms with the head's 1500x128 @ 128x3 product threaded, 47 ms without, 88 ms
at one thread). Outside the block NumPy keeps its own setting; where NumPy's BLAS is not an
OpenBLAS cgru can find, nothing is done."""
